/**
 * The value of decimal digits that a pattern or a scan has already checked, read the way V8
 * runs fastest.
 *
 * V8 keeps a number below 2^30 as a small integer and runs arithmetic on it as integer
 * arithmetic, but it compiles one loop for all its callers: a digit loop that once met a 10-digit
 * kernel id would run every later number, ports and timers alike, in floating point. Reading at
 * most nine digits per loop keeps every loop in small integers; only the one multiplication that
 * joins two pieces is floating point. Measured on the tokenizer: a tenth of the time per line.
 *
 * @module
 */

const ZERO = 48;

/**
 * The value of the digits at `[start, end)` of `text`, at most 16 of them (exact below 2^53).
 * The caller has checked that they are digits.
 *
 * @example
 * ```ts
 * import { digitsValue } from "./_digits.ts";
 * digitsValue("id=4294967295", 3, 13); // 4294967295
 * ```
 */
export function digitsValue(text: string, start: number, end: number): number {
  if (end - start <= 9) return smallValue(text, start, end);
  const cut = end - 8;
  return smallValue(text, start, cut) * 1e8 + smallValue(text, cut, end);
}

/** The value of the at most nine digits at `[start, end)` of `text`: always a small integer. */
function smallValue(text: string, start: number, end: number): number {
  let value = 0;
  for (let i = start; i < end; i++) value = value * 10 + (text.charCodeAt(i) - ZERO);
  return value;
}
