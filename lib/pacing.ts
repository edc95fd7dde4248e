/**
 * How long the loop pauses after a cycle: the dump period, stretched when cycles are slow so
 * that the agent is busy for at most a set share of the time (`CONNTRACK_CLEANER_BUSY_LIMIT`).
 *
 * On a large table the listing itself is the cost: the kernel walks every entry on every dump,
 * even with `-u UNREPLIED` (a 1M-entry table takes 0.4-0.5 s of CPU per listing). A fixed pause
 * after such a cycle would keep most of a core busy; a pause proportional to the cycle keeps the
 * agent's share of the node bounded at any table size, at the price of fewer looks per minute
 * on exactly those nodes. Small tables never reach the limit and run at the period.
 *
 * @module
 */

/** The longest a stretched pause gets: unreplied `SYN_SENT` entries live 120 s at most. */
export const MAX_STRETCHED_PAUSE_MS = 30_000;

/**
 * The pause after a cycle that took `cycleMs`: `periodMs`, or longer when the cycle was slow, so
 * that cycles take at most `busyLimit` (a fraction in `(0, 1]`) of the time. A limit of 1 never
 * stretches. A stretched pause stops at {@link MAX_STRETCHED_PAUSE_MS} (or the period, when that
 * is longer).
 *
 * @example A 0.8 s cycle under a 25% busy limit pauses 2.4 s instead of 1 s
 * ```ts
 * import { pauseAfter } from "./pacing.ts";
 * pauseAfter(800, 1000, 0.25); // 2400
 * pauseAfter(200, 1000, 0.25); // 1000
 * pauseAfter(800, 1000, 1); // 1000
 * ```
 */
export function pauseAfter(cycleMs: number, periodMs: number, busyLimit: number): number {
  if (busyLimit >= 1 || !(cycleMs > 0)) return periodMs;
  const share = Math.ceil(cycleMs * (1 - busyLimit) / busyLimit);
  return Math.max(periodMs, Math.min(share, MAX_STRETCHED_PAUSE_MS));
}
