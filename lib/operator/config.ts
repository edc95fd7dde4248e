/**
 * The agent's validated configuration. Built only by `cli.ts` from flags and environment, so a
 * value of this type is always valid.
 *
 * @module
 */
import type { Cidr } from "../core/cidr.ts";

/** Log output format. */
export type LogFormat = "json" | "text";
/** Lowest log level written. */
export type LogLevel = "debug" | "info" | "warning" | "error";
/** Where the NAT rule learns which destinations the node translates. */
export type NatSource = "auto" | "iptables" | "nftables" | "off";
/** How the table is listed and flows are deleted: netlink through FFI, or the conntrack CLI. */
export type Backend = "auto" | "netlink" | "cli";

/** Everything the agent needs to run. */
export interface Config {
  /**
   * Pause between the end of one cycle and the start of the next, in ms (`CONNTRACK_TABLE_DUMP_FREQUENCY`).
   * @default {1000}
   */
  readonly dumpFrequencyMs: number;
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
}
