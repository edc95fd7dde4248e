/**
 * What the agent decides about each candidate, as a discriminated union.
 *
 * @module
 */
import type { Candidate } from "./flow.ts";
import type { NatReason } from "./nat_rule.ts";

/**
 * The rule that condemned an entry.
 * - `nat`: the node's NAT rules now disagree with the entry: it has no NAT while the node would
 *   translate its SYN (`no-dnat`), or it was translated to an endpoint the rules no longer choose
 *   (`endpoint-gone`).
 * - `renewal`: the entry's timer was renewed more than the threshold allows.
 * - `age`: the entry has been unreplied for longer than the maximum age.
 */
export type Rule = "nat" | "renewal" | "age";

/** Every rule, in the order they are checked when more than one fires. */
export const RULES: readonly Rule[] = ["nat", "renewal", "age"];

/** Where an entry's age comes from. */
export type AgeSource = "kernel" | "observed";

/** The facts behind a verdict, shown by `scan` and in logs. */
export interface Evidence {
  /** Renewals seen since the agent first saw the entry. */
  readonly renewals: number;
  /** How long the entry has been unreplied, in milliseconds (a lower bound). */
  readonly ageMs: number;
  /** `kernel` when from `delta-time=`, `observed` when since the agent first saw it. */
  readonly ageSource: AgeSource;
}

/** Keep or delete, and why. */
export type Verdict =
  | {
    /** Leave the entry alone. */
    readonly kind: "keep";
    /** One line saying why no rule fired (for `scan`). */
    readonly why: string;
  } & Evidence
  | {
    /** Delete the entry. */
    readonly kind: "delete";
    /** The rule that fired. */
    readonly rule: Rule;
    /** Which half of the `nat` rule fired; present exactly when `rule` is `nat`. */
    readonly reason?: NatReason;
    /** One line saying why the rule fired (for `scan` and the deletion log). */
    readonly why: string;
  } & Evidence;

/** A candidate together with the verdict on it. */
export interface Assessment {
  /** The entry as read from the dump. */
  readonly candidate: Candidate;
  /** What to do with it. */
  readonly verdict: Verdict;
}
