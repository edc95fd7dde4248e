/**
 * What the node's NAT rules do with one packet: the shared vocabulary of the per-flow `nat` rule.
 *
 * A stale entry is judged by asking the node's ruleset, read once per change of the rules, what it
 * would do with the entry's first packet (a TCP SYN from the original source to the original
 * destination) if that packet met the nat table today. The iptables and nftables readers each
 * build a {@link NatRuleset} that answers this for their own rules; the tracker only sees the
 * answers.
 *
 * @module
 */
import type { Family } from "../core/flow.ts";
import type { NatAnswer, NatTarget } from "../core/nat_rule.ts";

/** The first packet of a flow, as the nat table's PREROUTING hook would see it. */
export interface NatPacket {
  /** Address family. */
  readonly family: Family;
  /** Original source address, as conntrack prints it. */
  readonly src: string;
  /** Original destination address, as conntrack prints it. */
  readonly dst: string;
  /** Original source port. */
  readonly sport: number;
  /** Original destination port. */
  readonly dport: number;
}

/**
 * One DNAT target: the address and port a translated packet is sent to. The same type as the
 * tracker's {@link NatTarget}, so a verdict passes to the tracker as it is.
 */
export type NatEndpoint = NatTarget;

/**
 * What the ruleset does with a packet: the tracker's {@link NatAnswer}, as the evaluators reach it.
 * - `dnat`: some path from PREROUTING ends in a DNAT; `endpoints` holds every target any such
 *   path can pick (probability and round-robin matches count: each target is reachable).
 * - `none`: every path ends without translation (falls through to the policy, RETURNs, or ends in
 *   DROP/REJECT before any DNAT).
 * - `unknown`: a match on a path could not be evaluated; `rule` is the text of the first such
 *   rule, for one debug line. Unknown never condemns an entry.
 */
export type NatPathVerdict = NatAnswer;

/** What the evaluation may need to know about the node itself. */
export interface NodeFacts {
  /**
   * Addresses of this node (both families, as conntrack prints them): iptables'
   * `-m addrtype --src-type/--dst-type LOCAL` and nftables' `fib daddr type local`.
   */
  readonly localAddresses: ReadonlySet<string>;
}

/** One family's ruleset from one source, able to answer for any packet. */
export interface NatRuleset {
  /** What the rules do with this packet's SYN on this node. Pure; never throws. */
  evaluate(packet: NatPacket, node: NodeFacts): NatPathVerdict;
}
