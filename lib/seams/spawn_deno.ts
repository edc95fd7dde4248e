/**
 * The one adapter from {@link SpawnCommand} to `Deno.Command`.
 *
 * @module
 */
import { errorLine } from "./message_line.ts";
import { SpawnError } from "./spawn.ts";
import type { ExitStatus, SpawnCommand, SpawnedProcess, SpawnOptions } from "./spawn.ts";

const STDERR_LIMIT = 64 * 1024;

/**
 * How long a program has, after SIGTERM, before it is sent SIGKILL; also how long its pipes are
 * still read after it died of an abort.
 */
export const KILL_GRACE_MS = 1000;

/** Options of {@link createDenoSpawn}. */
export interface DenoSpawnOptions {
  /**
   * Milliseconds between SIGTERM and SIGKILL when a program's signal aborts.
   * @default {KILL_GRACE_MS}
   */
  readonly killGraceMs?: number;
}

/**
 * Spawns real processes with `Deno.Command`. When the signal aborts (shutdown or a timeout), the
 * program gets SIGTERM, then SIGKILL after the grace: a stopped (SIGSTOP) or stubborn program
 * never acts on SIGTERM, and a shutdown must not wait for it. Once it is dead, its pipes are read
 * for one more grace and then given up, so that a grandchild still holding them (a wrapper script
 * that did not `exec`) cannot hold the agent either.
 *
 * @example
 * ```ts
 * import { createDenoSpawn } from "./spawn_deno.ts";
 * const spawn = createDenoSpawn({ killGraceMs: 500 });
 * const child = spawn("sleep", ["60"], { signal: AbortSignal.timeout(100) });
 * await child.stdout.cancel();
 * (await child.status).code; // 143 (SIGTERM), or 137 had sleep ignored it
 * ```
 */
export function createDenoSpawn(options: DenoSpawnOptions = {}): SpawnCommand {
  const graceMs = options.killGraceMs ?? KILL_GRACE_MS;
  return (program, args, spawnOptions = {}) => spawnWithGrace(program, args, spawnOptions, graceMs);
}

/** {@link createDenoSpawn} with the default grace: what the agent uses. */
export const denoSpawn: SpawnCommand = createDenoSpawn();

function spawnWithGrace(
  program: string,
  args: readonly string[],
  options: SpawnOptions,
  graceMs: number,
): SpawnedProcess {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: [...args],
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw toSpawnError(program, error);
  }
  const signal = options.signal;
  // Aborted when the pipes are given up; see createDenoSpawn.
  const release = new AbortController();
  let exited = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const releaseLater = () => {
    setTimeout(() => release.abort(), graceMs);
  };
  const onAbort = () => {
    if (exited) return releaseLater();
    send(child, "SIGTERM");
    killTimer = setTimeout(() => send(child, "SIGKILL"), graceMs);
  };
  const exit = child.status.then((result) => {
    exited = true;
    clearTimeout(killTimer);
    // The listener stays until the pipes are done: an abort after the exit (a timeout while a
    // grandchild holds the pipes) must still release them.
    if (signal?.aborted) releaseLater();
    return result;
  });
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    writer.write(new TextEncoder().encode(options.stdin))
      .then(() => writer.close())
      // The child may exit before reading all of stdin; its exit status tells what happened.
      .catch(() => {});
  }
  const status = (async (): Promise<ExitStatus> => {
    const [stderr, result] = await Promise.all([
      readLimited(releasable(child.stderr, release.signal)),
      exit,
    ]);
    signal?.removeEventListener("abort", onAbort);
    const code = result.signal ? 128 + signalNumber(result.signal) : result.code;
    return { code, stderr };
  })();
  return { stdout: releasable(child.stdout, release.signal), status };
}

/** Sends a signal to a program that may have exited already. */
function send(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Already exited.
  }
}

/** The most one read of a pipe takes: a pipe's capacity on Linux. */
const READ_SIZE = 64 * 1024;

/**
 * `source`, except that it ends (cleanly: readers see the end of the output, not an error) when
 * `release` aborts, however long something else keeps the pipe open. It stays a byte stream, so
 * that readers can still ask for large reads (`lines.ts` does, for speed).
 */
function releasable(
  source: ReadableStream<Uint8Array>,
  release: AbortSignal,
): ReadableStream<Uint8Array> {
  const reader = source.getReader({ mode: "byob" });
  // Cancelling ends a pending read with `done`, and closes our end of the pipe.
  const giveUp = () => void reader.cancel().catch(() => {});
  release.addEventListener("abort", giveUp, { once: true });
  // Reads go into this buffer, never the reader's, so that a cancelled read cannot take the
  // reader's buffer with it; a copy of at most 64 KiB per read is the price.
  let spare = new ArrayBuffer(READ_SIZE);
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: READ_SIZE,
    async pull(controller) {
      const request = controller.byobRequest;
      const view = request?.view;
      if (!request || !view) return;
      const size = Math.min(view.byteLength, READ_SIZE);
      const read = await reader.read(new Uint8Array(spare, 0, size));
      if (read.value) spare = read.value.buffer as ArrayBuffer;
      if (read.done || !read.value) {
        release.removeEventListener("abort", giveUp);
        controller.close();
        request.respond(0);
        return;
      }
      new Uint8Array(view.buffer, view.byteOffset, view.byteLength).set(read.value);
      request.respond(read.value.byteLength);
    },
    cancel(reason) {
      release.removeEventListener("abort", giveUp);
      return reader.cancel(reason);
    },
  });
}

function toSpawnError(program: string, error: unknown): SpawnError {
  if (error instanceof Deno.errors.NotFound) {
    return new SpawnError(program, "not-found", "not found");
  }
  if (error instanceof Deno.errors.NotCapable) {
    // Deno's own permission, checked before the file is looked for: whether it exists is unknown.
    return new SpawnError(program, "not-allowed", "");
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return new SpawnError(program, "permission-denied", `${errorLine(error)}; is it executable?`);
  }
  return new SpawnError(program, "other", errorLine(error));
}

async function readLimited(stream: ReadableStream<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stream) {
    if (text.length < STDERR_LIMIT) text += decoder.decode(chunk, { stream: true });
  }
  return text.slice(0, STDERR_LIMIT);
}

function signalNumber(signal: Deno.Signal): number {
  const numbers: Partial<Record<Deno.Signal, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGKILL: 9,
    SIGPIPE: 13,
    SIGTERM: 15,
  };
  return numbers[signal] ?? 1;
}
