/**
 * Reads the exact DNAT destinations out of `iptables-save` / `ip6tables-save` output (either
 * backend, nf_tables or legacy: the text is the same).
 *
 * A rule counts when it is in the `nat` table and matches exactly one destination:
 * - `-p tcp` (not negated);
 * - `-d A` with no mask or a full one (`/32`, `/128`), not negated;
 * - one port: `--dport N` (not negated, not a range `N:M`), or `-m multiport --dports` where
 *   each single port in the list counts and ranges in it do not;
 * - and jumps (`-j`/`-g`) to `DNAT` or to a kube-proxy service chain (`KUBE-SVC-`, `KUBE-EXT-`,
 *   `KUBE-FW-`, `KUBE-SVL-`).
 *
 * Everything else is not an exact destination and never widened into one: a subnet, a rule
 * without a port or address (kube-proxy's NodePort rules), another protocol, a negated match, a
 * port range, another target, another table. Source-side matches (`-s`, `-i`, `--sport`, marks)
 * are not looked at: the view is about destinations.
 *
 * @module
 */
import type { Family } from "../core/flow.ts";
import type { NatDestination } from "./nat_reader.ts";

const KUBE_SERVICE_CHAINS = ["KUBE-SVC-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-"];

/**
 * Parses `iptables-save` output, line by line as it streams, into the destinations its `nat`
 * table translates. Lines it does not understand are skipped, so it never throws on content.
 *
 * @param lines The dump, one line per item (no newline), e.g. from `splitLines(stdout)`.
 * @param family `ipv4` for `iptables-save`, `ipv6` for `ip6tables-save`.
 *
 * @example
 * ```ts
 * import { parseIptablesSave } from "./iptables_save.ts";
 * const dump = [
 *   "*nat",
 *   "-A KUBE-SERVICES -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-ABCDEF",
 *   "COMMIT",
 * ];
 * await parseIptablesSave(dump, "ipv4"); // [{ family: "ipv4", address: "192.0.2.10", port: 80 }]
 * ```
 */
export async function parseIptablesSave(
  lines: AsyncIterable<string> | Iterable<string>,
  family: Family,
): Promise<NatDestination[]> {
  const found = new Map<string, NatDestination[]>();
  const jumps = new Map<string, Set<string>>();
  let table: string | undefined;
  for await (const raw of lines) {
    const line = raw.trim();
    if (line.startsWith("*")) table = line.slice(1);
    else if (line === "COMMIT") table = undefined;
    else if (table === "nat" && line.startsWith("-A ")) {
      const words = tokenizeRule(line);
      const chain = words[1] ?? "";
      const { target, destinations } = readRule(words, family);
      if (target !== undefined) {
        jumps.set(chain, (jumps.get(chain) ?? new Set()).add(target));
      }
      if (destinations.length > 0) found.set(chain, [...(found.get(chain) ?? []), ...destinations]);
    }
  }
  // Only rules that packets arriving at the node traverse count: a DNAT in OUTPUT, or in a chain
  // nothing jumps to, translates no client's SYN.
  return [...reachableChains("PREROUTING", jumps)].flatMap((chain) => found.get(chain) ?? []);
}

function reachableChains(start: string, jumps: ReadonlyMap<string, ReadonlySet<string>>) {
  const seen = new Set([start]);
  const queue = [start];
  for (let chain = queue.pop(); chain !== undefined; chain = queue.pop()) {
    for (const next of jumps.get(chain) ?? []) {
      if (!seen.has(next)) {
        seen.add(next);
        queue.push(next);
      }
    }
  }
  return seen;
}

/**
 * Splits one saved rule into its words, undoing iptables-save's quoting (`"a \"b\" c"`).
 *
 * @example
 * ```ts
 * import { tokenizeRule } from "./iptables_save.ts";
 * tokenizeRule('-A X -m comment --comment "a \\"b\\"" -j DNAT');
 * // ["-A", "X", "-m", "comment", "--comment", 'a "b"', "-j", "DNAT"]
 * ```
 */
export function tokenizeRule(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === "\\" && i + 1 < line.length) word += line[++i];
      else if (c === '"') quoted = false;
      else word += c;
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** The parts of a rule that decide whether it is an exact destination. */
interface RuleMatch {
  protocol: string | undefined;
  destination: string | undefined;
  dport: string | undefined;
  dports: string | undefined;
  target: string | undefined;
  /** A match that makes the rule inexact was negated or is unsupported. */
  inexact: boolean;
}

// Options whose value is free text that could look like an option we read (`--comment --dport`).
const SKIP_VALUE = new Set(["--comment", "--to-destination", "--to-source", "--to-ports"]);

function readRule(
  words: readonly string[],
  family: Family,
): { readonly target: string | undefined; readonly destinations: NatDestination[] } {
  const rule: RuleMatch = {
    protocol: undefined,
    destination: undefined,
    dport: undefined,
    dports: undefined,
    target: undefined,
    inexact: false,
  };
  let negated = false;
  for (let i = 2; i < words.length; i++) {
    const word = words[i] ?? "";
    if (word === "!") {
      negated = true;
      continue;
    }
    const value = words[i + 1];
    switch (word) {
      case "-p":
      case "--protocol":
        rule.protocol = value;
        break;
      case "-d":
      case "--destination":
      case "--dst":
        rule.destination = value;
        break;
      case "--dport":
      case "--destination-port":
        rule.dport = value;
        break;
      case "--dports":
      case "--destination-ports":
        rule.dports = value;
        break;
      case "--ports":
        // Source or destination port: not a statement about the destination alone.
        rule.inexact = true;
        break;
      case "-m":
      case "--match":
        // Modules that only name the protocol or add a comment; any other (mark, statistic,
        // addrtype, conntrack, ...) narrows which packets are translated.
        if (!EXACT_MODULES.has(value ?? "")) rule.inexact = true;
        break;
      case "-j":
      case "--jump":
      case "-g":
      case "--goto":
        rule.target = value;
        break;
      default:
        if (SKIP_VALUE.has(word)) i++;
        // Any other option (-s, -i, --mark, --probability, ...) narrows the rule to some packets.
        else if (word.startsWith("-") && !TARGET_FLAGS.has(word)) rule.inexact = true;
        negated = false;
        continue;
    }
    if (negated) rule.inexact = true;
    negated = false;
    i++;
  }
  return { target: rule.target, destinations: exactDestinations(rule, family) };
}

const EXACT_MODULES = new Set(["tcp", "multiport", "comment"]);
// DNAT's options that take no value.
const TARGET_FLAGS = new Set(["--random", "--persistent", "--random-fully"]);

function exactDestinations(rule: RuleMatch, family: Family): NatDestination[] {
  if (rule.inexact) return [];
  if (rule.protocol !== "tcp" && rule.protocol !== "6") return [];
  if (!isNatTarget(rule.target)) return [];
  const address = exactAddress(rule.destination, family);
  if (address === undefined) return [];
  const ports = exactPorts(rule);
  return ports.map((port) => ({ family, address, port }));
}

function isNatTarget(target: string | undefined): boolean {
  if (target === undefined) return false;
  return target === "DNAT" || KUBE_SERVICE_CHAINS.some((p) => target.startsWith(p));
}

function exactAddress(value: string | undefined, family: Family): string | undefined {
  if (value === undefined || value.includes(",")) return undefined;
  const [address = "", mask, ...more] = value.split("/");
  if (more.length > 0) return undefined;
  const full = family === "ipv4" ? "32" : "128";
  if (mask !== undefined && mask !== full) return undefined;
  const looksRight = family === "ipv4" ? /^[\d.]+$/.test(address) : address.includes(":");
  return looksRight ? address : undefined;
}

function exactPorts(rule: RuleMatch): number[] {
  const single = rule.dport === undefined ? undefined : singlePorts(rule.dport);
  const listed = rule.dports === undefined ? undefined : singlePorts(rule.dports);
  if (single && listed) return single.filter((p) => listed.includes(p));
  return single ?? listed ?? [];
}

/** The single ports of a port list (`80`, `80,443,8000:8080`); ranges are left out. */
function singlePorts(value: string): number[] {
  return value.split(",")
    .filter((p) => /^\d{1,5}$/.test(p))
    .map(Number)
    .filter((p) => p <= 65535);
}
