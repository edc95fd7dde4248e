/**
 * What kube-proxy's nftables rules do with one SYN, read from `nft -j list table ip kube-proxy`
 * (and `ip6`): the nftables half of the per-flow `nat` rule.
 *
 * The JSON is read once into a view (chains by name, base chains by hook in priority order, every
 * named set and verdict map indexed by its key), and each candidate is then walked through it the
 * way the kernel walks a packet that arrives on the node:
 *
 * 1. `prerouting` base chains, lowest priority first: kube-proxy's `filter-prerouting(-pre-dnat)`
 *    at -110 (the `firewall-check` of `loadBalancerSourceRanges`) sees the original destination,
 *    then `nat-prerouting` at -100 (`services` → `service-ips` / `service-nodeports` →
 *    `external-…` / `local-…` / `service-…` / `endpoint-…` → `dnat`). Once a nat chain has
 *    translated, later nat chains of the hook are skipped, as in the kernel.
 * 2. The routing decision on the (maybe translated) destination: one of the node's addresses goes
 *    to `input`, anything else to `forward` (a node that receives the traffic routes it).
 * 3. `input` or `forward` base chains (`filter-input` / `filter-forward`: `no-endpoint-services`,
 *    `no-endpoint-nodeports`, `cluster-ips-check`), which see the translated destination; then,
 *    when forwarded, `postrouting` (masquerading, which never blocks).
 *
 * The SYN is translated (`dnat`) only when a path ends in a DNAT and is not dropped or rejected
 * later; a drop before or after the DNAT, or no DNAT at all, is `none` (the kernel confirms a
 * conntrack entry only for a packet that survives every hook, so a dropped SYN leaves no entry).
 * Where the kernel would choose at random (`numgen random mod N vmap` or `dnat … to numgen …
 * map`) or the answer depends on state the rules do not show (an affinity set, or any set updated
 * from the packet path), every choice is followed, so every reachable endpoint is listed; when
 * some choices translate and others end in a drop, the verdict is `dnat` with the translating
 * ones (a retried SYN can get through, though one SYN may not). A match or statement not modelled
 * here, anywhere on a reachable path, makes the verdict `unknown` (which never condemns), naming
 * that rule.
 *
 * Modelled: `ip`/`ip6` `saddr`/`daddr`, `tcp`/`th` ports, `meta l4proto`, `meta mark` and its
 * bit operations, `fib saddr|daddr type`, `ct state` (a SYN is `new`), `ct status dnat`, sets and
 * anonymous sets with prefixes and ranges, `!=`, concatenations, verdict maps, `numgen`,
 * `jump`/`goto`/`return`/`accept`/`drop`/`reject`/`continue`, `dnat`, `masquerade`/`snat`,
 * `counter`/`log`/`set update`, chain policies. Only tables named `kube-proxy` are read.
 *
 * @module
 */
import { tryParseAddress } from "../core/address.ts";
import type { Family } from "../core/flow.ts";
import type { NatEndpoint, NatPacket, NatPathVerdict, NatRuleset, NodeFacts } from "./nat_path.ts";
import {
  type ChainView,
  type FamilyView,
  isRecord,
  readFamilyViews,
  type RuleView,
  soleEntry,
} from "./_nft_view.ts";
import { evalMatch, lookup, markAfter, MISS, type State, type Walk } from "./_nft_match.ts";

/**
 * Parses the output of `nft -j list table ip kube-proxy` and/or `nft -j list table ip6
 * kube-proxy` (one document or several; `nft -j list ruleset` works too) into a ruleset that
 * answers per packet. A family whose table is absent answers `none` (kube-proxy translates
 * nothing there). Pass one `NodeFacts` object for all the candidates of a cycle: its addresses
 * are parsed once per object. Endpoint addresses come back as nft prints them (compressed IPv6,
 * like conntrack).
 *
 * @param json One `nft -j` document, or one per family.
 * @returns The ruleset, built once; evaluate it per candidate.
 * @throws {SyntaxError} When a document is not `nft -j` output.
 *
 * @example
 * ```ts
 * import { parseNftablesRuleset } from "./nftables_ruleset.ts";
 * const json = JSON.stringify({ nftables: [
 *   { chain: { family: "ip", table: "kube-proxy", name: "nat-prerouting", type: "nat",
 *     hook: "prerouting", prio: -100, policy: "accept" } },
 *   { rule: { family: "ip", table: "kube-proxy", chain: "nat-prerouting", handle: 2, expr: [
 *     { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } },
 *       right: "192.0.2.10" } },
 *     { dnat: { addr: "198.51.100.7", port: 8080 } },
 *   ] } },
 * ] });
 * const ruleset = parseNftablesRuleset(json);
 * ruleset.evaluate(
 *   { family: "ipv4", src: "203.0.113.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   { localAddresses: new Set() },
 * ); // { kind: "dnat", endpoints: [{ address: "198.51.100.7", port: 8080 }] }
 * ```
 */
export function parseNftablesRuleset(json: string | readonly string[]): NatRuleset {
  return new NftablesRuleset(readFamilyViews(typeof json === "string" ? [json] : json));
}

/** The hooks a packet from outside meets on its way through the node. */
type Hook = "prerouting" | "input" | "forward" | "postrouting";

/** What a chain (or a rule) came to for one branch. */
type Outcome =
  | { readonly kind: "next"; readonly state: State }
  | { readonly kind: "return"; readonly state: State }
  | { readonly kind: "accept"; readonly state: State }
  | { readonly kind: "drop" }
  | { readonly kind: "unknown"; readonly rule: string };

/** Deeper than kube-proxy ever nests (the kernel allows 16 jump levels). */
const MAX_DEPTH = 32;

class NftablesRuleset implements NatRuleset {
  readonly #views: ReadonlyMap<Family, FamilyView>;
  /** Parsed node addresses, per NodeFacts object (the caller keeps one per read of the node). */
  readonly #locals = new WeakMap<
    ReadonlySet<string>,
    Readonly<Record<Family, ReadonlySet<bigint>>>
  >();

  constructor(views: ReadonlyMap<Family, FamilyView>) {
    this.#views = views;
  }

  evaluate(packet: NatPacket, node: NodeFacts): NatPathVerdict {
    const view = this.#views.get(packet.family);
    if (!view) return { kind: "none" };
    try {
      return this.#evaluate(view, packet, node);
    } catch (error) {
      // A shape of JSON this reader did not foresee: never a verdict that could condemn.
      return {
        kind: "unknown",
        rule: `the rules for ${packet.dst}:${packet.dport}: ${
          error instanceof Error ? error.message : String(error)
        }`,
      };
    }
  }

  #evaluate(view: FamilyView, packet: NatPacket, node: NodeFacts): NatPathVerdict {
    if (!Number.isInteger(packet.sport) || !Number.isInteger(packet.dport)) {
      return { kind: "unknown", rule: `the ports of ${packet.src} -> ${packet.dst}` };
    }
    const src = tryParseAddress(packet.src)?.value;
    const dst = tryParseAddress(packet.dst)?.value;
    if (src === undefined || dst === undefined) {
      return { kind: "unknown", rule: `an address of ${packet.src} -> ${packet.dst}` };
    }
    const locals = this.#localsOf(node.localAddresses)[packet.family];
    const walk: Walk = { view, local: (address) => locals.has(address) };
    const start: State = {
      src,
      srcKey: src.toString(16),
      dst,
      dstKey: dst.toString(16),
      sport: packet.sport,
      dport: packet.dport,
      mark: 0n,
    };
    return verdictOf(walkNode(walk, start));
  }

  #localsOf(addresses: ReadonlySet<string>): Readonly<Record<Family, ReadonlySet<bigint>>> {
    let parsed = this.#locals.get(addresses);
    if (!parsed) {
      const values = { ipv4: new Set<bigint>(), ipv6: new Set<bigint>() };
      for (const text of addresses) {
        // Not an address: it cannot be a packet's either.
        const address = tryParseAddress(text);
        if (address !== undefined) values[address.family].add(address.value);
      }
      parsed = values;
      this.#locals.set(addresses, parsed);
    }
    return parsed;
  }
}

/** The final states of every branch: accepted (maybe translated), dropped, or unknown. */
function walkNode(walk: Walk, start: State): Outcome[] {
  const finals: Outcome[] = [];
  for (const after of runHook(walk, "prerouting", start)) {
    if (after.kind !== "accept") {
      finals.push(after);
      continue;
    }
    if (walk.local(after.state.dst)) {
      finals.push(...runHook(walk, "input", after.state));
      continue;
    }
    for (const forwarded of runHook(walk, "forward", after.state)) {
      if (forwarded.kind === "accept") {
        finals.push(...runHook(walk, "postrouting", forwarded.state));
      } else finals.push(forwarded);
    }
  }
  return finals;
}

function verdictOf(finals: readonly Outcome[]): NatPathVerdict {
  const endpoints = new Map<string, NatEndpoint>();
  for (const final of finals) {
    if (final.kind === "unknown") return { kind: "unknown", rule: final.rule };
    const dnat = final.kind === "accept" ? final.state.dnat : undefined;
    if (dnat) endpoints.set(`${dnat.address} ${dnat.port}`, dnat);
  }
  return endpoints.size > 0
    ? { kind: "dnat", endpoints: [...endpoints.values()] }
    : { kind: "none" };
}

/** Runs one hook's base chains in priority order; survivors come back as `accept`. */
function runHook(walk: Walk, hook: Hook, state: State): Outcome[] {
  let current: Outcome[] = [{ kind: "accept", state }];
  for (const chain of walk.view.hooks.get(hook) ?? []) {
    const next: Outcome[] = [];
    for (const branch of current) {
      // Once a nat chain has set up the translation, the kernel skips the hook's other nat chains.
      if (
        branch.kind !== "accept" ||
        (chain.type === "nat" && hook === "prerouting" && branch.state.dnat)
      ) {
        next.push(branch);
        continue;
      }
      for (const end of runChain(walk, chain, branch.state, 0)) {
        if (end.kind === "return" || end.kind === "next") {
          next.push(
            chain.policy === "drop" ? { kind: "drop" } : { kind: "accept", state: end.state },
          );
        } else {
          next.push(end);
        }
      }
    }
    current = next;
  }
  return current;
}

function runChain(walk: Walk, chain: ChainView, state: State, depth: number): Outcome[] {
  if (depth > MAX_DEPTH) return [{ kind: "unknown", rule: `${chain.name}: jumps nested too deep` }];
  return runFrom(walk, chain, 0, state, depth);
}

/** Runs a chain's rules from `index`; a branch that goes on to the next rule is followed there. */
function runFrom(
  walk: Walk,
  chain: ChainView,
  index: number,
  state: State,
  depth: number,
): Outcome[] {
  let current = state;
  for (let i = index; i < chain.rules.length; i++) {
    const results = runRule(walk, chain.rules[i] as RuleView, current, depth);
    const only = results.length === 1 ? results[0] : undefined;
    if (only?.kind === "next") {
      current = only.state;
      continue;
    }
    const out: Outcome[] = [];
    for (const result of results) {
      if (result.kind === "next") out.push(...runFrom(walk, chain, i + 1, result.state, depth));
      else out.push(result);
    }
    return out;
  }
  return [{ kind: "return", state: current }];
}

function runRule(walk: Walk, rule: RuleView, state: State, depth: number): Outcome[] {
  return runExprs(walk, rule, 0, state, depth);
}

function runExprs(walk: Walk, rule: RuleView, k: number, state: State, depth: number): Outcome[] {
  if (k >= rule.expr.length) return [{ kind: "next", state }];
  const e = rule.expr[k];
  const [tag, body] = soleEntry(e) ?? [];
  switch (tag) {
    case "match": {
      const result = evalMatch(walk, body, state);
      if (result === "unknown") return [unknownAt(rule)];
      if (result === false) return [{ kind: "next", state }];
      const rest = runExprs(walk, rule, k + 1, state, depth);
      return result === true ? rest : [{ kind: "next", state }, ...rest];
    }
    case "counter":
    case "log":
    case "comment":
      return runExprs(walk, rule, k + 1, state, depth);
    case "set":
      // `update @affinity-… { ip saddr }`: changes what later packets see, not this one.
      return isRecord(body) && (body.op === "update" || body.op === "add")
        ? runExprs(walk, rule, k + 1, state, depth)
        : [unknownAt(rule)];
    case "mangle": {
      const mark = markAfter(body, state);
      if (mark === undefined) return [unknownAt(rule)];
      return runExprs(walk, rule, k + 1, { ...state, mark }, depth);
    }
    case "vmap":
      return runVmap(walk, rule, body, state, depth);
    case "dnat":
      return runDnat(walk, rule, body, state);
    case "masquerade":
    case "snat":
      // Source NAT in postrouting: terminal, and it never undoes a DNAT.
      return [{ kind: "accept", state }];
    default: {
      const verdict = verdictResult(walk, rule, e, state, depth);
      return verdict ?? [unknownAt(rule)];
    }
  }
}

/** A verdict statement (or a map's verdict data); undefined when it is not one. */
function verdictResult(
  walk: Walk,
  rule: RuleView,
  verdict: unknown,
  state: State,
  depth: number,
): Outcome[] | undefined {
  const [tag, body] = soleEntry(verdict) ?? [];
  switch (tag) {
    case "accept":
      return [{ kind: "accept", state }];
    case "drop":
    case "reject":
      return [{ kind: "drop" }];
    case "return":
      return [{ kind: "return", state }];
    case "continue":
      return [{ kind: "next", state }];
    case "jump":
    case "goto": {
      const target = isRecord(body) ? body.target : undefined;
      const chain = typeof target === "string" ? walk.view.chains.get(target) : undefined;
      if (!chain) return [unknownAt(rule)];
      const out: Outcome[] = [];
      for (const end of runChain(walk, chain, state, depth + 1)) {
        // A jump comes back to the next rule; a goto comes back to whoever called this chain.
        if (end.kind === "return" || end.kind === "next") {
          out.push({ kind: tag === "jump" ? "next" : "return", state: end.state });
        } else {
          out.push(end);
        }
      }
      return out;
    }
    default:
      return undefined;
  }
}

function runVmap(
  walk: Walk,
  rule: RuleView,
  body: unknown,
  state: State,
  depth: number,
): Outcome[] {
  if (!isRecord(body)) return [unknownAt(rule)];
  const choices = lookup(walk, body.key, body.data, state);
  if (choices === undefined) return [unknownAt(rule)];
  const out: Outcome[] = [];
  for (const choice of choices) {
    if (choice === MISS) {
      // No element: the rule does not match, the chain goes on.
      out.push({ kind: "next", state });
      continue;
    }
    const result = verdictResult(walk, rule, choice, state, depth);
    if (!result) return [unknownAt(rule)];
    out.push(...result);
  }
  return out;
}

function runDnat(walk: Walk, rule: RuleView, body: unknown, state: State): Outcome[] {
  if (!isRecord(body)) return [unknownAt(rule)];
  if (body.family !== undefined && body.family !== (walk.view.family === "ipv4" ? "ip" : "ip6")) {
    return [unknownAt(rule)];
  }
  let targets: { address: unknown; port: unknown }[];
  if (typeof body.addr === "string") {
    targets = [{ address: body.addr, port: body.port }];
  } else if (isRecord(body.addr) && isRecord(body.addr.map)) {
    // `dnat ip addr . port to numgen random mod N map { 0 : a . p, … }`
    const choices = lookup(walk, body.addr.map.key, body.addr.map.data, state);
    if (choices === undefined) return [unknownAt(rule)];
    targets = [];
    for (const choice of choices) {
      if (choice === MISS) continue; // No mapping: the packet is dropped by the kernel.
      const parts = isRecord(choice) && Array.isArray(choice.concat) ? choice.concat : [choice];
      targets.push({ address: parts[0], port: parts.length > 1 ? parts[1] : body.port });
    }
  } else {
    return [unknownAt(rule)];
  }
  const out: Outcome[] = [];
  for (const target of targets) {
    const port = target.port === undefined ? state.dport : target.port;
    if (typeof target.address !== "string" || typeof port !== "number") return [unknownAt(rule)];
    const dst = ruleAddress(walk, target.address);
    if (dst === undefined) return [unknownAt(rule)];
    const dnat: NatEndpoint = { address: target.address, port };
    out.push({
      kind: "accept",
      state: { ...state, dst, dstKey: dst.toString(16), dport: port, dnat },
    });
  }
  // Every choice unmapped: the kernel drops the packet.
  return out.length > 0 ? out : [{ kind: "drop" }];
}

/** An address the rules name, parsed once per read of the rules. */
function ruleAddress(walk: Walk, text: string): bigint | undefined {
  const known = walk.view.addresses.get(text);
  if (known !== undefined || walk.view.addresses.has(text)) return known;
  const value = tryParseAddress(text)?.value;
  walk.view.addresses.set(text, value);
  return value;
}

function unknownAt(rule: RuleView): Outcome {
  const text = JSON.stringify(rule.expr);
  return {
    kind: "unknown",
    rule: `chain ${rule.chain} handle ${rule.handle}: ${
      text.length > 400 ? text.slice(0, 400) + "…" : text
    }`,
  };
}
