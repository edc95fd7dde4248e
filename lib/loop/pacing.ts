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

/**
 * A cycle must fall under this share of a limit before a spell over it ends: the band between
 * keeps a cycle time that wanders around the limit from flipping the state every cycle.
 */
export const SPELL_RELEASE_RATIO = 0.8;

/** Cycles in a row under {@link SPELL_RELEASE_RATIO} of the limit that end a spell. */
export const SPELL_RELEASE_CYCLES = 3;

/** What one cycle did to a {@link Spell}. */
export type SpellChange =
  /** The cycle went over the limit, and the spell was off: say so. */
  | "began"
  /** The spell was on, and this was the last of the cycles clearly under the limit needed. */
  | "ended"
  /** Nothing worth a log line. */
  | "unchanged";

/**
 * Whether cycles are in a spell over a limit (slower than the dump period, or slow enough to
 * stretch the pause), decided with hysteresis so that the log says so once per spell: a spell
 * begins with the first cycle over the limit, and ends only after {@link SPELL_RELEASE_CYCLES}
 * cycles in a row under {@link SPELL_RELEASE_RATIO} of it. Without the band, cycle times that
 * wandered around the limit gave 68 log lines in 5 minutes. The pause itself does not depend on
 * the spell: it follows each cycle (see {@link pauseAfter}).
 *
 * @example Times around a 100 ms limit begin one spell; three clearly faster cycles end it
 * ```ts
 * import { Spell } from "./pacing.ts";
 * const spell = new Spell();
 * [120, 90, 110, 95, 70, 60, 50].map((ms) => spell.update(ms, 100));
 * // ["began", "unchanged", "unchanged", "unchanged", "unchanged", "unchanged", "ended"]
 * ```
 */
export class Spell {
  #on = false;
  #under = 0;

  /** Whether a spell is on. */
  get on(): boolean {
    return this.#on;
  }

  /**
   * Counts one cycle that took `value` against `limit` (same unit); a value that is not a
   * number counts as under the limit. An infinite limit is never reached.
   */
  update(value: number, limit: number): SpellChange {
    if (value > limit) {
      this.#under = 0;
      if (this.#on) return "unchanged";
      this.#on = true;
      return "began";
    }
    if (!this.#on) return "unchanged";
    if (!(value >= SPELL_RELEASE_RATIO * limit)) this.#under++;
    else this.#under = 0;
    if (this.#under < SPELL_RELEASE_CYCLES) return "unchanged";
    this.#on = false;
    this.#under = 0;
    return "ended";
  }
}

/**
 * The cycle time, in ms, above which {@link pauseAfter} stretches the pause: the cycle that
 * takes exactly `busyLimit` of cycle plus period. Infinite at a limit of 1, which never stretches.
 *
 * @example
 * ```ts
 * import { stretchThreshold } from "./pacing.ts";
 * stretchThreshold(1000, 0.2); // 250
 * stretchThreshold(1000, 1); // Infinity
 * ```
 */
export function stretchThreshold(periodMs: number, busyLimit: number): number {
  return busyLimit >= 1 ? Infinity : periodMs * busyLimit / (1 - busyLimit);
}
