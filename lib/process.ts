/**
 * The one adapter from {@link SpawnCommand} to `Deno.Command`.
 *
 * @module
 */
import { SpawnError } from "./command.ts";
import type { ExitStatus, SpawnCommand, SpawnedProcess } from "./command.ts";

const STDERR_LIMIT = 64 * 1024;

/** Spawns real processes with `Deno.Command`. Kills the child when the signal aborts. */
export const denoSpawn: SpawnCommand = (program, args, options = {}): SpawnedProcess => {
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
  const onAbort = () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
  };
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    writer.write(new TextEncoder().encode(options.stdin))
      .then(() => writer.close())
      // The child may exit before reading all of stdin; its exit status tells what happened.
      .catch(() => {});
  }
  const status = (async (): Promise<ExitStatus> => {
    const [stderr, result] = await Promise.all([readLimited(child.stderr), child.status]);
    options.signal?.removeEventListener("abort", onAbort);
    const code = result.signal ? 128 + signalNumber(result.signal) : result.code;
    return { code, stderr };
  })();
  return { stdout: child.stdout, status };
};

function toSpawnError(program: string, error: unknown): SpawnError {
  if (error instanceof Deno.errors.NotFound) {
    return new SpawnError(program, "not-found", "not found");
  }
  if (error instanceof Deno.errors.NotCapable) {
    // Deno's own permission, not the file's: say which list to look at.
    return new SpawnError(
      program,
      "permission-denied",
      "not in the --allow-run list the agent was started or built with",
    );
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return new SpawnError(program, "permission-denied", `${firstLine(error)}; is it executable?`);
  }
  return new SpawnError(program, "other", firstLine(error));
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "";
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
