/**
 * The nftables half of the nat rule against the kernel: every kube-proxy nftables fixture (and the
 * handmade one-construct-per-destination ruleset) is loaded into a node namespace, one real SYN
 * per (client, destination) pair crosses it, and the node's conntrack entry says what the kernel
 * did. The evaluator's verdict on the same flow, read from the node's own `nft -j list table`
 * output, must agree for every pair. About 800 SYNs, a few seconds.
 *
 * The truth, per SYN:
 * - an entry whose reply source differs from the original destination (address or port): the
 *   node DNATed it, to that reply source;
 * - an entry with reply source = original destination: not translated;
 * - no entry: dropped or rejected before the entry was confirmed (a firewall or
 *   no-endpoint drop, before or after the nat hook). Not translated either: a retrying client
 *   gets nowhere until the rules change.
 * The evaluator agrees when it says `dnat` with the kernel's endpoint among its endpoints for a
 * translated SYN, and `none` for the others; `unknown` is a disagreement here, as every rule of
 * these fixtures is one the evaluator models.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Family } from "../../lib/core/flow.ts";
import type { NatPathVerdict } from "../../lib/nat/nat_path.ts";
import { parseNftablesRuleset } from "../../lib/nat/nftables_ruleset.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { e2eTest, ROOT } from "./harness.ts";
import type { Probe } from "./nat_differential.ts";
import { CLIENTS, NftablesBed, type NodeEntry, tableDestinations } from "./nftables_bed.ts";

const FIXTURES = `${ROOT}/tests/fixtures/kube-proxy/nftables`;
const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

/** Destinations probed besides the ruleset's own: an unallocated ClusterIP and a stranger. */
const EXTRA: Readonly<Record<Family, readonly (readonly [string, number])[]>> = {
  ipv4: [["192.0.2.50", 80], ["198.51.100.250", 80]],
  ipv6: [["2001:db8:ac::50", 80], ["2001:db8:fe::99", 80]],
};

/**
 * Handmade files the kernel cannot judge: rules the evaluator answers `unknown` for, and a random
 * choice of which only some draws are dropped (one SYN takes one draw).
 */
const UNIT_ONLY: readonly string[] = ["unmodelled", "partial-drop"];

/** A fixture: its label, the two files' common path without `-ip.nft`, and how to probe it. */
interface Fixture {
  readonly label: string;
  readonly path: string;
  readonly handmade: boolean;
}

async function fixtures(): Promise<Fixture[]> {
  const found: Fixture[] = [];
  for (const [dir, handmade] of [[FIXTURES, false], [`${FIXTURES}/handmade`, true]] as const) {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.endsWith("-ip.nft") || UNIT_ONLY.some((u) => entry.name.startsWith(u))) {
        continue;
      }
      const label = entry.name.slice(0, -"-ip.nft".length);
      found.push({ label, path: `${dir}/${label}`, handmade });
    }
  }
  return found.sort((a, b) => a.label.localeCompare(b.label));
}

/**
 * Every TCP destination a kube-proxy table names (each ClusterIP also on port 81, which it does
 * not serve), and a few strangers.
 */
function destinations(json: string, family: Family): [string, number][] {
  return [
    ...tableDestinations(json, family, 81),
    ...EXTRA[family].map(([a, p]) => [a, p] as [string, number]),
  ];
}

/** The handmade fixture: every destination address a rule names, on the ports its rules use. */
function handmadeDestinations(json: string): [string, number][] {
  const addresses = new Set<string>();
  for (const m of json.matchAll(/"field": "daddr"\}\}, "right": "([0-9a-f.:]+)"/g)) {
    addresses.add(m[1] ?? "");
  }
  return [...addresses].flatMap((a) => [80, 81, 8000].map((p): [string, number] => [a, p]));
}

/** One SYN, as the kernel-judging beds describe it. */
type Pair = Probe;

function truthOf(pair: Pair, entries: readonly NodeEntry[]): string {
  const entry = entries.find((e) => e.src === pair.src && e.sport === pair.sport);
  if (!entry) return "none (no entry: dropped)";
  if (entry.replySrc !== pair.dst || entry.replySport !== pair.dport) {
    return `dnat ${entry.replySrc} ${entry.replySport}`;
  }
  return "none (entry, not translated)";
}

function agrees(truth: string, verdict: NatPathVerdict): boolean {
  if (truth.startsWith("none")) return verdict.kind === "none";
  const [, address, port] = truth.split(" ");
  return verdict.kind === "dnat" &&
    verdict.endpoints.some((e) => e.address === address && e.port === Number(port));
}

function show(verdict: NatPathVerdict): string {
  if (verdict.kind === "dnat") {
    return `dnat to ${verdict.endpoints.map((e) => `${e.address} ${e.port}`).join(", ")}`;
  }
  return verdict.kind === "unknown" ? `unknown (${verdict.rule})` : "none";
}

e2eTest("parseNftablesRuleset() agrees with the kernel on every kube-proxy fixture", async () => {
  await using bed = await NftablesBed.create(denoSpawn);
  const script = `${ROOT}/tests/e2e/syn_batch.ts`;
  const disagreements: string[] = [];
  let pairsChecked = 0;
  let translated = 0;
  let dropped = 0;
  for (const { label: name, path, handmade } of await fixtures()) {
    await bed.load([`${path}-ip.nft`, `${path}-ip6.nft`]);
    const local = await bed.localAddresses();
    const pairs: Pair[] = [];
    const rulesets = new Map<Family, ReturnType<typeof parseNftablesRuleset>>();
    for (const family of FAMILIES) {
      const json = await bed.listTable(family);
      rulesets.set(family, parseNftablesRuleset(json));
      const probes = handmade ? handmadeDestinations(json) : destinations(json, family);
      for (const [dst, dport] of probes) {
        for (const src of Object.values(CLIENTS[family])) {
          pairs.push({ family, src, sport: 20000 + pairs.length, dst, dport });
        }
      }
    }
    await bed.sendSyns(pairs.map((p) => `${p.src} ${p.sport} ${p.dst} ${p.dport}`), script);
    const entries = await bed.entries();
    for (const pair of pairs) {
      const truth = truthOf(pair, entries);
      const verdict = rulesets.get(pair.family)!.evaluate(pair, { localAddresses: local });
      pairsChecked++;
      if (truth.startsWith("dnat")) translated++;
      if (truth.includes("dropped")) dropped++;
      if (!agrees(truth, verdict)) {
        disagreements.push(
          `${name} ${pair.src} -> ${pair.dst}:${pair.dport}: kernel ${truth}, evaluator ${
            show(verdict)
          }`,
        );
      }
    }
  }
  console.log(
    `${pairsChecked} SYNs checked: ${translated} translated by the kernel, ${dropped} dropped, ` +
      `${pairsChecked - translated - dropped} passed untranslated`,
  );
  assert.deepEqual(disagreements, [], disagreements.join("\n"));
  // A bed that translated nothing would agree with an evaluator that says "none" to everything.
  assert.ok(
    translated > pairsChecked / 4,
    `only ${translated} of ${pairsChecked} SYNs were translated`,
  );
});
