/**
 * parseNftablesRuleset() on what real `nft -j list table` printed for kube-proxy's own rulesets
 * (tests/fixtures/kube-proxy/nftables/, see its README) and for one construct per destination
 * (handmade/). The same expectations hold in IPv4 and IPv6 and, where kube-proxy's output did
 * not change, in every version; tests/e2e/nat_nftables_differential_test.ts checks the same
 * files against the kernel.
 */
import assert from "node:assert/strict";
import type { Family } from "../lib/core/flow.ts";
import type { NatPathVerdict, NatRuleset } from "../lib/nat/nat_path.ts";
import { parseNftablesRuleset } from "../lib/nat/nftables_ruleset.ts";

const DIR = new URL("./fixtures/kube-proxy/nftables/", import.meta.url).pathname;
const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];
const VERSIONS = ["overall-v1.29", "overall-v1.31", "overall-v1.36"] as const;

/** The addresses of the fixtures, by role (the README's remapping table). */
interface Roles {
  /** A client inside loadBalancerSourceRanges. */
  readonly inside: string;
  /** A client outside every range and outside the pod CIDR. */
  readonly outside: string;
  /** A client in the pod CIDR. */
  readonly pod: string;
  /** The node IP and a second node address. */
  readonly node: string;
  readonly node2: string;
  /** ClusterIP n (41…47). */
  cluster(n: number): string;
  /** Endpoint n (1…7). */
  ep(n: number): string;
  /** LoadBalancer IPs of svc2 (Local, no local endpoint), svc5 (source ranges), svc7. */
  readonly lb2: string;
  readonly lb5: string;
  readonly lb7: string;
  /** externalIPs of svc2 (Local), svc4 (Cluster), svc7 (Local, local endpoint). */
  readonly ext2: string;
  readonly ext4: string;
  readonly ext7: string;
  /** Handmade construct destination n (80…96). */
  construct(n: number): string;
}

const ROLES: Readonly<Record<Family, Roles>> = {
  ipv4: {
    inside: "203.0.113.2",
    outside: "203.0.113.130",
    pod: "198.51.100.100",
    node: "198.51.100.130",
    node2: "198.51.100.131",
    cluster: (n) => `192.0.2.${n}`,
    ep: (n) => `198.51.100.${n}`,
    lb2: "192.0.2.140",
    lb5: "192.0.2.150",
    lb7: "192.0.2.160",
    ext2: "192.0.2.214",
    ext4: "192.0.2.225",
    ext7: "192.0.2.236",
    construct: (n) => `192.0.2.${n}`,
  },
  ipv6: {
    inside: "2001:db8:cb::2",
    outside: "2001:db8:cc::130",
    pod: "2001:db8:a::100",
    node: "2001:db8:c0::2",
    node2: "2001:db8:c0::3",
    cluster: (n) => `2001:db8:ac::${n}`,
    ep: (n) => `2001:db8:a::${n}`,
    lb2: "2001:db8:1b::4",
    lb5: "2001:db8:1b::8",
    lb7: "2001:db8:1b::12",
    ext2: "2001:db8:99::22",
    ext4: "2001:db8:99::33",
    ext7: "2001:db8:99::44",
    construct: (n) => `2001:db8:c2::${n}`,
  },
};

function load(name: string, family: Family): NatRuleset {
  const suffix = family === "ipv4" ? "ip" : "ip6";
  return parseNftablesRuleset(Deno.readTextFileSync(`${DIR}${name}-${suffix}.json`));
}

function node(family: Family): { localAddresses: ReadonlySet<string> } {
  const r = ROLES[family];
  return { localAddresses: new Set([r.node, r.node2, family === "ipv4" ? "127.0.0.1" : "::1"]) };
}

/** The verdict in short: `none`, `unknown`, or `dnat a:p, b:p` (sorted). */
function run(ruleset: NatRuleset, family: Family, src: string, dst: string, dport = 80): string {
  const verdict: NatPathVerdict = ruleset.evaluate(
    { family, src, dst, sport: 40000, dport },
    node(family),
  );
  if (verdict.kind !== "dnat") return verdict.kind;
  return "dnat " + verdict.endpoints.map((e) => `${e.address}/${e.port}`).sort().join(", ");
}

function dnat(...endpoints: string[]): string {
  return "dnat " + endpoints.map((e) => `${e}/80`).sort().join(", ");
}

for (const family of FAMILIES) {
  const r = ROLES[family];
  const v = family === "ipv4" ? "IPv4" : "IPv6";

  for (const version of VERSIONS) {
    const ruleset = load(version, family);
    const all = [r.inside, r.outside, r.pod];

    Deno.test(`evaluate() translates a ClusterIP to its endpoint (${version}, ${v})`, () => {
      for (const src of all) assert.equal(run(ruleset, family, src, r.cluster(41)), dnat(r.ep(1)));
    });

    Deno.test(`evaluate() finds no translation for a ClusterIP without endpoints, nor for a port the ClusterIP does not serve (${version}, ${v})`, () => {
      for (const src of all) {
        assert.equal(run(ruleset, family, src, r.cluster(46)), "none");
        assert.equal(run(ruleset, family, src, r.cluster(41), 81), "none");
      }
    });

    Deno.test(`evaluate() lists every endpoint a random draw can pick (${version}, ${v})`, () => {
      assert.equal(run(ruleset, family, r.outside, r.ext4), dnat(r.ep(4), r.ep(5)));
      assert.equal(run(ruleset, family, r.inside, r.cluster(44)), dnat(r.ep(4), r.ep(5)));
    });

    Deno.test(`evaluate() does not translate a Local-policy LoadBalancer IP or externalIP without a local endpoint for an outside client, only for pods (${version}, ${v})`, () => {
      for (const dst of [r.lb2, r.ext2]) {
        assert.equal(run(ruleset, family, r.outside, dst), "none");
        assert.equal(run(ruleset, family, r.inside, dst), "none");
        assert.equal(run(ruleset, family, r.pod, dst), dnat(r.ep(2)));
      }
      assert.equal(run(ruleset, family, r.outside, r.node, 3001), "none");
    });

    Deno.test(`evaluate() translates a source-ranged LoadBalancer IP only for clients inside the ranges (${version}, ${v})`, () => {
      assert.equal(run(ruleset, family, r.inside, r.lb5), dnat(r.ep(3)));
      assert.equal(run(ruleset, family, r.outside, r.lb5), "none");
      assert.equal(run(ruleset, family, r.pod, r.lb5), "none");
    });

    Deno.test(`evaluate() translates a Service with session affinity whatever the affinity set holds (${version}, ${v})`, () => {
      assert.equal(run(ruleset, family, r.outside, r.cluster(45)), dnat(r.ep(3)));
    });

    Deno.test(`evaluate() translates NodePorts on the node IP, not Service ports there (${version}, ${v})`, () => {
      assert.equal(run(ruleset, family, r.outside, r.node, 3003), dnat(r.ep(3)));
      // The source ranges guard the LoadBalancer IP only, not the NodePort.
      assert.equal(run(ruleset, family, r.outside, r.node, 3002), dnat(r.ep(3)));
      assert.equal(run(ruleset, family, r.outside, r.node, 80), "none");
      assert.equal(run(ruleset, family, r.outside, r.node, 3009), "none");
    });
  }

  Deno.test(`evaluate() follows each version's NodePort addresses: every local address in 1.29, the nodeport-ips set later (${v})`, () => {
    assert.equal(
      run(load("overall-v1.29", family), family, r.outside, r.node2, 3003),
      dnat(r.ep(3)),
    );
    assert.equal(run(load("overall-v1.31", family), family, r.outside, r.node2, 3003), "none");
    assert.equal(run(load("overall-v1.36", family), family, r.outside, r.node2, 3003), "none");
  });

  Deno.test(`evaluate() sends outside clients of a Local-policy Service to its local endpoint only, pods to all, and applies its source ranges (${v})`, () => {
    const ruleset = load("local-endpoints-v1.31", family);
    for (const dst of [r.lb7]) {
      assert.equal(run(ruleset, family, r.inside, dst), dnat(r.ep(6)));
      assert.equal(run(ruleset, family, r.outside, dst), "none");
      assert.equal(run(ruleset, family, r.pod, dst), "none");
    }
    assert.equal(run(ruleset, family, r.outside, r.ext7), dnat(r.ep(6)));
    assert.equal(run(ruleset, family, r.pod, r.ext7), dnat(r.ep(6), r.ep(7)));
    assert.equal(run(ruleset, family, r.outside, r.node, 3004), dnat(r.ep(6)));
    assert.equal(run(ruleset, family, r.outside, r.cluster(47)), dnat(r.ep(6), r.ep(7)));
  });

  Deno.test(`evaluate() answers none for a family whose table is absent (${v})`, () => {
    const other = load("overall-v1.31", family === "ipv4" ? "ipv6" : "ipv4");
    assert.equal(run(other, family, r.outside, r.cluster(41)), "none");
  });

  const constructs = load("handmade/constructs", family);
  const c = (n: number, src: string, dport = 80) =>
    run(constructs, family, src, r.construct(n), dport);

  Deno.test(`evaluate() stops a SYN dropped by a filter chain before the nat hook (${v})`, () => {
    assert.equal(c(90, r.inside), "none");
  });

  Deno.test(`evaluate() reads dnat with and without a port, and matches tcp dport (${v})`, () => {
    assert.equal(c(80, r.inside), dnat(r.ep(1)));
    assert.equal(c(80, r.inside, 81), "none");
    assert.equal(c(81, r.outside, 81), `dnat ${r.ep(1)}/81`);
  });

  Deno.test(`evaluate() reads "!=" against a named interval set (${v})`, () => {
    assert.equal(c(81, r.outside), `dnat ${r.ep(1)}/80`);
    assert.equal(c(81, r.inside), "none");
    assert.equal(c(81, r.pod), "none");
  });

  Deno.test(`evaluate() comes back from a jump on return and after the jumped chain (${v})`, () => {
    assert.equal(c(82, r.inside), dnat(r.ep(2)));
    assert.equal(c(82, r.outside), dnat(r.ep(3)));
  });

  Deno.test(`evaluate() does not come back to the rule after a goto (${v})`, () => {
    assert.equal(c(83, r.pod), dnat(r.ep(5)));
    assert.equal(c(83, r.outside), "none");
  });

  Deno.test(`evaluate() tracks the packet mark a rule sets (${v})`, () => {
    assert.equal(c(84, r.outside), dnat(r.ep(6)));
  });

  Deno.test(`evaluate() looks up a named verdict map by port, drop included (${v})`, () => {
    assert.equal(c(85, r.outside, 80), dnat(r.ep(1)));
    assert.equal(c(85, r.outside, 81), "none");
    assert.equal(c(85, r.outside, 8000), "none");
  });

  Deno.test(`evaluate() skips later nat chains once one translated, and sees the translated address in later filter chains (${v})`, () => {
    assert.equal(c(86, r.inside), dnat(r.ep(7)));
    assert.equal(c(86, r.outside), "none");
    assert.equal(c(87, r.inside), dnat(r.ep(2)));
  });

  Deno.test(`evaluate() drops a SYN a forward chain rejects after its DNAT (${v})`, () => {
    assert.equal(c(92, r.inside, 8000), "none");
    assert.equal(c(92, r.inside, 8001), `dnat ${r.ep(4)}/8001`);
    assert.equal(c(92, r.inside, 80), "none");
  });

  Deno.test(`evaluate() lists both targets of "dnat to numgen … map" (${v})`, () => {
    assert.equal(c(88, r.inside), dnat(r.ep(1), r.ep(2)));
  });

  Deno.test(`evaluate() matches anonymous sets, continue and accept (${v})`, () => {
    assert.equal(c(91, r.outside), dnat(r.ep(3)));
    assert.equal(c(91, r.inside), "none");
    assert.equal(c(93, r.inside), dnat(r.ep(5)));
    assert.equal(c(94, r.inside), "none");
  });

  Deno.test(`evaluate() takes a SYN for TCP and new: udp and established matches fail (${v})`, () => {
    assert.equal(c(95, r.inside), "none");
    assert.equal(c(96, r.inside), dnat(r.ep(7)));
  });

  const unmodelled = load("handmade/unmodelled", family);
  Deno.test(`evaluate() answers unknown, naming the rule, for a match it cannot evaluate on the path (${v})`, () => {
    for (const n of [80, 81, 82]) {
      const verdict = unmodelled.evaluate(
        { family, src: r.outside, dst: r.construct(n), sport: 40000, dport: 80 },
        node(family),
      );
      assert.equal(verdict.kind, "unknown", `${r.construct(n)}`);
      assert.match(verdict.kind === "unknown" ? verdict.rule : "", /^chain (nat-pre|lim) handle/);
    }
    // An unmodelled rule off the path does not taint the others.
    assert.equal(run(unmodelled, family, r.outside, r.construct(83)), dnat(r.ep(1)));
  });
}

for (const family of FAMILIES) {
  const r = ROLES[family];
  const v = family === "ipv4" ? "IPv4" : "IPv6";

  Deno.test(`evaluate() lists only the random choices that are not dropped after their DNAT (${v})`, () => {
    const ruleset = load("handmade/partial-drop", family);
    assert.equal(run(ruleset, family, r.outside, r.construct(80)), dnat(r.ep(2)));
  });

  Deno.test(`evaluate() answers unknown, never throws, for a packet it cannot read (${v})`, () => {
    const ruleset = load("overall-v1.31", family);
    const odd = [
      { family, src: "not-an-address", dst: r.cluster(41), sport: 40000, dport: 80 },
      { family, src: r.outside, dst: r.cluster(41), sport: 40000, dport: Number.NaN },
    ];
    for (const packet of odd) assert.equal(ruleset.evaluate(packet, node(family)).kind, "unknown");
  });
}

Deno.test("parseNftablesRuleset() throws SyntaxError on output that is not nft JSON", () => {
  assert.throws(() => parseNftablesRuleset("Error: No such file or directory"), SyntaxError);
  assert.throws(() => parseNftablesRuleset('{"rules": []}'), SyntaxError);
});

Deno.test("parseNftablesRuleset() reads both families from one document each", () => {
  const both = parseNftablesRuleset([
    Deno.readTextFileSync(`${DIR}overall-v1.31-ip.json`),
    Deno.readTextFileSync(`${DIR}overall-v1.31-ip6.json`),
  ]);
  for (const family of FAMILIES) {
    const r = ROLES[family];
    assert.equal(run(both, family, r.inside, r.cluster(41)), dnat(r.ep(1)));
  }
});
