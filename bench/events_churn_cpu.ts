/**
 * The agent's CPU under real connection churn, in event mode against dump mode: a namespace
 * where `events_churn.ts` opens and closes RATE loopback TCP connections a second (each one a
 * conntrack entry, a candidate until its reply, and a new-entry event), with the agent measured
 * over the same window as in `events_cpu.ts`. The churning process's own CPU is reported too: it
 * carries the kernel's cost of building and queueing events, so the difference between the modes
 * there is the kernel's extra cost of delivering them.
 *
 * CLI: `deno run -A bench/events_churn_cpu.ts [--window S] [--modes none,events,dump] RATE...`
 * (default window 20 s, all three modes, rate 1000). Needs root.
 *
 * @module
 */
import { runToEnd } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { measure, option, startTaskFlags } from "./cycle.ts";
import { createNetns, inNetns } from "./fill_table.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const CHURN = new URL("./events_churn.ts", import.meta.url).pathname;
const WARM_UP_S = 5;

function agent(tracking: string): string[] {
  return [
    Deno.execPath(),
    "run",
    ...startTaskFlags(),
    MAIN,
    "--metrics-address",
    "",
    "--log-format",
    "json",
    "--dump-frequency",
    "1s",
    "--dry-run",
    "--unreplied-max-age",
    "0",
    "--nat-source",
    "off",
    "--tracking",
    tracking,
  ];
}

const args = [...Deno.args];
const windowS = option(args, "--window", 20);
const modesAt = args.indexOf("--modes");
const modes = modesAt < 0 ? ["none", "events", "dump"] : args.splice(modesAt, 2)[1]!.split(",");
const rates = args.length > 0 ? args.map(Number) : [1000];
for (const rate of rates) {
  for (const tracking of modes) {
    await using ns = await createNetns(denoSpawn, "bench-churn");
    await inNetns(
      denoSpawn,
      ns.name,
      ["nft", "-f", "-"],
      [
        "table inet bench {",
        "  chain out { type filter hook output priority 0; ct state new counter; }",
        "}",
      ].join("\n"),
    );
    const churn = runToEnd(denoSpawn, "ip", [
      "netns",
      "exec",
      ns.name,
      Deno.execPath(),
      "run",
      "-A",
      CHURN,
      String(rate),
      String(windowS + WARM_UP_S + 3),
      "18080",
    ]);
    let agentCpu = 0;
    if (tracking === "none") {
      await new Promise((r) => setTimeout(r, (windowS + WARM_UP_S) * 1000));
    } else {
      agentCpu = (await measure(ns.name, agent(tracking), windowS * 1000)).cpuSeconds;
    }
    const out = await churn;
    if (out.code !== 0) throw new Error(out.stderr);
    const c = JSON.parse(out.stdout) as { rate: number; cpuSeconds: number; seconds: number };
    console.log(JSON.stringify({
      rate,
      achieved: c.rate,
      tracking,
      agentCoreShare: agentCpu / windowS,
      churnCoreShare: c.cpuSeconds / c.seconds,
    }));
  }
}
