/**
 * What one cycle of the agent did, reported once per cycle to whoever watches (metrics, health).
 *
 * @module
 */
import type { Family } from "../core/flow.ts";
import type { NatReason } from "../core/nat_rule.ts";
import type { Rule } from "../core/verdict.ts";

/** How the table listing went. */
export type DumpResult =
  | {
    readonly kind: "ok";
    /** Lines conntrack printed (entries seen). */
    readonly lines: number;
    /** TCP `SYN_SENT [UNREPLIED]` entries among them, after filters and de-duplication. */
    readonly candidates: number;
    /** Lines that could not be parsed. */
    readonly unparsable: number;
  }
  | {
    readonly kind: "failed";
    /** One line saying why. */
    readonly reason: string;
  };

/** One deletion (or would-be deletion in dry run). */
export interface DeletionRecord {
  /** The rule that fired. */
  readonly rule: Rule;
  /** Which half of the `nat` rule fired; present exactly when `rule` is `nat`. */
  readonly reason?: NatReason;
  /** Address family of the flow. */
  readonly family: Family;
}

/** Everything a cycle did. */
export interface CycleReport {
  /** Wall-clock milliseconds when the dump started. */
  readonly wallStart: number;
  /** Milliseconds the dump took (reading the NAT rules not included). */
  readonly dumpMs: number;
  /** How the dump went. */
  readonly dump: DumpResult;
  /** Candidates tracked after the cycle. */
  readonly tracked: number;
  /** Flows deleted (or, in dry run, that would have been). */
  readonly deletions: readonly DeletionRecord[];
  /** True in dry run: `deletions` were not carried out. */
  readonly dryRun: boolean;
  /** Flows the backend failed to delete. */
  readonly deleteFailures: number;
  /** True when the cycle took longer than the period. */
  readonly overran: boolean;
  /**
   * Milliseconds the loop pauses after this cycle: the period, or longer when the cycle was slow
   * and the busy limit stretched the pause. The loop sleeps exactly this long.
   */
  readonly pauseMs: number;
}

/** Receives one report per cycle. */
export interface CycleObserver {
  /** Called after every cycle, successful or not. Must not throw. */
  cycleCompleted(report: CycleReport): void;
  /**
   * Called now and then inside a long cycle (a large listing, a slow deletion batch), so that a
   * slow cycle is not taken for a stuck loop. Must not throw.
   */
  cycleProgressed?(): void;
}
