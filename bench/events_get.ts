/**
 * What one period of event tracking costs the agent when nothing happens but stale entries
 * linger: one GET per tracked entry (`ct_get.ts`), against the status-filtered dump that dump
 * tracking makes instead, on a filled table. Prints the wall and CPU milliseconds of each, the
 * median of 20 rounds.
 *
 * CLI: `deno run -A bench/events_get.ts ENTRIES STALE` (default 100000 100). Needs root: it fills
 * a namespace (raising the host's conntrack limits for the run and putting them back), then runs
 * itself inside it, since a netlink socket belongs to the namespace of its process.
 *
 * @module
 */
import process from "node:process";
import type { Candidate } from "../lib/core/flow.ts";
import { openNetlinkLister } from "../lib/table/netlink/netlink_lister.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { getFlows } from "../lib/table/netlink/ct_get.ts";
import { openNetlinkLibraries, RawNetlinkSocket } from "../lib/seams/netlink_socket.ts";
import { createNetns, fillTable, raiseConntrackCapacity, runScriptInNetns } from "./fill_table.ts";

const ROUNDS = 20;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function timed(fn: () => Promise<void> | void): Promise<{ wallMs: number; cpuMs: number }> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await fn();
  const used = process.cpuUsage(cpu);
  return { wallMs: performance.now() - start, cpuMs: (used.user + used.system) / 1000 };
}

async function inside(): Promise<void> {
  const dump = openNetlinkLister();
  if (dump.kind !== "ok") throw new Error(dump.reason);
  const opened = openNetlinkLibraries();
  if (opened.kind !== "ok") throw new Error(opened.reason);
  using libs = opened.libraries;
  const socket = RawNetlinkSocket.open(libs, { receiveBufferBytes: 128 * 4096 });
  if (typeof socket === "string") throw new Error(socket);
  let candidates: Candidate[] = [];
  const dumps: { wallMs: number; cpuMs: number }[] = [];
  const gets: { wallMs: number; cpuMs: number }[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const seen: Candidate[] = [];
    dumps.push(
      await timed(async () => {
        await dump.lister.list({ onBatch: (b) => void seen.push(...b) });
      }),
    );
    // The agent asks about the same tracked flows every period (it keeps them between dumps).
    if (candidates.length === 0) candidates = seen;
    const flows = candidates.map((c) => c.flow);
    let live = 0;
    gets.push(
      await timed(() => {
        getFlows(socket, flows, Math.floor(Date.now() / 1000), (_, a) => {
          if (a.kind === "candidate") live++;
        });
      }),
    );
    if (live !== flows.length) throw new Error(`GET found ${live} of ${flows.length}`);
  }
  socket.close();
  dump.lister[Symbol.dispose]();
  const summary = (xs: { wallMs: number; cpuMs: number }[]) => ({
    wallMs: Math.round(median(xs.map((x) => x.wallMs)) * 100) / 100,
    cpuMs: Math.round(median(xs.map((x) => x.cpuMs)) * 100) / 100,
  });
  console.log(JSON.stringify({
    candidates: candidates.length,
    dump: summary(dumps),
    getRound: summary(gets),
  }));
}

if (Deno.args[0] === "--inside") {
  await inside();
} else {
  const entries = Number(Deno.args[0] ?? 100_000);
  const stale = Number(Deno.args[1] ?? 100);
  await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
  await using ns = await createNetns(denoSpawn, "bench-get");
  await fillTable(denoSpawn, ns.name, { entries, synSentShare: stale / entries, dnatShare: 1e-9 });
  const out = await runScriptInNetns(denoSpawn, ns.name, new URL(import.meta.url).pathname, [
    "--inside",
  ]);
  console.log(JSON.stringify({ entries, stale, ...JSON.parse(out) }));
}
