/**
 * What the per-flow nat rule costs on a big node: reading `iptables-save -t nat` of 5,000
 * kube-proxy Services into a ruleset (once per read of the rules), and judging one candidate
 * against it (once per candidate).
 *
 *     deno bench --allow-read bench/nat_ruleset_bench.ts
 *
 * The ruleset is generated in the shape kube-proxy writes today (KUBE-SERVICES, KUBE-NODEPORTS,
 * KUBE-EXT/KUBE-FW/KUBE-SVC/KUBE-SVL/KUBE-SEP chains, statistic and recent matches): 60% Cluster
 * LoadBalancers, 20% Cluster LoadBalancers with source ranges and session affinity, 20% Local
 * LoadBalancers (half of them with an endpoint on this node), each with 2 or 3 endpoints and a
 * NodePort. Addresses are documentation ones; ports keep the Services apart.
 *
 * @module
 */
import { parseIptablesRuleset } from "../lib/nat/iptables_ruleset.ts";
import type { NatPacket } from "../lib/nat/nat_path.ts";

const SERVICES = 5000;
const NODE = "192.0.2.254";

function service(i: number) {
  const host = 1 + (i % 250);
  const port = 1024 + Math.floor(i / 250);
  return { cluster: `198.51.100.${host}`, lb: `192.0.2.${host}`, port, nodePort: 30000 + i };
}

/** `iptables-save -t nat` text of `n` Services in kube-proxy's form. */
export function kubeProxyRuleset(n: number): string {
  const chains: string[] = [
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
  ];
  const rules: string[] = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
  ];
  for (let i = 0; i < n; i++) {
    const { cluster, lb, port, nodePort } = service(i);
    const id = i.toString(36).toUpperCase().padStart(16, "0");
    const name = `ns${i % 100}/svc${i}:http`;
    const kind = i % 5 < 3 ? "cluster" : i % 5 === 3 ? "ranges" : "local";
    const endpoints = Array.from(
      { length: 2 + (i % 2) },
      (_, e) => `203.0.113.${1 + ((i + e) % 250)}`,
    );
    const sep = (e: number) => `KUBE-SEP-${id}-${e}`;
    chains.push(`:KUBE-SVC-${id} - [0:0]`, `:KUBE-EXT-${id} - [0:0]`);
    endpoints.forEach((_, e) => chains.push(`:${sep(e)} - [0:0]`));
    const lbTarget = kind === "ranges" ? `KUBE-FW-${id}` : `KUBE-EXT-${id}`;
    rules.push(
      `-A KUBE-SERVICES -m comment --comment "${name} cluster IP" -m tcp -p tcp -d ${cluster} --dport ${port} -j KUBE-SVC-${id}`,
      `-A KUBE-SERVICES -m comment --comment "${name} loadbalancer IP" -m tcp -p tcp -d ${lb} --dport ${port} -j ${lbTarget}`,
      `-A KUBE-NODEPORTS -m comment --comment ${name} -m tcp -p tcp --dport ${nodePort} -j KUBE-EXT-${id}`,
      `-A KUBE-SVC-${id} -m comment --comment "${name} cluster IP" -m tcp -p tcp -d ${cluster} --dport ${port} ! -s 198.51.100.0/24 -j KUBE-MARK-MASQ`,
    );
    if (kind === "ranges") {
      chains.push(`:KUBE-FW-${id} - [0:0]`);
      rules.push(
        `-A KUBE-FW-${id} -m comment --comment "${name} loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-${id}`,
        `-A KUBE-FW-${id} -m comment --comment "other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL"`,
      );
    }
    if (kind === "local") {
      chains.push(`:KUBE-SVL-${id} - [0:0]`);
      rules.push(
        `-A KUBE-EXT-${id} -m comment --comment "pod traffic for ${name} external destinations" -s 198.51.100.0/24 -j KUBE-SVC-${id}`,
        `-A KUBE-EXT-${id} -m comment --comment "masquerade LOCAL traffic for ${name} external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`,
        `-A KUBE-EXT-${id} -m comment --comment "route LOCAL traffic for ${name} external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-${id}`,
        `-A KUBE-EXT-${id} -j KUBE-SVL-${id}`,
      );
      if (i % 2 === 0) {
        rules.push(
          `-A KUBE-SVL-${id} -m comment --comment "${name} -> ${endpoints[0]}:8080" -j ${sep(0)}`,
        );
      }
    } else {
      rules.push(
        `-A KUBE-EXT-${id} -m comment --comment "masquerade traffic for ${name} external destinations" -j KUBE-MARK-MASQ`,
        `-A KUBE-EXT-${id} -j KUBE-SVC-${id}`,
      );
    }
    endpoints.forEach((endpoint, e) => {
      const affinity = kind === "ranges" ? ` -m recent --name ${sep(e)} --set` : "";
      if (kind === "ranges") {
        rules.push(
          `-A KUBE-SVC-${id} -m comment --comment "${name} -> ${endpoint}:8080" -m recent --name ${
            sep(e)
          } --rcheck --seconds 10800 --reap -j ${sep(e)}`,
        );
      }
      const left = endpoints.length - e;
      const statistic = left > 1
        ? ` -m statistic --mode random --probability ${(1 / left).toFixed(10)}`
        : "";
      rules.push(
        `-A KUBE-SVC-${id} -m comment --comment "${name} -> ${endpoint}:8080"${statistic} -j ${
          sep(e)
        }`,
        `-A ${sep(e)} -m comment --comment ${name} -s ${endpoint} -j KUBE-MARK-MASQ`,
        `-A ${
          sep(e)
        } -m comment --comment ${name}${affinity} -m tcp -p tcp -j DNAT --to-destination ${endpoint}:8080`,
      );
    });
  }
  rules.push(
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
  );
  // iptables-save prints each chain's rules together, chains in the order they were declared.
  const byChain = new Map<string, string[]>();
  for (const rule of rules) {
    const chain = rule.split(" ", 2)[1] ?? "";
    const list = byChain.get(chain);
    if (list) list.push(rule);
    else byChain.set(chain, [rule]);
  }
  const grouped = [...byChain.values()].flat();
  return ["*nat", ":PREROUTING ACCEPT [0:0]", ...chains, ...grouped, "COMMIT", ""].join("\n");
}

const text = kubeProxyRuleset(SERVICES);
const ruleset = parseIptablesRuleset(text, "ipv4");
const node = { localAddresses: new Set([NODE]) };

/** Candidates of every shape, spread over the table: LB IPs from inside and outside, NodePorts, misses. */
const candidates: NatPacket[] = [];
for (let i = 0; i < SERVICES; i += 37) {
  const { cluster, lb, port, nodePort } = service(i);
  candidates.push(
    { family: "ipv4", src: "203.0.113.200", dst: lb, sport: 40000, dport: port },
    { family: "ipv4", src: "203.0.113.10", dst: lb, sport: 40001, dport: port },
    { family: "ipv4", src: "203.0.113.200", dst: cluster, sport: 40002, dport: port },
    { family: "ipv4", src: "203.0.113.200", dst: NODE, sport: 40003, dport: nodePort },
    { family: "ipv4", src: "203.0.113.200", dst: lb, sport: 40004, dport: 9 },
  );
}

Deno.bench({
  name: `parseIptablesRuleset(): ${SERVICES} Services (${text.split("\n").length} lines, ${
    (text.length / 1e6).toFixed(1)
  } MB)`,
  group: "read",
  fn: () => {
    parseIptablesRuleset(text, "ipv4");
  },
});

Deno.bench({
  name: `evaluate(): ${candidates.length} candidates of every shape, ${SERVICES} Services`,
  group: "evaluate",
  fn: () => {
    for (const packet of candidates) ruleset.evaluate(packet, node);
  },
});
