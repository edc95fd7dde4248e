import assert from "node:assert/strict";
import type { Family } from "../lib/core/flow.ts";
import { parseIptablesRuleset } from "../lib/nat/iptables_ruleset.ts";
import type { NatPathVerdict } from "../lib/nat/nat_path.ts";
import { fixturesOf, toIpv6, UPSTREAM } from "./fixtures/kube-proxy/remap.ts";

const FIXTURES = new URL("./fixtures/kube-proxy/", import.meta.url).pathname;
const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

/** An IPv4 documentation address, or its IPv6 twin (remap.ts's mapping). */
function addr(family: Family, v4: string): string {
  return family === "ipv4" ? v4 : toIpv6(v4);
}

function fixture(name: string, family: Family): { text: string; node: ReadonlySet<string> } {
  const text = Deno.readTextFileSync(
    `${FIXTURES}iptables/${name}.${family === "ipv4" ? "v4" : "v6"}.txt`,
  );
  const nodeAddresses = (/^# node-addresses: (.*)$/m.exec(text)?.[1] ?? "").split(" ");
  return { text, node: new Set(nodeAddresses) };
}

/** `dnat a:p,b:q`, `none` or `unknown`: what a user reads in a log line. */
function show(verdict: NatPathVerdict): string {
  if (verdict.kind !== "dnat") return verdict.kind;
  const endpoints = verdict.endpoints.map((e) => `${e.address}|${e.port}`).sort();
  return `dnat ${endpoints.join(",")}`;
}

// ---------------------------------------------------------------------------------------------
// Service shapes, on kube-proxy's own rulesets (both families)

interface ShapeCase {
  readonly name: string;
  readonly fixture: string;
  readonly src: string;
  readonly dst: string;
  readonly dport: number;
  /** `none`, `unknown`, or the endpoints as `address|port` (IPv4 form). */
  readonly expected: "none" | "unknown" | readonly string[];
}

const OVERALL = "v1.3x-overall-iptables-rules";
const LOCAL = "v1.2x-external-traffic-policy-local";
const AKS_NO_LOCAL = "v1.12-aks-node-without-local-endpoints";
const AKS_LOCAL = "v1.12-aks-node-with-local-endpoints";
const INSIDE = "203.0.113.10"; // in the LB source range 203.0.113.0/25
const OUTSIDE = "203.0.113.200";
const POD = "198.51.100.200"; // in the cluster CIDR

const SHAPES: readonly ShapeCase[] = [
  {
    name: "a ClusterIP",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.41",
    dport: 80,
    expected: ["198.51.100.1|80"],
  },
  {
    name: "a ClusterIP on another port",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.41",
    dport: 81,
    expected: "none",
  },
  {
    name: "a Cluster LB IP from inside its source ranges",
    fixture: OVERALL,
    src: INSIDE,
    dst: "192.0.2.108",
    dport: 80,
    expected: ["198.51.100.3|80"],
  },
  {
    name: "a Cluster LB IP from outside its source ranges",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.108",
    dport: 80,
    expected: "none",
  },
  {
    name: "a session-affinity ClusterIP",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.45",
    dport: 80,
    expected: ["198.51.100.3|80"],
  },
  {
    name: "a Local LB IP without local endpoints, from outside",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.104",
    dport: 80,
    expected: "none",
  },
  {
    name: "a Local LB IP without local endpoints, from a pod",
    fixture: OVERALL,
    src: POD,
    dst: "192.0.2.104",
    dport: 80,
    expected: ["198.51.100.2|80"],
  },
  {
    name: "a Local LB IP without local endpoints, from the node",
    fixture: OVERALL,
    src: "192.0.2.2",
    dst: "192.0.2.104",
    dport: 80,
    expected: ["198.51.100.2|80"],
  },
  {
    name: "a Local externalIP without local endpoints",
    fixture: OVERALL,
    src: INSIDE,
    dst: "192.0.2.122",
    dport: 80,
    expected: "none",
  },
  {
    name: "a Cluster externalIP with two endpoints",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.133",
    dport: 80,
    expected: ["198.51.100.4|80", "198.51.100.5|80"],
  },
  {
    name: "a NodePort on the node's address",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.2",
    dport: 3003,
    expected: ["198.51.100.3|80"],
  },
  {
    name: "a NodePort on an address that is not the node's",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.9",
    dport: 3003,
    expected: "none",
  },
  {
    name: "a Local NodePort without local endpoints",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.2",
    dport: 3001,
    expected: "none",
  },
  {
    name: "a ClusterIP without endpoints (REJECT in filter, nothing in nat)",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.46",
    dport: 80,
    expected: "none",
  },
  {
    name: "a health check node port",
    fixture: OVERALL,
    src: OUTSIDE,
    dst: "192.0.2.2",
    dport: 30000,
    expected: "none",
  },
  {
    name: "a Local LB IP with a local endpoint, from outside",
    fixture: LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.104",
    dport: 80,
    expected: ["198.51.100.21|80"],
  },
  {
    name: "a Local LB IP with a local endpoint, from a pod",
    fixture: LOCAL,
    src: POD,
    dst: "192.0.2.104",
    dport: 80,
    expected: ["198.51.100.1|80", "198.51.100.21|80"],
  },
  {
    name: "a Local NodePort with a local endpoint",
    fixture: LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.2",
    dport: 3001,
    expected: ["198.51.100.21|80"],
  },
  {
    name: "an old Local LB IP without local endpoints (KUBE-FW, KUBE-XLB, KUBE-MARK-DROP)",
    fixture: AKS_NO_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.190",
    dport: 80,
    expected: "none",
  },
  {
    name: "an old Local LB IP without local endpoints, from a pod",
    fixture: AKS_NO_LOCAL,
    src: POD,
    dst: "192.0.2.190",
    dport: 80,
    expected: ["198.51.100.6|80"],
  },
  {
    name: "an old Cluster LB IP (KUBE-FW without source ranges)",
    fixture: AKS_NO_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.117",
    dport: 80,
    expected: ["198.51.100.6|80"],
  },
  {
    name: "an old Local NodePort without local endpoints",
    fixture: AKS_NO_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.5",
    dport: 30002,
    expected: "none",
  },
  {
    name: "an old externalIP that is the node's address",
    fixture: AKS_NO_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.5",
    dport: 6379,
    expected: ["198.51.100.76|6379", "198.51.100.77|6379"],
  },
  {
    name: "an old session-affinity ClusterIP (recent)",
    fixture: AKS_NO_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.52",
    dport: 6379,
    expected: ["198.51.100.69|6379", "198.51.100.70|6379"],
  },
  {
    name: "an old Local LB IP with a local endpoint (KUBE-XLB balancing rule)",
    fixture: AKS_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.190",
    dport: 80,
    expected: ["198.51.100.6|80"],
  },
  {
    name: "an old externalIP routed through the node (physdev ! --physdev-is-in)",
    fixture: AKS_LOCAL,
    src: OUTSIDE,
    dst: "192.0.2.5",
    dport: 6379,
    expected: ["198.51.100.76|6379", "198.51.100.77|6379"],
  },
  {
    name: "an old externalIP from the node itself (handled in OUTPUT, not here)",
    fixture: AKS_LOCAL,
    src: "192.0.2.4",
    dst: "192.0.2.5",
    dport: 6379,
    expected: "none",
  },
];

for (const family of FAMILIES) {
  for (const c of SHAPES) {
    Deno.test(`evaluate() judges ${c.name} (${c.fixture}, ${family})`, () => {
      const { text, node } = fixture(c.fixture, family);
      const ruleset = parseIptablesRuleset(text, family);
      const verdict = ruleset.evaluate(
        {
          family,
          src: addr(family, c.src),
          dst: addr(family, c.dst),
          sport: 40000,
          dport: c.dport,
        },
        { localAddresses: node },
      );
      const expected = typeof c.expected === "string" ? c.expected : `dnat ${
        c.expected.map((e) => {
          const [a = "", p] = e.split("|");
          return `${addr(family, a)}|${p}`;
        }).sort().join(",")
      }`;
      assert.equal(show(verdict), expected);
    });
  }
}

Deno.test("remap.ts reproduces the committed fixtures from the upstream rulesets", async () => {
  for (const upstream of UPSTREAM) {
    const text = await Deno.readTextFile(`${FIXTURES}upstream/iptables/${upstream.name}.txt`);
    const { v4, v6 } = fixturesOf(upstream, text);
    assert.equal(await Deno.readTextFile(`${FIXTURES}iptables/${upstream.name}.v4.txt`), v4);
    assert.equal(await Deno.readTextFile(`${FIXTURES}iptables/${upstream.name}.v6.txt`), v6);
    // No address outside the documentation ranges (and loopback) is left in a fixture.
    for (const m of v4.matchAll(/\d+\.\d+\.\d+\.\d+/g)) {
      assert.match(
        m[0],
        /^(192\.0\.2\.|198\.51\.100\.|203\.0\.113\.|127\.0\.0\.0|255\.255\.255\.255)/,
      );
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Match types, on small rulesets

const SRC = "203.0.113.9";
const DST = "192.0.2.10";
const EP = "198.51.100.7";

/** A nat table whose PREROUTING holds `rules` (chains declared as needed), then one packet. */
function judge(
  rules: readonly string[],
  options: {
    readonly family?: Family;
    readonly src?: string;
    readonly dst?: string;
    readonly sport?: number;
    readonly dport?: number;
    readonly local?: readonly string[];
    readonly chains?: readonly string[];
  } = {},
): string {
  const family = options.family ?? "ipv4";
  const a = (v4: string) => addr(family, v4);
  const swap = (line: string) =>
    family === "ipv4" ? line : line
      .replace(/--to-destination ([\d.]+):(\d+)/, (_m, h: string, p: string) =>
        `--to-destination [${toIpv6(h)}]:${p}`)
      .replace(/\d+\.\d+\.\d+\.\d+(\/\d+)?/g, (t) =>
        toIpv6(t));
  const text = [
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ...(options.chains ?? []).map((c) => `:${c} - [0:0]`),
    ...rules.map(swap),
    "COMMIT",
  ];
  const verdict = parseIptablesRuleset(text, family).evaluate(
    {
      family,
      src: a(options.src ?? SRC),
      dst: a(options.dst ?? DST),
      sport: options.sport ?? 40000,
      dport: options.dport ?? 80,
    },
    { localAddresses: new Set((options.local ?? []).map(a)) },
  );
  return verdict.kind === "dnat"
    ? show({
      kind: "dnat",
      endpoints: verdict.endpoints.map((e) => ({ ...e, address: e.address })),
    })
    : verdict.kind;
}

const DNAT = `-j DNAT --to-destination ${EP}:8080`;
const hit = (family: Family) => `dnat ${addr(family, EP)}|8080`;

for (const family of FAMILIES) {
  Deno.test(`evaluate() follows -s and -d with and without ! (${family})`, () => {
    assert.equal(
      judge([`-A PREROUTING -s 203.0.113.0/25 -d ${DST}/32 -p tcp ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(judge([`-A PREROUTING -s 203.0.113.128/25 -p tcp ${DNAT}`], { family }), "none");
    assert.equal(
      judge([`-A PREROUTING ! -s 203.0.113.128/25 -p tcp ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(judge([`-A PREROUTING ! -d ${DST}/32 -p tcp ${DNAT}`], { family }), "none");
  });

  Deno.test(`evaluate() matches the protocol, --dport, --sport and multiport (${family})`, () => {
    assert.equal(judge([`-A PREROUTING -p udp -m udp --dport 80 ${DNAT}`], { family }), "none");
    assert.equal(judge([`-A PREROUTING ! -p udp ${DNAT}`], { family }), hit(family));
    assert.equal(judge([`-A PREROUTING -p tcp -m tcp --dport 81 ${DNAT}`], { family }), "none");
    assert.equal(
      judge([`-A PREROUTING -p tcp -m tcp ! --dport 81 ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(
      judge([`-A PREROUTING -p tcp -m tcp --sport 40000 ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(
      judge([`-A PREROUTING -p tcp -m multiport --dports 443,70:90 ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(
      judge([`-A PREROUTING -p tcp -m multiport --dports 443,8080 ${DNAT}`], { family }),
      "none",
    );
    assert.equal(judge([`-A PREROUTING -p tcp -m tcp --syn ${DNAT}`], { family }), hit(family));
    assert.equal(
      judge([`-A PREROUTING -p tcp -m tcp --tcp-flags SYN,ACK ACK ${DNAT}`], { family }),
      "none",
    );
  });

  Deno.test(`evaluate() takes addrtype LOCAL from the node's addresses (${family})`, () => {
    const rules = [`-A PREROUTING -m addrtype --dst-type LOCAL ${DNAT}`];
    assert.equal(judge(rules, { family, local: [DST] }), hit(family));
    assert.equal(judge(rules, { family, local: ["192.0.2.99"] }), "none");
    assert.equal(
      judge([`-A PREROUTING -m addrtype ! --src-type LOCAL ${DNAT}`], { family, local: [SRC] }),
      "none",
    );
    assert.equal(
      judge([`-A PREROUTING -m addrtype --dst-type UNICAST ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(
      judge([`-A PREROUTING -m addrtype --dst-type BROADCAST ${DNAT}`], { family }),
      "unknown",
    );
  });

  Deno.test(`evaluate() treats the SYN as routed, not bridged, for physdev (${family})`, () => {
    assert.equal(
      judge([`-A PREROUTING -m physdev ! --physdev-is-in ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(judge([`-A PREROUTING -m physdev --physdev-is-in ${DNAT}`], { family }), "none");
  });

  Deno.test(`evaluate() counts every statistic and recent branch as reachable (${family})`, () => {
    const chains = ["KUBE-SVC-X", "KUBE-SEP-A", "KUBE-SEP-B"];
    const tail = [
      "-A KUBE-SEP-A -p tcp -m recent --name KUBE-SEP-A --set -j DNAT --to-destination 198.51.100.1:80",
      "-A KUBE-SEP-B -p tcp -j DNAT --to-destination 198.51.100.2:80",
    ];
    const both = `dnat ${addr(family, "198.51.100.1")}|80,${addr(family, "198.51.100.2")}|80`;
    assert.equal(
      judge([
        "-A PREROUTING -j KUBE-SVC-X",
        "-A KUBE-SVC-X -m statistic --mode random --probability 0.5 -j KUBE-SEP-A",
        "-A KUBE-SVC-X -j KUBE-SEP-B",
        ...tail,
      ], { family, chains }),
      both,
    );
    assert.equal(
      judge([
        "-A PREROUTING -j KUBE-SVC-X",
        "-A KUBE-SVC-X -m recent --name KUBE-SEP-B --rcheck --seconds 10800 --reap -j KUBE-SEP-B",
        "-A KUBE-SVC-X -j KUBE-SEP-A",
        ...tail,
      ], { family, chains }),
      both,
    );
  });

  Deno.test(`evaluate() sees a first packet as conntrack state NEW (${family})`, () => {
    assert.equal(
      judge([`-A PREROUTING -m conntrack --ctstate NEW ${DNAT}`], { family }),
      hit(family),
    );
    assert.equal(
      judge([`-A PREROUTING -m state --state ESTABLISHED,RELATED ${DNAT}`], { family }),
      "none",
    );
    assert.equal(
      judge([`-A PREROUTING -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ${DNAT}`], {
        family,
      }),
      hit(family),
    );
  });

  Deno.test(`evaluate() follows marks set on the path and never lets the masquerade mark block (${family})`, () => {
    const chains = ["KUBE-MARK-MASQ"];
    const masq = "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000";
    assert.equal(
      judge([
        "-A PREROUTING -j KUBE-MARK-MASQ",
        `-A PREROUTING -m mark --mark 0x4000/0x4000 ${DNAT}`,
        masq,
      ], {
        family,
        chains,
      }),
      hit(family),
    );
    // Bits nobody on the path set may come from the mangle table: unknown.
    assert.equal(judge([`-A PREROUTING -m mark --mark 0x1/0x1 ${DNAT}`], { family }), "unknown");
    // An undecidable match on a jump that only marks changes nothing.
    assert.equal(
      judge(["-A PREROUTING -i eth0 -j KUBE-MARK-MASQ", `-A PREROUTING ${DNAT}`, masq], {
        family,
        chains,
      }),
      hit(family),
    );
  });

  Deno.test(`evaluate() ends a path at DROP, REJECT, ACCEPT and KUBE-MARK-DROP (${family})`, () => {
    for (const stop of ["-j DROP", "-j REJECT", "-j ACCEPT", "-j KUBE-MARK-DROP"]) {
      assert.equal(
        judge([
          `-A PREROUTING ${stop}`,
          `-A PREROUTING ${DNAT}`,
          "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
        ], {
          family,
          chains: ["KUBE-MARK-DROP"],
        }),
        "none",
        stop,
      );
    }
  });

  Deno.test(`evaluate() returns from chains with RETURN and skips the caller's rest after a goto (${family})`, () => {
    const chains = ["A"];
    assert.equal(
      judge(["-A PREROUTING -j A", `-A PREROUTING ${DNAT}`, "-A A -j RETURN", "-A A -j DROP"], {
        family,
        chains,
      }),
      hit(family),
    );
    assert.equal(
      judge(["-A PREROUTING -g A", `-A PREROUTING ${DNAT}`, "-A A -j RETURN"], { family, chains }),
      "none",
    );
    assert.equal(judge(["-A PREROUTING -j RETURN", `-A PREROUTING ${DNAT}`], { family }), "none");
  });

  Deno.test(`evaluate() is unknown when an undecidable match stands before the DNAT (${family})`, () => {
    assert.equal(judge([`-A PREROUTING -i eth0 ${DNAT}`], { family }), "unknown");
    assert.equal(
      judge(["-A PREROUTING -i eth0 -j DROP", `-A PREROUTING ${DNAT}`], { family }),
      "unknown",
    );
    assert.equal(judge([`-A PREROUTING -m set --match-set X dst ${DNAT}`], { family }), "unknown");
    assert.equal(judge(["-A PREROUTING -j NO-SUCH-CHAIN"], { family }), "unknown");
    // Whichever way the undecidable match goes, the SYN is translated: dnat, with every
    // endpoint either way can pick (kube-proxy's --detect-local-mode=InterfaceNamePrefix form).
    assert.equal(
      judge([
        "-A PREROUTING -j KUBE-EXT-X",
        "-A KUBE-EXT-X -i azv+ -j KUBE-SVC-X",
        "-A KUBE-EXT-X -j KUBE-SVL-X",
        "-A KUBE-SVC-X -m statistic --mode random --probability 0.5 -j DNAT --to-destination 198.51.100.1:80",
        "-A KUBE-SVC-X -j DNAT --to-destination 198.51.100.2:80",
        "-A KUBE-SVL-X -j DNAT --to-destination 198.51.100.2:80",
      ], { family, chains: ["KUBE-EXT-X", "KUBE-SVC-X", "KUBE-SVL-X"] }),
      `dnat ${addr(family, "198.51.100.1")}|80,${addr(family, "198.51.100.2")}|80`,
    );
    // No local endpoint: translated only if the SYN came from a pod interface. Cannot tell.
    assert.equal(
      judge([
        "-A PREROUTING -j KUBE-EXT-X",
        "-A KUBE-EXT-X -i azv+ -j KUBE-SVC-X",
        "-A KUBE-EXT-X -j KUBE-SVL-X",
        "-A KUBE-SVC-X -j DNAT --to-destination 198.51.100.1:80",
      ], { family, chains: ["KUBE-EXT-X", "KUBE-SVC-X", "KUBE-SVL-X"] }),
      "unknown",
    );
    // Nothing translates whichever way it goes: certainly none.
    assert.equal(judge(["-A PREROUTING -i eth0 -j DROP"], { family }), "none");
    // A certain DNAT first decides, whatever comes after.
    assert.equal(
      judge([`-A PREROUTING ${DNAT}`, "-A PREROUTING -i eth0 -j DROP"], { family }),
      hit(family),
    );
  });
}

Deno.test("evaluate() keeps rule order when big chains are indexed", () => {
  const rules = ["-A PREROUTING -j KUBE-SERVICES"];
  for (let i = 0; i < 100; i++) {
    rules.push(
      `-A KUBE-SERVICES -d 192.0.2.${i}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 198.51.100.${i}:80`,
    );
    // A wildcard rule in the middle wins over the exact ones after it.
    if (i === 49) {
      rules.push(
        "-A KUBE-SERVICES -p tcp -m tcp --dport 80 -j DNAT --to-destination 198.51.100.250:80",
      );
    }
  }
  const chains = ["KUBE-SERVICES"];
  assert.equal(judge(rules, { dst: "192.0.2.10", chains }), "dnat 198.51.100.10|80");
  assert.equal(judge(rules, { dst: "192.0.2.70", chains }), "dnat 198.51.100.250|80");
  assert.equal(judge(rules, { dst: "192.0.2.10", dport: 81, chains }), "none");
});

Deno.test("parseIptablesRuleset() reads quoted comments as one word, escapes undone", () => {
  // The comment holds words that would be a target if the quoting were lost.
  assert.equal(
    judge([`-A PREROUTING -m comment --comment "say \\"hi\\" -j DROP" -p tcp ${DNAT}`]),
    hit("ipv4"),
  );
  assert.equal(judge([`-A PREROUTING -m comment --comment "-j ACCEPT" ${DNAT}`]), hit("ipv4"));
});

Deno.test("evaluate() takes DNAT's port from the packet when the target names none", () => {
  assert.equal(judge([`-A PREROUTING -j DNAT --to-destination ${EP}`]), `dnat ${EP}|80`);
});

Deno.test("parseIptablesRuleset() reads counters, other tables and another family's packets", () => {
  const ruleset = parseIptablesRuleset(
    [
      "*filter",
      "-A INPUT -j DROP",
      "COMMIT",
      "*nat",
      ":PREROUTING ACCEPT [3:180]",
      `[3:180] -A PREROUTING -p tcp -c 3 180 -j DNAT --to-destination ${EP}:8080`,
      "COMMIT",
    ],
    "ipv4",
  );
  assert.equal(ruleset.ruleCount, 1);
  const packet = { family: "ipv4" as const, src: SRC, dst: DST, sport: 1, dport: 80 };
  assert.equal(show(ruleset.evaluate(packet, { localAddresses: new Set() })), `dnat ${EP}|8080`);
  assert.equal(
    ruleset.evaluate({ ...packet, family: "ipv6", src: "2001:db8::1", dst: "2001:db8::2" }, {
      localAddresses: new Set(),
    }).kind,
    "none",
  );
});
