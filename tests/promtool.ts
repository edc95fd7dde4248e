/**
 * Running Prometheus's `promtool` from tests (Debian package `prometheus`; CI installs it without
 * starting the server).
 *
 * @module
 */
import { type CommandOutput, runToEnd, SpawnError } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";

/** Why promtool cannot run here (one line), or undefined when it can. */
export const promtoolMissing: string | undefined = await (async () => {
  try {
    const out = await runToEnd(denoSpawn, "promtool", ["--version"]);
    return out.code === 0 ? undefined : `promtool --version exited ${out.code}`;
  } catch (error) {
    if (error instanceof SpawnError) return error.message;
    throw error;
  }
})();

/** Runs promtool with `args`, feeding it `stdin` when given. */
export function promtool(args: readonly string[], stdin?: string): Promise<CommandOutput> {
  return runToEnd(denoSpawn, "promtool", args, stdin === undefined ? {} : { stdin });
}
