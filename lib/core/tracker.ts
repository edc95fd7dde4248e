/**
 * The tracker: follows each candidate from one dump to the next and decides, with the `nat`,
 * `renewal` and `age` rules, whether to keep or delete it.
 *
 * It has no clock of its own: time reaches it only through the {@link DumpWindow} of each dump,
 * so tests drive it with virtual time.
 *
 * @module
 */
import { hostPort } from "./address.ts";
import { durationText } from "./seconds_text.ts";
import type { Candidate } from "./flow.ts";
import { type NatFinding, natFinding, type NatRules } from "./nat_rule.ts";
import { type AgeSource, type Assessment, type Rule, RULES, type Verdict } from "./verdict.ts";

/** How the tracker judges entries. */
export interface TrackerOptions {
  /**
   * Renewals tolerated; one more deletes the entry (3 means the 4th renewal deletes).
   * A non-negative integer (`CONNECTION_RENEWAL_THRESHOLD`).
   */
  readonly renewalThreshold: number;
  /**
   * Unreplied age, in ms, at which an entry is deleted; 0 turns the age rule off
   * (`CONNTRACK_UNREPLIED_MAX_AGE`).
   */
  readonly unrepliedMaxAgeMs: number;
}

/**
 * Monotonic milliseconds at which the dump that produced the candidates started and ended.
 *
 * `start` must be taken before conntrack is started and `end` after its output was read, so that
 * the kernel read every timer at some instant inside the window.
 */
export interface DumpWindow {
  /** When the dump started (before spawning conntrack), monotonic ms. */
  readonly start: number;
  /** When the dump ended (after its last line was read), monotonic ms; `>= start`. */
  readonly end: number;
}

/**
 * The interval `[lo, hi)` of monotonic ms in which an entry's timer expires.
 */
export interface ExpiryWindow {
  /** Earliest possible expiry, inclusive. */
  readonly lo: number;
  /** Latest possible expiry, exclusive. */
  readonly hi: number;
}

/**
 * Where an entry's timer can expire, given the timer conntrack printed during a dump.
 *
 * conntrack prints the seconds left rounded down, read at some instant `t` inside the dump, so
 * the expiry lies in `[t + 1000p, t + 1000p + 1000)` for some `t` in `[start, end]`.
 *
 * The kernel reads time in jiffies, which lag the monotonic clock by up to one tick, so the low
 * end can be up to a tick late. That never fakes a renewal: expiry and jiffies lie on the same
 * tick grid and a second is a whole number of ticks, so a window that starts a tick late is still
 * not wholly after an earlier window of the same expiry (the tests simulate this).
 *
 * @example A timer of 119 s printed by a dump that ran from 5000 to 5200 ms
 * ```ts
 * import { expiryWindow } from "./tracker.ts";
 * expiryWindow(119, { start: 5000, end: 5200 }); // { lo: 124000, hi: 125200 }
 * ```
 */
export function expiryWindow(timeoutSeconds: number, dump: DumpWindow): ExpiryWindow {
  const ms = timeoutSeconds * 1000;
  return { lo: dump.start + ms, hi: dump.end + ms + 1000 };
}

/**
 * What the tracker remembers of one entry. Mutated in place on purpose: at a million entries per
 * dump, replacing the record (and the Map slot) every second costs more than the rest of `assess`.
 */
interface Tracked {
  /** The `assess` call that last saw the entry; tells duplicates and absent keys apart. */
  generation: number;
  /** The expiry window since the last renewal, narrowed by every overlapping window. */
  lo: number;
  hi: number;
  renewals: number;
  /** When the entry's line was first read (its dump's `end`): the base of the observed age. */
  firstSeenEnd: number;
  id: number | undefined;
  deltaTime: number | undefined;
}

/** How a candidate relates to what was known about its key. */
type Sighting = "first" | "recreated" | "renewed" | "unchanged";

/**
 * Tracks the `SYN_SENT [UNREPLIED]` candidates of successive dumps and rules on each of them.
 *
 * Memory holds only the keys of the latest dump (minus those forgotten), and {@link assess} is
 * linear in the number of candidates.
 *
 * @example Two dumps one second apart: a timer that went back up is a renewal
 * ```ts
 * import { Tracker } from "./tracker.ts";
 * const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
 * const candidate = {
 *   flow: {
 *     family: "ipv4",
 *     original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *     reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *     zone: 0,
 *   },
 *   key: "k",
 *   timeout: 119,
 * } as const;
 * tracker.assess([candidate], { start: 0, end: 100 })[0]?.verdict.kind; // "keep"
 * tracker.assess([candidate], { start: 1100, end: 1150 })[0]?.verdict.kind; // "delete"
 * ```
 */
export class Tracker {
  readonly #threshold: number;
  readonly #maxAgeMs: number;
  readonly #flows = new Map<string, Tracked>();
  readonly #countingWhy: string[] = [];
  #generation = 0;
  /** Start of the current dump; NaN before the first {@link begin}. */
  #start = NaN;
  /** Candidates seen in the current dump, duplicates not counted. */
  #seen = 0;

  /**
   * @throws {RangeError} when an option is out of range.
   */
  constructor(options: TrackerOptions) {
    const { renewalThreshold, unrepliedMaxAgeMs } = options;
    if (!Number.isSafeInteger(renewalThreshold) || renewalThreshold < 0) {
      throw new RangeError(
        `Cannot use renewalThreshold as a renewal count: current value is ${renewalThreshold}`,
      );
    }
    if (!Number.isFinite(unrepliedMaxAgeMs) || unrepliedMaxAgeMs < 0) {
      throw new RangeError(
        `Cannot use unrepliedMaxAgeMs as a maximum age: current value is ${unrepliedMaxAgeMs}`,
      );
    }
    this.#threshold = renewalThreshold;
    this.#maxAgeMs = unrepliedMaxAgeMs;
  }

  /**
   * Assesses every candidate of one dump, in order: {@link begin}, {@link see} for each
   * candidate with the dump's end as the time it was read, and {@link finish}. Duplicates of one
   * key in the same dump count once (the first wins; later ones get no assessment). Keys absent
   * from this dump are forgotten.
   *
   * `nat`, when given, is what the node's NAT rules say about each flow: the `nat` rule deletes
   * an un-NATed flow the node would now translate, and a translated flow whose endpoint the rules
   * no longer choose (see {@link natFinding}).
   *
   * @throws {RangeError} when the dump window is not finite or ends before it starts.
   */
  assess(
    candidates: Iterable<Candidate>,
    dump: DumpWindow,
    nat?: NatRules,
  ): Assessment[] {
    if (!Number.isFinite(dump.end) || dump.end < dump.start) {
      throw new RangeError(
        `Cannot assess a dump as its window is not a forward interval: current value is ` +
          `start=${dump.start} end=${dump.end}`,
      );
    }
    this.begin(dump.start);
    const assessments: Assessment[] = [];
    for (const candidate of candidates) {
      const assessment = this.see(candidate, dump.end, nat);
      if (assessment !== undefined) assessments.push(assessment);
    }
    this.finish();
    return assessments;
  }

  /**
   * Starts a dump. `start` is monotonic ms taken before conntrack was started.
   *
   * @throws {RangeError} when `start` is not finite.
   */
  begin(start: number): void {
    if (!Number.isFinite(start)) {
      throw new RangeError(
        `Cannot begin a dump at a time that is not finite: current value is ${start}`,
      );
    }
    this.#generation++;
    this.#start = start;
    this.#seen = 0;
  }

  /**
   * Rules on one candidate of the current dump, as soon as it is read, so that a dump's
   * candidates need not be held until it ends. `readAt` is monotonic ms taken after the line was
   * read: the kernel read the timer between the dump's start and then, so `{ start, readAt }` is
   * the candidate's {@link DumpWindow}. Returns undefined for a key already seen in this dump.
   *
   * @throws {RangeError} before {@link begin}, or when `readAt` is before the dump's start.
   */
  see(
    candidate: Candidate,
    readAt: number,
    nat?: NatRules,
  ): Assessment | undefined {
    const start = this.#start;
    if (!(readAt >= start) || !Number.isFinite(readAt)) {
      throw new RangeError(
        `Cannot see a candidate read before its dump started: current value is ` +
          `start=${start} readAt=${readAt}`,
      );
    }
    const generation = this.#generation;
    // Inlined expiryWindow(): this runs for every candidate of every dump.
    const lo = start + candidate.timeout * 1000;
    const hi = readAt + candidate.timeout * 1000 + 1000;
    let tracked = this.#flows.get(candidate.key);
    let sighting: Sighting;
    if (tracked === undefined) {
      tracked = fresh(candidate, lo, hi, readAt, generation);
      this.#flows.set(candidate.key, tracked);
      sighting = "first";
    } else if (tracked.generation === generation) {
      return undefined;
    } else {
      sighting = update(tracked, candidate, lo, hi, readAt, generation);
    }
    this.#seen++;
    return { candidate, verdict: this.#judge(candidate, tracked, sighting, start, readAt, nat) };
  }

  /**
   * Ends the current dump: forgets the keys it did not list. Call it only after a complete
   * listing; after a failed one, simply {@link begin} the next.
   */
  finish(): void {
    const flows = this.#flows;
    if (flows.size === this.#seen) return;
    const generation = this.#generation;
    // Deleting the current entry while iterating a Map is well defined in JavaScript.
    for (const [key, tracked] of flows) {
      if (tracked.generation !== generation) flows.delete(key);
    }
  }

  /** Forgets flows that were deleted, so that a flow re-created with the same key starts over. */
  forget(keys: Iterable<string>): void {
    for (const key of keys) this.#flows.delete(key);
  }

  /** Whether the flow with this key was in the latest dump (and has not been forgotten). */
  has(key: string): boolean {
    return this.#flows.has(key);
  }

  /** Number of flows tracked. */
  get size(): number {
    return this.#flows.size;
  }

  #judge(
    candidate: Candidate,
    tracked: Tracked,
    sighting: Sighting,
    start: number,
    readAt: number,
    nat: NatRules | undefined,
  ): Verdict {
    const renewals = tracked.renewals;
    const ageSource: AgeSource = candidate.deltaTime === undefined ? "observed" : "kernel";
    const ageMs = candidate.deltaTime === undefined
      ? Math.max(0, start - tracked.firstSeenEnd)
      : kernelAgeMs(candidate.deltaTime);
    for (const rule of RULES) {
      if (rule === "nat") {
        // When the kernel gives the entry's age, it existed at least that long before readAt.
        const existedAt = candidate.deltaTime === undefined
          ? tracked.firstSeenEnd
          : Math.min(tracked.firstSeenEnd, readAt - kernelAgeMs(candidate.deltaTime));
        const found = nat && natFinding(candidate.flow, nat, existedAt);
        if (!found) continue;
        const why = natWhy(found, candidate);
        return { kind: "delete", rule, reason: found.reason, why, renewals, ageMs, ageSource };
      }
      if (this.#fires(rule, renewals, ageMs)) {
        const why = this.#why(rule, candidate, renewals, ageMs, ageSource);
        return { kind: "delete", rule, why, renewals, ageMs, ageSource };
      }
    }
    return { kind: "keep", why: this.#keepWhy(sighting, renewals), renewals, ageMs, ageSource };
  }

  /** Whether the `renewal` or `age` rule fires (the `nat` rule is decided by natFinding()). */
  #fires(rule: Exclude<Rule, "nat">, renewals: number, ageMs: number): boolean {
    switch (rule) {
      case "renewal":
        return renewals > this.#threshold;
      case "age":
        return this.#maxAgeMs !== 0 && ageMs >= this.#maxAgeMs;
    }
  }

  #why(
    rule: Exclude<Rule, "nat">,
    candidate: Candidate,
    renewals: number,
    ageMs: number,
    ageSource: AgeSource,
  ): string {
    switch (rule) {
      case "renewal":
        return `timer renewed ${plural(renewals, "time")} (threshold ${this.#threshold})`;
      case "age":
        return `unreplied for ${durationText(ageMs)} (max ${durationText(this.#maxAgeMs)}, ` +
          `${ageOrigin(ageSource, candidate.deltaTime)})`;
    }
  }

  #keepWhy(sighting: Sighting, renewals: number): string {
    if (sighting === "first") return "new: first seen";
    if (sighting === "recreated") return "new: re-created with the same tuples";
    // Kept entries have at most `threshold` renewals, so this cache stays that small; sharing
    // one string per count spares building a million equal strings per dump.
    const cached = this.#countingWhy[renewals];
    if (cached !== undefined) return cached;
    const why = `counting down (${plural(renewals, "renewal")}, threshold ${this.#threshold})`;
    this.#countingWhy[renewals] = why;
    return why;
  }
}

/** The `nat` rule's one line: which half fired, naming the Service destination. */
function natWhy(found: NatFinding, candidate: Candidate): string {
  const o = candidate.flow.original;
  const service = hostPort(o.dst, o.dport);
  if (found.reason === "no-dnat") return `no NAT while the node now translates ${service}`;
  const now = found.current.slice(0, 3).map((e) => hostPort(e.address, e.port)).join(", ");
  const more = found.current.length > 3 ? `, +${found.current.length - 3} more` : "";
  return `translated to ${hostPort(found.gone.address, found.gone.port)}, no longer an ` +
    `endpoint of ${service} (now ${now}${more})`;
}

function fresh(
  candidate: Candidate,
  lo: number,
  hi: number,
  readAt: number,
  generation: number,
): Tracked {
  return {
    generation,
    lo,
    hi,
    renewals: 0,
    firstSeenEnd: readAt,
    id: candidate.id,
    deltaTime: candidate.deltaTime,
  };
}

/** Folds one sighting into a tracked entry; the heart of the renewal rule. */
function update(
  tracked: Tracked,
  candidate: Candidate,
  lo: number,
  hi: number,
  readAt: number,
  generation: number,
): Sighting {
  tracked.generation = generation;
  // Every branch that starts over loses evidence, never invents it: resetting is always safe.
  if (
    hi <= tracked.lo || differs(tracked.id, candidate.id) ||
    (tracked.deltaTime !== undefined && candidate.deltaTime !== undefined &&
      candidate.deltaTime < tracked.deltaTime)
  ) {
    // An expiry earlier than one already proven cannot be the same entry, nor can a different
    // kernel id or a creation time that moved forward: the flow was deleted and re-created.
    Object.assign(tracked, fresh(candidate, lo, hi, readAt, generation));
    return "recreated";
  }
  tracked.id = candidate.id;
  tracked.deltaTime = candidate.deltaTime;
  if (lo >= tracked.hi) {
    // The expiry is now certainly later than any instant it could have been at before.
    tracked.renewals += 1;
    tracked.lo = lo;
    tracked.hi = hi;
    return "renewed";
  }
  // Both windows hold the expiry unless it was renewed; if it was, the narrowed window no longer
  // holds it and the next sighting proves the renewal. Without a renewal it always holds it, so
  // narrowing can never make a renewal appear.
  tracked.lo = Math.max(tracked.lo, lo);
  tracked.hi = Math.min(tracked.hi, hi);
  return "unchanged";
}

function differs(before: number | undefined, now: number | undefined): boolean {
  return before !== undefined && now !== undefined && before !== now;
}

/**
 * A lower bound of the age from `delta-time=`. conntrack computes it as `time(NULL)` minus the
 * start time truncated to whole seconds, so it can exceed the true age by almost a second.
 */
function kernelAgeMs(deltaTime: number): number {
  return Math.max(0, deltaTime - 1) * 1000;
}

function ageOrigin(source: AgeSource, deltaTime: number | undefined): string {
  return source === "kernel" ? `kernel delta-time=${deltaTime}` : "since the agent first saw it";
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
