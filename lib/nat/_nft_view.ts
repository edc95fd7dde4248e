/**
 * The JSON of `nft -j list table ip|ip6 kube-proxy`, read once per read of the rules into what
 * the nftables evaluator walks (`nftables_ruleset.ts`): chains by name, base chains by hook in
 * priority order, and every named set and verdict map indexed by its key, with literals as
 * intervals of numbers. Private to the nftables evaluator.
 *
 * @module
 */
import { tryParseAddress } from "../core/address.ts";
import type { Family } from "../core/flow.ts";

/**
 * Reads `nft -j` documents into one view per family of their `kube-proxy` tables.
 * @throws {SyntaxError} When a document is not `nft -j` output.
 */
export function readFamilyViews(documents: readonly string[]): Map<Family, FamilyView> {
  const builders = new Map<Family, ViewBuilder>();
  for (const text of documents) {
    for (const object of nftObjects(text)) addObject(builders, object);
  }
  const views = new Map<Family, FamilyView>();
  for (const [family, builder] of builders) views.set(family, finishView(builder));
  return views;
}

/** The hooks whose base chains the view keeps (a packet from outside meets the first four). */
export const HOOKS: readonly string[] = ["prerouting", "input", "forward", "postrouting", "output"];

/** How a set's (or a match's) values are read. */
export type Kind = "addr" | "proto" | "int";

/** One rule: its chain, handle (for logs) and expressions, as nft printed them. */
export interface RuleView {
  readonly chain: string;
  readonly handle: number;
  readonly expr: readonly unknown[];
}

/** One chain; `hook`, `type` and `prio` only for base chains. */
export interface ChainView {
  readonly name: string;
  readonly hook: string | undefined;
  readonly type: string | undefined;
  readonly prio: number;
  readonly policy: "accept" | "drop";
  readonly handle: number;
  readonly rules: RuleView[];
}

/** An interval of one key component, both ends included. */
export interface Span {
  readonly lo: bigint;
  readonly hi: bigint;
}

/** One named set or map, indexed for lookups by key. */
export interface SetView {
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

/** One family's `kube-proxy` table, read once. */
export interface FamilyView {
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

/** A set element's value without its `{elem: {val, comment, …}}` wrapper. */
export function unwrapElem(value: unknown): unknown {
  return isRecord(value) && isRecord(value.elem) ? value.elem.val : value;
}

/** A set element's (or a match's right side's) key as spans, one per component. */
export function keySpans(value: unknown, kinds: readonly Kind[]): Span[] | undefined {
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
  if (kind === "addr") return tryParseAddress(value)?.value;
  if (kind === "proto") {
    const number = PROTOCOLS[value];
    return number === undefined ? undefined : BigInt(number);
  }
  return /^(0x[0-9a-f]+|[0-9]+)$/i.test(value) ? BigInt(value) : undefined;
}

/** A key's values as one string, for exact lookups (hex components joined by dots). */
export function keyText(values: readonly bigint[]): string {
  return values.map((v) => v.toString(16)).join(".");
}

/** `{tag: body}`, the shape of every nft JSON object, expression and statement. */
export function soleEntry(value: unknown): [string, unknown] | undefined {
  if (!isRecord(value)) return undefined;
  for (const tag in value) return [tag, value[tag]];
  return undefined;
}

/** Whether a JSON value is an object (not null, not an array). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
