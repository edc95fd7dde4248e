/**
 * The one vocabulary in which a flow and a verdict are shown to operators: the same field names
 * in every log line about a flow and in `scan --json`.
 *
 * @module
 */
import type { Candidate } from "./flow.ts";
import type { Verdict } from "./verdict.ts";

/** A flow's fields: family, zones, both tuples and, when listed, the kernel's entry id. */
export interface FlowFields {
  readonly family: string;
  readonly zone: number;
  readonly orig_zone?: number;
  readonly reply_zone?: number;
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
  readonly reply_src: string;
  readonly reply_sport: number;
  readonly reply_dst: string;
  readonly reply_dport: number;
  readonly id?: number;
}

/**
 * The fields naming a candidate's flow.
 *
 * @example
 * ```ts ignore
 * flowFields(candidate).src; // "198.51.100.2"
 * ```
 */
export function flowFields(candidate: Candidate): FlowFields {
  const { flow } = candidate;
  const o = flow.original;
  const r = flow.reply;
  return {
    family: flow.family,
    zone: flow.zone,
    ...(flow.origZone === undefined ? {} : { orig_zone: flow.origZone }),
    ...(flow.replyZone === undefined ? {} : { reply_zone: flow.replyZone }),
    src: o.src,
    sport: o.sport,
    dst: o.dst,
    dport: o.dport,
    reply_src: r.src,
    reply_sport: r.sport,
    reply_dst: r.dst,
    reply_dport: r.dport,
    ...(candidate.id === undefined ? {} : { id: candidate.id }),
  };
}

/**
 * A verdict's evidence: age (seconds, millisecond precision), its source, renewals seen, why, and
 * which half of the `nat` rule fired when it did.
 */
export interface EvidenceFields {
  readonly age_s: number;
  readonly age_source: string;
  readonly renewals: number;
  readonly why: string;
  /** `no-dnat` or `endpoint-gone`; only on a deletion by the `nat` rule. */
  readonly reason?: string;
}

/** The fields stating the evidence behind a verdict. */
export function evidenceFields(verdict: Verdict): EvidenceFields {
  const reason = verdict.kind === "delete" ? verdict.reason : undefined;
  return {
    age_s: Math.floor(verdict.ageMs) / 1000,
    age_source: verdict.ageSource,
    renewals: verdict.renewals,
    why: verdict.why,
    ...(reason === undefined ? {} : { reason }),
  };
}
