/**
 * What the agent costs on a filled table, against the bare listing it relies on and against the
 * original Go agent's pipeline, each run alone in the same namespace over the same window:
 *
 * - `agent`: `main.ts` with the `start` task's permissions, `--metrics-address "" --log-format
 *   json`, in dry run with no rule able to fire (`--unreplied-max-age 0 --nat-source off`), so the
 *   table stays the same for all three and what is measured is the steady state: list, parse,
 *   track.
 * - `bare`: `conntrack -L -p tcp -u UNREPLIED` (the agent's listing), then a pause of one period.
 * - `original`: `conntrack -L -p tcp | grep UNREPLIED`, then a pause of one period.
 *
 * CPU is user+system time of the process and all its children (reaped children through
 * `cutime`/`cstime`, running ones from their own `/proc/<pid>/stat`), counted after a warm-up;
 * memory is the agent's `VmHWM` (peak) and `VmRSS`.
 *
 * CLI: `deno run -A bench/cycle.ts [--window S] [--period MS] [--soak S] ENTRIES...`
 * (default window 30 s, period 1000 ms, sizes 100000 1000000). `--soak S` instead runs only the
 * agent for S seconds on the first size and prints its RSS every 30 s. Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/process.ts";
import type { SpawnedProcess } from "../lib/command.ts";
import { createNetns, fillTable } from "./fill_table.ts";

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
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  return {
    pid,
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

function agentCommand(periodMs: number): string[] {
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
    `${periodMs}ms`,
    "--dry-run",
    "--unreplied-max-age",
    "0",
    "--nat-source",
    "off",
  ];
}

function loopCommand(body: string, periodMs: number): string[] {
  return ["sh", "-c", `while :; do ${body}; sleep ${periodMs / 1000}; done`];
}

/** The three subjects compared. */
export function subjects(periodMs: number): Readonly<Record<string, readonly string[]>> {
  return {
    original: loopCommand("conntrack -L -p tcp 2>/dev/null | grep UNREPLIED >/dev/null", periodMs),
    bare: loopCommand("conntrack -L -p tcp -u UNREPLIED >/dev/null 2>&1", periodMs),
    agent: agentCommand(periodMs),
  };
}

/** Runs one subject and returns its usage over `windowMs` after the warm-up. */
export async function measure(
  netns: string,
  command: readonly string[],
  windowMs: number,
): Promise<Usage & { readonly peakRssStartKb: number }> {
  await using subject = await start(netns, command);
  await new Promise((r) => setTimeout(r, WARM_UP_MS));
  const before = usage(subject.pid);
  await new Promise((r) => setTimeout(r, windowMs));
  const after = usage(subject.pid);
  return {
    ...after,
    cpuSeconds: after.cpuSeconds - before.cpuSeconds,
    peakRssStartKb: before.rssKb,
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
  const sizes = args.length > 0 ? args.map(Number) : [100_000, 1_000_000];
  for (const entries of sizes) {
    await using ns = await createNetns(denoSpawn, "bench-cycle");
    const fill = await fillTable(denoSpawn, ns.name, { entries });
    if (soakS > 0) {
      await using agent = await start(ns.name, agentCommand(periodMs));
      const t0 = performance.now();
      for (let t = 0; t <= soakS; t += 30) {
        await new Promise((r) => setTimeout(r, Math.max(0, t0 + t * 1000 - performance.now())));
        console.log(JSON.stringify({ entries: fill.count, t, ...usage(agent.pid) }));
      }
      break;
    }
    const results: Record<string, Usage> = {};
    for (const [name, command] of Object.entries(subjects(periodMs))) {
      results[name] = await measure(ns.name, command, windowS * 1000);
    }
    const cpu = (name: string) => results[name]?.cpuSeconds ?? NaN;
    console.log(JSON.stringify({
      entries: fill.count,
      windowS,
      periodMs,
      results,
      agentVsOriginal: cpu("agent") / cpu("original"),
      agentVsBare: cpu("agent") / cpu("bare"),
    }));
  }
}
