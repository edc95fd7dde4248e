/**
 * What kube-proxy's nftables rules test about one packet, for the nftables evaluator
 * (`nftables_ruleset.ts`): the packet's fields as the rules select them, matches (`==`, `!=`,
 * sets, `fib … type`, `ct state|status`), map lookups (named, anonymous, `numgen`) and mark
 * arithmetic. Private to the nftables evaluator.
 *
 * @module
 */
import type { NatEndpoint } from "./nat_path.ts";
import {
  type FamilyView,
  isRecord,
  keySpans,
  keyText,
  type Kind,
  type SetView,
  type Span,
  unwrapElem,
} from "./_nft_view.ts";

/** The packet as the rules see it at one point of its path. */
export interface State {
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

/** Everything one evaluation needs, passed down instead of kept anywhere. */
export interface Walk {
  readonly view: FamilyView;
  readonly local: (address: bigint) => boolean;
}

/** The result of a lookup that found no element. */
export const MISS = Symbol("miss");

/**
 * What a map (named `@name` or anonymous `{set: […]}`) gives for a key: one entry, or, when the
 * key is random (`numgen`), every entry the draw can reach plus MISS for draws without one.
 * Undefined when the key or the map cannot be evaluated.
 */
export function lookup(
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

/** A map (named or anonymous) that gives data for a key, or MISS. */
export interface Table {
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
export function memoized<T>(walk: Walk, object: object, make: () => T): T {
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
export function keyValues(
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
export function evalMatch(walk: Walk, body: unknown, state: State): boolean | "both" | "unknown" {
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
export function markAfter(body: unknown, state: State): bigint | undefined {
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
