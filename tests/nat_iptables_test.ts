import assert from "node:assert/strict";
import type { Family } from "../lib/core/flow.ts";
import { createNatView } from "../lib/nat/nat_reader.ts";
import type { NatDestination } from "../lib/nat/nat_reader.ts";
import { parseIptablesSave, tokenizeRule } from "../lib/nat/iptables_save.ts";

// Real `iptables-save` / `ip6tables-save` output, made by tests/fixtures/nat-generate.sh.
const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`./fixtures/${name}`, import.meta.url)).split("\n");
const V4 = fixture("nat-iptables-save-v4.txt");
const V6 = fixture("nat-iptables-save-v6.txt");

function flow(family: Family, dst: string, dport: number) {
  const src = family === "ipv4" ? "198.51.100.2" : "2001:db8::2";
  return {
    family,
    original: { src, dst, sport: 40000, dport },
    reply: { src: dst, dst: src, sport: dport, dport: 40000 },
    zone: 0,
  };
}

const sorted = (ds: readonly NatDestination[]) => ds.map((d) => `${d.address} ${d.port}`).sort();

// What the generator's rules mean: these destinations, and no others, are translated.
const CASES = [
  {
    family: "ipv4" as const,
    dump: V4,
    counted: {
      "kube-proxy cluster IP (KUBE-SVC-)": ["198.51.100.96", 80],
      "kube-proxy LoadBalancer IP (KUBE-EXT-)": ["192.0.2.10", 80],
      "kube-proxy LoadBalancer IP with source ranges (KUBE-FW-)": ["192.0.2.11", 443],
      "kube-proxy local-policy LoadBalancer IP (KUBE-SVL-)": ["192.0.2.12", 8443],
      "plain DNAT in PREROUTING": ["198.51.100.20", 8080],
      "a single port in a multiport list": ["198.51.100.27", 8081],
    },
    notCounted: {
      "a DNAT in OUTPUT only, which forwarded SYNs never traverse": ["198.51.100.21", 25],
      "an address inside a DNAT'd /24": ["198.51.100.5", 9000],
      "the network address of a DNAT'd /24": ["198.51.100.0", 9000],
      "an address DNAT'd on every port": ["198.51.100.22", 80],
      "a udp DNAT rule": ["198.51.100.23", 8080],
      "a negated destination": ["198.51.100.24", 7070],
      "any other address under a negated destination": ["198.51.100.99", 7070],
      "a negated port, on that port": ["198.51.100.25", 8080],
      "a negated port, on another port": ["198.51.100.25", 80],
      "a port range": ["198.51.100.26", 8005],
      "a range in a multiport list": ["198.51.100.27", 8090],
      "a rule that returns instead of translating": ["198.51.100.28", 80],
      "a jump to KUBE-EXT- in the filter table": ["198.51.100.29", 80],
      "a udp cluster IP, on tcp": ["198.51.100.53", 53],
      "a NodePort, on a Service's address": ["192.0.2.10", 30080],
      "a Service's address on a port it does not serve": ["192.0.2.10", 81],
    },
  },
  {
    family: "ipv6" as const,
    dump: V6,
    counted: {
      "kube-proxy cluster IP (KUBE-SVC-)": ["2001:db8:96::10", 80],
      "kube-proxy LoadBalancer IP (KUBE-EXT-)": ["2001:db8:100::10", 80],
      "kube-proxy LoadBalancer IP with source ranges (KUBE-FW-)": ["2001:db8:100::11", 443],
      "kube-proxy local-policy LoadBalancer IP (KUBE-SVL-)": ["2001:db8:100::12", 8443],
      "plain DNAT in PREROUTING": ["2001:db8:51::20", 8080],
      "a single port in a multiport list": ["2001:db8:51::27", 8081],
    },
    notCounted: {
      "a DNAT in OUTPUT only, which forwarded SYNs never traverse": ["2001:db8:51::21", 25],
      "an address inside a DNAT'd /64": ["2001:db8:51::5", 9000],
      "the network address of a DNAT'd /64": ["2001:db8:51::", 9000],
      "an address DNAT'd on every port": ["2001:db8:51::22", 80],
      "a udp DNAT rule": ["2001:db8:51::23", 8080],
      "a negated destination": ["2001:db8:51::24", 7070],
      "any other address under a negated destination": ["2001:db8:51::99", 7070],
      "a negated port, on that port": ["2001:db8:51::25", 8080],
      "a negated port, on another port": ["2001:db8:51::25", 80],
      "a port range": ["2001:db8:51::26", 8005],
      "a range in a multiport list": ["2001:db8:51::27", 8090],
      "a rule that returns instead of translating": ["2001:db8:51::28", 80],
      "a jump to KUBE-EXT- in the filter table": ["2001:db8:51::29", 80],
      "a udp cluster IP, on tcp": ["2001:db8:96::53", 53],
      "a NodePort, on a Service's address": ["2001:db8:100::10", 30080],
      "a Service's address on a port it does not serve": ["2001:db8:100::10", 81],
    },
  },
];

for (const c of CASES) {
  const v = c.family === "ipv4" ? "IPv4" : "IPv6";

  Deno.test(`parseIptablesSave() finds exactly the translated ${v} destinations`, async () => {
    const found = await parseIptablesSave(c.dump, c.family);
    const expected = Object.values(c.counted).map(([a, p]) => `${a} ${p}`).sort();
    assert.deepEqual(sorted(found), expected);
    assert.ok(found.every((d) => d.family === c.family));
  });

  for (const [what, [address, port]] of Object.entries(c.counted)) {
    Deno.test(`parseIptablesSave() counts ${what} (${v})`, async () => {
      const view = createNatView(await parseIptablesSave(c.dump, c.family));
      assert.equal(view.translates(flow(c.family, String(address), Number(port))), true);
    });
  }

  for (const [what, [address, port]] of Object.entries(c.notCounted)) {
    Deno.test(`parseIptablesSave() does not count ${what} (${v})`, async () => {
      const view = createNatView(await parseIptablesSave(c.dump, c.family));
      assert.equal(view.translates(flow(c.family, String(address), Number(port))), false);
    });
  }
}

Deno.test("parseIptablesSave() reads only the nat table", async () => {
  const dump = [
    "*filter",
    "-A FORWARD -d 192.0.2.50/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X",
    "COMMIT",
    "*mangle",
    "-A PREROUTING -d 192.0.2.51/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-X",
    "COMMIT",
    "*nat",
    "-A PREROUTING -d 192.0.2.52/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1",
    "COMMIT",
  ];
  assert.deepEqual(sorted(await parseIptablesSave(dump, "ipv4")), ["192.0.2.52 80"]);
});

Deno.test("parseIptablesSave() reads a comment that looks like an option as a comment", async () => {
  const dump = [
    "*nat",
    '-A PREROUTING -d 192.0.2.50/32 -p tcp -m comment --comment "-d" -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1',
    '-A PREROUTING -d 192.0.2.51/32 -p tcp -m comment --comment "--dport 81" -j DNAT --to-destination 10.0.0.1',
    "COMMIT",
  ];
  assert.deepEqual(sorted(await parseIptablesSave(dump, "ipv4")), ["192.0.2.50 80"]);
});

Deno.test("parseIptablesSave() ignores addresses of the other family", async () => {
  const dump = [
    "*nat",
    "-A PREROUTING -d 2001:db8::10/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [::1]:8",
    "-A PREROUTING -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1",
    "COMMIT",
  ];
  assert.deepEqual(sorted(await parseIptablesSave(dump, "ipv4")), ["192.0.2.10 80"]);
  assert.deepEqual(sorted(await parseIptablesSave(dump, "ipv6")), ["2001:db8::10 80"]);
});

Deno.test("parseIptablesSave() reads a streamed dump", async () => {
  async function* lines() {
    yield* V4;
  }
  assert.deepEqual(
    sorted(await parseIptablesSave(lines(), "ipv4")),
    [
      ...Object.values(CASES[0]?.counted ?? {}).map(([a, p]) => `${a} ${p}`),
    ].sort(),
  );
});

Deno.test("tokenizeRule() undoes iptables-save's quoting", () => {
  const line = V4.find((l) => l.includes("quoted")) ?? "";
  const words = tokenizeRule(line);
  assert.equal(words[words.indexOf("--comment") + 1], 'default/local:http -> "quoted" endpoint');
  assert.equal(words.at(-1), "KUBE-SEP-WEBEP10000000000");
});

Deno.test("parseIptablesSave() does not count DNAT rules narrowed to some packets or never reached", async () => {
  const dump = [
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ":ORPHAN - [0:0]",
    "-A PREROUTING -s 203.0.113.0/24 -d 192.0.2.30/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 203.0.113.2:8080",
    "-A PREROUTING -i eth1 -d 192.0.2.31/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 203.0.113.2:8080",
    "-A PREROUTING -d 192.0.2.32/32 -p tcp -m mark --mark 0x1 -m tcp --dport 80 -j DNAT --to-destination 203.0.113.2:8080",
    "-A PREROUTING -d 192.0.2.33/32 -p tcp -m statistic --mode random --probability 0.01 -m tcp --dport 80 -j DNAT --to-destination 203.0.113.2:8080",
    "-A ORPHAN -d 192.0.2.34/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 203.0.113.2:8080",
    '-A PREROUTING -d 192.0.2.35/32 -p tcp -m comment --comment "plain" -m tcp --dport 80 -j DNAT --to-destination 203.0.113.2:8080 --random',
    "COMMIT",
  ];
  const found = await parseIptablesSave(dump, "ipv4");
  assert.deepEqual(found.map((d) => `${d.address} ${d.port}`), ["192.0.2.35 80"]);
});
