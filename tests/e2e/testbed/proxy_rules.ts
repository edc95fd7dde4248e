/**
 * The node's kube-proxy-like rules: the proxy skeleton the testbed installs at creation, the
 * Service's DNAT rule it adds later (iptables or nftables, plain or kube-proxy's shape), and the
 * backend's drop rule that keeps a SYN to the bare VIP unanswered.
 *
 * @module
 */
import type { Family } from "../../../lib/core/flow.ts";
import { hostPort } from "../../../lib/core/address.ts";
import { ADDRESSES, BACKEND_PORT } from "./topology.ts";

/**
 * Which kube-proxy the node imitates. `iptables-legacy` writes its rules with the legacy
 * flavour, on a node whose `iptables` is the nf_tables one (kube-proxy's image picks its flavour
 * by what the node already uses, so both can meet).
 */
export type ProxyMode = "iptables" | "iptables-legacy" | "nftables";

/**
 * The shape of a Service's DNAT rule.
 * - `plain`: one DNAT rule in the proxy's services chain.
 * - `kube`: the shape kube-proxy writes: iptables `KUBE-SERVICES → KUBE-EXT-… → KUBE-SVC-… →
 *   KUBE-SEP-… → DNAT`, or nftables `services` → `service-ips` verdict map → `external-…` →
 *   `service-…` → `endpoint-…` with `dnat`.
 */
export type DnatStyle = "plain" | "kube";

/** The `iptables-restore` program for a family and a proxy's flavour. */
export function restoreCommand(family: Family, proxy: ProxyMode): string {
  const flavour = proxy === "iptables-legacy" ? "-legacy" : "";
  return family === "ipv4" ? `iptables${flavour}-restore` : `ip6tables${flavour}-restore`;
}

/** Drops traffic to the bare VIP on the backend, silently, so the entry stays `[UNREPLIED]`. */
export function backendRules(): string {
  return [
    "table inet testbed {",
    "  chain prerouting {",
    "    type filter hook prerouting priority raw; policy accept;",
    `    ip daddr ${ADDRESSES.ipv4.vip} drop`,
    `    ip6 daddr ${ADDRESSES.ipv6.vip} drop`,
    "  }",
    "}",
    "",
  ].join("\n");
}

/**
 * kube-proxy's iptables skeleton: the nat entry chain, and the forward chain whose conntrack
 * match makes the kernel track connections in this namespace (the nat table alone does not on
 * 6.x kernels).
 */
export function iptablesSkeleton(): string {
  return [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "COMMIT",
    "*filter",
    ":KUBE-FORWARD - [0:0]",
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "COMMIT",
    "",
  ].join("\n");
}

function chainCode(family: Family, port: number): string {
  return `E2E${family === "ipv4" ? "V4" : "V6"}WEB${port}`.padEnd(16, "X").slice(0, 16);
}

/** The Service's DNAT rule for `iptables-restore --noflush`, in the given style. */
export function iptablesService(family: Family, port: number, style: DnatStyle): string {
  const a = ADDRESSES[family];
  const vip = `${a.vip}/${family === "ipv4" ? 32 : 128}`;
  const target = hostPort(a.backend, BACKEND_PORT);
  const name = `e2e/web:p${port}`;
  if (style === "plain") {
    return [
      "*nat",
      `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "${name} loadbalancer IP" ` +
      `-m tcp --dport ${port} -j DNAT --to-destination ${target}`,
      "COMMIT",
      "",
    ].join("\n");
  }
  const code = chainCode(family, port);
  const ext = `KUBE-EXT-${code}`;
  const svc = `KUBE-SVC-${code}`;
  const sep = `KUBE-SEP-${code}`;
  return [
    "*nat",
    `:${ext} - [0:0]`,
    `:${svc} - [0:0]`,
    `:${sep} - [0:0]`,
    `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "${name} loadbalancer IP" ` +
    `-m tcp --dport ${port} -j ${ext}`,
    `-A ${ext} -m comment --comment "${name} external destinations" -j ${svc}`,
    `-A ${svc} -m comment --comment "${name} -> ${target}" -j ${sep}`,
    `-A ${sep} -p tcp -m comment --comment "${name}" -m tcp -j DNAT --to-destination ${target}`,
    "COMMIT",
    "",
  ].join("\n");
}

/** kube-proxy's nftables skeleton, for both families, plus a conntrack-using forward chain. */
export function nftSkeleton(): string {
  return (["ip", "ip6"] as const).map((table) => {
    const addr = table === "ip" ? "ipv4_addr" : "ipv6_addr";
    return [
      `table ${table} kube-proxy {`,
      `  map service-ips {`,
      `    type ${addr} . inet_proto . inet_service : verdict`,
      `  }`,
      `  chain nat-prerouting {`,
      `    type nat hook prerouting priority dstnat; policy accept;`,
      `    jump services`,
      `  }`,
      `  chain services {`,
      `    ${table} daddr . meta l4proto . th dport vmap @service-ips`,
      `  }`,
      `  chain filter-forward {`,
      `    type filter hook forward priority -110; policy accept;`,
      `    ct state related,established accept`,
      `  }`,
      `}`,
    ].join("\n");
  }).join("\n") + "\n";
}

/** The Service's DNAT rule for `nft -f -`, in the given style. */
export function nftService(family: Family, port: number, style: DnatStyle): string {
  const a = ADDRESSES[family];
  const table = family === "ipv4" ? "ip" : "ip6";
  const target = hostPort(a.backend, BACKEND_PORT);
  if (style === "plain") {
    return `add rule ${table} kube-proxy services ${table} daddr ${a.vip} tcp dport ${port} ` +
      `dnat to ${target}\n`;
  }
  const code = chainCode(family, port).slice(0, 8);
  const name = `e2e/web/tcp/p${port}`;
  // Unquoted like kube-proxy's names, which spell IPv6 endpoints with dots for colons.
  const ext = `external-${code}-${name}`;
  const svc = `service-${code}-${name}`;
  const ep = `endpoint-${code}-${name}__${a.backend.replaceAll(":", ".")}/${BACKEND_PORT}`;
  return [
    `add chain ${table} kube-proxy ${ep}`,
    `add rule ${table} kube-proxy ${ep} meta l4proto tcp dnat to ${target}`,
    `add chain ${table} kube-proxy ${svc}`,
    `add rule ${table} kube-proxy ${svc} numgen random mod 1 vmap { 0 : goto ${ep} }`,
    `add chain ${table} kube-proxy ${ext}`,
    `add rule ${table} kube-proxy ${ext} goto ${svc}`,
    `add element ${table} kube-proxy service-ips { ${a.vip} . tcp . ${port} : goto ${ext} }`,
    "",
  ].join("\n");
}
