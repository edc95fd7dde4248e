/**
 * Throughput of the tokenizer and the line splitter on generated `conntrack -L -p tcp -u UNREPLIED`
 * output: mostly candidate lines of both families, some in other states, some zoned, some with
 * timestamps and ids.
 *
 * Run: `deno bench bench/tokenizer_bench.ts`. Each benchmark handles `n` lines per iteration, so
 * lines per second = n / (avg time per iteration). The file also prints lines per second for each
 * size from a separate best-of-three pass, by wall clock and by CPU time, so no conversion is
 * needed.
 *
 * @module
 */
import process from "node:process";
import { splitLineBatches, splitLines } from "../lib/seams/output_lines.ts";
import { LineMemo } from "../lib/table/text/line_memo.ts";
import { tokenizeLine } from "../lib/table/text/tokenizer.ts";
import { mulberry32 } from "./random.ts";

/** The make-up of generated output. */
export interface Mix {
  /** Share of lines that are IPv6. */
  readonly ipv6: number;
  /** Share of lines with `id=` (all of them with `-o id`, as the agent lists). */
  readonly id: number;
  /** Share of `SYN_SENT` lines that are DNATed (reply from a backend, not the VIP). */
  readonly dnat: number;
}

/**
 * What the agent reads: `conntrack -L -p tcp -u UNREPLIED -o id`, 10% IPv6 (as
 * bench/fill_table.ts fills), and 20% of the `SYN_SENT` entries DNATed.
 */
export const TYPICAL: Mix = { ipv6: 0.1, id: 1, dnat: 0.2 };
/** The mix this bench used before (a third IPv6, `id=` on 5%, no NAT), kept for comparison. */
export const LEGACY: Mix = { ipv6: 0.33, id: 0.05, dnat: 0 };

/**
 * `count` lines as conntrack 1.4.7 prints them: 85% `SYN_SENT [UNREPLIED]`, 15%
 * `SYN_RECV`/`CLOSE` unreplied, a tenth zoned, 5% with `delta-time=`; IPv6, `id=` and DNAT as
 * `mix` says.
 */
export function generateLines(count: number, seed = 1, mix: Mix = TYPICAL): string[] {
  const next = mulberry32(seed);
  const lines: string[] = new Array(count);
  for (let n = 0; n < count; n++) {
    const r = next();
    const v6 = next() < mix.ipv6;
    // Canonical texts, as inet_ntop prints them (groups of at most four hex digits).
    const client = v6
      ? `2001:db8:${((n >>> 15) + 1).toString(16)}::${((n & 0x7fff) + 1).toString(16)}`
      : `198.51.${100 + ((n >>> 16) & 0x3f)}.${(n >>> 8) & 0xff}`;
    const vip = v6 ? `2001:db8:100::${(n % 50) + 1}` : `192.0.2.${(n % 50) + 1}`;
    const sport = 32768 + (n % 28000);
    const dport = next() < 0.7 ? 443 : 80;
    const state = r < 0.85 ? "SYN_SENT" : r < 0.9 ? "SYN_RECV" : "CLOSE";
    const backend = next() < mix.dnat
      ? (v6 ? `fd00:10::${(n % 200) + 1}` : `10.244.${n % 16}.${(n % 200) + 1}`)
      : vip;
    const rport = backend === vip ? dport : 8443;
    const timeout = Math.floor(next() * 120);
    const zone = next() < 0.1 ? ` zone=${1 + Math.floor(next() * 9)}` : "";
    const delta = next() < 0.05 ? ` delta-time=${Math.floor(next() * 300)}` : "";
    const id = next() < mix.id ? ` id=${Math.floor(next() * 4294967295)}` : "";
    lines[n] = `tcp      6 ${timeout} ${state} src=${client} dst=${vip} sport=${sport} ` +
      `dport=${dport} [UNREPLIED] src=${backend} dst=${client} sport=${rport} dport=${sport} ` +
      `mark=0${zone}${delta} use=1${id}`;
  }
  return lines;
}

/** Splits `text` into chunks the size conntrack's pipe delivers. */
function toChunks(text: string, size = 64 * 1024): Uint8Array[] {
  const bytes = new TextEncoder().encode(text);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.subarray(at, at + size));
  return chunks;
}

function tokenizeAll(lines: readonly string[]): number {
  let candidates = 0;
  for (const line of lines) {
    if (tokenizeLine(line).kind === "candidate") candidates++;
  }
  return candidates;
}

async function splitAll(chunks: readonly Uint8Array[]): Promise<number> {
  let count = 0;
  for await (const _ of splitLines(ReadableStream.from(chunks))) count++;
  return count;
}

/** Lines handled before timing starts, so that V8 has compiled the code being measured. */
const WARM_UP_LINES = 300_000;

/**
 * Prints lines per second for `lines` lines handled by `run`: best of three, by wall clock and by
 * the process's CPU time (which other load on the machine inflates far less). Rounds that handle
 * the first {@link WARM_UP_LINES} lines are not timed: the small sizes would otherwise measure
 * V8's compilers, whose background threads also count as CPU time.
 */
async function report(name: string, lines: number, run: () => unknown): Promise<void> {
  for (let warmed = 0; warmed < WARM_UP_LINES; warmed += lines) await run();
  let wall = Infinity;
  let cpu = Infinity;
  for (let round = 0; round < 3; round++) {
    const c0 = cpuMs();
    const t0 = performance.now();
    await run();
    wall = Math.min(wall, performance.now() - t0);
    cpu = Math.min(cpu, cpuMs() - c0);
  }
  const rate = (ms: number) => Math.round(lines / (ms / 1000)).toLocaleString("en");
  console.log(`${name}: ${lines} lines: ${rate(wall)} lines/s (wall), ${rate(cpu)} lines/s (cpu)`);
}

function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

const SIZES = [10_000, 100_000, 1_000_000] as const;
// Lines are cut from one text, as splitLines() cuts them from conntrack's output: one flat string
// and a light slice per line, instead of a string built piece by piece for every line.
const inputs = new Map(SIZES.map((n) => [n, generateLines(n, n).join("\n").split("\n")]));

for (const n of SIZES) {
  const lines = inputs.get(n) ?? [];
  // Sanity: a tokenizer that rejected the input would look fast.
  const candidates = tokenizeAll(lines);
  if (candidates < n * 0.8) throw new Error(`only ${candidates} of ${n} lines are candidates`);
  await report("tokenizeLine", n, () => tokenizeAll(lines));
  Deno.bench(
    { name: `tokenizeLine x ${n} lines`, group: "tokenize", n: n < 1e6 ? 20 : 3, warmup: 2 },
    () => {
      tokenizeAll(lines);
    },
  );
}

// What the agent does in steady state: the memo (lib/table/text/line_memo.ts) reads a line it saw in the previous
// listing with a lookup instead of a parse. Two listings alternate, the second with every timer one
// second lower, so that every round reads new timers.
for (const n of SIZES) {
  const first = inputs.get(n) ?? [];
  const second = first.map((line) =>
    line.replace(/^(tcp +6 )(\d+)/, (_, head, t) => `${head}${Number(t) - 1}`)
  )
    .join("\n").split("\n");
  const memo = new LineMemo();
  const listings = [first, second];
  let round = 0;
  const listOnce = () => {
    memo.begin();
    for (const line of listings[round++ % 2]!) memo.read(line);
    memo.end();
  };
  listOnce();
  await report("LineMemo.read, steady listing", n, listOnce);
  Deno.bench(
    { name: `LineMemo.read x ${n} lines, steady`, group: "memo", n: n < 1e6 ? 20 : 3, warmup: 2 },
    listOnce,
  );
}

// The mix this bench used before, so that figures stay comparable with earlier ones.
const legacy = generateLines(100_000, 100_000, LEGACY).join("\n").split("\n");
await report("tokenizeLine, legacy mix", legacy.length, () => tokenizeAll(legacy));

const million = inputs.get(1_000_000) ?? [];
const chunks = toChunks(million.join("\n") + "\n");
const split = await splitAll(chunks);
if (split !== million.length) throw new Error(`split ${split} lines, expected ${million.length}`);
await report("splitLines", million.length, () => splitAll(chunks));
await report("splitLines + tokenizeLine", million.length, () => splitAndTokenize(chunks));
await report(
  "splitLineBatches + tokenizeLine (as listCandidates)",
  million.length,
  () => splitBatchesAndTokenize(chunks),
);

async function splitAndTokenize(chunks: readonly Uint8Array[]): Promise<void> {
  for await (const line of splitLines(ReadableStream.from(chunks))) tokenizeLine(line);
}

async function splitBatchesAndTokenize(chunks: readonly Uint8Array[]): Promise<void> {
  for await (const batch of splitLineBatches(ReadableStream.from(chunks))) {
    for (const line of batch) tokenizeLine(line);
  }
}

Deno.bench({ name: "splitLines x 1000000 lines", group: "split", n: 3 }, async () => {
  await splitAll(chunks);
});

Deno.bench(
  { name: "splitLines + tokenizeLine x 1000000 lines", group: "split", n: 3 },
  async () => {
    await splitAndTokenize(chunks);
  },
);

Deno.bench(
  { name: "splitLineBatches + tokenizeLine x 1000000 lines", group: "split", n: 3 },
  async () => {
    await splitBatchesAndTokenize(chunks);
  },
);
