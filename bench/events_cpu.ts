/**
 * What the agent costs with event tracking against dump tracking and against a bare
 * `conntrack -L -p tcp -u UNREPLIED` loop every second, each run alone in the same namespace over
 * the same window (`bench/cycle.ts`'s measurement: user+system CPU of the process tree after a
 * warm-up), on an empty table and on filled ones with a given number of stale entries. The agent
 * runs in dry run with no rule able to fire, so the table stays the same for all.
 *
 * The host's conntrack limits are raised for the fill and put back when the run ends (or is
 * interrupted), by `raiseConntrackCapacity()`; the hash is never made smaller than it is.
 *
 * CLI: `deno run -A bench/events_cpu.ts [--window S] [--period MS] ENTRIES:STALE...`
 * (default window 30 s, period 1000 ms, tables `0:0 100000:100 100000:5000`). Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { agentCommand, loopCommand, measure, option } from "./cycle.ts";
import type { Measured } from "./cycle.ts";
import { createNetns, fillTable, raiseConntrackCapacity } from "./fill_table.ts";
import { readSysctl } from "../tests/support/sysctl.ts";

const args = [...Deno.args];
const windowS = option(args, "--window", 30);
const periodMs = option(args, "--period", 1000);
const tables = (args.length > 0 ? args : ["0:0", "100000:100", "100000:5000"]).map((t) => {
  const [entries = 0, stale = 0] = t.split(":").map(Number);
  return { entries, stale };
});
const buckets = await readSysctl(denoSpawn, "net.netfilter.nf_conntrack_buckets");
console.error(`hash buckets: ${buckets}`);
for (const { entries, stale } of tables) {
  await using _capacity = await raiseConntrackCapacity(denoSpawn, Math.max(entries, 1));
  await using ns = await createNetns(denoSpawn, "bench-events");
  const fill = entries === 0 ? { count: 0 } : await fillTable(denoSpawn, ns.name, {
    entries,
    synSentShare: stale / entries,
    // Every SYN_SENT entry un-NATed: all of them are stale candidates.
    dnatShare: 1e-9,
  });
  const results: Record<string, Measured> = {};
  for (
    const [name, command] of [
      ["events", agentCommand({ periodMs, tracking: "events" })],
      ["dump", agentCommand({ periodMs, tracking: "dump" })],
      ["bare", loopCommand("conntrack -L -p tcp -u UNREPLIED >/dev/null 2>&1", periodMs)],
    ] as const
  ) {
    results[name] = await measure(ns.name, command, windowS * 1000);
    console.error(name, JSON.stringify(results[name]));
  }
  const core = (name: string) => (results[name]?.cpuSeconds ?? NaN) / windowS;
  console.log(JSON.stringify({
    entries: fill.count,
    stale,
    buckets: Number(buckets),
    windowS,
    periodMs,
    coreShare: { events: core("events"), dump: core("dump"), bare: core("bare") },
    eventsOverBare: core("events") / core("bare"),
    dumpOverBare: core("dump") / core("bare"),
    peakRssKb: { events: results["events"]?.peakRssKb, dump: results["dump"]?.peakRssKb },
  }));
}
