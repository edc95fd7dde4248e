/**
 * The agent as a real process: how it is started (from `deno.json`'s `start` task) and what it
 * logs, read as JSON records.
 *
 * @module
 */
import type { Clock } from "../../../lib/seams/clock.ts";
import {
  type ExitStatus,
  runToEnd,
  type SpawnCommand,
  type SpawnedProcess,
} from "../../../lib/seams/spawn.ts";
import { readLines } from "./stdout_lines.ts";
import { stderrReason, TestbedError } from "./testbed_error.ts";

/** One JSON log record of the agent. */
export interface AgentLogRecord {
  /** The constant message, e.g. `deleted stale flow`. */
  readonly message: string;
  /** Level as written, e.g. `INFO`. */
  readonly level: string;
  /** Structured properties (flattened from LogTape's `properties` when nested). */
  readonly properties: Readonly<Record<string, unknown>>;
  /** Milliseconds ({@link Clock.monotonic}) when the test read the line. */
  readonly readAt: number;
  /** The line as written. */
  readonly raw: string;
}

/** Options of {@link Testbed.startAgent}. */
export interface AgentRunOptions {
  /** Extra environment for the agent. */
  readonly env?: Readonly<Record<string, string>>;
  /** Directories put in front of `PATH` (e.g. a wrapper named `conntrack`). */
  readonly pathPrefix?: readonly string[];
  /**
   * Wait for the agent's `conntrack-cleaner started` line before resolving.
   * @default {true}
   */
  readonly waitStarted?: boolean;
}

/** The agent running as a real process in the node namespace. */
export interface AgentProcess extends AsyncDisposable {
  /** Its argv as started (after `ip netns exec <node>`). */
  readonly argv: readonly string[];
  /** JSON log records so far. */
  readonly records: readonly AgentLogRecord[];
  /** Lines that were not JSON (stack traces, deno errors). */
  readonly otherLines: readonly string[];
  /** Resolves when the agent has exited. */
  readonly status: Promise<ExitStatus>;
  /**
   * Resolves with the first record (past or future) that matches; rejects after `timeoutMs`, or
   * when the agent exits first, with the last lines it wrote.
   */
  waitFor(
    predicate: (record: AgentLogRecord) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<AgentLogRecord>;
  /** Sends SIGTERM and waits for the exit. */
  stop(): Promise<ExitStatus>;
}

/** How the agent is started, derived from `deno.json`'s `start` task. */
export interface AgentCommand {
  /** `deno run` and the start task's flags, `--config`, then the absolute entry point. */
  readonly argv: readonly string[];
}

/**
 * Reads the agent's start flags from `deno.json`'s `tasks.start`, so the tests run the agent with
 * the permissions users get, and caches its dependencies from the host namespace (the node
 * namespace has no route to the registry).
 */
export async function prepareAgentCommand(
  spawn: SpawnCommand,
  root: string,
  deno: string = Deno.execPath(),
): Promise<AgentCommand> {
  const config = JSON.parse(await Deno.readTextFile(`${root}/deno.json`)) as {
    tasks?: Record<string, unknown>;
  };
  const task = config.tasks?.["start"];
  if (typeof task !== "string") {
    throw new TestbedError(`Cannot start the agent as ${root}/deno.json has no "start" task`);
  }
  const argv = startTaskArgv(task, root, deno);
  const entry = argv[argv.length - 1] ?? "";
  const cached = await runToEnd(spawn, deno, ["cache", "--config", `${root}/deno.json`, entry]);
  if (cached.code !== 0) {
    throw new TestbedError(`Cannot cache the agent's dependencies: ${stderrReason(cached.stderr)}`);
  }
  return { argv };
}

/**
 * Turns a `deno run <flags> <entry>` task into an argv with the same flags, an explicit
 * `--config` and an absolute entry point; anything after the entry point is dropped.
 *
 * @example
 * ```ts
 * import { startTaskArgv } from "./agent_process.ts";
 * startTaskArgv("deno run --allow-ffi main.ts", "/repo", "/bin/deno");
 * // ["/bin/deno", "run", "--allow-ffi", "--config", "/repo/deno.json", "/repo/main.ts"]
 * ```
 */
export function startTaskArgv(task: string, root: string, deno: string): readonly string[] {
  const words = task.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run") {
    throw new TestbedError(
      `Cannot read the start task as "deno run …": current value is "${task}"`,
    );
  }
  const rest = words.slice(2);
  const entryAt = rest.findIndex((w) => !w.startsWith("-") && /\.(ts|js)$/.test(w));
  if (entryAt < 0) {
    throw new TestbedError(
      `Cannot find the entry point in the start task: current value is "${task}"`,
    );
  }
  const flags = rest.slice(0, entryAt);
  const entry = rest[entryAt] ?? "";
  const hasConfig = flags.some((f) => f === "--config" || f.startsWith("--config=") || f === "-c");
  return [
    deno,
    "run",
    ...flags,
    ...(hasConfig ? [] : ["--config", `${root}/deno.json`]),
    entry.startsWith("/") ? entry : `${root}/${entry}`,
  ];
}

/**
 * Parses one line the agent wrote with `--log-format json`; `undefined` when it is not JSON.
 * LogTape's `properties` object is flattened into {@link AgentLogRecord.properties}.
 */
export function parseAgentLogLine(raw: string, readAt: number): AgentLogRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  const message = typeof record["message"] === "string"
    ? record["message"]
    : typeof record["msg"] === "string"
    ? record["msg"]
    : "";
  const nested = record["properties"];
  const properties = typeof nested === "object" && nested !== null && !Array.isArray(nested)
    ? { ...record, ...(nested as Record<string, unknown>) }
    : record;
  return { message, level: String(record["level"] ?? ""), properties, readAt, raw };
}

/** Follows a started agent: collects its log records and lets a test wait for one. */
export function watchAgent(
  child: SpawnedProcess,
  stop: AbortController,
  argv: readonly string[],
  clock: Clock,
): AgentProcess {
  const records: AgentLogRecord[] = [];
  const otherLines: string[] = [];
  const listeners = new Set<() => void>();
  const reading = (async () => {
    for await (const line of readLines(child.stdout)) {
      const record = parseAgentLogLine(line, clock.monotonic());
      if (record) records.push(record);
      else if (line.trim() !== "") otherLines.push(line);
      for (const listener of listeners) listener();
    }
  })();
  const status = (async () => {
    const result = await child.status;
    await reading;
    for (const listener of listeners) listener();
    return result;
  })();
  let exited = false;
  status.then(() => exited = true);
  const tail = () => [...records.map((r) => r.raw), ...otherLines].slice(-5).join("\n  ");

  function waitFor(
    predicate: (record: AgentLogRecord) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<AgentLogRecord> {
    return new Promise((resolve, reject) => {
      const timer = AbortSignal.timeout(timeoutMs);
      const done = () => {
        listeners.delete(check);
        timer.removeEventListener("abort", onTimeout);
      };
      const check = () => {
        const found = records.find(predicate);
        if (found) {
          done();
          resolve(found);
        } else if (exited) {
          done();
          reject(
            new TestbedError(`Cannot see ${what}: the agent exited first; it wrote:\n  ${tail()}`),
          );
        }
      };
      const onTimeout = () => {
        done();
        reject(
          new TestbedError(
            `Cannot see ${what} after ${timeoutMs} ms; the agent wrote:\n  ${tail()}`,
          ),
        );
      };
      timer.addEventListener("abort", onTimeout, { once: true });
      listeners.add(check);
      check();
    });
  }

  const finish = async () => {
    stop.abort();
    return await status;
  };
  return {
    argv,
    records,
    otherLines,
    status,
    waitFor,
    stop: finish,
    [Symbol.asyncDispose]: async () => {
      await finish();
    },
  };
}
