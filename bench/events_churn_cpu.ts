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
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { agentCommand, measure, option } from "./cycle.ts";
import { createNetns, enableConntrack, runScriptInNetns } from "./fill_table.ts";

const CHURN = new URL("./events_churn.ts", import.meta.url).pathname;
const WARM_UP_S = 5;

const args = [...Deno.args];
const windowS = option(args, "--window", 20);
const modesAt = args.indexOf("--modes");
const modes = modesAt < 0 ? ["none", "events", "dump"] : args.splice(modesAt, 2)[1]!.split(",");
const rates = args.length > 0 ? args.map(Number) : [1000];
for (const rate of rates) {
  for (const tracking of modes) {
    await using ns = await createNetns(denoSpawn, "bench-churn");
    await enableConntrack(denoSpawn, ns.name);
    const churn = runScriptInNetns(denoSpawn, ns.name, CHURN, [
      String(rate),
      String(windowS + WARM_UP_S + 3),
      "18080",
    ]);
    let agentCpu = 0;
    if (tracking === "none") {
      await new Promise((r) => setTimeout(r, (windowS + WARM_UP_S) * 1000));
    } else {
      agentCpu = (await measure(ns.name, agentCommand({ tracking }), windowS * 1000)).cpuSeconds;
    }
    const c = JSON.parse(await churn) as { rate: number; cpuSeconds: number; seconds: number };
    console.log(JSON.stringify({
      rate,
      achieved: c.rate,
      tracking,
      agentCoreShare: agentCpu / windowS,
      churnCoreShare: c.cpuSeconds / c.seconds,
    }));
  }
}
