/**
 * The `nat` table of `iptables-save` / `ip6tables-save` as a {@link NatRuleset}: what the node's
 * rules do with one TCP SYN, followed from `PREROUTING` through every jump, goto and `RETURN`.
 *
 * This file holds the public entry point and the walk that judges a packet; the text is parsed
 * once per read, by `iptables_rules.ts`, into chains of rules with typed matches. The big chains
 * (kube-proxy's `KUBE-SERVICES` and `KUBE-NODEPORTS`, thousands of rules) are indexed by exact
 * destination address and port, so evaluating one candidate looks at the few rules that can
 * match it plus the wildcard ones, in rule order.
 *
 * What a match means for the SYN of a flow, as conntrack shows it:
 * - `-s`/`-d` (with `!`), `-p`, `--dport`/`--sport`, `-m multiport`, `--syn`/`--tcp-flags`: exact.
 * - `-m addrtype --src-type/--dst-type LOCAL|UNICAST` (with `!`): LOCAL is an address in
 *   {@link NodeFacts.localAddresses}; UNICAST is every other address (the SYNs judged here are
 *   unicast). Other address types and `--limit-iface-*` are unknown.
 * - `-m physdev`: the SYN is routed, not bridged (kube-proxy's old externalIP rules used
 *   `! --physdev-is-in` to tell routed traffic from traffic bridged between local pods), so every
 *   physdev test is evaluated for a packet that crossed no bridge port.
 * - `-m conntrack --ctstate` / `-m state --state`: a first packet is `NEW`; it is not yet
 *   `DNAT`/`SNAT` in the nat table's PREROUTING, and not `ESTABLISHED`/`RELATED`/`INVALID`.
 * - `-m mark --mark`: evaluated against the bits that `MARK` targets earlier on the same path set;
 *   bits nobody on the path set (the mangle table may have set them) are unknown.
 * - `-m statistic` (random/nth) and `-m recent --rcheck/--update`: both outcomes are reachable
 *   (some SYN is translated: counts); `-m recent --set` always matches.
 * - `-m comment`, `-m nfacct`: always match.
 * - `-i`/`-o` and anything else: unknown. The conntrack entry does not say on which interface the
 *   SYN arrived, so `-i` cannot be decided (a SYN from outside comes in on the node's uplink, but
 *   the agent does not know the uplink's name, nor pods' interface prefixes).
 *
 * Targets: `DNAT --to-destination` ends the path translated; `DROP`, `REJECT` and `ACCEPT` end it
 * untranslated, and so does a jump to the older kube-proxy's `KUBE-MARK-DROP` (the packet is
 * marked for the filter table to drop); `MARK` sets marks; jumps, gotos and `RETURN` are
 * followed; a target this reader does not follow (`REDIRECT`, a chain that does not exist) ends
 * the path unknown.
 *
 * An unknown match forks the path both ways, except where its rule cannot change the outcome (a
 * jump to a chain that only sets marks, such as `KUBE-MARK-MASQ`): then only the marks it would
 * set become unknown. The verdict is `dnat` when, whichever way each unknown match goes, some
 * path (random choices are the kernel's, one translating branch is enough) ends in a `DNAT` with
 * no `DROP`/`REJECT`/`ACCEPT` before it on that path; `none` when no path at all ends in a
 * `DNAT`; `unknown` otherwise, naming the first undecidable rule. So an unknown never condemns:
 * e.g. kube-proxy's `-i <pod-prefix>+ -j KUBE-SVC-X` before `-j KUBE-SVL-X` is `dnat` when both
 * chains translate, `unknown` when the Service has no local endpoint.
 *
 * @module
 */
import { type Address, tryParseAddress } from "../core/address.ts";
import { addressInCidr } from "../core/cidr.ts";
import type { Family } from "../core/flow.ts";
import {
  type Match,
  type ParsedChain,
  parseIptablesNatTable,
  type Rule,
  SYN_FLAGS,
  type Target,
  Tri,
} from "./iptables_rules.ts";
import type { NatEndpoint, NatPacket, NatPathVerdict, NatRuleset, NodeFacts } from "./nat_path.ts";

/** One parsed `nat` table: chains, policies and the per-chain indexes. */
export interface IptablesRuleset extends NatRuleset {
  /** The family the dump was read for. */
  readonly family: Family;
  /** Number of rules in the `nat` table. */
  readonly ruleCount: number;
  /** Number of chains in the `nat` table, built-in ones included. */
  readonly chainCount: number;
}

/**
 * Parses `iptables-save` (or `ip6tables-save`) output into a ruleset that can judge any SYN.
 * Only the `*nat` table is read; other tables and lines that are not rules are skipped, so it
 * never throws on content. A rule it cannot read is kept as an unknown rule: it makes the paths
 * that reach it unknown instead of being silently dropped.
 *
 * @param text The dump, as one string or as lines (no newlines).
 * @param family `ipv4` for `iptables-save`, `ipv6` for `ip6tables-save`.
 * @returns The ruleset; evaluate it per candidate with {@link NatRuleset.evaluate}.
 *
 * @example
 * ```ts
 * import { parseIptablesRuleset } from "./iptables_ruleset.ts";
 * const ruleset = parseIptablesRuleset(
 *   [
 *     "*nat",
 *     ":PREROUTING ACCEPT [0:0]",
 *     ":KUBE-SERVICES - [0:0]",
 *     "-A PREROUTING -j KUBE-SERVICES",
 *     "-A KUBE-SERVICES -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 198.51.100.7:8080",
 *     "COMMIT",
 *   ],
 *   "ipv4",
 * );
 * ruleset.evaluate(
 *   { family: "ipv4", src: "203.0.113.9", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   { localAddresses: new Set() },
 * ); // { kind: "dnat", endpoints: [{ address: "198.51.100.7", port: 8080 }] }
 * ```
 */
export function parseIptablesRuleset(
  text: string | Iterable<string>,
  family: Family,
): IptablesRuleset {
  const table = parseIptablesNatTable(text, family);
  return new Ruleset(family, table.chains, table.ruleCount);
}

/** What the walk carries along one path. */
interface PathState {
  readonly mark: number;
  /** Bits of `mark` that rules on this path set. */
  readonly known: number;
  /** First undecidable rule on this path, if any: the path is uncertain. */
  readonly unknownRule: string | undefined;
  /**
   * How the undecidable matches on this path were assumed to go, in walk order: `<fork>t,` or
   * `<fork>f,` per fork (empty on a certain path).
   */
  readonly assumed: string;
}

type Leaf =
  | { readonly kind: "dnat"; readonly endpoint: NatEndpoint; readonly state: PathState }
  | { readonly kind: "none"; readonly state: PathState }
  | { readonly kind: "unknown"; readonly rule: string; readonly state: PathState };

/** A chain's walk ended: by returning to its caller, or in a leaf. */
type Exit = { readonly returned: PathState } | { readonly leaf: Leaf };

/** A packet as the walk needs it: parsed addresses and the node's facts. */
interface Subject {
  readonly packet: NatPacket;
  readonly src: Address;
  readonly dst: Address;
  readonly dstKey: string;
  readonly local: ReadonlySet<string>;
  /** Per-chain candidate rules for this packet (memo for the length of one evaluation). */
  readonly candidates: Map<string, readonly Rule[]>;
  budget: number;
  /** Forks made so far at undecidable matches; numbers them. */
  forks: number;
}

const BUILTIN_CHAINS = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

/** Chains above this size are indexed by destination address and port. */
const INDEX_THRESHOLD = 16;
/** Most leaves one evaluation may produce before it gives up (unknown). */
const LEAF_BUDGET = 4096;
/** Deepest chain nesting followed (iptables itself refuses loops). */
const MAX_DEPTH = 64;

interface IndexedChain {
  readonly name: string;
  readonly builtin: boolean;
  readonly policy: string | undefined;
  readonly rules: readonly Rule[];
  /** `${dst}|${port}` buckets of rule positions, `*` for any; absent for small chains. */
  readonly index: ReadonlyMap<string, readonly number[]> | undefined;
  /** Whether the chain, whatever path a packet takes in it, only sets marks and returns. */
  neutral: boolean | undefined;
}

class Ruleset implements IptablesRuleset {
  readonly family: Family;
  readonly ruleCount: number;
  readonly chainCount: number;
  readonly #chains: ReadonlyMap<string, IndexedChain>;
  /** Node facts already turned into address keys, per facts object. */
  readonly #localKeys = new WeakMap<NodeFacts, ReadonlySet<string>>();

  constructor(family: Family, chains: ReadonlyMap<string, ParsedChain>, ruleCount: number) {
    this.family = family;
    this.ruleCount = ruleCount;
    this.chainCount = chains.size;
    const indexed = new Map<string, IndexedChain>();
    for (const chain of chains.values()) {
      indexed.set(chain.name, {
        name: chain.name,
        builtin: chain.policy !== undefined || BUILTIN_CHAINS.has(chain.name),
        policy: chain.policy,
        rules: chain.rules,
        index: chain.rules.length > INDEX_THRESHOLD ? buildIndex(chain.rules) : undefined,
        neutral: undefined,
      });
    }
    this.#chains = indexed;
  }

  evaluate(packet: NatPacket, node: NodeFacts): NatPathVerdict {
    if (packet.family !== this.family) return { kind: "none" };
    const src = tryParseAddress(packet.src);
    const dst = tryParseAddress(packet.dst);
    if (src === undefined || dst === undefined) {
      return { kind: "unknown", rule: `(address ${packet.src} or ${packet.dst} does not parse)` };
    }
    const subject: Subject = {
      packet,
      src,
      dst,
      dstKey: String(dst.value),
      local: this.#local(node),
      candidates: new Map(),
      budget: LEAF_BUDGET,
      forks: 0,
    };
    const start = this.#chains.get("PREROUTING");
    if (!start) return { kind: "none" };
    const exits = this.#walk(
      start,
      0,
      { mark: 0, known: 0, unknownRule: undefined, assumed: "" },
      subject,
      0,
    );
    // Falling off PREROUTING: the policy decides, and neither ACCEPT nor DROP translates.
    return verdictOf(
      exits.map((exit) => ("leaf" in exit ? exit.leaf : { kind: "none", state: exit.returned })),
    );
  }

  #local(node: NodeFacts): ReadonlySet<string> {
    let keys = this.#localKeys.get(node);
    if (!keys) {
      keys = new Set(
        [...node.localAddresses].flatMap((text) => {
          // Keys are integers: only this family's addresses may be compared with them.
          const address = tryParseAddress(text, this.family);
          return address === undefined ? [] : [String(address.value)];
        }),
      );
      this.#localKeys.set(node, keys);
    }
    return keys;
  }

  /** Walks `chain` from candidate position `from` and returns how each path leaves it. */
  #walk(
    chain: IndexedChain,
    from: number,
    state: PathState,
    subject: Subject,
    depth: number,
  ): Exit[] {
    const rules = this.#candidates(chain, subject);
    for (let at = from; at < rules.length; at++) {
      const rule = rules[at] as Rule;
      const decided = decide(rule, state, subject);
      if (decided === Tri.No) continue;
      if (--subject.budget < 0 || depth > MAX_DEPTH) {
        return [{ leaf: { kind: "unknown", rule: rule.text, state } }];
      }
      if (decided === Tri.Unknown && this.#isNeutral(rule.target)) {
        // Taken or not, the rule only touches marks: the path goes on, those bits unknown.
        state = { ...state, known: state.known & ~this.#marksSetBy(rule.target) };
        continue;
      }
      let taken = state;
      let notTaken = state;
      if (decided === Tri.Unknown) {
        const fork = subject.forks++;
        const unknownRule = state.unknownRule ?? rule.text;
        taken = { ...state, unknownRule, assumed: `${state.assumed}${fork}t,` };
        notTaken = { ...state, unknownRule, assumed: `${state.assumed}${fork}f,` };
      }
      const exits = this.#apply(rule, chain, at, taken, subject, depth);
      if (decided === Tri.Yes) return exits;
      // Both or Unknown: the path where the rule does not match goes on too.
      return [...exits, ...this.#walk(chain, at + 1, notTaken, subject, depth)];
    }
    return [{ returned: state }];
  }

  /** The exits of the paths on which `rule` (at candidate position `at`) fires. */
  #apply(
    rule: Rule,
    chain: IndexedChain,
    at: number,
    state: PathState,
    subject: Subject,
    depth: number,
  ): Exit[] {
    const target = rule.target;
    switch (target.kind) {
      case "dnat": {
        if (!target.endpoint) return [{ leaf: { kind: "unknown", rule: rule.text, state } }];
        const endpoint = target.endpoint.port === -1
          ? { address: target.endpoint.address, port: subject.packet.dport }
          : target.endpoint;
        return [{ leaf: { kind: "dnat", endpoint, state } }];
      }
      case "stop":
      case "none":
        return [{ leaf: { kind: "none", state } }];
      case "return":
        return [{ returned: state }];
      case "continue":
        return this.#walk(chain, at + 1, state, subject, depth);
      case "mark": {
        const mark = ((state.mark & target.and) ^ target.xor) >>> 0;
        return this.#walk(
          chain,
          at + 1,
          { ...state, mark, known: (state.known | target.sets) >>> 0 },
          subject,
          depth,
        );
      }
      case "unknown":
        return [{ leaf: { kind: "unknown", rule: rule.text, state } }];
      case "jump": {
        const callee = this.#chains.get(target.chain);
        if (!callee || callee.builtin) {
          return [{ leaf: { kind: "unknown", rule: rule.text, state } }];
        }
        const out: Exit[] = [];
        for (const exit of this.#walk(callee, 0, state, subject, depth + 1)) {
          if ("leaf" in exit) out.push(exit);
          // A goto returns to this chain's caller; a jump goes on after the rule.
          else if (target.goto) out.push(exit);
          else out.push(...this.#walk(chain, at + 1, exit.returned, subject, depth));
        }
        return out;
      }
    }
  }

  #candidates(chain: IndexedChain, subject: Subject): readonly Rule[] {
    if (!chain.index) return chain.rules;
    let rules = subject.candidates.get(chain.name);
    if (!rules) {
      const port = subject.packet.dport;
      const key = subject.dstKey;
      const lists = [
        chain.index.get(`${key}|${port}`),
        chain.index.get(`${key}|*`),
        chain.index.get(`*|${port}`),
        chain.index.get("*|*"),
      ].filter((list): list is readonly number[] => list !== undefined);
      rules = mergeSorted(lists).map((i) => chain.rules[i] as Rule);
      subject.candidates.set(chain.name, rules);
    }
    return rules;
  }

  /** Whether taking this target or not changes nothing but marks. */
  #isNeutral(target: Target): boolean {
    if (target.kind === "mark" || target.kind === "continue") return true;
    if (target.kind !== "jump" || target.goto) return false;
    const chain = this.#chains.get(target.chain);
    if (!chain || chain.builtin) return false;
    if (chain.neutral === undefined) {
      chain.neutral = false; // a loop is not neutral
      chain.neutral = chain.rules.every((r) =>
        r.target.kind === "return" || this.#isNeutral(r.target)
      );
    }
    return chain.neutral;
  }

  #marksSetBy(target: Target): number {
    if (target.kind === "mark") return target.sets | target.xor;
    if (target.kind !== "jump") return 0;
    const chain = this.#chains.get(target.chain);
    let bits = 0;
    for (const rule of chain?.rules ?? []) bits |= this.#marksSetBy(rule.target);
    return bits;
  }
}

function buildIndex(rules: readonly Rule[]): Map<string, number[]> {
  const index = new Map<string, number[]>();
  rules.forEach((rule, i) => {
    if (rule.neverTcp) return;
    const key = `${rule.dstKey ?? "*"}|${rule.portKey ?? "*"}`;
    const list = index.get(key);
    if (list) list.push(i);
    else index.set(key, [i]);
  });
  return index;
}

function mergeSorted(lists: readonly (readonly number[])[]): number[] {
  if (lists.length === 1) return [...(lists[0] as readonly number[])];
  return lists.flat().sort((a, b) => a - b);
}

/**
 * The verdict over every leaf of the walk. Random choices (statistic, recent) are the kernel's:
 * one translating branch is enough. Undecidable matches are the agent's ignorance: the packet
 * is translated for sure only when, whichever way each of them goes, some branch translates.
 */
function verdictOf(leaves: readonly Leaf[]): NatPathVerdict {
  const endpoints: NatEndpoint[] = [];
  const seen = new Set<string>();
  let firstUnknown: string | undefined;
  let unknownLeaf = false;
  // Assumption sequences (see PathState.assumed) that end in a DNAT, and the forks that follow
  // each sequence.
  const dnatAt = new Set<string>();
  const forksAfter = new Map<string, Set<string>>();
  for (const leaf of leaves) {
    const uncertain = leaf.kind === "unknown" ? leaf.rule : leaf.state.unknownRule;
    if (uncertain !== undefined) firstUnknown ??= uncertain;
    if (leaf.kind === "unknown") unknownLeaf = true;
    const assumed = leaf.state.assumed;
    for (let end = assumed.indexOf(","); end !== -1; end = assumed.indexOf(",", end + 1)) {
      const start = assumed.lastIndexOf(",", end - 1) + 1;
      const prefix = assumed.slice(0, start);
      const fork = assumed.slice(start, end - 1);
      let forks = forksAfter.get(prefix);
      if (!forks) forksAfter.set(prefix, forks = new Set());
      forks.add(fork);
    }
    if (leaf.kind !== "dnat") continue;
    dnatAt.add(assumed);
    const key = `${leaf.endpoint.address}|${leaf.endpoint.port}`;
    if (!seen.has(key)) {
      seen.add(key);
      endpoints.push(leaf.endpoint);
    }
  }
  const memo = new Map<string, boolean>();
  const certain = (prefix: string): boolean => {
    let result = memo.get(prefix);
    if (result === undefined) {
      result = dnatAt.has(prefix) ||
        [...(forksAfter.get(prefix) ?? [])].some((fork) =>
          certain(`${prefix}${fork}t,`) && certain(`${prefix}${fork}f,`)
        );
      memo.set(prefix, result);
    }
    return result;
  };
  if (endpoints.length > 0 && certain("")) return { kind: "dnat", endpoints };
  // No path translates, whatever the undecidable matches do: certainly not translated.
  if (endpoints.length === 0 && !unknownLeaf) return { kind: "none" };
  return { kind: "unknown", rule: firstUnknown ?? "" };
}

const CT_STATES = new Set([
  "NEW",
  "ESTABLISHED",
  "RELATED",
  "INVALID",
  "UNTRACKED",
  "SNAT",
  "DNAT",
]);

function decide(rule: Rule, state: PathState, subject: Subject): Tri {
  let result: Tri = Tri.Yes;
  for (const match of rule.matches) {
    const one = decideMatch(match, state, subject);
    if (one === Tri.No) return Tri.No;
    // Unknown outweighs Both: a rule with an unknown match is undecided.
    if (one === Tri.Unknown || (one === Tri.Both && result === Tri.Yes)) result = one;
  }
  return result;
}

function bool(value: boolean, neg: boolean): Tri {
  return value !== neg ? Tri.Yes : Tri.No;
}

function decideMatch(match: Match, state: PathState, subject: Subject): Tri {
  const { packet } = subject;
  switch (match.kind) {
    case "cidr":
      return bool(
        addressInCidr(match.cidr, match.side === "src" ? subject.src : subject.dst),
        match.neg,
      );
    case "proto":
      return bool(match.tcp, match.neg);
    case "ports": {
      const inRanges = (port: number) => match.ranges.some(([lo, hi]) => port >= lo && port <= hi);
      const hit = match.side === "dst"
        ? inRanges(packet.dport)
        : match.side === "src"
        ? inRanges(packet.sport)
        : inRanges(packet.sport) || inRanges(packet.dport);
      return bool(hit, match.neg);
    }
    case "tcpFlags":
      return bool((SYN_FLAGS & match.mask) === match.comp, match.neg);
    case "addrtype": {
      const key = match.side === "src" ? String(subject.src.value) : subject.dstKey;
      const type = subject.local.has(key) ? "LOCAL" : "UNICAST";
      if (match.types.some((t) => t !== "LOCAL" && t !== "UNICAST")) return Tri.Unknown;
      return bool(match.types.includes(type), match.neg);
    }
    case "const":
      return match.value;
    case "ctstate": {
      // The first packet of a flow that has not been translated yet.
      if (match.states.some((s) => !CT_STATES.has(s))) return Tri.Unknown;
      return bool(match.states.includes("NEW"), match.neg);
    }
    case "mark":
      if ((match.mask & ~state.known) !== 0) return Tri.Unknown;
      return bool(((state.mark & match.mask) >>> 0) === match.value, match.neg);
    case "unknown":
      return Tri.Unknown;
  }
}
