/**
 * Private helpers of the conntrack text grammars: character and number scanning over
 * `[start, end)` ranges of a line, the protocol table, and the builders of flows and candidates
 * that both readers share. Nothing here is API; the grammars are in `tokenizer.ts`,
 * `tcp_line_pattern.ts` and `list_line.ts`.
 *
 * @module
 */
import type { Candidate, Family, Flow, Tuple } from "../../core/flow.ts";
import { flowKey } from "../../core/flow.ts";
import { ownCopy } from "./_own_copy.ts";
import type { ParsedLine } from "./parsed_line.ts";

const SPACE = 32;
const TAB = 9;
const CR = 13;
const LF = 10;
export const OPEN = 91; // [
export const CLOSE = 93; // ]
export const DASH = 45;
export const DOT = 46;
const COLON = 58;
export const ZERO = 48;
const NINE = 57;

export const MAX_U8 = 0xff;
export const MAX_U16 = 0xffff;
export const MAX_U32 = 0xffffffff;
export const U64_DIGITS = 20;

// What a protocol carries in each tuple, after the addresses.
const L4_NONE = 0;
export const L4_PORTS = 1;
export const L4_ICMP = 2;
export const L4_GRE = 3;

export const TCP = 6;
export const ICMP = 1;
export const ICMPV6 = 58;
export const SCTP = 132;
const DCCP = 33;

export const PROTO_INVALID = -2;
const PROTO_UNKNOWN = -1;

/** The protocol number for a name conntrack prints, PROTO_UNKNOWN for `unknown`, or invalid. */
export function protocolByName(line: string, start: number, end: number): number {
  switch (end - start) {
    case 3:
      if (line.startsWith("tcp", start)) return TCP;
      if (line.startsWith("udp", start)) return 17;
      return line.startsWith("gre", start) ? 47 : PROTO_INVALID;
    case 4:
      if (line.startsWith("icmp", start)) return ICMP;
      if (line.startsWith("sctp", start)) return SCTP;
      return line.startsWith("dccp", start) ? DCCP : PROTO_INVALID;
    case 6:
      return line.startsWith("icmpv6", start) ? ICMPV6 : PROTO_INVALID;
    case 7:
      if (line.startsWith("udplite", start)) return 136;
      return line.startsWith("unknown", start) ? PROTO_UNKNOWN : PROTO_INVALID;
    default:
      return PROTO_INVALID;
  }
}

/** What {@link protocolByName} returns for the name conntrack prints for `protocol`. */
export function protocolNumberName(protocol: number): number {
  switch (protocol) {
    case TCP:
    case 17:
    case 47:
    case ICMP:
    case SCTP:
    case DCCP:
    case ICMPV6:
    case 136:
      return protocol;
    default:
      return PROTO_UNKNOWN;
  }
}

export function l4Kind(protocol: number): number {
  switch (protocol) {
    case TCP:
    case 17:
    case 136:
    case SCTP:
    case DCCP:
      return L4_PORTS;
    case ICMP:
    case ICMPV6:
      return L4_ICMP;
    case 47:
      return L4_GRE;
    default:
      return L4_NONE;
  }
}

/** Protocols whose entries carry a state word. */
export function hasState(protocol: number): boolean {
  return protocol === TCP || protocol === SCTP || protocol === DCCP;
}

/** `[A-Z][A-Z0-9_]*`: a state name such as `SYN_SENT` or `COOKIE_WAIT`. */
export function isStateWord(line: string, start: number, end: number): boolean {
  if (start >= end) return false;
  const first = line.charCodeAt(start);
  if (first < 65 || first > 90) return false;
  for (let i = start + 1; i < end; i++) {
    const ch = line.charCodeAt(i);
    if (!((ch >= 65 && ch <= 90) || (ch >= ZERO && ch <= NINE) || ch === 95)) return false;
  }
  return true;
}

/** 4 or 6 for a well-formed IPv4 or IPv6 address at `[start, end)`, 0 otherwise. */
export function addressFamily(line: string, start: number, end: number): number {
  // An IPv6 address fails the IPv4 check within its first five characters.
  if (isIPv4(line, start, end)) return 4;
  return isIPv6(line, start, end) ? 6 : 0;
}

/** A dotted quad as `inet_ntoa` prints it: four 0-255 parts, no leading zeros. */
function isIPv4(line: string, start: number, end: number): boolean {
  let parts = 0;
  let i = start;
  while (parts < 4) {
    const from = i;
    let value = 0;
    while (i < end && i - from < 3) {
      const ch = line.charCodeAt(i);
      if (!isDigit(ch)) break;
      value = value * 10 + ch - ZERO;
      i++;
    }
    const digits = i - from;
    if (digits === 0 || value > 255 || (digits > 1 && line.charCodeAt(from) === ZERO)) {
      return false;
    }
    parts++;
    if (parts === 4) break;
    if (i >= end || line.charCodeAt(i) !== DOT) return false;
    i++;
  }
  return i === end;
}

/**
 * An IPv6 address as `inet_ntop` prints it: up to eight groups of 1-4 hex digits, at most one
 * `::`, optionally ending in a dotted quad (`::ffff:192.0.2.10`).
 */
export function isIPv6(line: string, start: number, end: number): boolean {
  if (end - start < 2 || end - start > 45) return false;
  let groups = 0;
  let compressed = false;
  let i = start;
  if (line.charCodeAt(i) === COLON) {
    if (line.charCodeAt(i + 1) !== COLON) return false;
    compressed = true;
    i += 2;
  }
  while (i < end) {
    const from = i;
    while (i < end && i - from <= 4 && isHex(line.charCodeAt(i))) i++;
    if (i < end && line.charCodeAt(i) === DOT) {
      if (!isIPv4(line, from, end)) return false;
      groups += 2;
      i = end;
      break;
    }
    const digits = i - from;
    if (digits === 0 || digits > 4) return false;
    groups++;
    if (i === end) break;
    if (line.charCodeAt(i) !== COLON) return false;
    i++;
    if (i < end && line.charCodeAt(i) === COLON) {
      if (compressed) return false;
      compressed = true;
      i++;
    } else if (i === end) {
      return false; // a single trailing colon
    }
  }
  return compressed ? groups <= 7 : groups === 8;
}

/** `0x` followed by 1-8 hex digits, as GRE keys are printed. */
export function isHexKey(line: string, start: number, end: number): boolean {
  if (end - start < 3 || end - start > 10 || !line.startsWith("0x", start)) return false;
  for (let i = start + 2; i < end; i++) {
    if (!isHex(line.charCodeAt(i))) return false;
  }
  return true;
}

/** The decimal number at `[start, end)` if it is at most `max`, else -1. */
export function parseDecimal(line: string, start: number, end: number, max: number): number {
  if (start >= end || end - start > 16) return -1;
  let value = 0;
  for (let i = start; i < end; i++) {
    const ch = line.charCodeAt(i);
    if (ch < ZERO || ch > NINE) return -1;
    value = value * 10 + (ch - ZERO); // in this order: near 2^53, `+ ch` first would round
  }
  return value <= max ? value : -1;
}

/** Whether `[start, end)` is 1 to `maxDigits` decimal digits (64-bit counters). */
export function isDigits(line: string, start: number, end: number, maxDigits: number): boolean {
  if (start >= end || end - start > maxDigits) return false;
  for (let i = start; i < end; i++) {
    if (!isDigit(line.charCodeAt(i))) return false;
  }
  return true;
}

export function isDigit(ch: number): boolean {
  return ch >= ZERO && ch <= NINE;
}

function isHex(ch: number): boolean {
  return (ch >= ZERO && ch <= NINE) || (ch >= 97 && ch <= 102) || (ch >= 65 && ch <= 70);
}

export function bit(field: number): number {
  return 1 << field;
}

/** Index after the last character that is not a blank, CR or LF. */
export function contentEnd(line: string): number {
  let end = line.length;
  while (end > 0) {
    const ch = line.charCodeAt(end - 1);
    if (ch !== SPACE && ch !== TAB && ch !== CR && ch !== LF) break;
    end--;
  }
  return end;
}

export function skipBlanks(line: string, i: number, end: number): number {
  while (i < end) {
    const ch = line.charCodeAt(i);
    if (ch !== SPACE && ch !== TAB) break;
    i++;
  }
  return i;
}

/** End of the token at `start`: the next blank, or past the `]` of a `[...]` group. */
export function tokenEnd(line: string, start: number, end: number): number {
  if (start < end && line.charCodeAt(start) === OPEN) return bracketEnd(line, start, end);
  let i = start;
  while (i < end) {
    const ch = line.charCodeAt(i);
    if (ch === SPACE || ch === TAB) break;
    i++;
  }
  return i;
}

/** Past the `]` closing the group at `start` and any text glued to it; the line's end if none. */
export function bracketEnd(line: string, start: number, end: number): number {
  const close = line.indexOf("]", start);
  if (close < 0 || close >= end) return end;
  let i = close + 1;
  while (i < end) {
    const ch = line.charCodeAt(i);
    if (ch === SPACE || ch === TAB) break;
    i++;
  }
  return i;
}

export function fieldText(line: string, start: number, end: number, eq: number): string {
  return eq < 0 ? cut(line.slice(start, end), 40) : line.slice(start, eq + 1);
}

export function quote(line: string, start: number, end: number): string {
  return JSON.stringify(cut(line.slice(start, end), 40));
}

export function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

export function unexpected(line: string, start: number, end: number): ParsedLine {
  return malformed(`unexpected ${quote(line, start, end)}`);
}

export function malformed(reason: string): ParsedLine {
  return { kind: "malformed", reason };
}

/**
 * Builds a flow from tuples as the field-by-field reader read them, whose addresses may still be
 * slices of the line: they are copied (see {@link own}).
 */
export function makeFlow(
  family: Family,
  read: Tuple,
  readReply: Tuple,
  zone: number,
  origZone: number,
  replyZone: number,
): Flow {
  const src = ownCopy(read.src);
  const dst = ownCopy(read.dst);
  const original: Tuple = { src, dst, sport: read.sport, dport: read.dport };
  // An un-NATed reply repeats the original addresses: share the strings.
  const reply: Tuple = {
    src: readReply.src === read.dst ? dst : ownCopy(readReply.src),
    dst: readReply.dst === read.src ? src : ownCopy(readReply.dst),
    sport: readReply.sport,
    dport: readReply.dport,
  };
  return flowOf(family, original, reply, zone, origZone, replyZone);
}

/** Builds a flow, leaving out the directional zones conntrack did not print (-1). */
export function flowOf(
  family: Family,
  original: Tuple,
  reply: Tuple,
  zone: number,
  origZone: number,
  replyZone: number,
): Flow {
  if (origZone < 0 && replyZone < 0) return { family, original, reply, zone };
  if (replyZone < 0) return { family, original, reply, zone, origZone };
  if (origZone < 0) return { family, original, reply, zone, replyZone };
  return { family, original, reply, zone, origZone, replyZone };
}

/** Wraps a flow as a candidate with its {@link flowKey}. */
export function makeCandidate(
  flow: Flow,
  timeout: number,
  deltaTime: number,
  id: number,
): ParsedLine {
  return candidateOf(flow, flowKey(flow), timeout, deltaTime, id);
}

/** Wraps a flow as a candidate, leaving out what conntrack did not print (-1). */
export function candidateOf(
  flow: Flow,
  key: string,
  timeout: number,
  deltaTime: number,
  id: number,
): ParsedLine {
  const candidate: Candidate = deltaTime < 0 && id < 0
    ? { flow, key, timeout }
    : id < 0
    ? { flow, key, timeout, deltaTime }
    : deltaTime < 0
    ? { flow, key, timeout, id }
    : { flow, key, timeout, deltaTime, id };
  return { kind: "candidate", candidate };
}

/** The name conntrack uses for a protocol number, or the number. */
export function protocolName(protocol: number): string {
  switch (protocol) {
    case TCP:
      return "tcp";
    case 17:
      return "udp";
    case 136:
      return "udplite";
    case ICMP:
      return "icmp";
    case ICMPV6:
      return "icmpv6";
    case SCTP:
      return "sctp";
    case DCCP:
      return "dccp";
    case 47:
      return "gre";
    default:
      return String(protocol);
  }
}
