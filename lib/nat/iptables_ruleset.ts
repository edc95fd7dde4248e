/**
 * The `nat` table of `iptables-save` / `ip6tables-save` as a {@link NatRuleset}: what the node's
 * rules do with one TCP SYN, followed from `PREROUTING` through every jump, goto and `RETURN`.
 *
 * The text is parsed once per read into chains of rules with typed matches, and the big chains
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
import { type Address, addressInCidr, type Cidr, parseAddress, parseCidr } from "../core/cidr.ts";
import type { Family } from "../core/flow.ts";
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
  const lines = typeof text === "string" ? text.split("\n") : text;
  const chains = new Map<string, MutableChain>();
  // iptables-save writes a chain's rules together: remembering the last chain saves hashing
  // each rule's chain name.
  let last: MutableChain | undefined;
  const chainOf = (name: string): MutableChain => {
    if (last?.name === name) return last;
    let chain = chains.get(name);
    if (!chain) {
      chain = { name, policy: undefined, rules: [] };
      chains.set(name, chain);
    }
    last = chain;
    return chain;
  };
  let inNat = false;
  let ruleCount = 0;
  // The same matches and targets recur thousands of times (cluster CIDR, ports, KUBE-MARK-MASQ):
  // parse each once and share the object, which is never changed.
  const shared: Shared = new Map();
  for (const raw of lines) {
    let line = raw.trim();
    if (line.startsWith("*")) {
      inNat = line === "*nat";
      continue;
    }
    if (!inNat) continue;
    if (line === "COMMIT") {
      inNat = false;
      continue;
    }
    // `iptables-save -c` puts the counters first: `[12:720] -A ...`.
    if (line.startsWith("[")) line = line.slice(line.indexOf("]") + 1).trim();
    if (line.startsWith(":")) {
      const [name = "", policy = "-"] = line.slice(1).split(/\s+/);
      chainOf(name).policy = policy === "-" ? undefined : policy;
    } else if (line.startsWith("-A ")) {
      const words = splitWords(line);
      const chain = chainOf(words[1] ?? "");
      chain.rules.push(parseRule(words, line, family, shared));
      ruleCount++;
    }
  }
  return new Ruleset(family, chains, ruleCount);
}

// ---------------------------------------------------------------------------------------------
// Rules

/**
 * Outcome of one match for one packet: no, yes, both (each outcome happens for some packet of
 * this flow: statistic, recent) or unknown (cannot be decided from what the agent knows).
 */
const Tri = { No: 0, Yes: 1, Both: 2, Unknown: 3 } as const;
type Tri = typeof Tri[keyof typeof Tri];

type Match =
  | {
    readonly kind: "cidr";
    readonly side: "src" | "dst";
    readonly cidr: Cidr;
    readonly neg: boolean;
  }
  | { readonly kind: "proto"; readonly tcp: boolean; readonly neg: boolean }
  | {
    readonly kind: "ports";
    readonly side: "src" | "dst" | "either";
    readonly ranges: readonly (readonly [number, number])[];
    readonly neg: boolean;
  }
  | {
    readonly kind: "tcpFlags";
    readonly mask: number;
    readonly comp: number;
    readonly neg: boolean;
  }
  | {
    readonly kind: "addrtype";
    readonly side: "src" | "dst";
    readonly types: readonly string[];
    readonly neg: boolean;
  }
  | { readonly kind: "const"; readonly value: Tri }
  | { readonly kind: "ctstate"; readonly states: readonly string[]; readonly neg: boolean }
  | { readonly kind: "mark"; readonly value: number; readonly mask: number; readonly neg: boolean }
  | { readonly kind: "unknown" };

type Target =
  | { readonly kind: "jump"; readonly chain: string; readonly goto: boolean }
  | { readonly kind: "dnat"; readonly endpoint: NatEndpoint | undefined }
  | { readonly kind: "stop" }
  | { readonly kind: "return" }
  | { readonly kind: "mark"; readonly and: number; readonly xor: number; readonly sets: number }
  | { readonly kind: "continue" }
  | { readonly kind: "none" }
  | { readonly kind: "unknown" };

// Shared match objects: a big table has tens of thousands of rules with the same few matches.
const UNKNOWN_MATCH: Match = { kind: "unknown" };
const ALWAYS: Match = { kind: "const", value: Tri.Yes };
const NEVER: Match = { kind: "const", value: Tri.No };
const EITHER: Match = { kind: "const", value: Tri.Both };
const TCP: Match = { kind: "proto", tcp: true, neg: false };
const NOT_TCP: Match = { kind: "proto", tcp: true, neg: true };
const OTHER: Match = { kind: "proto", tcp: false, neg: false };
const NOT_OTHER: Match = { kind: "proto", tcp: false, neg: true };

interface Rule {
  /** The rule as saved, for the unknown verdict. */
  readonly text: string;
  readonly matches: readonly Match[];
  readonly target: Target;
  /** Set when a TCP packet can never match (e.g. `-p udp`): left out of the indexes. */
  readonly neverTcp: boolean;
  /** Exact destination address (integer as text) when the rule has a positive one. */
  readonly dstKey: string | undefined;
  /** Single destination port when the rule has a positive one. */
  readonly portKey: number | undefined;
}

interface MutableChain {
  readonly name: string;
  policy: string | undefined;
  readonly rules: Rule[];
}

const TCP_FLAGS: Readonly<Record<string, number>> = {
  FIN: 1,
  SYN: 2,
  RST: 4,
  PSH: 8,
  ACK: 16,
  URG: 32,
  ECE: 64,
  CWR: 128,
  ALL: 255,
  NONE: 0,
};
/** The flags of the packet judged: a SYN. */
const SYN_FLAGS = TCP_FLAGS.SYN as number;

// Matches that say nothing about a packet and options of the matches handled here that take no
// part in the decision (recent's bookkeeping).
const IGNORED_WITH_VALUE = new Set([
  "--comment",
  "--nfacct-name",
  "--name",
  "--mask",
  "--seconds",
  "--hitcount",
]);
const IGNORED_FLAGS = new Set(["--rsource", "--rdest", "--reap", "--rttl"]);
const PORT_SIDES: Readonly<Record<string, "src" | "dst">> = {
  "--dport": "dst",
  "--destination-port": "dst",
  "--dports": "dst",
  "--destination-ports": "dst",
  "--sport": "src",
  "--source-port": "src",
  "--sports": "src",
  "--source-ports": "src",
};
const KNOWN_MODULES = new Set([
  "tcp",
  "udp",
  "sctp",
  "multiport",
  "comment",
  "addrtype",
  "physdev",
  "statistic",
  "recent",
  "conntrack",
  "state",
  "mark",
  "nfacct",
]);

/**
 * Splits a saved rule into words, undoing iptables-save's quoting (`"a \\"b\\" c"`). Slices
 * instead of building words a character at a time: a big node's dump has 100,000 rules.
 */
function splitWords(line: string): string[] {
  const words: string[] = [];
  const n = line.length;
  let i = 0;
  while (i < n) {
    let c = line.charCodeAt(i);
    if (c === SPACE || c === TAB) {
      i++;
      continue;
    }
    let word = "";
    while (i < n && c !== SPACE && c !== TAB) {
      if (c === QUOTE) {
        let start = ++i;
        while (i < n && (c = line.charCodeAt(i)) !== QUOTE) {
          if (c === BACKSLASH && i + 1 < n) {
            word += line.slice(start, i) + line[i + 1];
            i += 2;
            start = i;
          } else i++;
        }
        word += line.slice(start, i);
        i++;
      } else {
        const start = i;
        while (i < n && (c = line.charCodeAt(i)) !== SPACE && c !== TAB && c !== QUOTE) i++;
        word += line.slice(start, i);
      }
      c = i < n ? line.charCodeAt(i) : SPACE;
    }
    words.push(word);
  }
  return words;
}

const SPACE = 0x20;
const TAB = 0x09;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function parseRule(
  words: readonly string[],
  text: string,
  family: Family,
  shared: Shared,
): Rule {
  const matches: Match[] = [];
  let target: Target = { kind: "continue" };
  let neverTcp = false;
  let dstKey: string | undefined;
  let portKey: number | undefined;
  let neg = false;
  let inTarget = false;
  let targetName = "";
  const unknown = () => matches.push(UNKNOWN_MATCH);
  // Target options gathered after -j, turned into a target at the end.
  let targetOptions: Map<string, string> | undefined;
  for (let i = 2; i < words.length; i++) {
    const word = words[i] ?? "";
    const value = words[i + 1] ?? "";
    if (word === "!") {
      neg = true;
      continue;
    }
    if (inTarget) {
      targetOptions ??= new Map();
      if (word.startsWith("--") && value !== "" && !value.startsWith("-")) {
        targetOptions.set(word, value);
        i++;
      } else targetOptions.set(word, "");
      continue;
    }
    let consumed = 1;
    switch (word) {
      case "-s":
      case "--source":
      case "--src":
      case "-d":
      case "--destination":
      case "--dst": {
        const side = word.startsWith("-s") || word.startsWith("--s") ? "src" : "dst";
        const match = intern(shared, `${side}${neg ? "!" : ""} ${value}`, () => {
          const cidr = parseCidrOrUndefined(value, family);
          return cidr === undefined ? UNKNOWN_MATCH : { kind: "cidr", side, cidr, neg };
        }) as Match;
        matches.push(match);
        if (
          match.kind === "cidr" && side === "dst" && !neg &&
          match.cidr.prefix === (family === "ipv4" ? 32 : 128)
        ) {
          dstKey = String(match.cidr.network);
        }
        break;
      }
      case "-p":
      case "--protocol": {
        const tcp = value === "tcp" || value === "6";
        const all = value === "all" || value === "0";
        if (!all) {
          matches.push(tcp ? (neg ? NOT_TCP : TCP) : neg ? NOT_OTHER : OTHER);
          if (tcp === neg) neverTcp = true;
        }
        break;
      }
      case "-m":
      case "--match":
        if (!KNOWN_MODULES.has(value)) unknown();
        break;
      case "--dport":
      case "--destination-port":
      case "--sport":
      case "--source-port":
      case "--dports":
      case "--destination-ports":
      case "--sports":
      case "--source-ports":
      case "--ports": {
        const side = PORT_SIDES[word] ?? "either";
        const match = intern(shared, `${side}${neg ? "!" : ""}:${value}`, () => {
          const ranges = parsePorts(value);
          return ranges === undefined ? UNKNOWN_MATCH : { kind: "ports", side, ranges, neg };
        }) as Match;
        matches.push(match);
        if (match.kind === "ports" && side === "dst" && !neg && match.ranges.length === 1) {
          const [only] = match.ranges;
          if (only && only[0] === only[1]) portKey = only[0];
        }
        break;
      }
      case "--syn":
        matches.push({ kind: "tcpFlags", mask: 0x17, comp: SYN_FLAGS, neg });
        consumed = 0;
        break;
      case "--tcp-flags": {
        const mask = parseFlags(value);
        const comp = parseFlags(words[i + 2] ?? "");
        if (mask === undefined || comp === undefined) unknown();
        else matches.push({ kind: "tcpFlags", mask, comp, neg });
        consumed = 2;
        break;
      }
      case "--src-type":
      case "--dst-type":
        matches.push({
          kind: "addrtype",
          side: word === "--src-type" ? "src" : "dst",
          types: value.split(","),
          neg,
        });
        break;
      case "--physdev-is-in":
      case "--physdev-is-out":
      case "--physdev-is-bridged":
        // A routed SYN crossed no bridge port: each of these is false, so true when negated.
        matches.push(neg ? ALWAYS : NEVER);
        consumed = 0;
        break;
      case "--physdev-in":
      case "--physdev-out":
        matches.push(neg ? ALWAYS : NEVER);
        break;
      case "--mode":
      case "--probability":
      case "--every":
      case "--packet":
        // statistic: one `Both` for the whole match is enough; its parameters do not matter.
        if (word === "--mode") matches.push(EITHER);
        break;
      case "--set":
        consumed = 0;
        break;
      case "--rcheck":
      case "--update":
      case "--remove":
        matches.push(EITHER);
        consumed = 0;
        break;
      case "--ctstate":
      case "--state":
        matches.push({ kind: "ctstate", states: value.split(","), neg });
        break;
      case "--mark": {
        const mark = parseMark(value);
        if (mark === undefined) unknown();
        else matches.push({ kind: "mark", value: mark[0], mask: mark[1], neg });
        break;
      }
      case "-j":
      case "--jump":
      case "-g":
      case "--goto":
        inTarget = true;
        targetName = value;
        if (word === "-g" || word === "--goto") (targetOptions ??= new Map()).set("goto", "");
        break;
      case "-c":
      case "--set-counters":
        consumed = 2;
        break;
      default:
        if (IGNORED_WITH_VALUE.has(word)) break;
        if (IGNORED_FLAGS.has(word)) {
          consumed = 0;
          break;
        }
        // -i, -o, -f and every option not known above.
        unknown();
        if (!word.startsWith("-") || value.startsWith("-") || value === "") consumed = 0;
    }
    neg = false;
    i += consumed;
  }
  if (inTarget) {
    const options = targetOptions ?? new Map<string, string>();
    // Jumps to the same chain (KUBE-MARK-MASQ, a service chain) share one object; other targets
    // carry options that differ per rule (DNAT's endpoint).
    target = options.size === 0 || (options.size === 1 && options.has("goto"))
      ? intern(
        shared,
        `${options.size === 0 ? "-j" : "-g"} ${targetName}`,
        () => parseTarget(targetName, options, family),
      ) as Target
      : parseTarget(targetName, options, family);
  }

  return { text, matches, target, neverTcp, dstKey, portKey };
}

/** Parsed matches and targets by their text, for one read. */
type Shared = Map<string, Match | Target>;

function intern(shared: Shared, key: string, make: () => Match | Target): Match | Target {
  let value = shared.get(key);
  if (value === undefined) {
    value = make();
    shared.set(key, value);
  }
  return value;
}

function parseTarget(name: string, options: ReadonlyMap<string, string>, family: Family): Target {
  switch (name) {
    case "DNAT": {
      const to = options.get("--to-destination");
      return { kind: "dnat", endpoint: to === undefined ? undefined : parseEndpoint(to, family) };
    }
    case "ACCEPT":
      // Ends the nat hook for this packet: no translation.
      return { kind: "stop" };
    case "DROP":
    case "REJECT":
      return { kind: "stop" };
    case "RETURN":
      return { kind: "return" };
    case "MARK":
      return parseMarkTarget(options);
    case "LOG":
    case "NFLOG":
    case "CONNMARK":
      return { kind: "continue" };
    case "KUBE-MARK-DROP":
      // Older kube-proxy (before 1.23 or so) sent traffic it refused, e.g. to a Local-policy
      // Service without a local endpoint, to KUBE-MARK-DROP: the chain only sets 0x8000 and
      // returns, and the filter table's KUBE-FIREWALL drops marked packets. Such a SYN is never
      // translated into a working flow, so the path ends here, untranslated.
      return { kind: "none" };
    case "":
      return { kind: "unknown" };
    default:
      // A user chain; a target module this reader does not follow (REDIRECT, SNAT, CT, ...) is
      // no chain of the table, and a jump to a missing chain is judged unknown.
      return { kind: "jump", chain: name, goto: options.has("goto") };
  }
}

function parseMarkTarget(options: ReadonlyMap<string, string>): Target {
  const [key, value] = [...options].find(([k]) => k.endsWith("mark")) ?? ["", ""];
  const mark = parseMark(value);
  if (mark === undefined) return { kind: "unknown" };
  const [v, m] = mark;
  switch (key) {
    case "--set-xmark":
      return { kind: "mark", and: ~m >>> 0, xor: v, sets: m };
    case "--set-mark":
      return { kind: "mark", and: ~m >>> 0, xor: v, sets: m | v };
    case "--or-mark":
      return { kind: "mark", and: ~v >>> 0, xor: v, sets: v };
    case "--and-mark":
      return { kind: "mark", and: v, xor: 0, sets: ~v >>> 0 };
    case "--xor-mark":
      return { kind: "mark", and: 0xffff_ffff, xor: v, sets: 0 };
    default:
      return { kind: "unknown" };
  }
}

function parseCidrOrUndefined(value: string, family: Family): Cidr | undefined {
  try {
    const cidr = parseCidr(value);
    return cidr.family === family ? cidr : undefined;
  } catch {
    return undefined;
  }
}

function parsePorts(value: string): [number, number][] | undefined {
  const out: [number, number][] = [];
  for (const part of value.split(",")) {
    const m = /^(\d{1,5})?(?::(\d{1,5})?)?$/.exec(part);
    if (!m || part === "") return undefined;
    const low = m[1] === undefined ? 0 : Number(m[1]);
    const high = part.includes(":") ? (m[2] === undefined ? 65535 : Number(m[2])) : low;
    out.push([low, high]);
  }
  return out;
}

function parseFlags(value: string): number | undefined {
  let flags = 0;
  for (const name of value.split(",")) {
    const bit = TCP_FLAGS[name];
    if (bit === undefined) return undefined;
    flags |= bit;
  }
  return flags;
}

function parseMark(value: string): [number, number] | undefined {
  const [v = "", m] = value.split("/");
  const num = (text: string) => (/^(0x[0-9a-f]+|\d+)$/i.test(text) ? Number(text) >>> 0 : NaN);
  const mark = num(v);
  const mask = m === undefined ? 0xffff_ffff : num(m);
  return Number.isNaN(mark) || Number.isNaN(mask) ? undefined : [mark, mask];
}

function parseEndpoint(to: string, family: Family): NatEndpoint | undefined {
  // `A`, `A:P`, `[A6]`, `[A6]:P`; ranges (`A-B`, `P1-P2`) are not one endpoint.
  const m = family === "ipv4"
    ? /^([\d.]+)(?::(\d+))?$/.exec(to)
    : /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(to) ?? /^([0-9a-fA-F:.]+)$/.exec(to);
  if (!m || m[1] === undefined) return undefined;
  return { address: m[1], port: m[2] === undefined ? -1 : Number(m[2]) };
}

// ---------------------------------------------------------------------------------------------
// Evaluation

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

  constructor(family: Family, chains: ReadonlyMap<string, MutableChain>, ruleCount: number) {
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
    let src: Address;
    let dst: Address;
    try {
      src = parseAddress(packet.src);
      dst = parseAddress(packet.dst);
    } catch {
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
          try {
            // Keys are integers: only this family's addresses may be compared with them.
            const address = parseAddress(text);
            return address.family === this.family ? [String(address.value)] : [];
          } catch {
            return [];
          }
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
