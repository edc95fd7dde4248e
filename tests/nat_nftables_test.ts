import assert from "node:assert/strict";
import type { Family } from "../lib/core/flow.ts";
import { createNatView } from "../lib/nat/nat_reader.ts";
import type { NatDestination } from "../lib/nat/nat_reader.ts";
import { parseNftKubeProxy } from "../lib/nat/nftables_json.ts";

// Real `nft -j list table ip[6] kube-proxy` output, made by tests/fixtures/nat-generate.sh.
const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`./fixtures/${name}`, import.meta.url));
const IP = fixture("nat-nft-kube-proxy-ip.json");
const IP6 = fixture("nat-nft-kube-proxy-ip6.json");

function flow(family: Family, dst: string, dport: number) {
  const src = family === "ipv4" ? "198.51.100.2" : "2001:db8::2";
  return {
    family,
    original: { src, dst, sport: 40000, dport },
    reply: { src: dst, dst: src, sport: dport, dport: 40000 },
    zone: 0,
  };
}

const sorted = (ds: readonly NatDestination[]) =>
  ds.map((d) => `${d.family} ${d.address} ${d.port}`).sort();

const CASES = [
  {
    family: "ipv4" as const,
    json: IP,
    counted: {
      "a cluster IP (goto service-)": ["198.51.100.96", 80],
      "a LoadBalancer IP (goto external-)": ["192.0.2.10", 80],
      "a second port of the same LoadBalancer IP": ["192.0.2.10", 443],
      "a local-policy cluster IP (goto local-)": ["192.0.2.12", 8443],
      "an element with a comment": ["192.0.2.12", 9443],
    },
    notCounted: {
      "a udp element": ["198.51.100.23", 8080],
      "a Service without endpoints (no-endpoint-services)": ["198.51.100.30", 80],
      "a firewall-ips element": ["198.51.100.31", 80],
      "a NodePort (service-nodeports), on a Service's address": ["192.0.2.10", 30080],
      "a Service's address on a port it does not serve": ["192.0.2.10", 81],
    },
  },
  {
    family: "ipv6" as const,
    json: IP6,
    counted: {
      "a cluster IP (goto service-)": ["2001:db8:96::10", 80],
      "a LoadBalancer IP (goto external-)": ["2001:db8:100::10", 80],
      "a second port of the same LoadBalancer IP": ["2001:db8:100::10", 443],
      "a local-policy cluster IP (goto local-)": ["2001:db8:100::12", 8443],
      "an element with a comment": ["2001:db8:100::12", 9443],
    },
    notCounted: {
      "a udp element": ["2001:db8:51::23", 8080],
      "a Service without endpoints (no-endpoint-services)": ["2001:db8:51::30", 80],
      "a firewall-ips element": ["2001:db8:51::31", 80],
      "a NodePort (service-nodeports), on a Service's address": ["2001:db8:100::10", 30080],
      "a Service's address on a port it does not serve": ["2001:db8:100::10", 81],
    },
  },
];

for (const c of CASES) {
  const table = c.family === "ipv4" ? "ip" : "ip6";

  Deno.test(`parseNftKubeProxy() finds exactly the service-ips tcp destinations (${table})`, () => {
    const expected = Object.values(c.counted).map(([a, p]) => `${c.family} ${a} ${p}`).sort();
    assert.deepEqual(sorted(parseNftKubeProxy(c.json)), expected);
  });

  for (const [what, [address, port]] of Object.entries(c.counted)) {
    Deno.test(`parseNftKubeProxy() counts ${what} (${table})`, () => {
      const view = createNatView(parseNftKubeProxy(c.json));
      assert.equal(view.translates(flow(c.family, String(address), Number(port))), true);
    });
  }

  for (const [what, [address, port]] of Object.entries(c.notCounted)) {
    Deno.test(`parseNftKubeProxy() does not count ${what} (${table})`, () => {
      const view = createNatView(parseNftKubeProxy(c.json));
      assert.equal(view.translates(flow(c.family, String(address), Number(port))), false);
    });
  }
}

Deno.test("parseNftKubeProxy() reads only kube-proxy's service-ips maps", () => {
  const map = (table: string, name: string, address: string) => ({
    map: {
      family: "ip",
      table,
      name,
      type: ["ipv4_addr", "inet_proto", "inet_service"],
      map: "verdict",
      elem: [[{ concat: [address, "tcp", 80] }, { goto: { target: "service-x" } }]],
    },
  });
  const json = JSON.stringify({
    nftables: [
      map("kube-proxy", "service-ips", "192.0.2.1"),
      map("other", "service-ips", "192.0.2.2"),
      map("kube-proxy", "no-endpoint-services", "192.0.2.3"),
    ],
  });
  assert.deepEqual(sorted(parseNftKubeProxy(json)), ["ipv4 192.0.2.1 80"]);
});

Deno.test("parseNftKubeProxy() does not count elements that drop, reject or are ranges", () => {
  const elem = (key: unknown, verdict: unknown) => [key, verdict];
  const json = JSON.stringify({
    nftables: [{
      map: {
        family: "ip",
        table: "kube-proxy",
        name: "service-ips",
        map: "verdict",
        elem: [
          elem({ concat: ["192.0.2.1", "tcp", 80] }, { drop: null }),
          elem({ concat: [{ prefix: { addr: "192.0.2.0", len: 24 } }, "tcp", 80] }, {
            goto: { target: "service-x" },
          }),
          elem({ concat: ["192.0.2.2", "tcp", { range: [80, 90] }] }, {
            goto: { target: "service-x" },
          }),
          elem({ concat: ["192.0.2.3", "tcp", 80] }, { jump: { target: "service-x" } }),
        ],
      },
    }],
  });
  assert.deepEqual(sorted(parseNftKubeProxy(json)), ["ipv4 192.0.2.3 80"]);
});

Deno.test("parseNftKubeProxy() gives no destinations for a table without Services", () => {
  const json = JSON.stringify({
    nftables: [{ metainfo: { version: "1.0.6", json_schema_version: 1 } }, {
      table: { family: "ip", name: "kube-proxy", handle: 1 },
    }],
  });
  assert.deepEqual(parseNftKubeProxy(json), []);
});

Deno.test("parseNftKubeProxy() throws SyntaxError on text that is not nft JSON", () => {
  assert.throws(() => parseNftKubeProxy("table ip kube-proxy {"), SyntaxError);
  assert.throws(() => parseNftKubeProxy('{"tables": []}'), {
    name: "SyntaxError",
    message: /^Cannot read nft output as a ruleset: current value starts with/,
  });
});
