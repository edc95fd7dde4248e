/**
 * The domain of the agent: the conntrack flows it may delete.
 *
 * Only TCP flows in `SYN_SENT` flagged `[UNREPLIED]` are ever modelled as {@link Candidate}s,
 * so a value of that type is, by construction, a flow the agent is allowed to consider.
 *
 * @module
 */

import { type AddressFamily, hostPort } from "./address.ts";

/** Address family of a flow, as conntrack names it in `-o extended` output. */
export type Family = AddressFamily;

/**
 * One direction of a flow: the addresses and ports a packet carries.
 *
 * Addresses are kept exactly as conntrack prints them (canonical dotted quad or
 * compressed IPv6), so that they can be handed back to conntrack unchanged.
 */
export interface Tuple {
  /** Source address. */
  readonly src: string;
  /** Destination address. */
  readonly dst: string;
  /** Source port, 0-65535. */
  readonly sport: number;
  /** Destination port, 0-65535. */
  readonly dport: number;
}

/**
 * A TCP flow as the kernel tracks it: the original direction, the expected reply direction and
 * the conntrack zone(s). Two entries are the same flow exactly when all of these are equal.
 */
export interface Flow {
  /** Address family, derived from the addresses. */
  readonly family: Family;
  /** The direction of the first packet (client to VIP). */
  readonly original: Tuple;
  /** The direction the kernel expects replies in; the mirror of `original` when not NATed. */
  readonly reply: Tuple;
  /**
   * Conntrack zone (`zone=`), 0 when conntrack prints none.
   * @default {0}
   */
  readonly zone: number;
  /** Directional zone of the original tuple (`orig-zone=`), when conntrack prints one. */
  readonly origZone?: number;
  /** Directional zone of the reply tuple (`reply-zone=`), when conntrack prints one. */
  readonly replyZone?: number;
}

/**
 * A TCP `SYN_SENT [UNREPLIED]` entry read from one dump: the only kind of entry the agent acts on.
 */
export interface Candidate {
  /** The flow, which identifies the entry. */
  readonly flow: Flow;
  /** {@link flowKey} of `flow`, computed once by the tokenizer. */
  readonly key: string;
  /** Seconds left on the entry's timer, as printed (rounded down by the kernel). */
  readonly timeout: number;
  /** Seconds since the kernel created the entry (`delta-time=`), when timestamps are on. */
  readonly deltaTime?: number;
  /** The kernel's entry id (`id=`), when listed with `-o id`. */
  readonly id?: number;
}

/**
 * A stable string identifying a flow: its zone(s), then its original tuple as conntrack prints
 * it. The kernel never holds two entries with the same original tuple in the same zone (a new
 * entry that clashes with one is dropped), so the key names exactly one entry of the table; the
 * reply tuple adds nothing to that, and leaving it out halves the key. The tokenizer builds the
 * same text by copying it out of the line.
 *
 * @example Two readings of the same flow share a key
 * ```ts
 * import { flowKey } from "./flow.ts";
 * const flow = {
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * } as const;
 * flowKey(flow); // "0/-/- src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80"
 * ```
 */
export function flowKey(flow: Flow): string {
  const o = flow.original;
  // join() builds one flat string; a template would build a tree of pieces, which costs more
  // memory in a key the tracker keeps.
  return [
    flow.zone,
    "/",
    flow.origZone ?? "-",
    "/",
    flow.replyZone ?? "-",
    " src=",
    o.src,
    " dst=",
    o.dst,
    " sport=",
    o.sport,
    " dport=",
    o.dport,
  ].join("");
}

/**
 * Whether a flow has no NAT: its reply tuple is the exact mirror of its original tuple.
 *
 * @example
 * ```ts
 * import { isUnNATed } from "./flow.ts";
 * isUnNATed({
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * }); // true
 * ```
 */
export function isUnNATed(flow: Flow): boolean {
  const o = flow.original;
  const r = flow.reply;
  return r.src === o.dst && r.dst === o.src && r.sport === o.dport && r.dport === o.sport;
}

/**
 * A short human rendering of a flow for logs: `tcp 198.51.100.2:40000 -> 192.0.2.10:80`,
 * with the zone when not 0 and IPv6 addresses in brackets.
 */
export function describeFlow(flow: Flow): string {
  const o = flow.original;
  const zone = flow.zone !== 0 ? ` zone ${flow.zone}` : "";
  return `tcp ${hostPort(o.src, o.sport)} -> ${hostPort(o.dst, o.dport)}${zone}`;
}
