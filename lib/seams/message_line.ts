/**
 * What of an error goes into a log line, a probe body or an error message: one line, of bounded
 * length, with no control characters, whatever the error or the child printed.
 *
 * Two sources, two lines: a thrown `Error` says what went wrong first ({@link errorLine} takes
 * the first line of its message; later lines are detail or a stack), while a child process ends
 * its stderr with the error that made it fail, after any warnings ({@link stderrLine} takes the
 * last line that is not blank).
 *
 * @module
 */

/**
 * The most characters of one message quoted in a line: 512. conntrack's and the kernel's error
 * lines are under 200 characters, so a real error is always quoted whole, while a program that
 * floods stderr (up to the 64 KiB kept of it) costs a log line of about 550 characters per
 * period instead of 64 KiB.
 */
export const QUOTE_LENGTH = 512;

/**
 * The line of a thrown error worth quoting: the first line of its message that is not blank
 * (of `String(error)` for anything that is not an `Error`), trimmed, cut and escaped like
 * {@link stderrLine}'s.
 *
 * @param error What was thrown or rejected.
 * @param max The longest quote, before the note of what was cut; {@link QUOTE_LENGTH} unless
 * given.
 *
 * @example
 * ```ts
 * import { errorLine } from "./message_line.ts";
 * errorLine(new Error("Permission denied (os error 13)\n    at spawn")); // "Permission denied (os error 13)"
 * errorLine("plain text"); // "plain text"
 * ```
 */
export function errorLine(error: unknown, max: number = QUOTE_LENGTH): string {
  const message = error instanceof Error ? error.message : String(error);
  let start = 0;
  let line = "";
  while (start <= message.length) {
    const end = message.indexOf("\n", start);
    line = message.slice(start, end === -1 ? undefined : end).trim();
    if (line !== "" || end === -1) break;
    start = end + 1;
  }
  return quote(line, max);
}

/**
 * The line of `stderr` worth quoting: the last one that is not blank (programs end with the
 * error that made them fail), trimmed, with control characters written as `\xNN` so that a
 * terminal escape in a child's output cannot reach an operator's terminal through a text log.
 * A line longer than `max` characters is cut, and says how many bytes (UTF-8) were left out.
 * A `prefix` pattern (e.g. conntrack's `conntrack v1.4.7 (conntrack-tools): `) is removed first.
 *
 * @param stderr What the child wrote to stderr (as kept by the spawner).
 * @param max The longest quote, before the note of what was cut; {@link QUOTE_LENGTH} unless
 * given.
 * @param prefix Removed from the start of the line before it is measured.
 *
 * @example
 * ```ts
 * import { stderrLine } from "./message_line.ts";
 * stderrLine("warning: x\nconntrack: Operation not permitted\n"); // "conntrack: Operation not permitted"
 * stderrLine("e".repeat(600), 512); // "eee…e… (88 more bytes)" (512 e, then the note)
 * stderrLine(""); // ""
 * ```
 */
export function stderrLine(
  stderr: string,
  max: number = QUOTE_LENGTH,
  prefix?: RegExp,
): string {
  let end = stderr.length;
  let line = "";
  // From the end, without splitting all of it: the kept stderr can be 64 KiB of short lines.
  while (end > 0) {
    const start = stderr.lastIndexOf("\n", end - 1) + 1;
    line = stderr.slice(start, end).trim();
    if (line !== "") break;
    end = start - 1;
  }
  if (prefix) line = line.replace(prefix, "");
  return quote(line, max);
}

/** `line` cut to `max` characters (saying how many bytes were left out), controls escaped. */
function quote(line: string, max: number): string {
  if (line.length <= max) return escapeControls(line);
  const shown = line.slice(0, max);
  const omitted = utf8Length(line) - utf8Length(shown);
  return `${escapeControls(shown)}… (${omitted} more bytes)`;
}

function escapeControls(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => {
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}
