/**
 * Peak memory of the agent in event mode against dump mode on one filled table: the agent as
 * deployed (the `start` task's flags, dry run, no rule firing, period 1 s), its resident set
 * sampled every 250 ms for SECONDS seconds, once per stale share and tracking mode.
 *
 * CLI: `deno run -A bench/events_memory.ts [--seconds S] [--entries N] [--modes events,dump]
 * STALE...`, where each STALE is a count of stale (`SYN_SENT [UNREPLIED]`) entries if at least 1,
 * else a share of the table (default `100 0.05` on 1M entries, 40 s). Prints one JSON line per
 * run. Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { agentCommand, option, start, usage } from "./cycle.ts";
import { createNetns, fillTable, raiseConntrackCapacity } from "./fill_table.ts";

const args = [...Deno.args];
const seconds = option(args, "--seconds", 40);
const entries = option(args, "--entries", 1_000_000);
const modesAt = args.indexOf("--modes");
const modes = modesAt < 0 ? ["events", "dump"] : args.splice(modesAt, 2)[1]!.split(",");
const stales = args.length > 0 ? args.map(Number) : [100, 0.05];

await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
for (const stale of stales) {
  const synSentShare = stale >= 1 ? stale / entries : stale;
  await using ns = await createNetns(denoSpawn, "bench-evmem");
  const fill = await fillTable(denoSpawn, ns.name, { entries, synSentShare });
  for (const tracking of modes) {
    await using subject = await start(ns.name, agentCommand({ tracking }));
    const t0 = performance.now();
    const rssAt: Record<number, number> = {};
    let last = usage(subject.pid);
    while (performance.now() - t0 < seconds * 1000) {
      await new Promise((r) => setTimeout(r, 250));
      const now = usage(subject.pid);
      if (now.rssKb === 0) break; // gone (out of memory?)
      last = now;
      const t = Math.floor((performance.now() - t0) / 1000);
      if (t % 10 === 0) rssAt[t] = Math.round(now.rssKb / 1024);
    }
    console.log(JSON.stringify({
      entries: fill.count,
      stale: Math.round(synSentShare * entries),
      tracking,
      seconds,
      cpuSeconds: last.cpuSeconds,
      peakRssMb: Math.round(last.peakRssKb / 1024),
      finalRssMb: Math.round(last.rssKb / 1024),
      rssMbAt: rssAt,
    }));
  }
}
