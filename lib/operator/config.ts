/**
 * The agent's validated configuration. Built only by `cli.ts` from flags and environment, so a
 * value of this type is always valid.
 *
 * @module
 */
import type { Cidr } from "../core/cidr.ts";
import type { TrackingChoice } from "../table/tracking.ts";
import type { NatSource } from "../nat/nat_source.ts";
import type { LogFormat, LogLevel } from "../seams/logger.ts";
import type { Backend } from "../table/backend.ts";

// The option types live with what they choose, so that no layer below this one imports it.
export type { Backend, LogFormat, LogLevel, NatSource };

/** Everything the agent needs to run. */
export interface Config {
  /**
   * Pause between the end of one cycle and the start of the next, in ms
   * (`CONNTRACK_TABLE_DUMP_FREQUENCY`). The same name carries it to the agent, health and scan,
   * in ms all the way to the sleep.
   * @default {1000}
   */
  readonly periodMs: number;
  /**
   * Share of the time, in `(0, 1]`, that cycles may take before the pause after them is
   * stretched; 1 never stretches (`CONNTRACK_CLEANER_BUSY_LIMIT`).
   * @default {0.2}
   */
  readonly busyLimit: number;
  /**
   * Renewals tolerated; one more deletes (`CONNECTION_RENEWAL_THRESHOLD`).
   * @default {3}
   */
  readonly renewalThreshold: number;
  /**
   * Unreplied age after which an entry is deleted, in ms; 0 turns the rule off
   * (`CONNTRACK_UNREPLIED_MAX_AGE`).
   * @default {10000}
   */
  readonly unrepliedMaxAgeMs: number;
  /**
   * The conntrack program (`CONNTRACK_BIN`).
   * @default {"conntrack"}
   */
  readonly conntrackBin: string;
  /**
   * Log what would be deleted, delete nothing (`DRY_RUN`).
   * @default {false}
   */
  readonly dryRun: boolean;
  /** Log format (`LOG_FORMAT`); json when stdout is not a terminal. */
  readonly logFormat: LogFormat;
  /**
   * Lowest level logged (`LOG_LEVEL`).
   * @default {"info"}
   */
  readonly logLevel: LogLevel;
  /**
   * `host:port` for /metrics, /healthz and /readyz; `undefined` when turned off with an empty
   * value (`METRICS_ADDRESS`).
   * @default {":9469"}
   */
  readonly metricsAddress: { readonly hostname: string; readonly port: number } | undefined;
  /**
   * Only entries whose original destination lies in one of these; all when empty, which only an
   * empty or unset variable gives: a list with an empty entry, or a flag given as `''`, is refused
   * (`CONNTRACK_CLEANER_DESTINATIONS`).
   * @default {[]}
   */
  readonly destinations: readonly Cidr[];
  /**
   * Never entries whose original destination lies in one of these; empty entries are refused as
   * for {@link Config.destinations} (`CONNTRACK_CLEANER_EXCLUDE_DESTINATIONS`).
   * @default {[]}
   */
  readonly excludeDestinations: readonly Cidr[];
  /**
   * Only entries to these destination ports; all when empty, with empty entries refused as for
   * {@link Config.destinations} (`CONNTRACK_CLEANER_PORTS`).
   * @default {[]}
   */
  readonly ports: readonly number[];
  /**
   * Source of the node's DNAT rules for the `nat` rule (`CONNTRACK_CLEANER_NAT_SOURCE`).
   * @default {"auto"}
   */
  readonly natSource: NatSource;
  /**
   * Deletion backend (`CONNTRACK_CLEANER_DELETE_BACKEND`).
   * @default {"auto"}
   */
  readonly deleteBackend: Backend;
  /**
   * Listing backend (`CONNTRACK_CLEANER_LIST_BACKEND`).
   * @default {"auto"}
   */
  readonly listBackend: Backend;
  /**
   * How candidates are followed between dumps: conntrack events (with one GET per tracked entry
   * each period and a slow resync dump), a dump every period, or events where they can be had
   * (`CONNTRACK_CLEANER_TRACKING`).
   * @default {"auto"}
   */
  readonly tracking: TrackingChoice;
  /**
   * Period of the full resync dump in event tracking, in ms (`CONNTRACK_CLEANER_RESYNC_PERIOD`).
   * @default {300000}
   */
  readonly resyncPeriodMs: number;
  /**
   * Receive buffer of the conntrack event socket, in bytes; events that arrive while it is full
   * are lost and force a resync (`CONNTRACK_CLEANER_EVENT_BUFFER`).
   * @default {8388608}
   */
  readonly eventBufferBytes: number;
}
