/**
 * The `nat` rule's view of the node: every ruleset read once (per family and per source:
 * `iptables-save`, its legacy flavour, kube-proxy's nftables table) with the node's addresses,
 * answering per flow what the node would do with the flow's first packet now.
 *
 * The readers (`nat_reader.ts`, `rule_sources.ts`) build it; the tracker consults it through
 * `NatRules` (`lib/core/nat_rule.ts`), which it satisfies with `answer`.
 *
 * @module
 */
import type { Family, Flow } from "../core/flow.ts";
import type { NatEndpoint, NatPathVerdict, NatRuleset, NodeFacts } from "./nat_path.ts";

/** The node's NAT rules, as read once. */
export interface NatView {
  /**
   * What the rules do with `flow`'s first packet (its original tuple): `dnat` with every
   * endpoint any source may choose, `none`, or `unknown`. Never throws.
   */
  answer(flow: Flow): NatPathVerdict;
  /** Number of rulesets the view holds (one per source and family that was read). */
  readonly rulesets: number;
}

/** Reads the node's NAT rules, at most once per cycle. */
export interface NatReader {
  /**
   * Reads the rules once (call once per cycle, only when there are candidates). undefined when
   * the source is off or unavailable (logged once, retried each cycle, logged again when it
   * recovers). Never throws.
   */
  read(signal?: AbortSignal): Promise<NatView | undefined>;
}

/** One ruleset and where it came from. */
export interface SourcedRuleset {
  /** The command it was read with, for logs. */
  readonly name: string;
  /** The family it answers for. */
  readonly family: Family;
  /** The parsed rules. */
  readonly ruleset: NatRuleset;
}

/**
 * Builds a view over rulesets read at the same time. Where a family has several (a node with
 * both iptables and nftables rules, or legacy tables beside nf_tables ones), a packet meets all
 * of them, so the answers combine: any `unknown` makes the answer unknown (never condemns);
 * otherwise any `dnat` makes it `dnat`, with the endpoints of every source that translates (an
 * endpoint any of them may choose is current); otherwise `none`. A family with no ruleset
 * answers `none`.
 *
 * `onUnknown` is told of every `unknown` answer with the rule's text and its source (the reader
 * logs each rule once).
 *
 * @example
 * ```ts
 * import { createNatView } from "./nat_view.ts";
 * const ruleset = {
 *   evaluate: () => ({ kind: "dnat", endpoints: [{ address: "10.0.0.7", port: 8080 }] }) as const,
 * };
 * const view = createNatView(
 *   [{ name: "nft -j list table ip kube-proxy", family: "ipv4", ruleset }],
 *   { localAddresses: new Set() },
 * );
 * view.answer({
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * }).kind; // "dnat"
 * ```
 */
export function createNatView(
  rulesets: readonly SourcedRuleset[],
  node: NodeFacts,
  onUnknown?: (rule: string, source: string) => void,
): NatView {
  const byFamily: Record<Family, SourcedRuleset[]> = { ipv4: [], ipv6: [] };
  for (const sourced of rulesets) byFamily[sourced.family].push(sourced);
  // A spaced reader hands one view to several cycles, whose candidates are mostly the same
  // flows: each flow's answer is computed once per view.
  const answers = new Map<string, NatPathVerdict>();
  return {
    rulesets: rulesets.length,
    answer(flow) {
      const o = flow.original;
      const key = `${flow.family} ${o.src} ${o.sport} ${o.dst} ${o.dport}`;
      const known = answers.get(key);
      if (known !== undefined) return known;
      const answer = evaluate(flow);
      if (answers.size >= ANSWERS_KEPT) answers.clear();
      answers.set(key, answer);
      return answer;
    },
  };

  function evaluate(flow: Flow): NatPathVerdict {
    const o = flow.original;
    const packet = {
      family: flow.family,
      src: o.src,
      dst: o.dst,
      sport: o.sport,
      dport: o.dport,
    };
    let endpoints: readonly NatEndpoint[] | undefined;
    for (const { name, ruleset } of byFamily[flow.family]) {
      let verdict: NatPathVerdict;
      try {
        verdict = ruleset.evaluate(packet, node);
      } catch (error) {
        // Evaluators promise not to throw; if one does, the flow is not judged by it.
        verdict = {
          kind: "unknown",
          rule: error instanceof Error ? error.message : String(error),
        };
      }
      if (verdict.kind === "unknown") {
        onUnknown?.(verdict.rule, name);
        return verdict;
      }
      if (verdict.kind !== "dnat") continue;
      if (!endpoints) endpoints = verdict.endpoints;
      else endpoints = unite(endpoints, verdict.endpoints);
    }
    return endpoints ? { kind: "dnat", endpoints } : { kind: "none" };
  }
}

/** Answers one view keeps (about 100 bytes each); beyond, it starts over. */
const ANSWERS_KEPT = 100_000;

/** Both lists' endpoints, each once. */
function unite(a: readonly NatEndpoint[], b: readonly NatEndpoint[]): readonly NatEndpoint[] {
  const seen = new Set(a.map((e) => `${e.address} ${e.port}`));
  return [...a, ...b.filter((e) => !seen.has(`${e.address} ${e.port}`))];
}
