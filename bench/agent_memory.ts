/**
 * Where the agent's memory goes, and what V8 flags do to it: runs the agent as bench/cycle.ts
 * does (the `start` task's flags, dry run, no rule firing, period 1 s) on a filled namespace
 * table, once per set of V8 flags, and samples its resident set every 250 ms.
 *
 * CLI: `deno run -A bench/agent_memory.ts [--seconds S] [--syn-share X] ENTRIES [V8FLAGS...]`,
 * where each V8FLAGS is one comma-separated `--v8-flags=` value, `""` for none (the default). With
 * `--syn-share 1` every entry is a candidate: the worst case for memory, which must not run out.
 * Prints one JSON line per flag set: CPU seconds (children included), peak and final RSS, the
 * second at which the peak was reached, and the RSS sampled at a few instants. Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { agentCommand, option, start, usage } from "./cycle.ts";
import { createNetns, fillTable, raiseConntrackCapacity } from "./fill_table.ts";

if (import.meta.main) {
  const args = [...Deno.args];
  const seconds = option(args, "--seconds", 40);
  const synShare = option(args, "--syn-share", 0.05);
  const entries = Number(args[0] ?? 1_000_000);
  const flagSets = args.length > 1 ? args.slice(1) : [""];
  await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
  await using ns = await createNetns(denoSpawn, "bench-mem");
  const fill = await fillTable(denoSpawn, ns.name, { entries, synSentShare: synShare });
  for (const v8Flags of flagSets) {
    const subject = await start(ns.name, agentCommand({ v8Flags }));
    const samples: { t: number; rssMb: number }[] = [];
    let peakT = 0;
    let peakMb = 0;
    const t0 = performance.now();
    let last = usage(subject.pid);
    while (performance.now() - t0 < seconds * 1000) {
      await new Promise((r) => setTimeout(r, 250));
      const now = usage(subject.pid);
      if (now.rssKb === 0) break; // gone (out of memory?)
      last = now;
      const t = (performance.now() - t0) / 1000;
      if (now.peakRssKb / 1024 > peakMb) {
        peakMb = now.peakRssKb / 1024;
        peakT = t;
      }
      samples.push({ t, rssMb: Math.round(now.rssKb / 1024) });
    }
    const alive = usage(subject.pid).rssKb > 0;
    await subject[Symbol.asyncDispose]();
    const at = (s: number) => samples.find((x) => x.t >= s)?.rssMb;
    console.log(JSON.stringify({
      entries: fill.count,
      synShare,
      v8Flags,
      seconds,
      alive,
      cpuSeconds: last.cpuSeconds,
      peakRssMb: Math.round(last.peakRssKb / 1024),
      peakAtS: Math.round(peakT * 10) / 10,
      finalRssMb: Math.round(last.rssKb / 1024),
      rssMbAt: { 1: at(1), 2: at(2), 5: at(5), 10: at(10), 20: at(20), 30: at(30) },
    }));
  }
}
