/**
 * The process seam. Every external program (conntrack, iptables-save, nft) is reached through
 * one function type, {@link SpawnCommand}; `Deno.Command` appears only in `process.ts`.
 *
 * @module
 */

/** Options for one spawned program. */
export interface SpawnOptions {
  /** Text written to the program's standard input, which is then closed. No stdin when absent. */
  readonly stdin?: string;
  /**
   * Aborting kills the program: SIGTERM, then SIGKILL if it has not exited after a short grace
   * (see `KILL_GRACE_MS` in `process.ts`).
   */
  readonly signal?: AbortSignal;
}

/** How a program ended. */
export interface ExitStatus {
  /** Exit code; 128 + signal number when killed by a signal. */
  readonly code: number;
  /** The first 64 KiB of standard error, decoded as UTF-8. */
  readonly stderr: string;
}

/** A running program whose standard output is read as a stream. */
export interface SpawnedProcess {
  /** Standard output. The caller must read it to the end or cancel it. */
  readonly stdout: ReadableStream<Uint8Array>;
  /** Resolves when the program has exited and its stderr is collected. Never rejects. */
  readonly status: Promise<ExitStatus>;
}

/**
 * Starts a program. Throws {@link SpawnError} when it cannot be started at all.
 *
 * @example A fake for tests
 * ```ts
 * import type { SpawnCommand } from "./spawn.ts";
 * const fake: SpawnCommand = () => ({
 *   stdout: ReadableStream.from([new TextEncoder().encode("hello\n")]),
 *   status: Promise.resolve({ code: 0, stderr: "" }),
 * });
 * ```
 */
export type SpawnCommand = (
  program: string,
  args: readonly string[],
  options?: SpawnOptions,
) => SpawnedProcess;

/**
 * Why a program could not be started:
 * - `not-found`: no such file, or no such name on `PATH`;
 * - `permission-denied`: the file exists but the system will not execute it (mode, mount);
 * - `not-allowed`: Deno's `--allow-run` list does not name it. Deno checks this before it looks
 *   for the file, so such a program may also be missing;
 * - `other`: anything else.
 */
export type SpawnFailure = "not-found" | "permission-denied" | "not-allowed" | "other";

/** A program could not be started: it is missing, not executable, or not allowed. */
export class SpawnError extends Error {
  /** Why it could not be started. */
  readonly reason: SpawnFailure;
  /** The program as given. */
  readonly program: string;

  /** Builds the error with a message an operator can act on. */
  constructor(program: string, reason: SpawnFailure, detail: string) {
    const what = reason === "not-found"
      ? `Cannot run ${program}: not found (install it, or give its path)`
      : reason === "permission-denied"
      ? `Cannot run ${program}: permission denied (${detail})`
      : reason === "not-allowed"
      ? `Cannot run ${program}: it is not in the --allow-run list the agent was started or ` +
        `built with (that list names programs found on PATH; give one of them, or run with ` +
        `${program} added to --allow-run)`
      : `Cannot run ${program}: ${detail}`;
    super(what);
    this.name = "SpawnError";
    this.reason = reason;
    this.program = program;
  }
}

/** The whole output of a program that has exited. */
export interface CommandOutput extends ExitStatus {
  /** Standard output, decoded as UTF-8. */
  readonly stdout: string;
}

/**
 * Runs a program to completion and collects its output as text; for small outputs only
 * (`--version`, a rules dump). Dumps of the conntrack table are streamed instead.
 */
export async function runToEnd(
  spawn: SpawnCommand,
  program: string,
  args: readonly string[],
  options?: SpawnOptions,
): Promise<CommandOutput> {
  const child = spawn(program, args, options);
  const stdout = await new Response(child.stdout).text();
  const status = await child.status;
  return { ...status, stdout };
}
