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
import { parseAddress } from "../core/cidr.ts";
import type { Family } from "../core/flow.ts";
import type { NatEndpoint, NatPacket, NatPathVerdict, NatRuleset, NodeFacts } from "./nat_path.ts";

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
  const documents = typeof json === "string" ? [json] : json;
  const builders = new Map<Family, ViewBuilder>();
  for (const text of documents) {
    for (const object of nftObjects(text)) addObject(builders, object);
  }
  const views = new Map<Family, FamilyView>();
  for (const [family, builder] of builders) views.set(family, finishView(builder));
  return new NftablesRuleset(views);
}

/** The hooks a packet from outside meets on its way through the node. */
type Hook = "prerouting" | "input" | "forward" | "postrouting";
const HOOKS: readonly string[] = ["prerouting", "input", "forward", "postrouting", "output"];

/** How a set's (or a match's) values are read. */
type Kind = "addr" | "proto" | "int";

interface RuleView {
  readonly chain: string;
  readonly handle: number;
  readonly expr: readonly unknown[];
}

interface ChainView {
  readonly name: string;
  readonly hook: string | undefined;
  readonly type: string | undefined;
  readonly prio: number;
  readonly policy: "accept" | "drop";
  readonly handle: number;
  readonly rules: RuleView[];
}

/** An interval of one key component, both ends included. */
interface Span {
  readonly lo: bigint;
  readonly hi: bigint;
}

interface SetView {
  readonly name: string;
  /** Component kinds of the key; undefined when the type is not one this reader knows. */
  readonly kinds: readonly Kind[] | undefined;
  /** Membership depends on traffic (dynamic or timeout flag, or updated by a rule). */
  readonly dynamic: boolean;
  /** Single-value keys (`key(values)`) to their data (`true` for a plain set). */
  readonly exact: ReadonlyMap<string, unknown>;
  /** Elements with a prefix or range somewhere in the key. */
  readonly spans: readonly { readonly key: readonly Span[]; readonly data: unknown }[];
}

interface FamilyView {
  readonly family: Family;
  readonly chains: ReadonlyMap<string, ChainView>;
  readonly hooks: ReadonlyMap<string, readonly ChainView[]>;
  readonly sets: ReadonlyMap<string, SetView>;
  /**
   * What evaluation has already read out of the JSON (anonymous maps, literals, DNAT targets),
   * by the JSON object it came from: a candidate pays for each once per read of the rules.
   */
  readonly memo: WeakMap<object, unknown>;
  /** DNAT target addresses, likewise. */
  readonly addresses: Map<string, bigint | undefined>;
}

interface ViewBuilder {
  readonly family: Family;
  readonly chains: Map<string, ChainView>;
  readonly rawSets: { readonly object: Record<string, unknown>; readonly isMap: boolean }[];
  /** Sets a rule adds to or updates from the packet path. */
  readonly updated: Set<string>;
}

function nftObjects(text: string): unknown[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(
      `Cannot parse nft output as JSON: ${error instanceof Error ? error.message : error}`,
    );
  }
  const objects = isRecord(doc) ? doc.nftables : undefined;
  if (!Array.isArray(objects)) {
    throw new SyntaxError(
      `Cannot read nft output as a ruleset: current value starts with ${
        JSON.stringify(text.slice(0, 40))
      }`,
    );
  }
  return objects;
}

function familyOf(value: unknown): Family | undefined {
  return value === "ip" ? "ipv4" : value === "ip6" ? "ipv6" : undefined;
}

function addObject(builders: Map<Family, ViewBuilder>, object: unknown): void {
  const [tag, body] = soleEntry(object) ?? [];
  if (tag === undefined || !isRecord(body) || body.table !== "kube-proxy") return;
  const family = familyOf(body.family);
  if (family === undefined) return;
  let builder = builders.get(family);
  if (!builder) {
    builder = { family, chains: new Map(), rawSets: [], updated: new Set() };
    builders.set(family, builder);
  }
  if (tag === "chain" && typeof body.name === "string") {
    chainOf(builder, body.name, body);
  } else if (tag === "rule" && typeof body.chain === "string" && Array.isArray(body.expr)) {
    const rule: RuleView = {
      chain: body.chain,
      handle: typeof body.handle === "number" ? body.handle : 0,
      expr: body.expr,
    };
    chainOf(builder, body.chain).rules.push(rule);
    for (const e of body.expr) {
      const set = isRecord(e) && isRecord(e.set) ? e.set.set : undefined;
      if (typeof set === "string") builder.updated.add(set.replace(/^@/, ""));
    }
  } else if (tag === "set" || tag === "map") {
    builder.rawSets.push({ object: body, isMap: tag === "map" });
  }
}

/** The chain named `name`, created on first sight (rules may be listed before their chain). */
function chainOf(builder: ViewBuilder, name: string, body?: Record<string, unknown>): ChainView {
  const known = builder.chains.get(name);
  if (known && !body) return known;
  const chain: ChainView = {
    name,
    hook: typeof body?.hook === "string" ? body.hook : known?.hook,
    type: typeof body?.type === "string" ? body.type : known?.type,
    prio: typeof body?.prio === "number" ? body.prio : known?.prio ?? 0,
    policy: body?.policy === "drop" ? "drop" : known?.policy ?? "accept",
    handle: typeof body?.handle === "number" ? body.handle : known?.handle ?? 0,
    rules: known?.rules ?? [],
  };
  builder.chains.set(name, chain);
  return chain;
}

function finishView(builder: ViewBuilder): FamilyView {
  const hooks = new Map<string, ChainView[]>();
  for (const chain of builder.chains.values()) {
    if (chain.hook === undefined || !HOOKS.includes(chain.hook)) continue;
    const list = hooks.get(chain.hook) ?? [];
    list.push(chain);
    hooks.set(chain.hook, list);
  }
  // The kernel runs a hook's chains by priority; equal priorities in registration order.
  for (const list of hooks.values()) list.sort((a, b) => a.prio - b.prio || a.handle - b.handle);
  const sets = new Map<string, SetView>();
  for (const { object } of builder.rawSets) {
    if (typeof object.name !== "string") continue;
    sets.set(object.name, setView(object, builder.updated.has(object.name)));
  }
  return {
    family: builder.family,
    chains: builder.chains,
    hooks,
    sets,
    memo: new WeakMap(),
    addresses: new Map(),
  };
}

const TYPE_KINDS: Readonly<Record<string, Kind>> = {
  ipv4_addr: "addr",
  ipv6_addr: "addr",
  inet_proto: "proto",
  inet_service: "int",
  mark: "int",
};

function setView(object: Record<string, unknown>, updated: boolean): SetView {
  const types = Array.isArray(object.type) ? object.type : [object.type];
  const known = types.map((t) => typeof t === "string" ? TYPE_KINDS[t] : undefined);
  const kinds = known.every((k) => k !== undefined) ? known as Kind[] : undefined;
  const flags = Array.isArray(object.flags) ? object.flags : [];
  const dynamic = updated || flags.includes("dynamic") || flags.includes("timeout");
  const exact = new Map<string, unknown>();
  const spans: { key: readonly Span[]; data: unknown }[] = [];
  const isMap = object.map !== undefined;
  if (kinds && Array.isArray(object.elem)) {
    for (const element of object.elem) {
      const [rawKey, data] = isMap && Array.isArray(element) ? element : [element, true];
      const key = keySpans(unwrapElem(rawKey), kinds);
      if (!key) continue;
      if (key.every((s) => s.lo === s.hi)) exact.set(keyText(key.map((s) => s.lo)), data);
      else spans.push({ key, data });
    }
  }
  return { name: String(object.name), kinds, dynamic, exact, spans };
}

function unwrapElem(value: unknown): unknown {
  return isRecord(value) && isRecord(value.elem) ? value.elem.val : value;
}

/** A set element's (or a match's right side's) key as spans, one per component. */
function keySpans(value: unknown, kinds: readonly Kind[]): Span[] | undefined {
  const parts = kinds.length === 1
    ? [value]
    : isRecord(value) && Array.isArray(value.concat)
    ? value.concat
    : undefined;
  if (!parts || parts.length !== kinds.length) return undefined;
  const spans: Span[] = [];
  for (const [i, kind] of kinds.entries()) {
    const span = literalSpan(unwrapElem(parts[i]), kind);
    if (!span) return undefined;
    spans.push(span);
  }
  return spans;
}

const PROTOCOLS: Readonly<Record<string, number>> = {
  icmp: 1,
  tcp: 6,
  udp: 17,
  icmpv6: 58,
  sctp: 132,
};

/** One literal of a kind as an interval; undefined when it cannot be read. */
function literalSpan(value: unknown, kind: Kind): Span | undefined {
  if (isRecord(value) && isRecord(value.prefix) && kind === "addr") {
    const base = scalar(value.prefix.addr, kind);
    const len = value.prefix.len;
    const bits = String(value.prefix.addr).includes(":") ? 128 : 32;
    if (base === undefined || typeof len !== "number" || !Number.isInteger(len)) return undefined;
    if (len < 0 || len > bits) return undefined;
    const host = BigInt(bits - len);
    const lo = (base >> host) << host;
    return { lo, hi: lo + (1n << host) - 1n };
  }
  if (isRecord(value) && Array.isArray(value.range) && value.range.length === 2) {
    const lo = scalar(value.range[0], kind);
    const hi = scalar(value.range[1], kind);
    return lo === undefined || hi === undefined ? undefined : { lo, hi };
  }
  const one = scalar(value, kind);
  return one === undefined ? undefined : { lo: one, hi: one };
}

function scalar(value: unknown, kind: Kind): bigint | undefined {
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  if (typeof value !== "string") return undefined;
  if (kind === "addr") {
    try {
      return parseAddress(value).value;
    } catch {
      return undefined;
    }
  }
  if (kind === "proto") {
    const number = PROTOCOLS[value];
    return number === undefined ? undefined : BigInt(number);
  }
  return /^(0x[0-9a-f]+|[0-9]+)$/i.test(value) ? BigInt(value) : undefined;
}

function keyText(values: readonly bigint[]): string {
  return values.map((v) => v.toString(16)).join(".");
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/** The packet as the rules see it at one point of its path. */
interface State {
  readonly src: bigint;
  /** `src` as a key component (see keyText). */
  readonly srcKey: string;
  readonly dst: bigint;
  readonly dstKey: string;
  readonly sport: number;
  readonly dport: number;
  readonly mark: bigint;
  /** The DNAT applied so far, if any. */
  readonly dnat?: NatEndpoint;
}

/** What a chain (or a rule) came to for one branch. */
type Outcome =
  | { readonly kind: "next"; readonly state: State }
  | { readonly kind: "return"; readonly state: State }
  | { readonly kind: "accept"; readonly state: State }
  | { readonly kind: "drop" }
  | { readonly kind: "unknown"; readonly rule: string };

/** Everything one evaluation needs, passed down instead of kept anywhere. */
interface Walk {
  readonly view: FamilyView;
  readonly local: (address: bigint) => boolean;
}

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
    let src: bigint, dst: bigint;
    try {
      src = parseAddress(packet.src).value;
      dst = parseAddress(packet.dst).value;
    } catch {
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
        try {
          const address = parseAddress(text);
          values[address.family].add(address.value);
        } catch {
          // Not an address: it cannot be a packet's either.
        }
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
  let value: bigint | undefined;
  try {
    value = parseAddress(text).value;
  } catch {
    value = undefined;
  }
  walk.view.addresses.set(text, value);
  return value;
}

/** The result of a lookup that found no element. */
const MISS = Symbol("miss");

/**
 * What a map (named `@name` or anonymous `{set: […]}`) gives for a key: one entry, or, when the
 * key is random (`numgen`), every entry the draw can reach plus MISS for draws without one.
 * Undefined when the key or the map cannot be evaluated.
 */
function lookup(
  walk: Walk,
  key: unknown,
  data: unknown,
  state: State,
): (unknown | typeof MISS)[] | undefined {
  if (isRecord(key) && isRecord(key.numgen)) {
    // The draws do not depend on the packet: read them once (the key object is the rule's own).
    const numgen = key.numgen;
    return memoized(walk, key, () => {
      const { mode, mod, offset } = numgen;
      if ((mode !== "random" && mode !== "inc") || !Number.isInteger(mod)) return undefined;
      const table = mapTable(walk, data, ["int"]);
      if (!table) return undefined;
      const base = Number.isInteger(offset) ? offset as number : 0;
      const choices: (unknown | typeof MISS)[] = [];
      for (let i = 0; i < (mod as number); i++) choices.push(table.get([BigInt(base + i)]));
      return choices;
    });
  }
  const values = keyValues(walk, key, state);
  if (!values) return undefined;
  const table = mapTable(walk, data, values.kinds);
  if (!table) return undefined;
  return [table.get(values.values, values.text)];
}

interface Table {
  get(key: readonly bigint[], text?: string): unknown | typeof MISS;
}

function mapTable(walk: Walk, data: unknown, kinds: readonly Kind[]): Table | undefined {
  if (typeof data === "string" && data.startsWith("@")) {
    const set = walk.view.sets.get(data.slice(1));
    if (!set || !set.kinds || set.dynamic || !sameKinds(set.kinds, kinds)) return undefined;
    return { get: (key, text) => setGet(set, key, text) };
  }
  if (isRecord(data) && Array.isArray(data.set)) {
    return memoized(walk, data, () => anonymousTable(data.set as unknown[], kinds));
  }
  return undefined;
}

function anonymousTable(set: readonly unknown[], kinds: readonly Kind[]): Table | undefined {
  const entries: { key: Span[]; data: unknown }[] = [];
  for (const entry of set) {
    if (!Array.isArray(entry) || entry.length !== 2) return undefined;
    const key = keySpans(unwrapElem(entry[0]), kinds);
    if (!key) return undefined;
    entries.push({ key, data: entry[1] });
  }
  return { get: (key) => entries.find((e) => spansHold(e.key, key))?.data ?? MISS };
}

/** `make()` of this JSON object, computed on first use. Kinds are fixed by the object's place. */
function memoized<T>(walk: Walk, object: object, make: () => T): T {
  if (walk.view.memo.has(object)) return walk.view.memo.get(object) as T;
  const value = make();
  walk.view.memo.set(object, value);
  return value;
}

function setGet(set: SetView, key: readonly bigint[], text = keyText(key)): unknown | typeof MISS {
  const hit = set.exact.get(text);
  if (hit !== undefined) return hit;
  for (const span of set.spans) if (spansHold(span.key, key)) return span.data;
  return MISS;
}

function spansHold(spans: readonly Span[], key: readonly bigint[]): boolean {
  return spans.length === key.length && spans.every((s, i) => {
    const value = key[i] as bigint;
    return s.lo <= value && value <= s.hi;
  });
}

function sameKinds(a: readonly Kind[], b: readonly Kind[]): boolean {
  return a.length === b.length && a.every((kind, i) => kind === b[i]);
}

/** The packet's values for a key expression (one selector or a concatenation). */
function keyValues(
  walk: Walk,
  key: unknown,
  state: State,
): PacketKey | undefined {
  const parts = isRecord(key) && Array.isArray(key.concat) ? key.concat : [key];
  const kinds: Kind[] = [];
  const values: bigint[] = [];
  let text = "";
  for (const part of parts) {
    const value = selector(walk, part, state);
    if (!value) return undefined;
    kinds.push(value.kind);
    values.push(value.value);
    text = text === "" ? value.key : `${text}.${value.key}`;
  }
  return { kinds, values, text };
}

/** The packet's values for a key, with their keyText(), built without printing a bigint. */
interface PacketKey {
  readonly kinds: readonly Kind[];
  readonly values: readonly bigint[];
  readonly text: string;
}

/** One selected field: its kind, value and keyText() component. */
interface Selected {
  readonly kind: Kind;
  readonly value: bigint;
  readonly key: string;
}

/** A packet field the rules select, with the kind its literals are read as. */
function selector(walk: Walk, expr: unknown, state: State): Selected | undefined {
  if (!isRecord(expr)) return undefined;
  if (isRecord(expr.payload)) {
    const { protocol, field } = expr.payload;
    const ip = walk.view.family === "ipv4" ? "ip" : "ip6";
    if (protocol === ip && field === "saddr") {
      return { kind: "addr", value: state.src, key: state.srcKey };
    }
    if (protocol === ip && field === "daddr") {
      return { kind: "addr", value: state.dst, key: state.dstKey };
    }
    // The packet is TCP: `th` and `tcp` ports are its ports.
    if ((protocol === "th" || protocol === "tcp") && field === "dport") {
      return { kind: "int", value: BigInt(state.dport), key: state.dport.toString(16) };
    }
    if ((protocol === "th" || protocol === "tcp") && field === "sport") {
      return { kind: "int", value: BigInt(state.sport), key: state.sport.toString(16) };
    }
    return undefined;
  }
  if (isRecord(expr.meta)) {
    if (expr.meta.key === "l4proto") return { kind: "proto", value: 6n, key: "6" };
    if (expr.meta.key === "mark") {
      return { kind: "int", value: state.mark, key: state.mark.toString(16) };
    }
    return undefined;
  }
  const and = expr["&"];
  if (Array.isArray(and) && and.length === 2) {
    const [left, mask] = and;
    const value = selector(walk, left, state);
    if (!value || !Number.isInteger(mask)) return undefined;
    const masked = value.value & BigInt(mask as number);
    return { kind: value.kind, value: masked, key: masked.toString(16) };
  }
  return undefined;
}

const OTHER_TRANSPORTS: ReadonlySet<string> = new Set([
  "udp",
  "udplite",
  "sctp",
  "dccp",
  "icmp",
  "icmpv6",
]);

/** true, false, "both" (state the rules do not show), or "unknown". */
function evalMatch(walk: Walk, body: unknown, state: State): boolean | "both" | "unknown" {
  if (!isRecord(body)) return "unknown";
  const { op, left, right } = body;
  const negate = op === "!=";
  if (op !== "==" && op !== "!=" && op !== "in") return "unknown";
  // A header of another transport protocol: nft adds "meta l4proto <that>" to such a match, so
  // a TCP packet fails it whatever the operator.
  if (
    isRecord(left) && isRecord(left.payload) && OTHER_TRANSPORTS.has(String(left.payload.protocol))
  ) {
    return false;
  }
  if (isRecord(left) && isRecord(left.fib)) return fibMatch(walk, left.fib, right, state, negate);
  if (isRecord(left) && isRecord(left.ct)) return ctMatch(left.ct, right, state, negate);
  const values = keyValues(walk, left, state);
  if (!values) return "unknown";
  let hit: boolean | "both";
  if (typeof right === "string" && right.startsWith("@")) {
    const set = walk.view.sets.get(right.slice(1));
    if (!set || !set.kinds || !sameKinds(set.kinds, values.kinds)) return "unknown";
    // A set the traffic fills (session affinity) may or may not hold this source.
    if (set.dynamic) return "both";
    hit = setGet(set, values.values, values.text) !== MISS;
  } else {
    const members = memoized(walk, body, () => literalMembers(right, values.kinds));
    if (!members) return "unknown";
    hit = members.some((m) => spansHold(m, values.values));
  }
  return negate ? !hit : hit;
}

/** A match's right side (one literal or an anonymous set) as its members' spans. */
function literalMembers(right: unknown, kinds: readonly Kind[]): Span[][] | undefined {
  const members: Span[][] = [];
  for (const member of isRecord(right) && Array.isArray(right.set) ? right.set : [right]) {
    const spans = keySpans(unwrapElem(member), kinds);
    if (!spans) return undefined;
    members.push(spans);
  }
  return members;
}

function fibMatch(
  walk: Walk,
  fib: Record<string, unknown>,
  right: unknown,
  state: State,
  negate: boolean,
): boolean | "unknown" {
  const flags = Array.isArray(fib.flags) ? fib.flags : [fib.flags];
  if (fib.result !== "type" || flags.length !== 1) return "unknown";
  const address = flags[0] === "saddr" ? state.src : flags[0] === "daddr" ? state.dst : undefined;
  if (address === undefined) return "unknown";
  // What the node routes: its own addresses are `local`, anything else `unicast` via a route.
  const type = walk.local(address) ? "local" : "unicast";
  const wanted = Array.isArray(right) ? right : [right];
  if (!wanted.every((w) => w === "local" || w === "unicast")) return "unknown";
  const hit = wanted.includes(type);
  return negate ? !hit : hit;
}

function ctMatch(
  ct: Record<string, unknown>,
  right: unknown,
  state: State,
  negate: boolean,
): boolean | "unknown" {
  const wanted = Array.isArray(right) ? right : [right];
  let hit: boolean;
  if (ct.key === "state") {
    // The first packet of a flow.
    hit = wanted.includes("new");
  } else if (ct.key === "status" && wanted.every((w) => w === "dnat" || w === "snat")) {
    hit = wanted.includes("dnat") && state.dnat !== undefined;
  } else {
    return "unknown";
  }
  return negate ? !hit : hit;
}

/** `meta mark set …` as the new mark; undefined for anything else. */
function markAfter(body: unknown, state: State): bigint | undefined {
  if (!isRecord(body) || !isRecord(body.key) || !isRecord(body.key.meta)) return undefined;
  if (body.key.meta.key !== "mark") return undefined;
  return markValue(body.value, state);
}

function markValue(value: unknown, state: State): bigint | undefined {
  if (typeof value === "number") return Number.isInteger(value) ? BigInt(value) : undefined;
  if (!isRecord(value)) return undefined;
  if (isRecord(value.meta) && value.meta.key === "mark") return state.mark;
  for (const op of ["|", "^", "&"] as const) {
    const args = value[op];
    if (!Array.isArray(args) || args.length !== 2) continue;
    const a = markValue(args[0], state);
    const b = markValue(args[1], state);
    if (a === undefined || b === undefined) return undefined;
    return op === "|" ? a | b : op === "^" ? a ^ b : a & b;
  }
  return undefined;
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

/** `{tag: body}`, the shape of every nft JSON object, expression and statement. */
function soleEntry(value: unknown): [string, unknown] | undefined {
  if (!isRecord(value)) return undefined;
  for (const tag in value) return [tag, value[tag]];
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
