/**
 * Choosing how candidates are tracked between two looks at the whole table: by conntrack events
 * (new-entry events plus one GET per tracked entry each period, with a slow resync dump; cost
 * follows connection attempts) or by a dump every period (cost follows the table's size). `auto`
 * prefers events when the table is listed through netlink, and falls back to dumps where they
 * cannot be had, saying so once.
 *
 * @module
 */
import type { Cidr } from "../core/cidr.ts";
import type { Lister } from "./lister.ts";
import type { Logger } from "../seams/logger.ts";
import {
  type EventListerOpen,
  type EventTrackingCounts,
  openEventLister,
  type ResyncReason,
} from "./netlink/event_lister.ts";

/** What the operator asked for (`--tracking`, `CONNTRACK_CLEANER_TRACKING`). */
export type TrackingChoice = "auto" | "events" | "dump";

/** The tracking in use. */
export type TrackingMode = "events" | "dump";

/** Event tracking was asked for by name and cannot be had. */
export class TrackingUnavailableError extends Error {
  /** @param reason Why events cannot be had, in one line. */
  constructor(reason: string) {
    super(
      `Cannot use --tracking events (CONNTRACK_CLEANER_TRACKING): ${reason}; use "dump" or "auto"`,
    );
    this.name = "TrackingUnavailableError";
  }
}

/** The chosen tracking: the lister the loop uses, and how to stop it. */
export interface Tracking extends AsyncDisposable {
  /** The mode in use. */
  readonly mode: TrackingMode;
  /** What the loop lists with. */
  readonly lister: Lister;
  /** Event counts, in event mode. */
  readonly counts: () => EventTrackingCounts | undefined;
}

/** What the choice needs. */
export interface TrackingOptions {
  /** What the operator asked for. */
  readonly choice: TrackingChoice;
  /** The listing backend, which dumps (every period, or to resync). */
  readonly dump: Lister;
  /** The operator's destination blocks, for the kernel's event filter. */
  readonly destinations: readonly Cidr[];
  /** Period of the resync dump in event mode, ms. */
  readonly resyncPeriodMs: number;
  /** Receive buffer of the event socket, bytes; undefined keeps the default. */
  readonly eventBufferBytes?: number | undefined;
  /** Monotonic ms (the agent's clock). */
  readonly monotonicMs: () => number;
  /** Says once which tracking was chosen and why. */
  readonly logger: Logger;
}

/**
 * Returns the tracking to use; in event mode the subscription is already reading. `events`
 * without events available throws {@link TrackingUnavailableError}.
 *
 * @param openEvents Opens the event lister (injected so tests need no kernel).
 */
export function selectTracking(
  options: TrackingOptions,
  openEvents: (options: TrackingOptions) => EventListerOpen,
): Tracking {
  const dumping = (): Tracking => ({
    mode: "dump",
    lister: options.dump,
    counts: () => undefined,
    [Symbol.asyncDispose]: () => Promise.resolve(),
  });
  if (options.choice === "dump") {
    options.logger.info("tracking candidates by a dump every period", { tracking: "dump" });
    return dumping();
  }
  // Events and GETs read the kernel's table; a table listed through a conntrack program (which
  // may be a wrapper or a fake) is not known to be that table, so auto keeps to its dumps.
  const opened: EventListerOpen = options.choice === "auto" && options.dump.name !== "netlink"
    ? {
      kind: "unavailable",
      reason: `the table is listed by the ${options.dump.name} backend; events need netlink`,
    }
    : openEvents(options);
  if (opened.kind !== "ok") {
    if (options.choice === "events") throw new TrackingUnavailableError(opened.reason);
    options.logger.info(
      "conntrack events unavailable; tracking candidates by a dump every period",
      {
        tracking: "dump",
        reason: opened.reason,
      },
    );
    return dumping();
  }
  const lister = opened.lister;
  lister.start((reason) => options.logger.warn("conntrack events", { reason }));
  options.logger.info("tracking candidates through conntrack events", {
    tracking: "events",
    resync_period_ms: options.resyncPeriodMs,
  });
  return {
    mode: "events",
    lister,
    counts: () => lister.counts,
    [Symbol.asyncDispose]: () => lister[Symbol.asyncDispose](),
  };
}

/** Opens the real event lister for {@link selectTracking}. */
export function openEventTracking(options: TrackingOptions): EventListerOpen {
  return openEventLister({
    dump: options.dump,
    destinations: options.destinations,
    resyncPeriodMs: options.resyncPeriodMs,
    monotonicMs: options.monotonicMs,
    onResync: (reason) => logResync(options.logger, reason),
    ...(options.eventBufferBytes === undefined
      ? {}
      : { receiveBufferBytes: options.eventBufferBytes }),
  });
}

/**
 * Logs a resync: lost events as a warning (the socket's buffer is too small for the node's
 * bursts), a failed round as information, the planned or standing ones (start, period, too many
 * entries to ask about one by one, GETs dearer than a dump) at debug, since under churn they can
 * come and go every few periods.
 */
export function logResync(logger: Logger, reason: ResyncReason): void {
  switch (reason) {
    case "lost events":
      logger.warn("conntrack events were lost; resyncing with a dump", { reason });
      return;
    case "failed round":
      logger.info("resyncing with a dump", { reason });
      return;
    case "too many":
    case "start":
    case "period":
    case "cheaper":
      logger.debug("resyncing with a dump", { reason });
  }
}
