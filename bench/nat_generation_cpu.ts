/**
 * What following the nftables generation saves: the agent before (a checkout given by path,
 * reading the rules every cycle that has candidates, spaced by their cost) and after (this tree),
 * each run alone in the same namespace over the same window, with kube-proxy-like nftables rules
 * loaded, an unchanged ruleset and stale entries present (so every cycle has candidates). Reports
 * the rule programs spawned per minute (counted by wrappers of the same names first on `PATH`) and
 * the agent's CPU (`bench/cycle.ts`'s measure: user+system of the process tree, children included).
 *
 * CLI: `deno run -A bench/nat_generation_cpu.ts --before /tmp/cct-before [--window S]
 * [--entries N] [--stale N]` (default window 60 s, 100 entries, all stale). Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import { measure, option, startTaskFlags } from "./cycle.ts";
import { createNetns, fillTable, raiseConntrackCapacity } from "./fill_table.ts";
import { nftService, nftSkeleton } from "../tests/e2e/testbed/proxy_rules.ts";

const PROGRAMS = ["iptables-save", "ip6tables-save", "nft", "iptables-legacy-save"];
/** bench/cycle.ts's warm-up before its window. */
const WARM_UP_MS = 5000;

const args = [...Deno.args];
const windowS = option(args, "--window", 60);
const entries = option(args, "--entries", 100);
const stale = option(args, "--stale", 100);
const beforeAt = args.indexOf("--before");
const before = beforeAt >= 0 ? args[beforeAt + 1] : undefined;
if (!before) {
  console.error("usage: bench/nat_generation_cpu.ts --before DIR [--window S] [--entries N]");
  Deno.exit(2);
}

function agent(root: string, wrappers: string): string[] {
  return [
    "env",
    `PATH=${wrappers}:${Deno.env.get("PATH")}`,
    Deno.execPath(),
    "run",
    ...startTaskFlags(),
    `${root}/main.ts`,
    ...["--metrics-address", "", "--log-format", "json", "--dump-frequency", "1000ms"],
    ...["--dry-run", "--unreplied-max-age", "0", "--nat-source", "auto"],
  ];
}

const wrappers = await Deno.makeTempDir({ prefix: "cct-nat-wrappers-" });
const log = `${wrappers}/runs.log`;
for (const program of PROGRAMS) {
  await Deno.writeTextFile(
    `${wrappers}/${program}`,
    `#!/bin/sh\necho ${program} >> ${log}\nPATH=${Deno.env.get("PATH")}\nexec ${program} "$@"\n`,
    { mode: 0o755 },
  );
}
const runs = async () => {
  try {
    return (await Deno.readTextFile(log)).split("\n").filter((l) => l !== "").length;
  } catch {
    return 0;
  }
};

try {
  await using _capacity = await raiseConntrackCapacity(denoSpawn, Math.max(entries, 1));
  await using ns = await createNetns(denoSpawn, "bench-natgen");
  const rules = nftSkeleton() + nftService("ipv4", 443, "kube") + nftService("ipv6", 443, "kube");
  const loaded = await runToEnd(denoSpawn, "ip", ["netns", "exec", ns.name, "nft", "-f", "-"], {
    stdin: rules,
  });
  if (loaded.code !== 0) throw new Error(`Cannot load the nftables rules: ${loaded.stderr}`);
  const fill = await fillTable(denoSpawn, ns.name, {
    entries,
    synSentShare: stale / entries,
    dnatShare: 1e-9,
  });
  const results: Record<string, unknown> = {};
  const subjects: readonly (readonly [string, string])[] = [
    ["before", before],
    ["after", new URL("..", import.meta.url).pathname],
  ];
  for (const [name, root] of subjects) {
    let atWindowStart = 0;
    const mark = setTimeout(async () => {
      atWindowStart = await runs();
    }, WARM_UP_MS);
    const measured = await measure(ns.name, agent(root, wrappers), windowS * 1000);
    clearTimeout(mark);
    const spawned = (await runs()) - atWindowStart;
    results[name] = {
      spawnsPerMinute: Math.round((spawned / windowS) * 60),
      coreShare: Number((measured.cpuSeconds / windowS).toFixed(4)),
      peakRssKb: measured.peakRssKb,
    };
    console.error(name, JSON.stringify(results[name]));
    await Deno.remove(log).catch(() => {});
  }
  console.log(JSON.stringify({ entries: fill.count, stale, windowS, ...results }));
} finally {
  await Deno.remove(wrappers, { recursive: true });
}
