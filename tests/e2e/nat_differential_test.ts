/**
 * The iptables nat evaluator against the kernel, on every kube-proxy fixture, IPv4 and IPv6: for
 * each (client address, destination) pair one real SYN goes through the node, and the node's
 * conntrack entry says whether it was translated and to which endpoint. The evaluator's verdict
 * for the same packet must agree on every pair; `unknown` is allowed (it never condemns) but
 * reported, and must stay rare.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseIptablesRuleset } from "../../lib/nat/iptables_ruleset.ts";
import type { NatPathVerdict } from "../../lib/nat/nat_path.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { e2eTest } from "./harness.ts";
import {
  CLIENTS,
  destinationsOf,
  DifferentialBed,
  type KernelTruth,
  type Probe,
  readFixturePair,
} from "./nat_differential.ts";

const FIXTURES = [
  "v1.3x-overall-iptables-rules",
  "v1.2x-external-traffic-policy-local",
  "v1.12-aks-node-without-local-endpoints",
  "v1.12-aks-node-with-local-endpoints",
];

/** Whether the evaluator's verdict says what the kernel did; `undefined` for unknown. */
function agrees(verdict: NatPathVerdict, truth: KernelTruth): boolean | undefined {
  if (verdict.kind === "unknown") return undefined;
  if (truth.kind === "none") return verdict.kind === "none";
  return verdict.kind === "dnat" &&
    verdict.endpoints.some((e) => e.address === truth.address && e.port === truth.port);
}

function show(verdict: NatPathVerdict): string {
  if (verdict.kind === "dnat") {
    return `dnat to ${verdict.endpoints.map((e) => `${e.address}:${e.port}`).join(", ")}`;
  }
  return verdict.kind === "unknown" ? `unknown (${verdict.rule})` : "none";
}

e2eTest(
  "parseIptablesRuleset().evaluate() agrees with the kernel on every kube-proxy fixture",
  async () => {
    await using bed = await DifferentialBed.create(denoSpawn);
    const disagreements: string[] = [];
    const unknowns: string[] = [];
    let pairs = 0;
    let translated = 0;
    let sport = 20000;
    for (const base of FIXTURES) {
      const fixtures = await readFixturePair(base);
      await bed.load(fixtures);
      const node = { localAddresses: bed.localAddresses() };
      const probes: Probe[] = fixtures.flatMap((fixture) =>
        destinationsOf(fixture).flatMap(([dst, dport]) =>
          CLIENTS[fixture.family].map((src) => ({
            family: fixture.family,
            src,
            sport: sport++,
            dst,
            dport,
          }))
        )
      );
      const truths = await bed.judge(probes);
      assert.ok(
        truths.some((t) => t.kind === "none" && t.entry) || truths.some((t) => t.kind === "dnat"),
        `${base}: no SYN left a conntrack entry on the node; the probes did not run`,
      );
      const rulesets = new Map(
        fixtures.map((f) => [f.family, parseIptablesRuleset(f.text, f.family)]),
      );
      probes.forEach((probe, i) => {
        const truth = truths[i] as KernelTruth;
        const verdict = (rulesets.get(probe.family))!.evaluate(probe, node);
        const what =
          `${base} ${probe.family}: ${probe.src} -> ${probe.dst}:${probe.dport}: kernel ` +
          `${
            truth.kind === "dnat"
              ? `dnat to ${truth.address}:${truth.port}`
              : truth.entry
              ? "none"
              : "none (dropped)"
          }, ` +
          `evaluator ${show(verdict)}`;
        pairs++;
        if (truth.kind === "dnat") translated++;
        const ok = agrees(verdict, truth);
        if (ok === undefined) unknowns.push(what);
        else if (!ok) disagreements.push(what);
      });
    }
    console.log(
      `nat differential: ${pairs} pairs, ${translated} translated by the kernel, ` +
        `${disagreements.length} disagreements, ${unknowns.length} unknown` +
        (unknowns.length > 0 ? `:\n  ${unknowns.join("\n  ")}` : ""),
    );
    assert.deepEqual(
      disagreements,
      [],
      `the evaluator disagrees with the kernel:\n  ${disagreements.join("\n  ")}`,
    );
    assert.ok(
      unknowns.length * 10 <= pairs,
      `too many unknown verdicts: ${unknowns.length} of ${pairs}`,
    );
    assert.ok(
      translated > 0 && translated < pairs,
      "the corpus must hold translated and untranslated pairs",
    );
  },
);
