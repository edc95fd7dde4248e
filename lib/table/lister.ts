/**
 * How the agent lists the table: one interface, two backends (`conntrack -L` in `conntrack.ts`,
 * a ctnetlink dump of our own in `netlink_list.ts`), both handing on the same candidates.
 *
 * @module
 */
import type { Candidate, Flow } from "../core/flow.ts";

/** Entries that could not be read, kept for the once-per-cycle warning. */
export interface Unparsable {
  /** How many entries of this listing were rejected. */
  readonly count: number;
  /** The first rejected line, cut to 200 characters (`(netlink entry)` for the netlink backend). */
  readonly firstLine: string;
  /** Why it was rejected. */
  readonly firstReason: string;
}

/** The result of one listing; its candidates went to {@link ListOptions.onBatch} as read. */
export type Dump =
  | {
    readonly kind: "ok";
    /** Entries listed (lines, for conntrack). */
    readonly lines: number;
    /** Rejected entries, when any. */
    readonly unparsable: Unparsable | undefined;
  }
  | {
    readonly kind: "failed";
    /** One line saying why. */
    readonly reason: string;
  };

/**
 * Receives a listing's candidates as they are read, batch by batch, in listing order. A table
 * that changes during the listing can list an entry twice; the tracker counts such a duplicate
 * once. The listing waits for a returned promise.
 */
export type CandidateSink = (batch: readonly Candidate[]) => void | Promise<void>;

/** What one listing is asked for. */
export interface ListOptions {
  /** Where the candidates that pass `accept` go. */
  readonly onBatch: CandidateSink;
  /** Keeps only the candidates the operator aimed the agent at. */
  readonly accept?: (flow: Flow) => boolean;
  /** Aborting ends the listing early as a failed dump. */
  readonly signal?: AbortSignal;
}

/**
 * Lists the table's TCP `SYN_SENT` unreplied entries. A failed listing may already have handed
 * on some candidates: each was read correctly, but the listing is incomplete, so the absence of
 * a flow from it means nothing.
 */
export interface Lister {
  /** Backend name for logs, e.g. `cli` or `netlink`. */
  readonly name: string;
  /** Lists once. Never rejects: a failure is a failed dump. */
  list(options: ListOptions): Promise<Dump>;
}
