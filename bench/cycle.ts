/**
 * What the agent costs on a filled table, against the bare listing it relies on and against the
 * original Go agent's pipeline, each run alone in the same namespace over the same window:
 *
 * - `agent`: `main.ts` with the `start` task's permissions, metrics on a local port (to count its
 *   listings), `--log-format json`, in dry run with no rule able to fire (`--unreplied-max-age 0
 *   --nat-source off`), so the table stays the same for all and what is measured is the steady
 *   state: list, parse, track, pace.
 * - `bare`: `conntrack -L -p tcp -u UNREPLIED -o id` (the agent's listing), then one period.
 * - `barePaced`: the same listing, paced as the agent paces itself under `--busy-limit`: the
 *   same cadence, so that the window's CPU compares like with like. CPU per listing is reported
 *   for every subject too.
 * - `original`: `conntrack -L -p tcp | grep UNREPLIED`, then a pause of one period.
 *
 * CPU is user+system time of the process and all its children (reaped children through
 * `cutime`/`cstime`, running ones from their own `/proc/<pid>/stat`), counted after a warm-up;
 * memory is the agent's `VmHWM` (peak) and `VmRSS`.
 *
 * CLI: `deno run -A bench/cycle.ts [--window S] [--period MS] [--busy-limit F] [--soak S]
 * ENTRIES...` (default window 30 s, period 1000 ms, busy limit 0.2, sizes 100000 1000000). `--soak S` instead runs only the
 * agent for S seconds on the first size and prints its RSS every 30 s. Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import type { SpawnedProcess } from "../lib/seams/spawn.ts";
import { createNetns, fillTable, raiseConntrackCapacity } from "./fill_table.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const CLOCK_TICKS = 100;
const WARM_UP_MS = 5000;

/** CPU seconds of a process and its descendants, and its memory. */
export interface Usage {
  /** User+system seconds, children included. */
  readonly cpuSeconds: number;
  /** Peak resident set, kB (`VmHWM`). */
  readonly peakRssKb: number;
  /** Current resident set, kB (`VmRSS`). */
  readonly rssKb: number;
}

/** The fields of `/proc/<pid>/stat` after the command name, or undefined when gone. */
function statFields(pid: number): string[] | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

function children(): Map<number, number[]> {
  const byParent = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) continue;
    const ppid = Number(statFields(pid)?.[1]);
    if (!Number.isInteger(ppid)) continue;
    byParent.set(ppid, [...(byParent.get(ppid) ?? []), pid]);
  }
  return byParent;
}

/** Usage of `pid` and its whole process tree now. */
export function usage(pid: number): Usage {
  const tree = children();
  let ticks = 0;
  const visit = (p: number, root: boolean) => {
    const f = statFields(p);
    if (f === undefined) return;
    // utime, stime (fields 14, 15) and for the root cutime, cstime (16, 17): reaped children.
    ticks += Number(f[11]) + Number(f[12]);
    if (root) ticks += Number(f[13]) + Number(f[14]);
    for (const child of tree.get(p) ?? []) visit(child, false);
  };
  visit(pid, true);
  let status = "";
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    // Gone: no memory figures.
  }
  const kb = (name: string) => Number(status.match(new RegExp(`${name}:\\s+(\\d+)`))?.[1] ?? 0);
  return { cpuSeconds: ticks / CLOCK_TICKS, peakRssKb: kb("VmHWM"), rssKb: kb("VmRSS") };
}

/** A started subject: its pid (read from the wrapper shell) and the process. */
export interface Subject extends AsyncDisposable {
  readonly pid: number;
  /** Lines the subject has printed so far (the shell loops print one per listing). */
  readonly printed: () => number;
}

/** Starts `command` in `netns`, its output discarded; disposing of it stops it. */
export async function start(netns: string, command: readonly string[]): Promise<Subject> {
  const controller = new AbortController();
  // The shell prints its pid, then execs `ip netns exec`, which execs the command: one pid.
  const quoted = command.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  const child: SpawnedProcess = denoSpawn(
    "sh",
    ["-c", `echo $$; exec ip netns exec ${netns} ${quoted} 2>/dev/null`],
    { signal: controller.signal },
  );
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    first += value;
  }
  const pid = Number(first.split("\n")[0]);
  // Drain the rest (the agent's JSON log) so the subject never blocks on a full pipe.
  let printed = first.split("\n").length - 2;
  const drained = (async () => {
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      printed += chunk.value.split("\n").length - 1;
    }
  })();
  return {
    pid,
    printed: () => printed,
    [Symbol.asyncDispose]: async () => {
      controller.abort();
      await child.status;
      await drained.catch(() => {});
    },
  };
}

/**
 * The permission flags of the `start` task in deno.json, so that the agent is measured exactly as
 * it is deployed.
 */
export function startTaskFlags(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url))) as {
    readonly tasks?: { readonly start?: string };
  };
  const words = (config.tasks?.start ?? "").split(/\s+/);
  return words.filter((w) => w.startsWith("--"));
}

/** Where the measured agent serves its metrics inside the namespace, to count its listings. */
const AGENT_METRICS = "127.0.0.1:19469";

/** Options of {@link agentCommand}. */
export interface AgentCommandOptions {
  /**
   * The period, `--dump-frequency`.
   * @default {1000}
   */
  readonly periodMs?: number;
  /**
   * Where the agent serves its metrics; empty for nowhere.
   * @default {""}
   */
  readonly metricsAddress?: string;
  /** `--busy-limit`, e.g. `20%`; the agent's default when absent. */
  readonly busyLimit?: string;
  /** `--tracking` (`auto`, `events` or `dump`); the agent's default when absent. */
  readonly tracking?: string;
  /**
   * One comma-separated `--v8-flags=` value in place of the `start` task's; `""` for none.
   * Absent: the `start` task's.
   */
  readonly v8Flags?: string;
}

/**
 * The measured agent's command line: `main.ts` with the `start` task's permissions,
 * `--log-format json`, in dry run with no rule able to fire (`--unreplied-max-age 0
 * --nat-source off`), so the table stays the same whatever is measured.
 */
export function agentCommand(options: AgentCommandOptions = {}): string[] {
  const { periodMs = 1000, metricsAddress = "", busyLimit, tracking, v8Flags } = options;
  const flags = v8Flags === undefined ? startTaskFlags() : [
    ...startTaskFlags().filter((f) => !f.startsWith("--v8-flags")),
    ...(v8Flags === "" ? [] : [`--v8-flags=${v8Flags}`]),
  ];
  return [
    Deno.execPath(),
    "run",
    ...flags,
    MAIN,
    "--metrics-address",
    metricsAddress,
    ...(busyLimit === undefined ? [] : ["--busy-limit", busyLimit]),
    "--log-format",
    "json",
    "--dump-frequency",
    `${periodMs}ms`,
    "--dry-run",
    "--unreplied-max-age",
    "0",
    "--nat-source",
    "off",
    ...(tracking === undefined ? [] : ["--tracking", tracking]),
  ];
}

/** `body` then a pause of one period, forever, printing one line per round. */
export function loopCommand(body: string, periodMs: number): string[] {
  return ["sh", "-c", `while :; do ${body}; echo; sleep ${periodMs / 1000}; done`];
}

/**
 * `body`, then the pause the agent would take after it under `busyLimit` (the longer of the
 * period and the body's time × (1 − limit) / limit, as `lib/loop/pacing.ts` computes it), forever,
 * printing one line per round. The clock readings cost a few `date` processes per round.
 */
function pacedLoopCommand(body: string, periodMs: number, busyLimit: number): string[] {
  const factor = Math.round((1 - busyLimit) / busyLimit * 1000);
  return [
    "sh",
    "-c",
    [
      "while :; do",
      `s=$(date +%s%N); ${body}; e=$(date +%s%N);`,
      `p=$(( (e - s) / 1000000 * ${factor} / 1000 )); [ "$p" -lt ${periodMs} ] && p=${periodMs};`,
      `echo; sleep "$((p / 1000)).$(printf %03d $((p % 1000)))";`,
      "done",
    ].join(" "),
  ];
}

/** The agent's listing, as the bare subjects run it. */
const BARE_LISTING = "conntrack -L -p tcp -u UNREPLIED -o id >/dev/null 2>&1";

/**
 * The subjects compared: the original pipeline every period; the bare listing every period and
 * paced as the agent paces itself; and the agent.
 */
export function subjects(
  periodMs: number,
  busyLimit: number,
): Readonly<Record<string, readonly string[]>> {
  return {
    original: loopCommand("conntrack -L -p tcp 2>/dev/null | grep UNREPLIED >/dev/null", periodMs),
    bare: loopCommand(BARE_LISTING, periodMs),
    barePaced: pacedLoopCommand(BARE_LISTING, periodMs, busyLimit),
    agent: agentCommand({
      periodMs,
      metricsAddress: AGENT_METRICS,
      busyLimit: `${busyLimit * 100}%`,
    }),
  };
}

/** Listings the agent in `netns` has made so far, from its `/metrics`. */
async function agentListings(netns: string): Promise<number> {
  const [host, port] = AGENT_METRICS.split(":");
  const script = `exec 3<>/dev/tcp/${host}/${port}; ` +
    `printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3`;
  const child = denoSpawn("ip", ["netns", "exec", netns, "bash", "-c", script]);
  let text = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) text += chunk;
  await child.status;
  return Number(text.match(/^conntrack_cleaner_dumps_total (\d+)/m)?.[1] ?? NaN);
}

/** What one subject cost over the window. */
export interface Measured extends Usage {
  /** RSS at the start of the window, kB. */
  readonly peakRssStartKb: number;
  /** Listings (rounds) in the window. */
  readonly listings: number;
  /** CPU seconds per listing. */
  readonly cpuPerListing: number;
}

/** Runs one subject and returns its usage over `windowMs` after the warm-up. */
export async function measure(
  netns: string,
  command: readonly string[],
  windowMs: number,
  listings?: () => Promise<number>,
): Promise<Measured> {
  await using subject = await start(netns, command);
  const count = listings ?? (() => Promise.resolve(subject.printed()));
  await new Promise((r) => setTimeout(r, WARM_UP_MS));
  const before = usage(subject.pid);
  const listedBefore = await count();
  await new Promise((r) => setTimeout(r, windowMs));
  const after = usage(subject.pid);
  const listed = (await count()) - listedBefore;
  const cpuSeconds = after.cpuSeconds - before.cpuSeconds;
  return {
    ...after,
    cpuSeconds,
    peakRssStartKb: before.rssKb,
    listings: listed,
    cpuPerListing: cpuSeconds / listed,
  };
}

/** Removes `name VALUE` from `args` and returns the value as a number, or `fallback`. */
export function option(args: string[], name: string, fallback: number): number {
  const at = args.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(args[at + 1]);
  args.splice(at, 2);
  return value;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const windowS = option(args, "--window", 30);
  const periodMs = option(args, "--period", 1000);
  const soakS = option(args, "--soak", 0);
  const busyLimit = option(args, "--busy-limit", 0.2);
  const sizes = args.length > 0 ? args.map(Number) : [100_000, 1_000_000];
  for (const entries of sizes) {
    await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
    await using ns = await createNetns(denoSpawn, "bench-cycle");
    const fill = await fillTable(denoSpawn, ns.name, { entries });
    if (soakS > 0) {
      await using agent = await start(
        ns.name,
        agentCommand({ periodMs, metricsAddress: AGENT_METRICS, busyLimit: `${busyLimit * 100}%` }),
      );
      const t0 = performance.now();
      for (let t = 0; t <= soakS; t += 30) {
        await new Promise((r) => setTimeout(r, Math.max(0, t0 + t * 1000 - performance.now())));
        console.log(JSON.stringify({ entries: fill.count, t, ...usage(agent.pid) }));
      }
      break;
    }
    const results: Record<string, Measured> = {};
    for (const [name, command] of Object.entries(subjects(periodMs, busyLimit))) {
      const listings = name === "agent" ? () => agentListings(ns.name) : undefined;
      results[name] = await measure(ns.name, command, windowS * 1000, listings);
    }
    const cpu = (name: string) => results[name]?.cpuSeconds ?? NaN;
    const perListing = (name: string) => results[name]?.cpuPerListing ?? NaN;
    console.log(JSON.stringify({
      entries: fill.count,
      windowS,
      periodMs,
      busyLimit,
      results,
      agentVsOriginal: cpu("agent") / cpu("original"),
      agentVsBare: cpu("agent") / cpu("bare"),
      agentVsBarePaced: cpu("agent") / cpu("barePaced"),
      agentVsBarePerListing: perListing("agent") / perListing("barePaced"),
    }));
  }
}
