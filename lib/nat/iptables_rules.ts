/**
 * The `nat` table of `iptables-save` / `ip6tables-save` text, parsed into chains of rules with
 * typed matches and targets: the reading half of the iptables `NatRuleset`. What each match
 * and target means for a SYN, and how a path through the chains is judged, is in
 * `iptables_ruleset.ts`, which evaluates what is parsed here.
 *
 * Parsing never throws on content: an option it cannot read becomes an `unknown` match (or
 * target), so the paths through that rule are judged unknown instead of the rule being dropped.
 * Matches that can be decided without a packet (physdev for a routed SYN, statistic, recent) are
 * decided here, once.
 *
 * @module
 */
import { type Cidr, parseCidr } from "../core/cidr.ts";
import type { Family } from "../core/flow.ts";
import type { NatEndpoint } from "./nat_path.ts";

/** The chains of one `nat` table, as read from one dump. */
export interface IptablesNatTable {
  /** Chains by name, built-in ones included, in the order the dump first names them. */
  readonly chains: ReadonlyMap<string, ParsedChain>;
  /** Number of rules in the table. */
  readonly ruleCount: number;
}

/**
 * Reads the `*nat` table of `iptables-save` (or `ip6tables-save`) output. Other tables and lines
 * that are not chains or rules are skipped, and a rule it cannot read is kept with an `unknown`
 * match or target, so it never throws on content.
 *
 * @param text The dump, as one string or as lines (no newlines).
 * @param family `ipv4` for `iptables-save`, `ipv6` for `ip6tables-save`: addresses of the other
 *   family in a rule make that match unknown.
 * @returns The table's chains and rule count.
 *
 * @example
 * ```ts
 * import { parseIptablesNatTable } from "./iptables_rules.ts";
 * const table = parseIptablesNatTable(
 *   [
 *     "*nat",
 *     ":PREROUTING ACCEPT [0:0]",
 *     "-A PREROUTING -d 192.0.2.10/32 -p tcp --dport 80 -j DNAT --to-destination 198.51.100.7",
 *     "COMMIT",
 *   ],
 *   "ipv4",
 * );
 * table.ruleCount; // 1
 * table.chains.get("PREROUTING")?.rules[0]?.matches.length; // 3 (-d, -p, --dport)
 * table.chains.get("PREROUTING")?.rules[0]?.target.kind; // "dnat"
 * ```
 */
export function parseIptablesNatTable(
  text: string | Iterable<string>,
  family: Family,
): IptablesNatTable {
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
  return { chains, ruleCount };
}

/**
 * Outcome of one match for one packet: no, yes, both (each outcome happens for some packet of
 * this flow: statistic, recent) or unknown (cannot be decided from what the agent knows).
 */
export const Tri = { No: 0, Yes: 1, Both: 2, Unknown: 3 } as const;
/** One of the {@link Tri} outcomes. */
export type Tri = typeof Tri[keyof typeof Tri];

/**
 * One parsed match of a rule. `cidr`, `proto`, `ports`, `tcpFlags`, `addrtype`, `ctstate` and
 * `mark` are decided against the packet (`neg` for a `!` before the option); `const` is decided
 * when the rule is read (physdev, statistic, recent); `unknown` cannot be decided at all.
 */
export type Match =
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

/**
 * What a rule does when it matches: `jump` (or goto) to a user chain; `dnat` to an endpoint
 * (`undefined` when `--to-destination` is not one endpoint; port -1 keeps the packet's port);
 * `stop` (ACCEPT, DROP, REJECT) and `none` (KUBE-MARK-DROP) end the path untranslated; `return`;
 * `mark` changes the packet mark as `(mark & and) ^ xor`, `sets` being the bits it decides;
 * `continue` (LOG and the like) goes on to the next rule; `unknown` ends the path unknown.
 */
export type Target =
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

/** One `-A` line of the nat table, parsed. */
export interface Rule {
  /** The rule as saved, for the unknown verdict. */
  readonly text: string;
  /** The matches, in rule order; the rule fires when all of them match. */
  readonly matches: readonly Match[];
  /** What the rule does when it fires. */
  readonly target: Target;
  /** Set when a TCP packet can never match (e.g. `-p udp`): left out of the indexes. */
  readonly neverTcp: boolean;
  /** Exact destination address (integer as text) when the rule has a positive one. */
  readonly dstKey: string | undefined;
  /** Single destination port when the rule has a positive one. */
  readonly portKey: number | undefined;
}

/** One chain of the nat table, its rules in order. */
export interface ParsedChain {
  /** The chain's name, e.g. `PREROUTING` or `KUBE-SERVICES`. */
  readonly name: string;
  /** The policy of a built-in chain (`ACCEPT`, `DROP`); `undefined` for a user chain. */
  readonly policy: string | undefined;
  /** The chain's rules, in order. */
  readonly rules: readonly Rule[];
}

/** A chain while the dump is read: its `:` line sets the policy, its `-A` lines add rules. */
interface MutableChain extends ParsedChain {
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
/** The TCP flags of the packet judged, a SYN, as `--tcp-flags` masks them. */
export const SYN_FLAGS = TCP_FLAGS.SYN as number;

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
