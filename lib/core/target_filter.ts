/**
 * The operator's choice of which flows the agent may touch: destination blocks, excluded
 * destination blocks and destination ports.
 *
 * @module
 */
import { tryParseAddress } from "./address.ts";
import { addressInCidr, type Cidr } from "./cidr.ts";
import type { Flow } from "./flow.ts";

/** The operator's selection of flows by destination (the configuration's target options). */
export interface Target {
  /** Only flows whose original destination lies in one of these blocks; all when empty. */
  readonly destinations: readonly Cidr[];
  /** Never flows whose original destination lies in one of these blocks; wins over the rest. */
  readonly excludeDestinations: readonly Cidr[];
  /** Only flows to these original destination ports; all when empty. */
  readonly ports: readonly number[];
}

/**
 * Builds a predicate that says whether a flow is in the operator's target.
 *
 * It looks at the ORIGINAL tuple only (the address and port the client dialled, i.e. the VIP),
 * because that is what an operator knows and writes down. An empty `destinations` or `ports`
 * list matches everything; an excluded destination is never matched, whatever else says. IPv4
 * and IPv4-mapped IPv6 forms match each other as described for `cidrContains`. A destination
 * that is not an IP address matches nothing when any block is configured, so a parsing surprise
 * can never widen what gets deleted.
 *
 * The blocks are used as given; the predicate parses each flow's destination at most once.
 *
 * @param target The destination and port selection.
 * @returns A predicate over flows.
 *
 * @example
 * ```ts
 * import { makeTargetFilter } from "./target_filter.ts";
 * import { parseCidr } from "./cidr.ts";
 * const inTarget = makeTargetFilter({
 *   destinations: [parseCidr("192.0.2.0/24")],
 *   excludeDestinations: [parseCidr("192.0.2.53")],
 *   ports: [80, 443],
 * });
 * inTarget({
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * }); // true
 * ```
 */
export function makeTargetFilter(target: Target): (flow: Flow) => boolean {
  const { destinations, excludeDestinations } = target;
  const ports = target.ports.length === 0 ? undefined : new Set(target.ports);
  if (destinations.length === 0 && excludeDestinations.length === 0) {
    return ports === undefined ? () => true : (flow) => ports.has(flow.original.dport);
  }
  return (flow) => {
    if (ports !== undefined && !ports.has(flow.original.dport)) return false;
    const dst = tryParseAddress(flow.original.dst);
    if (dst === undefined) return false;
    if (excludeDestinations.some((cidr) => addressInCidr(cidr, dst))) return false;
    return destinations.length === 0 || destinations.some((cidr) => addressInCidr(cidr, dst));
  };
}
