/**
 * The node's conntrack table as the tests read it: `conntrack -L -p tcp -o id`, line by line,
 * with the project's tokenizer's reading alongside.
 *
 * @module
 */
import type { Candidate, Flow, Tuple } from "../../../lib/core/flow.ts";
import { tokenizeLine } from "../../../lib/table/text/tokenizer.ts";

/** One TCP entry of the node's conntrack table, as `conntrack -L -p tcp -o id` prints it. */
export interface ConntrackEntry {
  /** The kernel's entry id: unchanged as long as the entry is the same entry. */
  readonly id: number;
  /** TCP state, e.g. `SYN_SENT`, `ESTABLISHED`. */
  readonly state: string;
  /** Seconds left on the entry's timer. */
  readonly timeout: number;
  /** Whether the entry is flagged `[UNREPLIED]`. */
  readonly unreplied: boolean;
  /** Both tuples and the zone. */
  readonly flow: Flow;
  /** The project's tokenizer's reading of the line, when it is a candidate. */
  readonly candidate?: Candidate;
  /** The line as printed. */
  readonly line: string;
}

/**
 * Parses one line of `conntrack -L -p tcp -o id`; `undefined` for anything that is not a TCP
 * entry with both tuples and an id (the stderr summary, blank lines, other protocols).
 *
 * @example
 * ```ts
 * import { parseConntrackLine } from "./conntrack_entries.ts";
 * const e = parseConntrackLine(
 *   "tcp 6 431999 ESTABLISHED src=198.51.100.2 dst=192.0.2.10 sport=30443 dport=443 " +
 *     "src=203.0.113.2 dst=198.51.100.2 sport=8080 dport=30443 [ASSURED] mark=0 use=1 id=42",
 * );
 * e?.id; // 42
 * ```
 */
export function parseConntrackLine(line: string): ConntrackEntry | undefined {
  const words = line.trim().split(/\s+/);
  if (words[0] !== "tcp") return undefined;
  const timeout = Number(words[2]);
  const state = words[3] ?? "";
  const tuples: Record<string, string>[] = [];
  let id: number | undefined;
  let zone = 0;
  for (const word of words.slice(4)) {
    const eq = word.indexOf("=");
    if (eq < 0) continue;
    const key = word.slice(0, eq);
    const value = word.slice(eq + 1);
    if (key === "src") tuples.push({});
    if (["src", "dst", "sport", "dport"].includes(key)) {
      const current = tuples[tuples.length - 1];
      if (current) current[key] = value;
    } else if (key === "id") {
      id = Number(value);
    } else if (key === "zone") {
      zone = Number(value);
    }
  }
  const original = toTuple(tuples[0]);
  const reply = toTuple(tuples[1]);
  if (!original || !reply || id === undefined || !Number.isFinite(timeout)) return undefined;
  const flow: Flow = {
    family: original.src.includes(":") ? "ipv6" : "ipv4",
    original,
    reply,
    zone,
  };
  const parsed = tokenizeLine(line);
  return {
    id,
    state,
    timeout,
    unreplied: words.includes("[UNREPLIED]"),
    flow,
    ...(parsed.kind === "candidate" ? { candidate: parsed.candidate } : {}),
    line,
  };
}

function toTuple(raw: Record<string, string> | undefined): Tuple | undefined {
  if (!raw || !raw["src"] || !raw["dst"] || !raw["sport"] || !raw["dport"]) return undefined;
  return {
    src: raw["src"],
    dst: raw["dst"],
    sport: Number(raw["sport"]),
    dport: Number(raw["dport"]),
  };
}
