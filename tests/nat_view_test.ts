/**
 * The `nat` rule's view of real rule dumps (made by tests/fixtures/nat-generate.sh), read through
 * the reader as the agent reads them: per flow, which SYNs the node would translate. The
 * evaluators' own tests cover each match; these say what the agent sees for each shape of rule.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Family, Flow } from "../lib/core/flow.ts";
import { createNatReader } from "../lib/nat/nat_reader.ts";
import type { NatSource } from "../lib/nat/nat_source.ts";
import { silentLogger } from "../lib/seams/logger.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { SpawnError } from "../lib/seams/spawn.ts";

const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`./fixtures/${name}`, import.meta.url));

const OUTPUTS: Readonly<Record<string, string>> = {
  "iptables-save -t nat": fixture("nat-iptables-save-v4.txt"),
  "ip6tables-save -t nat": fixture("nat-iptables-save-v6.txt"),
  "nft -j list table ip kube-proxy": fixture("nat-nft-kube-proxy-ip.json"),
  "nft -j list table ip6 kube-proxy": fixture("nat-nft-kube-proxy-ip6.json"),
};

const spawn: SpawnCommand = (program, args) => {
  const stdout = OUTPUTS[[program, ...args].join(" ")];
  if (stdout === undefined) throw new SpawnError(program, "not-found", "not found");
  return {
    stdout: ReadableStream.from([new TextEncoder().encode(stdout)]),
    status: Promise.resolve({ code: 0, stderr: "" }),
  };
};

/** The node's own addresses in these tests (not named by any rule but the NodePort ones). */
const NODE: Readonly<Record<Family, string>> = {
  ipv4: "198.51.100.250",
  ipv6: "2001:db8:51::250",
};
const ENDPOINT: Readonly<Record<Family, string>> = {
  ipv4: "203.0.113.5:8080",
  ipv6: "[2001:db8:203::5]:8080",
};

function synTo(family: Family, dst: string, dport: number): Flow {
  const src = family === "ipv4" ? "198.51.100.2" : "2001:db8::2";
  return {
    family,
    original: { src, dst, sport: 40000, dport },
    reply: { src: dst, dst: src, sport: dport, dport: 40000 },
    zone: 0,
  };
}

/** [what, IPv4 destination, IPv6 destination, port]: translated to the fixtures' endpoint. */
type Case = readonly [string, string, string, number];

const IPTABLES_TRANSLATED: readonly Case[] = [
  ["a kube-proxy cluster IP (KUBE-SVC-)", "198.51.100.96", "2001:db8:96::10", 80],
  ["a kube-proxy LoadBalancer IP (KUBE-EXT-)", "192.0.2.10", "2001:db8:100::10", 80],
  ["a local-policy LoadBalancer IP (KUBE-SVL-)", "192.0.2.12", "2001:db8:100::12", 8443],
  ["a plain DNAT in PREROUTING", "198.51.100.20", "2001:db8:51::20", 8080],
  ["a single port in a multiport list", "198.51.100.27", "2001:db8:51::27", 8081],
  ["a range in a multiport list", "198.51.100.27", "2001:db8:51::27", 8090],
  ["an address inside a DNAT'd subnet", "198.51.100.5", "2001:db8:51::5", 9000],
  ["an address DNAT'd on every port", "198.51.100.22", "2001:db8:51::22", 80],
  ["another address under a negated destination", "198.51.100.99", "2001:db8:51::99", 7070],
  ["another port under a negated port", "198.51.100.25", "2001:db8:51::25", 80],
  ["a port inside a port range", "198.51.100.26", "2001:db8:51::26", 8005],
  ["a NodePort on the node's own address", NODE.ipv4, NODE.ipv6, 30080],
];

const IPTABLES_NOT_TRANSLATED: readonly Case[] = [
  [
    "a source-range LoadBalancer IP, from outside the ranges (KUBE-FW-)",
    "192.0.2.11",
    "2001:db8:100::11",
    443,
  ],
  [
    "a DNAT in OUTPUT only, which forwarded SYNs never traverse",
    "198.51.100.21",
    "2001:db8:51::21",
    25,
  ],
  ["a udp DNAT rule, on tcp", "198.51.100.23", "2001:db8:51::23", 8080],
  ["the negated destination itself", "198.51.100.24", "2001:db8:51::24", 7070],
  ["the negated port itself", "198.51.100.25", "2001:db8:51::25", 8080],
  ["a rule that returns instead of translating", "198.51.100.28", "2001:db8:51::28", 80],
  ["a jump to KUBE-EXT- in the filter table", "198.51.100.29", "2001:db8:51::29", 80],
  ["a udp cluster IP, on tcp", "198.51.100.53", "2001:db8:96::53", 53],
  ["a NodePort on a Service's address, not the node's", "192.0.2.10", "2001:db8:100::10", 30080],
  ["a Service's address on a port it does not serve", "192.0.2.10", "2001:db8:100::10", 81],
];

const NFTABLES_TRANSLATED: readonly Case[] = [
  ["a cluster IP (goto service-)", "198.51.100.96", "2001:db8:96::10", 80],
  ["a LoadBalancer IP (goto external-)", "192.0.2.10", "2001:db8:100::10", 80],
  ["a second port of the same LoadBalancer IP", "192.0.2.10", "2001:db8:100::10", 443],
  ["a local-policy Service IP (goto local-)", "192.0.2.12", "2001:db8:100::12", 8443],
  ["an element with a comment", "192.0.2.12", "2001:db8:100::12", 9443],
  ["a NodePort on the node's own address", NODE.ipv4, NODE.ipv6, 30080],
];

const NFTABLES_NOT_TRANSLATED: readonly Case[] = [
  ["a udp element, on tcp", "198.51.100.23", "2001:db8:51::23", 8080],
  ["a Service without endpoints (no-endpoint-services)", "198.51.100.30", "2001:db8:51::30", 80],
  ["a firewall-ips element, from outside the ranges", "198.51.100.31", "2001:db8:51::31", 80],
  ["a NodePort on a Service's address, not the node's", "192.0.2.10", "2001:db8:100::10", 30080],
  ["a Service's address on a port it does not serve", "192.0.2.10", "2001:db8:100::10", 81],
];

async function viewOf(source: NatSource) {
  const nat = createNatReader({
    source,
    spawn,
    logger: silentLogger,
    nodeAddresses: () => new Set(Object.values(NODE)),
  });
  const view = await nat.read();
  assert.ok(view, `no view from ${source}`);
  return view;
}

function answerText(view: Awaited<ReturnType<typeof viewOf>>, flow: Flow): string {
  const answer = view.answer(flow);
  if (answer.kind !== "dnat") return answer.kind;
  const host = (a: string) => (a.includes(":") ? `[${a}]` : a);
  return answer.endpoints.map((e) => `${host(e.address)}:${e.port}`).join(", ");
}

const SOURCES = [
  ["iptables", IPTABLES_TRANSLATED, IPTABLES_NOT_TRANSLATED],
  ["nftables", NFTABLES_TRANSLATED, NFTABLES_NOT_TRANSLATED],
] as const;

for (const [source, translated, notTranslated] of SOURCES) {
  for (const family of ["ipv4", "ipv6"] as const) {
    const v = family === "ipv4" ? "IPv4" : "IPv6";
    for (const [what, v4, v6, port] of translated) {
      Deno.test(`createNatReader() (${source}) sees ${what} translated (${v})`, async () => {
        const view = await viewOf(source);
        const flow = synTo(family, family === "ipv4" ? v4 : v6, port);
        assert.equal(answerText(view, flow), ENDPOINT[family]);
      });
    }
    for (const [what, v4, v6, port] of notTranslated) {
      Deno.test(`createNatReader() (${source}) sees ${what} not translated (${v})`, async () => {
        const view = await viewOf(source);
        const flow = synTo(family, family === "ipv4" ? v4 : v6, port);
        assert.equal(answerText(view, flow), "none");
      });
    }
  }
}

Deno.test("createNatReader() in auto sees each source's Services, and an endpoint both name once", async () => {
  const view = await viewOf("auto");
  // 198.51.100.20 is a plain iptables DNAT; 192.0.2.10:443 exists in the nftables table only.
  assert.equal(answerText(view, synTo("ipv4", "198.51.100.20", 8080)), ENDPOINT.ipv4);
  assert.equal(answerText(view, synTo("ipv4", "192.0.2.10", 443)), ENDPOINT.ipv4);
  // Both sources translate 192.0.2.10:80 to the same endpoint, named once.
  assert.equal(
    answerText(view, synTo("ipv4", "192.0.2.10", 80)),
    ENDPOINT.ipv4,
  );
});
