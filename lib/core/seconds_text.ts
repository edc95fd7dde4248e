/**
 * Milliseconds shown to people as seconds, one function per way they are read:
 *
 * - {@link durationText} in a sentence (a verdict's why, a log line, a probe's reason), to a
 *   tenth of a second;
 * - {@link secondsColumn} in a table column beside conntrack's own timer, which counts whole
 *   seconds.
 *
 * Both round down, so that an age never shows more than has passed: an entry "unreplied for 10s
 * (max 10s)" has really reached its limit. Exact values for programs are in the JSON output and
 * the metrics, never parsed back from these.
 *
 * @module
 */

/**
 * A duration for a sentence: seconds rounded down to a tenth, without a trailing `.0`.
 *
 * @param ms The duration in milliseconds (not negative).
 * @returns e.g. `12.3s`, `10s`, `0s`.
 *
 * @example
 * ```ts
 * import { durationText } from "./seconds_text.ts";
 * durationText(12_345); // "12.3s"
 * durationText(10_099); // "10s"
 * durationText(300_000); // "300s"
 * ```
 */
export function durationText(ms: number): string {
  const tenths = Math.floor(ms / 100);
  return tenths % 10 === 0 ? `${tenths / 10}s` : `${(tenths / 10).toFixed(1)}s`;
}

/**
 * A duration for a table column of whole seconds, like conntrack's timer: rounded down.
 *
 * @param ms The duration in milliseconds (not negative).
 * @returns e.g. `12s`.
 *
 * @example
 * ```ts
 * import { secondsColumn } from "./seconds_text.ts";
 * secondsColumn(12_999); // "12s"
 * ```
 */
export function secondsColumn(ms: number): string {
  return `${Math.floor(ms / 1000)}s`;
}
