/**
 * Reads the exact DNAT destinations out of kube-proxy's nftables tables, as printed by
 * `nft -j list map ip kube-proxy service-ips` (what the agent runs) or
 * `nft -j list table ip kube-proxy` (and `ip6`).
 *
 * kube-proxy's nftables mode dispatches every ClusterIP, ExternalIP and LoadBalancer IP through
 * one verdict map, `service-ips` (`ipv4_addr . inet_proto . inet_service : verdict`), whose
 * elements `goto` the Service's chain (`service-…`, `external-…`, `local-…`), which ends in
 * `dnat to`. kube-proxy only adds an element when the Service has endpoints (otherwise the
 * destination goes to `no-endpoint-services`, a reject or drop), so an element with a `goto` or
 * `jump` verdict is a destination the node translates.
 *
 * Not counted: other protocols (udp, sctp), `no-endpoint-services` and `firewall-ips` (filter
 * maps), and `service-nodeports` (`inet_proto . inet_service`): NodePorts apply to the node's own
 * addresses, which a LoadBalancer VIP routed to the node is not, and counting them would need the
 * node's address list; a flow to a NodePort is never taken for translated.
 *
 * @module
 */
import type { Family } from "../core/flow.ts";
import type { NatDestination } from "./nat_reader.ts";

/**
 * Parses one `nft -j` document (the whole output: the `service-ips` map is about 2 MiB at 10,000
 * Services, the whole table about 15 MiB) into the destinations in the `service-ips` maps of
 * `kube-proxy` tables.
 * Throws `SyntaxError` when the text is not an nft JSON document.
 *
 * @example
 * ```ts
 * import { parseNftKubeProxy } from "./nftables_json.ts";
 * const json = JSON.stringify({ nftables: [{ map: {
 *   family: "ip", table: "kube-proxy", name: "service-ips", map: "verdict",
 *   type: ["ipv4_addr", "inet_proto", "inet_service"],
 *   elem: [[{ concat: ["192.0.2.10", "tcp", 80] }, { goto: { target: "external-X" } }]],
 * } }] });
 * parseNftKubeProxy(json); // [{ family: "ipv4", address: "192.0.2.10", port: 80 }]
 * ```
 */
export function parseNftKubeProxy(json: string): NatDestination[] {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (error) {
    throw new SyntaxError(
      `Cannot parse nft output as JSON: ${error instanceof Error ? error.message : error}`,
    );
  }
  const objects = isRecord(doc) ? doc.nftables : undefined;
  if (!Array.isArray(objects)) {
    throw new SyntaxError(
      `Cannot read nft output as a ruleset: current value starts with ${
        JSON.stringify(json.slice(0, 40))
      }`,
    );
  }
  const found: NatDestination[] = [];
  for (const object of objects) {
    const map = isRecord(object) ? object.map : undefined;
    if (!isRecord(map) || map.table !== "kube-proxy" || map.name !== "service-ips") continue;
    const family = familyOf(map.family);
    if (family === undefined || !Array.isArray(map.elem)) continue;
    for (const element of map.elem) {
      const destination = elementDestination(element, family);
      if (destination) found.push(destination);
    }
  }
  return found;
}

function familyOf(value: unknown): Family | undefined {
  return value === "ip" ? "ipv4" : value === "ip6" ? "ipv6" : undefined;
}

/** `[key, verdict]`, the key being `{concat: [addr, proto, port]}`, maybe wrapped in `{elem}`. */
function elementDestination(element: unknown, family: Family): NatDestination | undefined {
  if (!Array.isArray(element) || element.length !== 2) return undefined;
  const [wrappedKey, verdict] = element;
  // Elements with a comment or counter are printed as {elem: {val: key, comment: ...}}.
  const key = isRecord(wrappedKey) && isRecord(wrappedKey.elem) ? wrappedKey.elem.val : wrappedKey;
  if (!isRecord(key) || !Array.isArray(key.concat) || key.concat.length !== 3) return undefined;
  const [address, protocol, port] = key.concat;
  // Non-string addresses are prefixes or ranges: not one destination.
  if (typeof address !== "string") return undefined;
  if (protocol !== "tcp" && protocol !== 6) return undefined;
  const portNumber = typeof port === "number" ? port : Number.NaN;
  if (!Number.isInteger(portNumber) || portNumber < 0 || portNumber > 65535) return undefined;
  if (!isRecord(verdict) || !(isRecord(verdict.goto) || isRecord(verdict.jump))) return undefined;
  return { family, address, port: portNumber };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
