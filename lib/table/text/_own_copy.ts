/**
 * Copies of strings that share no memory with the string they were cut from.
 *
 * @module
 */

/**
 * The length from which V8 keeps a cut of a string as a view of its parent; shorter cuts are
 * copies.
 */
export const VIEW_MIN_LENGTH = 13;

/**
 * A copy of `text` that does not point into the string it was cut from.
 *
 * V8 keeps a cut of 13 characters or more as a view of its parent, here a decoded 64 KiB chunk of
 * conntrack's output, so a cut that is kept keeps its whole chunk alive. Prefixing `text` makes a
 * pair of strings, and cutting the pair makes V8 copy it into one flat string first. Beware the
 * look-alikes: `[text, ""].join("")` returns `text` itself, and a search of a pair can be dropped
 * by the optimizer when its result is unused. Shorter cuts are copies already.
 * `tests/tokenizer_memory_test.ts` checks that what the agent keeps holds no chunk.
 *
 * @example
 * ```ts
 * import { ownCopy } from "./_own_copy.ts";
 * const chunk = "tcp      6 117 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000";
 * const kept = ownCopy(chunk.slice(24, 45)); // "src=198.51.100.2 dst=", not a view of `chunk`
 * ```
 */
export function ownCopy(text: string): string {
  return text.length < VIEW_MIN_LENGTH ? text : (" " + text).slice(1);
}
