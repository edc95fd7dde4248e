/**
 * The `nat` rule's two halves, decided per flow from what the node's NAT rules would do with the
 * flow's first packet today (see `lib/nat/nat_path.ts` for how the rules are evaluated).
 *
 * - `no-dnat`: the entry has no NAT at all, while the node would now translate its SYN: it was
 *   created before the Service's rules existed, and keeps a retrying client from ever being
 *   translated.
 * - `endpoint-gone`: the entry was translated to an endpoint that the node's rules no longer
 *   choose for that packet (the pod left the Service): a retrying client stays pinned to a dead
 *   backend. The TCP twin of kube-proxy's UDP conntrack reconciler.
 *
 * An answer of `unknown` never condemns, and neither does a destination the rules do not
 * translate (the entry was translated by something that is not a Service the agent knows).
 *
 * @module
 */
import { tryParseAddress } from "./address.ts";
import type { Flow } from "./flow.ts";

/** One address and port the node's rules translate a packet to. */
export interface NatTarget {
  /** The address, as conntrack prints it. */
  readonly address: string;
  /** The port. */
  readonly port: number;
}

/**
 * What the node's rules would do with a flow's first packet: translate it (`dnat`, to any of
 * `endpoints`), not translate it (`none`), or cannot tell (`unknown`, naming the rule).
 */
export type NatAnswer =
  | {
    /** Translated. */
    readonly kind: "dnat";
    /** Every endpoint a translating path can choose; never empty. */
    readonly endpoints: readonly NatTarget[];
  }
  | {
    /** Not translated. */
    readonly kind: "none";
  }
  | {
    /** Cannot tell: never condemns. */
    readonly kind: "unknown";
    /** The rule that could not be evaluated. */
    readonly rule: string;
  };

/** The node's NAT rules as the tracker consults them during one dump. */
export interface NatRules {
  /** What the rules do now with the first packet of `flow` (its original tuple). */
  answer(flow: Flow): NatAnswer;
  /**
   * Monotonic ms at which the read of these rules started. An entry the tracker first saw after
   * it may have been translated by newer rules than these (an endpoint added since), so the
   * `endpoint-gone` half waits for a later read before judging it.
   */
  readonly readStartedAt: number;
}

/** Which half of the `nat` rule fired. */
export type NatReason = "no-dnat" | "endpoint-gone";

/** Every {@link NatReason}, in the order metrics list them. */
export const NAT_REASONS: readonly NatReason[] = ["no-dnat", "endpoint-gone"];

/** Why the `nat` rule condemns an entry: which half fired, with what it found. */
export type NatFinding =
  | {
    /** The entry has no NAT while the node would now translate its SYN. */
    readonly reason: "no-dnat";
  }
  | {
    /** The entry was translated to an endpoint the rules no longer choose. */
    readonly reason: "endpoint-gone";
    /** The endpoint the entry was translated to (its reply source). */
    readonly gone: NatTarget;
    /** The endpoints the rules choose now for the same packet; never empty. */
    readonly current: readonly NatTarget[];
  };

/**
 * Rules on one flow with the node's NAT rules: a finding when one half of the `nat` rule fires,
 * undefined when the entry is to be kept. `firstSeenAt` is a monotonic ms at which the entry is
 * known to have existed: when the tracker first read it, or earlier by the kernel's `delta-time=`.
 *
 * @example An entry pinned to an endpoint the Service no longer has
 * ```ts
 * import { natFinding } from "./nat_rule.ts";
 * const rules = {
 *   answer: () => ({ kind: "dnat", endpoints: [{ address: "10.0.0.8", port: 8080 }] }) as const,
 *   readStartedAt: 5000,
 * };
 * natFinding({
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "10.0.0.7", dst: "198.51.100.2", sport: 8080, dport: 40000 },
 *   zone: 0,
 * }, rules, 1000)?.reason; // "endpoint-gone"
 * ```
 */
export function natFinding(
  flow: Flow,
  rules: NatRules,
  firstSeenAt: number,
): NatFinding | undefined {
  const o = flow.original;
  const r = flow.reply;
  const unNATed = r.src === o.dst && r.dst === o.src && r.sport === o.dport && r.dport === o.sport;
  const translated = r.src !== o.dst || r.sport !== o.dport;
  // Only SNAT (the reply destination differs): neither half is about it.
  if (!unNATed && !translated) return undefined;
  // The tracker must have seen the entry before the rules were read (see readStartedAt).
  if (translated && firstSeenAt > rules.readStartedAt) return undefined;
  const answer = rules.answer(flow);
  if (answer.kind !== "dnat") return undefined;
  if (unNATed) return { reason: "no-dnat" };
  if (answer.endpoints.some((e) => sameTarget(e, r.src, r.sport))) return undefined;
  return {
    reason: "endpoint-gone",
    gone: { address: r.src, port: r.sport },
    current: answer.endpoints,
  };
}

function sameTarget(target: NatTarget, address: string, port: number): boolean {
  if (target.port !== port) return false;
  if (target.address === address) return true;
  // Rule sources and conntrack may spell one IPv6 address differently.
  const a = tryParseAddress(target.address);
  const b = tryParseAddress(address);
  return a !== undefined && b !== undefined && a.family === b.family && a.value === b.value;
}
