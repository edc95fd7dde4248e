/**
 * Running a program that must succeed, for test set-up (namespaces, images, manifests): the agent
 * itself never treats a failing program as an exception, so this lives with the tests.
 *
 * @module
 */
import {
  type CommandOutput,
  runToEnd,
  type SpawnCommand,
  type SpawnOptions,
} from "../../lib/seams/spawn.ts";
import { stderrLine } from "../../lib/seams/message_line.ts";

/** A program ran but exited non-zero. */
export class CommandFailedError extends Error {
  /** How it ended. */
  readonly output: CommandOutput;
  /** Builds the one-line message from the command and its standard error. */
  constructor(program: string, args: readonly string[], output: CommandOutput) {
    const stderr = stderrLine(output.stderr);
    super(`Cannot run ${[program, ...args].join(" ")}: exit ${output.code}: ${stderr}`);
    this.name = "CommandFailedError";
    this.output = output;
  }
}

/**
 * Runs a program that must succeed and returns its standard output; throws
 * {@link CommandFailedError} when it exits non-zero.
 *
 * @example
 * ```ts ignore
 * import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
 * await runChecked(denoSpawn, "ip", ["netns", "add", "cct-example"]);
 * ```
 */
export async function runChecked(
  spawn: SpawnCommand,
  program: string,
  args: readonly string[],
  options?: SpawnOptions,
): Promise<string> {
  const output = await runToEnd(spawn, program, args, options);
  if (output.code !== 0) throw new CommandFailedError(program, args, output);
  return output.stdout;
}
