/**
 * What each read of the node's NAT rules did, source by source, reported to whoever watches
 * (metrics). The log says the same once per change; this says it on every read, so that an alert
 * can tell a source that keeps failing from one that failed once.
 *
 * @module
 */
import type { Family } from "../core/flow.ts";

/** The mechanisms the `nat` rule reads: `iptables-save` (either flavour) or kube-proxy's map. */
export type NatMechanism = "iptables" | "nftables";

/** Every {@link NatMechanism}, in the order metrics list them. */
export const NAT_MECHANISMS: readonly NatMechanism[] = ["iptables", "nftables"];

/** How one source's read went. */
export interface NatSourceRead {
  /** Which mechanism was read. */
  readonly source: NatMechanism;
  /** Which family's rules. */
  readonly family: Family;
  /**
   * `ok`: read and parsed; `absent`: not on this node (no such program in `auto`, or no
   * kube-proxy table), which is not a failure; `failed`: there, but reading it failed.
   */
  readonly outcome: "ok" | "absent" | "failed";
}

/**
 * Why the rules were read: `first` (nothing read yet), `changed` (the nftables generation moved),
 * `polled` (a source no generation covers, or the generation could not be read, was due).
 */
export type NatReadCause = "first" | "changed" | "polled";

/** Every {@link NatReadCause}, in the order metrics list them. */
export const NAT_READ_CAUSES: readonly NatReadCause[] = ["first", "changed", "polled"];

/** Receives one {@link NatSourceRead} per source per read. */
export interface NatReadObserver {
  /** Called after each source's read, never on shutdown. Must not throw. */
  natSourceRead(read: NatSourceRead): void;
  /** Called once per read of the rules (one or more sources run), with why. Must not throw. */
  natRulesRead?(cause: NatReadCause): void;
}
