/**
 * Measures what each `conntrack -L` form costs on a filled table, and whether it still sees every
 * TCP `SYN_SENT [UNREPLIED]` entry of both families and all zones.
 *
 * CLI: `deno run -A bench/listing.ts [ENTRIES...]` (default `100000 1000000`); prints a markdown
 * table per size. Needs root (namespaces, host-wide `nf_conntrack_max`).
 *
 * @module
 */
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { createNetns, entryAt, fillTable, raiseConntrackCapacity } from "./fill_table.ts";
import type { FillOptions } from "./fill_table.ts";

/** TCP `SYN_SENT [UNREPLIED]` entries a listing printed, by family and zone. */
export interface SynSentSeen {
  /** IPv4 entries in zone 0. */
  readonly ipv4: number;
  /** IPv6 entries in zone 0. */
  readonly ipv6: number;
  /** Entries (either family) in a non-zero zone. */
  readonly zoned: number;
}

/** One run of one listing form. */
export interface ListingRun {
  /** Wall seconds until conntrack exited and its output was read. */
  readonly wallSeconds: number;
  /** User CPU seconds of the conntrack process. */
  readonly userSeconds: number;
  /** System CPU seconds of the conntrack process (mostly the kernel walking the table). */
  readonly systemSeconds: number;
  /** Lines printed. */
  readonly lines: number;
  /** The SYN_SENT [UNREPLIED] entries among them. */
  readonly synSent: SynSentSeen;
}

const CLOCK_TICKS = 100;

/**
 * Runs `conntrack ARGS` once in `netns`, counting its output and its CPU time. The CPU time is
 * read from the wrapping shell's `cutime`+`cstime` after it has waited for conntrack.
 */
export async function runListing(
  spawn: SpawnCommand,
  netns: string,
  args: readonly string[],
): Promise<ListingRun> {
  const start = performance.now();
  const script = `conntrack ${args.join(" ")} 2>/dev/null; cat /proc/$$/stat >&2`;
  const child = spawn("ip", ["netns", "exec", netns, "sh", "-c", script]);
  let lines = 0;
  let ipv4 = 0;
  let ipv6 = 0;
  let zoned = 0;
  let rest = "";
  const count = (line: string) => {
    if (line === "") return;
    lines++;
    if (!line.startsWith("tcp ") || !line.includes(" SYN_SENT ")) return;
    if (!line.includes("[UNREPLIED]")) return;
    if (/ zone=[1-9]/.test(line)) zoned++;
    else if (line.includes("src=") && line.split("src=")[1]?.includes(":")) ipv6++;
    else ipv4++;
  };
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop() ?? "";
    for (const line of parts) count(line);
  }
  count(rest);
  const status = await child.status;
  const wallSeconds = (performance.now() - start) / 1000;
  const fields = status.stderr.slice(status.stderr.lastIndexOf(")") + 2).split(" ");
  const userSeconds = Number(fields[13]) / CLOCK_TICKS;
  const systemSeconds = Number(fields[14]) / CLOCK_TICKS;
  return { wallSeconds, userSeconds, systemSeconds, lines, synSent: { ipv4, ipv6, zoned } };
}

/** The listing forms compared. */
export const FORMS: readonly (readonly string[])[] = [
  ["-L"],
  ["-L", "-p", "tcp"],
  ["-L", "-p", "tcp", "--state", "SYN_SENT"],
  ["-L", "-u", "UNREPLIED"],
  ["-L", "-p", "tcp", "-u", "UNREPLIED"],
  ["-L", "-p", "tcp", "--state", "SYN_SENT", "-u", "UNREPLIED"],
  ["-L", "-u", "UNREPLIED", "-o", "id"],
  ["-L", "-p", "tcp", "-u", "UNREPLIED", "-o", "id"],
  ["-L", "-f", "ipv4", "-u", "UNREPLIED"],
  ["-L", "-f", "ipv6", "-u", "UNREPLIED"],
  ["-L", "-f", "ipv4"],
  ["-L", "-d", "192.0.2.0", "--mask-dst", "255.255.255.0"],
  ["-L", "-d", "192.0.2.0", "--mask-dst", "255.255.255.0", "-u", "UNREPLIED"],
  ["-L", "-p", "tcp", "-d", "192.0.2.0", "--mask-dst", "255.255.255.0", "-u", "UNREPLIED"],
  // Matches 1 in 200 entries: shows whether the destination filter runs in the kernel.
  ["-L", "-d", "192.0.2.1", "--mask-dst", "255.255.255.255"],
];

/** What a fill put in the table: the SYN_SENT [UNREPLIED] entries by family and zone. */
export function expectedSynSent(options: FillOptions): SynSentSeen {
  let ipv4 = 0;
  let ipv6 = 0;
  let zoned = 0;
  for (let i = 0; i < options.entries; i++) {
    const entry = entryAt(i, options);
    if (entry.kind === "established") continue;
    if (entry.flow.zone !== 0) zoned++;
    else if (entry.flow.family === "ipv6") ipv6++;
    else ipv4++;
  }
  return { ipv4, ipv6, zoned };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

async function benchSize(entries: number, repeats: number): Promise<string> {
  await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
  await using ns = await createNetns(denoSpawn, "bench-listing");
  const options: FillOptions = { entries };
  const fill = await fillTable(denoSpawn, ns.name, options);
  const want = expectedSynSent(options);
  const rows = [
    `### ${fill.count} entries (filled in ${fill.seconds.toFixed(1)} s); ` +
    `SYN_SENT [UNREPLIED] in table: ipv4 ${want.ipv4}, ipv6 ${want.ipv6}, zoned ${want.zoned}`,
    "",
    `| form | wall s (median of ${repeats}) | user s | sys s | lines | SYN_SENT v4/v6/zoned | all |`,
    "|---|---|---|---|---|---|---|",
  ];
  for (const form of FORMS) {
    const runs: ListingRun[] = [];
    for (let r = 0; r < repeats; r++) runs.push(await runListing(denoSpawn, ns.name, form));
    const last = runs[runs.length - 1];
    if (last === undefined) continue;
    const seen = last.synSent;
    const all = seen.ipv4 === want.ipv4 && seen.ipv6 === want.ipv6 && seen.zoned === want.zoned;
    rows.push(
      `| \`conntrack ${form.join(" ")}\` | ${
        median(runs.map((x) => x.wallSeconds)).toFixed(3)
      } | ` +
        `${median(runs.map((x) => x.userSeconds)).toFixed(2)} | ` +
        `${median(runs.map((x) => x.systemSeconds)).toFixed(2)} | ${last.lines} | ` +
        `${seen.ipv4}/${seen.ipv6}/${seen.zoned} | ${all ? "yes" : "no"} |`,
    );
  }
  return rows.join("\n");
}

if (import.meta.main) {
  const sizes = Deno.args.length > 0 ? Deno.args.map(Number) : [100_000, 1_000_000];
  for (const size of sizes) {
    console.log(await benchSize(size, size >= 1_000_000 ? 3 : 5));
    console.log("");
  }
}
