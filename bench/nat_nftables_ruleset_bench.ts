/**
 * What the per-flow nat rule costs on a big nftables-mode node: reading `nft -j list table ip
 * kube-proxy` of 5,000 kube-proxy Services into a ruleset (once per read of the rules), and
 * judging candidates against it (once per candidate).
 *
 *     deno bench --allow-read bench/nat_nftables_ruleset_bench.ts
 *
 * The JSON is generated in the form nft prints kube-proxy's 1.31 table (compare
 * tests/fixtures/kube-proxy/nftables/overall-v1.31-ip.json): the base chains and dispatch maps,
 * then per Service its service-/external-/local-/endpoint-/firewall- chains and map elements.
 * 60% Cluster LoadBalancers, 20% Cluster LoadBalancers with source ranges and session affinity,
 * 20% Local LoadBalancers (half of them with an endpoint on this node), each with 2 or 3
 * endpoints and a NodePort. Addresses are documentation ones; ports keep the Services apart.
 *
 * @module
 */
import type { NatPacket } from "../lib/nat/nat_path.ts";
import { parseNftablesRuleset } from "../lib/nat/nftables_ruleset.ts";

const SERVICES = 5000;
const NODE = "192.0.2.254";
const PODS = { prefix: { addr: "203.0.113.0", len: 25 } };
const RANGE = { prefix: { addr: "198.51.100.0", len: 25 } };

function service(i: number) {
  const host = 1 + (i % 250);
  const port = 1024 + Math.floor(i / 250);
  const kind = i % 10 < 6 ? "cluster" : i % 10 < 8 ? "ranged" : i % 2 === 0 ? "local" : "remote";
  return { cluster: `198.51.100.${host}`, lb: `192.0.2.${host}`, port, nodePort: 30000 + i, kind };
}

const ip = (field: string) => ({ payload: { protocol: "ip", field } });
const eq = (left: unknown, right: unknown) => ({ match: { op: "==", left, right } });
const ne = (left: unknown, right: unknown) => ({ match: { op: "!=", left, right } });
const key3 = {
  concat: [ip("daddr"), { meta: { key: "l4proto" } }, {
    payload: { protocol: "th", field: "dport" },
  }],
};
const key2 = {
  concat: [{ meta: { key: "l4proto" } }, { payload: { protocol: "th", field: "dport" } }],
};
const fibLocal = (flag: string) => eq({ fib: { result: "type", flags: [flag] } }, "local");
const masq = { jump: { target: "mark-for-masquerade" } };

/** `nft -j list table ip kube-proxy` of `n` Services in kube-proxy's 1.31 form. */
export function kubeProxyNftJson(n: number, endpointsPerService?: number): string {
  const t = { family: "ip", table: "kube-proxy" };
  const objects: unknown[] = [
    { metainfo: { version: "1.0.6", release_name: "Lester Gooch #5", json_schema_version: 1 } },
    { table: { family: "ip", name: "kube-proxy", handle: 1 } },
  ];
  let handle = 2;
  const chain = (name: string, base?: Record<string, unknown>) =>
    objects.push({ chain: { ...t, name, handle: handle++, ...(base ?? {}) } });
  const rule = (chainName: string, expr: unknown[]) =>
    objects.push({ rule: { ...t, chain: chainName, handle: handle++, expr } });
  const base = (hook: string, prio: number, type = "filter") => ({
    type,
    hook,
    prio,
    policy: "accept",
  });
  const elems: Record<string, unknown[]> = {
    "cluster-ips": [],
    "service-ips": [],
    "service-nodeports": [],
    "firewall-ips": [],
    "no-endpoint-services": [],
    "no-endpoint-nodeports": [],
  };
  const vmap = (data: string, key: unknown) => ({ vmap: { key, data: `@${data}` } });
  const newState = eq({ ct: { key: "state" } }, "new");
  chain("filter-prerouting-pre-dnat", base("prerouting", -110));
  chain("filter-forward", base("forward", 0));
  chain("filter-input", base("input", 0));
  chain("nat-prerouting", base("prerouting", -100, "nat"));
  chain("nat-postrouting", base("postrouting", 100, "nat"));
  for (
    const name of [
      "cluster-ips-check",
      "firewall-check",
      "mark-for-masquerade",
      "masquerading",
      "nodeport-endpoints-check",
      "reject-chain",
      "services",
      "service-endpoints-check",
    ]
  ) {
    chain(name);
  }
  rule("cluster-ips-check", [eq(ip("daddr"), "@cluster-ips"), {
    reject: { type: "icmp", expr: "port-unreachable" },
  }]);
  rule("filter-prerouting-pre-dnat", [newState, { jump: { target: "firewall-check" } }]);
  rule("filter-forward", [newState, { jump: { target: "service-endpoints-check" } }]);
  rule("filter-forward", [newState, { jump: { target: "cluster-ips-check" } }]);
  rule("filter-input", [newState, { jump: { target: "nodeport-endpoints-check" } }]);
  rule("filter-input", [newState, { jump: { target: "service-endpoints-check" } }]);
  rule("firewall-check", [vmap("firewall-ips", key3)]);
  rule("mark-for-masquerade", [{
    mangle: { key: { meta: { key: "mark" } }, value: { "|": [{ meta: { key: "mark" } }, 16384] } },
  }]);
  rule("masquerading", [{ masquerade: { flags: "fully-random" } }]);
  rule("nat-postrouting", [{ jump: { target: "masquerading" } }]);
  rule("nat-prerouting", [{ jump: { target: "services" } }]);
  rule("nodeport-endpoints-check", [
    eq(ip("daddr"), "@nodeport-ips"),
    vmap("no-endpoint-nodeports", key2),
  ]);
  rule("reject-chain", [{ reject: { type: "icmp", expr: "port-unreachable" } }]);
  rule("services", [vmap("service-ips", key3)]);
  rule("services", [eq(ip("daddr"), "@nodeport-ips"), vmap("service-nodeports", key2)]);
  rule("service-endpoints-check", [vmap("no-endpoint-services", key3)]);
  const sets: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const s = service(i);
    const name = `${i.toString(36).padStart(8, "0")}-ns${i % 50}/svc${i}/tcp/p${s.port}`;
    const svc = `service-${name}`;
    const ext = `external-${name}`;
    const endpoints = Array.from({ length: endpointsPerService ?? 2 + (i % 2) }, (_, e) => ({
      address: `203.0.113.${1 + ((i + e * 37) % 120)}`,
      port: 8000 + (i % 1000) + Math.floor(e / 120),
    }));
    const epChains = endpoints.map((e) => `endpoint-${name}__${e.address}/${e.port}`);
    chain(svc);
    rule(svc, [eq(ip("daddr"), s.cluster), ne(ip("saddr"), PODS), masq]);
    if (s.kind === "ranged") {
      const affinity = `affinity-${name}`;
      sets.push({
        set: {
          ...t,
          name: affinity,
          type: "ipv4_addr",
          handle: handle++,
          size: 65535,
          flags: ["timeout"],
          timeout: 10800,
        },
      });
      rule(svc, [eq(ip("saddr"), `@${affinity}`), { goto: { target: epChains[0] } }]);
    }
    rule(svc, [{
      vmap: {
        key: { numgen: { mode: "random", mod: epChains.length, offset: 0 } },
        data: { set: epChains.map((c, k) => [k, { goto: { target: c } }]) },
      },
    }]);
    endpoints.forEach((e, k) => {
      const c = epChains[k] as string;
      chain(c);
      rule(c, [eq(ip("saddr"), e.address), masq]);
      rule(c, [eq({ meta: { key: "l4proto" } }, "tcp"), {
        dnat: { addr: e.address, port: e.port },
      }]);
    });
    chain(ext);
    if (s.kind === "local" || s.kind === "remote") {
      rule(ext, [eq(ip("saddr"), PODS), { goto: { target: svc } }]);
      rule(ext, [fibLocal("saddr"), masq]);
      rule(ext, [fibLocal("saddr"), { goto: { target: svc } }]);
      if (s.kind === "local") {
        const local = `local-${name}`;
        chain(local);
        rule(local, [{
          vmap: {
            key: { numgen: { mode: "random", mod: 1, offset: 0 } },
            data: { set: [[0, { goto: { target: epChains[0] } }]] },
          },
        }]);
        rule(ext, [{ goto: { target: local } }]);
      } else {
        elems["no-endpoint-services"]!.push([{
          elem: { val: { concat: [s.lb, "tcp", s.port] }, comment: name },
        }, { drop: null }]);
        elems["no-endpoint-nodeports"]!.push([{
          elem: { val: { concat: ["tcp", s.nodePort] }, comment: name },
        }, { drop: null }]);
      }
    } else {
      rule(ext, [masq]);
      rule(ext, [{ goto: { target: svc } }]);
    }
    if (s.kind === "ranged") {
      const fw = `firewall-${name}`;
      chain(fw);
      rule(fw, [ne(ip("saddr"), RANGE), { drop: null }]);
      elems["firewall-ips"]!.push([{ concat: [s.lb, "tcp", s.port] }, { goto: { target: fw } }]);
    }
    elems["cluster-ips"]!.push(s.cluster);
    elems["service-ips"]!.push([{ concat: [s.cluster, "tcp", s.port] }, { goto: { target: svc } }]);
    elems["service-ips"]!.push([{ concat: [s.lb, "tcp", s.port] }, { goto: { target: ext } }]);
    elems["service-nodeports"]!.push([{ concat: ["tcp", s.nodePort] }, { goto: { target: ext } }]);
  }
  const mapType = (name: string) =>
    name.endsWith("nodeports")
      ? ["inet_proto", "inet_service"]
      : ["ipv4_addr", "inet_proto", "inet_service"];
  const head: unknown[] = [
    {
      set: {
        ...t,
        name: "cluster-ips",
        type: "ipv4_addr",
        handle: handle++,
        elem: [...new Set(elems["cluster-ips"])],
      },
    },
    { set: { ...t, name: "nodeport-ips", type: "ipv4_addr", handle: handle++, elem: [NODE] } },
  ];
  for (const name of Object.keys(elems).filter((k) => k !== "cluster-ips")) {
    head.push({
      map: { ...t, name, type: mapType(name), handle: handle++, map: "verdict", elem: elems[name] },
    });
  }
  const [meta, table, ...rest] = objects;
  return JSON.stringify({ nftables: [meta, table, ...head, ...sets, ...rest] });
}

/** 1,000 candidates: LB IPs and NodePorts from outside and inside the ranges, plus strangers. */
function candidates(): NatPacket[] {
  return Array.from({ length: 1000 }, (_, i) => {
    const s = service((i * 7) % SERVICES);
    const src = i % 3 === 0 ? "198.51.100.200" : "198.51.100.20";
    const [dst, dport] = i % 5 === 0
      ? [NODE, s.nodePort]
      : i % 11 === 0
      ? ["192.0.2.255", 443]
      : [s.lb, s.port];
    return { family: "ipv4", src, dst, sport: 40000 + i, dport };
  });
}

const json = kubeProxyNftJson(SERVICES);
const node = { localAddresses: new Set([NODE, "127.0.0.1"]) };
const ruleset = parseNftablesRuleset(json);
const packets = candidates();
const kinds = new Map<string, number>();
for (const p of packets) {
  const kind = ruleset.evaluate(p, node).kind;
  kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
}
console.log(
  `${SERVICES} Services: ${(json.length / 2 ** 20).toFixed(2)} MiB of JSON; verdicts of the ` +
    `1,000 candidates: ${JSON.stringify(Object.fromEntries(kinds))}`,
);

Deno.bench({
  name: `JSON.parse() alone of the ${SERVICES}-Service table`,
  group: "read",
  n: 20,
  fn: () => {
    JSON.parse(json);
  },
});

Deno.bench({
  name: `parseNftablesRuleset() of ${SERVICES} Services (JSON.parse + view)`,
  group: "read",
  baseline: true,
  n: 20,
  fn: () => {
    parseNftablesRuleset(json);
  },
});

// One Service of 500 endpoints: every random choice is followed, so the cost grows with them.
const wide = parseNftablesRuleset(kubeProxyNftJson(1, 500));
const wideLb: NatPacket = {
  family: "ipv4",
  src: "198.51.100.20",
  dst: service(0).lb,
  sport: 40000,
  dport: service(0).port,
};
const wideVerdict = wide.evaluate(wideLb, node);
if (wideVerdict.kind !== "dnat" || wideVerdict.endpoints.length !== 500) {
  throw new Error(`the 500-endpoint Service gave ${JSON.stringify(wideVerdict).slice(0, 80)}`);
}

Deno.bench({
  name: "evaluate() of one candidate to a Service of 500 endpoints",
  group: "evaluate",
  fn: () => {
    wide.evaluate(wideLb, node);
  },
});

Deno.bench({
  name: "evaluate() of 1,000 candidates",
  group: "evaluate",
  fn: () => {
    for (const p of packets) ruleset.evaluate(p, node);
  },
});
