/**
 * How a testbed step says it failed.
 *
 * @module
 */

/** A testbed step failed: a command exited non-zero or something did not happen in time. */
export class TestbedError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "TestbedError";
  }
}

/** The line of stderr that says what went wrong: the first error line, else the last. */
export function stderrReason(text: string): string {
  const lines = text.trim().split("\n");
  return lines.find((l) => /error/i.test(l))?.trim() ?? lines[lines.length - 1] ?? "";
}
