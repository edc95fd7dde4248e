/**
 * The `-o save` form of `conntrack -L` (`-A -t 98 -u UNSET -w 7 -s ... --state SYN_SENT`), which
 * `conntrack -R` loads. The agent never lists in this form, so its grammar is not part of the
 * agent (see `lib/table/text/tokenizer.ts`); the tests read the save-form fixtures with it, to
 * hold them to the same flows as the list forms. There, "unreplied" is a status list without
 * `SEEN_REPLY`.
 *
 * @module
 */
import {
  addressFamily,
  bit,
  contentEnd,
  DASH,
  hasState,
  ICMP,
  ICMPV6,
  isHexKey,
  isStateWord,
  L4_GRE,
  L4_PORTS,
  l4Kind,
  makeCandidate,
  makeFlow,
  malformed,
  MAX_U16,
  MAX_U32,
  MAX_U8,
  parseDecimal,
  protocolByName,
  protocolName,
  quote,
  SCTP,
  skipBlanks,
  TCP,
  tokenEnd,
  unexpected,
} from "../../lib/table/text/_scan.ts";
import { OTHER_LINE, type ParsedLine, tokenizeLine } from "../../lib/table/text/tokenizer.ts";

/**
 * Reads one line of the save form (`-A ...`, `-U ...` or `-D ...`). Never throws.
 *
 * @example
 * ```ts ignore
 * tokenizeSaveLine("-A -t 116 -u UNSET -s 198.51.100.2 -d 192.0.2.10 -p tcp --sport 40000 ...");
 * ```
 */
export function tokenizeSaveLine(line: string): ParsedLine {
  const end = contentEnd(line);
  const start = skipBlanks(line, 0, end);
  if (start === end) return OTHER_LINE;
  return readSaveLine(line, start, end);
}

/**
 * Reads a line of any form conntrack prints: the save form here, every list form through the
 * agent's tokenizer.
 */
export function tokenizeAnyForm(line: string): ParsedLine {
  const end = contentEnd(line);
  const start = skipBlanks(line, 0, end);
  return start < end && line.charCodeAt(start) === DASH
    ? tokenizeSaveLine(line)
    : tokenizeLine(line);
}

// Options of the save form; each is also one bit of a `seen` mask.
const O_TIMEOUT = 1;
const O_STATUS = 2;
const O_SECMARK = 3;
const O_ZONE = 4;
const O_ORIG_ZONE = 5;
const O_REPLY_ZONE = 6;
const O_MARK = 7;
const O_SRC = 8;
const O_DST = 9;
const O_REPLY_SRC = 10; // -r, or -g when the reply source was DNATed
const O_REPLY_DST = 11; // -q, or -n when the reply destination was SNATed
const O_PROTO = 12;
const O_SPORT = 13;
const O_DPORT = 14;
const O_REPLY_SPORT = 15;
const O_REPLY_DPORT = 16;
const O_STATE = 17;
const O_ICMP_TYPE = 18;
const O_ICMP_CODE = 19;
const O_ICMP_ID = 20;
const O_ICMPV6_TYPE = 21;
const O_ICMPV6_CODE = 22;
const O_ICMPV6_ID = 23;
const O_SRCKEY = 24;
const O_DSTKEY = 25;
const O_REPLY_SRCKEY = 26;
const O_REPLY_DSTKEY = 27;
const O_ORIG_VTAG = 28;
const O_REPLY_VTAG = 29;

const PORT_OPTIONS = bit(O_SPORT) | bit(O_DPORT) | bit(O_REPLY_SPORT) | bit(O_REPLY_DPORT);
const ICMP_OPTIONS = bit(O_ICMP_TYPE) | bit(O_ICMP_CODE) | bit(O_ICMP_ID);
const ICMPV6_OPTIONS = bit(O_ICMPV6_TYPE) | bit(O_ICMPV6_CODE) | bit(O_ICMPV6_ID);
const KEY_OPTIONS = bit(O_SRCKEY) | bit(O_DSTKEY) | bit(O_REPLY_SRCKEY) | bit(O_REPLY_DSTKEY);
const VTAG_OPTIONS = bit(O_ORIG_VTAG) | bit(O_REPLY_VTAG);

/**
 * The `-o save` form, `-A -t 98 -u UNSET -w 7 -s ... -p tcp --sport ... --state SYN_SENT`, which
 * `conntrack -R` loads. There, "unreplied" is a status list without `SEEN_REPLY`.
 */
function readSaveLine(line: string, start: number, end: number): ParsedLine {
  let e = tokenEnd(line, start, end);
  const command = e - start === 2 ? line.charCodeAt(start + 1) : 0;
  // -A adds an entry (what a listing prints); -U and -D are events or deletion scripts.
  if (command !== 65 /* A */ && command !== 85 /* U */ && command !== 68 /* D */) {
    return unexpected(line, start, e);
  }
  let i = skipBlanks(line, e, end);
  let seen = 0;
  let timeout = -1, zone = 0, origZone = -1, replyZone = -1, protocol = -1;
  let synSent = false, seenReply = false;
  let family = 0;
  let srcStart = 0, srcEnd = 0, dstStart = 0, dstEnd = 0, sport = 0, dport = 0;
  let rSrcStart = 0, rSrcEnd = 0, rDstStart = 0, rDstEnd = 0, rSport = 0, rDport = 0;

  while (i < end) {
    e = tokenEnd(line, i, end);
    const option = optionByName(line, i, e);
    if (option === 0) {
      return line.charCodeAt(i) === DASH
        ? malformed(`unknown option ${quote(line, i, e)}`)
        : unexpected(line, i, e);
    }
    const name = line.slice(i, e);
    if ((seen & bit(option)) !== 0) return malformed(`duplicate ${name}`);
    seen |= bit(option);
    const vs = skipBlanks(line, e, end);
    const ve = tokenEnd(line, vs, end);
    if (vs === ve) return malformed(`truncated: no value after ${name}`);

    switch (option) {
      case O_SRC:
      case O_DST:
      case O_REPLY_SRC:
      case O_REPLY_DST: {
        const f = addressFamily(line, vs, ve);
        if (f === 0) return malformed(`bad address ${quote(line, vs, ve)} after ${name}`);
        if (family !== 0 && f !== family) return malformed("mixed address families in one entry");
        family = f;
        if (option === O_SRC) {
          srcStart = vs;
          srcEnd = ve;
        } else if (option === O_DST) {
          dstStart = vs;
          dstEnd = ve;
        } else if (option === O_REPLY_SRC) {
          rSrcStart = vs;
          rSrcEnd = ve;
        } else {
          rDstStart = vs;
          rDstEnd = ve;
        }
        break;
      }
      case O_SPORT:
      case O_DPORT:
      case O_REPLY_SPORT:
      case O_REPLY_DPORT: {
        const port = parseDecimal(line, vs, ve, MAX_U16);
        if (port < 0) return malformed(`bad port ${quote(line, vs, ve)} after ${name}`);
        if (option === O_SPORT) sport = port;
        else if (option === O_DPORT) dport = port;
        else if (option === O_REPLY_SPORT) rSport = port;
        else rDport = port;
        break;
      }
      case O_STATUS:
        if (!isStatusList(line, vs, ve)) {
          return malformed(`bad status list ${quote(line, vs, ve)} after -u`);
        }
        seenReply = containsWord(line, vs, ve, "SEEN_REPLY");
        break;
      case O_STATE:
        if (!isStateWord(line, vs, ve)) return malformed(`bad state ${quote(line, vs, ve)}`);
        synSent = ve - vs === 8 && line.startsWith("SYN_SENT", vs);
        break;
      case O_PROTO: {
        const named = protocolByName(line, vs, ve);
        protocol = named >= 0 ? named : parseDecimal(line, vs, ve, MAX_U8);
        if (protocol < 0) return malformed(`unknown protocol ${quote(line, vs, ve)} after -p`);
        break;
      }
      case O_SRCKEY:
      case O_DSTKEY:
      case O_REPLY_SRCKEY:
      case O_REPLY_DSTKEY:
        if (parseDecimal(line, vs, ve, MAX_U32) < 0 && !isHexKey(line, vs, ve)) {
          return malformed(`bad key ${quote(line, vs, ve)} after ${name}`);
        }
        break;
      default: {
        const max = option === O_ZONE || option === O_ORIG_ZONE || option === O_REPLY_ZONE ||
            option === O_ICMP_ID || option === O_ICMPV6_ID
          ? MAX_U16
          : option === O_ICMP_TYPE || option === O_ICMP_CODE || option === O_ICMPV6_TYPE ||
              option === O_ICMPV6_CODE
          ? MAX_U8
          : MAX_U32;
        const value = parseDecimal(line, vs, ve, max);
        if (value < 0) return malformed(`bad number ${quote(line, vs, ve)} after ${name}`);
        if (option === O_TIMEOUT) timeout = value;
        else if (option === O_ZONE) zone = value;
        else if (option === O_ORIG_ZONE) origZone = value;
        else if (option === O_REPLY_ZONE) replyZone = value;
      }
    }
    i = skipBlanks(line, ve, end);
  }

  const misplaced = misplacedSaveOptions(protocol, seen);
  if (misplaced !== undefined) return malformed(misplaced);
  // -U and -D lines are filters (an update event, a deletion script): partial by nature.
  if (command !== 65 /* A */) return OTHER_LINE;
  const missing = missingSaveOption(protocol, seen);
  if (missing !== undefined) return malformed(`truncated: no ${missing}`);

  if (protocol !== TCP || !synSent || seenReply) return OTHER_LINE;
  // Without -u the status is unknown, so the entry cannot be known to be unreplied.
  if ((seen & bit(O_STATUS)) === 0) return OTHER_LINE;
  if (timeout < 0) return malformed("missing -t in a SYN_SENT entry");
  const flow = makeFlow(
    family === 4 ? "ipv4" : "ipv6",
    { src: line.slice(srcStart, srcEnd), dst: line.slice(dstStart, dstEnd), sport, dport },
    {
      src: line.slice(rSrcStart, rSrcEnd),
      dst: line.slice(rDstStart, rDstEnd),
      sport: rSport,
      dport: rDport,
    },
    zone,
    origZone,
    replyZone,
  );
  return makeCandidate(flow, timeout, -1, -1);
}

/** The first option an `-A` line must have and lacks: tuples always, ports for TCP. */
function missingSaveOption(protocol: number, seen: number): string | undefined {
  const required: readonly (readonly [number, string])[] = protocol === TCP
    ? [...BASE_OPTIONS, ...TCP_PORT_OPTIONS]
    : BASE_OPTIONS;
  for (const [option, name] of required) {
    if ((seen & bit(option)) === 0) return name;
  }
  return undefined;
}

const BASE_OPTIONS: readonly (readonly [number, string])[] = [
  [O_PROTO, "-p"],
  [O_SRC, "-s"],
  [O_DST, "-d"],
  [O_REPLY_SRC, "-r"],
  [O_REPLY_DST, "-q"],
];
const TCP_PORT_OPTIONS: readonly (readonly [number, string])[] = [
  [O_SPORT, "--sport"],
  [O_DPORT, "--dport"],
  [O_REPLY_SPORT, "--reply-port-src"],
  [O_REPLY_DPORT, "--reply-port-dst"],
];

/** Names the first protocol-specific option that does not belong to `-p protocol`. */
function misplacedSaveOptions(protocol: number, seen: number): string | undefined {
  if (protocol < 0) return undefined;
  const l4 = l4Kind(protocol);
  const p = `-p ${protocolName(protocol)}`;
  if (l4 !== L4_PORTS && (seen & PORT_OPTIONS) !== 0) return `port options with ${p}`;
  if (protocol !== ICMP && (seen & ICMP_OPTIONS) !== 0) return `--icmp-* options with ${p}`;
  if (protocol !== ICMPV6 && (seen & ICMPV6_OPTIONS) !== 0) return `--icmpv6-* options with ${p}`;
  if (l4 !== L4_GRE && (seen & KEY_OPTIONS) !== 0) return `key options with ${p}`;
  if (protocol !== SCTP && (seen & VTAG_OPTIONS) !== 0) return `vtag options with ${p}`;
  if (!hasState(protocol) && (seen & bit(O_STATE)) !== 0) return `--state with ${p}`;
  return undefined;
}

/** The save form's option at `[start, end)`, or 0. */
function optionByName(line: string, start: number, end: number): number {
  const length = end - start;
  if (length === 2) {
    if (line.charCodeAt(start) !== DASH) return 0;
    switch (line.charCodeAt(start + 1)) {
      case 116: // t
        return O_TIMEOUT;
      case 117: // u
        return O_STATUS;
      case 99: // c
        return O_SECMARK;
      case 119: // w
        return O_ZONE;
      case 109: // m
        return O_MARK;
      case 115: // s
        return O_SRC;
      case 100: // d
        return O_DST;
      case 114: // r
      case 103: // g
        return O_REPLY_SRC;
      case 113: // q
      case 110: // n
        return O_REPLY_DST;
      case 112: // p
        return O_PROTO;
      default:
        return 0;
    }
  }
  if (length < 4 || !line.startsWith("--", start)) return 0;
  const name = line.slice(start + 2, end);
  switch (name) {
    case "orig-zone":
      return O_ORIG_ZONE;
    case "reply-zone":
      return O_REPLY_ZONE;
    case "sport":
    case "orig-port-src":
      return O_SPORT;
    case "dport":
    case "orig-port-dst":
      return O_DPORT;
    case "reply-port-src":
      return O_REPLY_SPORT;
    case "reply-port-dst":
      return O_REPLY_DPORT;
    case "state":
      return O_STATE;
    case "icmp-type":
      return O_ICMP_TYPE;
    case "icmp-code":
      return O_ICMP_CODE;
    case "icmp-id":
      return O_ICMP_ID;
    case "icmpv6-type":
      return O_ICMPV6_TYPE;
    case "icmpv6-code":
      return O_ICMPV6_CODE;
    case "icmpv6-id":
      return O_ICMPV6_ID;
    case "srckey":
      return O_SRCKEY;
    case "dstkey":
      return O_DSTKEY;
    case "reply-key-src":
      return O_REPLY_SRCKEY;
    case "reply-key-dst":
      return O_REPLY_DSTKEY;
    case "orig-vtag":
      return O_ORIG_VTAG;
    case "reply-vtag":
      return O_REPLY_VTAG;
    case "src":
    case "orig-src":
      return O_SRC;
    case "dst":
    case "orig-dst":
      return O_DST;
    case "reply-src":
    case "dst-nat":
      return O_REPLY_SRC;
    case "reply-dst":
    case "src-nat":
      return O_REPLY_DST;
    case "timeout":
      return O_TIMEOUT;
    case "status":
      return O_STATUS;
    case "zone":
      return O_ZONE;
    case "protonum":
      return O_PROTO;
    default:
      return 0;
  }
}

/** A comma-separated list of status names (`SEEN_REPLY,ASSURED`, `UNSET`). */
function isStatusList(line: string, start: number, end: number): boolean {
  let from = start;
  for (let i = start; i <= end; i++) {
    if (i === end || line.charCodeAt(i) === 44 /* , */) {
      if (!isStateWord(line, from, i)) return false;
      from = i + 1;
    }
  }
  return true;
}

/** Whether the comma-separated list at `[start, end)` contains `word`. */
function containsWord(line: string, start: number, end: number, word: string): boolean {
  let from = start;
  for (let i = start; i <= end; i++) {
    if (i === end || line.charCodeAt(i) === 44 /* , */) {
      if (i - from === word.length && line.startsWith(word, from)) return true;
      from = i + 1;
    }
  }
  return false;
}
