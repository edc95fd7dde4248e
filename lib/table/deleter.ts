/**
 * The deletion seam: one interface, several backends (the conntrack CLI, netlink through FFI).
 *
 * @module
 */
import type { Flow } from "../core/flow.ts";

/**
 * A flow to delete and, when its listing gave one, the kernel's id of the entry that was judged
 * (`Candidate.id`). A backend that can (netlink) deletes only the entry with that id, so an
 * entry re-created under the same tuple since it was judged is spared; the others ignore it.
 */
export type DeleteTarget = Flow & {
  /** The kernel's id of the judged entry, when known. */
  readonly id?: number;
};

/** A flow a backend could not delete, and why. */
export interface DeleteFailure {
  /** The flow asked for. */
  readonly flow: Flow;
  /** One line an operator can read. */
  readonly reason: string;
}

/** Why a flow was left undeleted when the agent was asked to stop during its batch. */
export const STOPPING_REASON = "Cannot delete as the agent is stopping";

/** What one batch of deletions did. */
export interface DeleteOutcome {
  /** Flows the kernel removed. */
  readonly deleted: readonly Flow[];
  /**
   * Flows that were no longer there, or no longer `SYN_SENT` (they completed in between):
   * not failures, nothing to do.
   */
  readonly gone: readonly Flow[];
  /** Flows that could not be deleted. */
  readonly failed: readonly DeleteFailure[];
}

/**
 * Deletes exactly the given flows: protocol TCP, both tuples' addresses and ports, the zone, and
 * only while the entry is still in `SYN_SENT`. Never deletes anything else.
 * An empty list deletes nothing and spawns nothing.
 */
export interface Deleter {
  /** Backend name for logs and metrics, e.g. `cli` or `netlink`. */
  readonly name: string;
  /**
   * Deletes one cycle's flows. Never rejects: failures are reported. `progress`, when given, is
   * called now and then while a long batch goes on (at least once a minute of work), so that a
   * health check can tell a slow batch from a stuck loop.
   */
  delete(
    flows: readonly DeleteTarget[],
    signal?: AbortSignal,
    progress?: () => void,
  ): Promise<DeleteOutcome>;
}
