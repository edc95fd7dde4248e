/**
 * The fast path of the tokenizer: TCP lines in the order conntrack's printer writes them, read by
 * one native pattern each. A candidate's pattern captures what the candidate keeps, so reading it
 * takes no search of the line; any other TCP line is checked by a pattern that builds nothing.
 * Whatever these patterns do not take goes to the field-by-field reader (`list_line.ts`), which
 * gives the same results (tests/tokenizer_test.ts holds the two to that).
 *
 * @module
 */
import { type Tuple } from "../../core/flow.ts";
import { digitsValue } from "./_digits.ts";
import { ownCopy, VIEW_MIN_LENGTH } from "./_own_copy.ts";
import { candidateOf, flowOf, isIPv6, MAX_U16, MAX_U32, ZERO } from "./_scan.ts";
import { OTHER_LINE, type ParsedLine } from "./parsed_line.ts";

// The fast path. One native pattern match per line reads the common TCP lines several times
// faster than any character loop can; the field-by-field reader below takes whatever the
// patterns do not (other protocols, other orders, malformed lines) and gives the same results.
// Both patterns are sticky: a line that fails then fails at its start, where an unanchored search
// would try again at every position first. Their only state, `lastIndex`, is reset before each
// use.
//
// Number patterns order their alternatives so that common values match with little
// backtracking (measured: longest forms first, or a length lookahead, cost 5% more per line);
// each number is followed by a space or the end of the line in every pattern, so the order
// never changes what matches.
const U8 = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]\\d|\\d)";
const U16 = "(?:[1-9]\\d{0,3}|0|[1-5]\\d{4}|6[0-4]\\d{3}|65[0-4]\\d\\d|655[0-2]\\d|6553[0-5])";
const U32 =
  "(?:[1-9]\\d{0,8}|0|[1-3]\\d{9}|4[01]\\d{8}|42[0-8]\\d{7}|429[0-3]\\d{6}|4294[0-8]\\d{5}|" +
  "42949[0-5]\\d{4}|429496[0-6]\\d{3}|4294967[01]\\d\\d|42949672[0-8]\\d|429496729[0-5])";
const U64 = "(?:[1-9]\\d{0,19}|0)";
const V4 = `(?:${U8}\\.){3}${U8}`;
/**
 * IPv6 as `inet_ntop` prints it: eight groups; or `::` for two or more zero groups with at most
 * seven colons in all (so at most seven groups are written); or `::a.b.c.d` / `::ffff:a.b.c.d`.
 * Rarer valid texts do not match and are left to the field-by-field reader, which takes them.
 */
const V6 = "(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}" +
  "|(?=(?:[0-9a-fA-F]*:){2,7}[0-9a-fA-F]* )" +
  "(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5})?::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5})?" +
  `|::(?:ffff:)?${V4})`;
/** Free text (`secctx=`, `helper=`, `labels=`). */
const TEXT = "\\S+";
/** A state word, as in `SYN_SENT`. */
const STATE = "[A-Z][A-Z0-9_]*";
/** The flag that may follow the original tuple. */
const UNREPLIED_MAYBE = "(?: \\[UNREPLIED\\])?";

/** `delta-time=`, which becomes a JS number and so stays below 2^53. */
const DELTA = "(?:[1-9]\\d{0,14}|0)";
/** Accounting counters, printed after each tuple when accounting is on. */
const COUNTERS = `(?: packets=${U64} bytes=${U64})?`;

/** `src=A dst=B sport=P dport=Q`, with `address` as the pattern of an address. */
function tuplePattern(address: string): string {
  return `src=${address} dst=${address} sport=${U16} dport=${U16}`;
}

/**
 * What follows the reply tuple, to the end of the line, in the printer's order. With `capture`,
 * the four fields a candidate keeps are groups: `zone-reply=`, `zone=`, `delta-time=` and `id=`.
 */
function trailerPattern(capture: boolean): string {
  // Captured numbers are only shaped here and range-checked as they are read: trying a range
  // pattern's alternatives costs more than the check.
  const zone = capture ? "(\\d{1,5})" : U16;
  const delta = capture ? "(\\d{1,16})" : DELTA;
  const id = capture ? "(\\d{1,10})" : U32;
  return `(?: zone-reply=${zone})?${COUNTERS}` +
    `(?: \\[(?:ASSURED|OFFLOAD|HW_OFFLOAD)\\])?(?: mark=${U32})?(?: secmark=${U32})?` +
    `(?: secctx=${TEXT})?(?: zone=${zone})?(?: delta-time=${delta})?` +
    `(?: \\[start=[^\\]]+\\])?(?: \\[stop=[^\\]]+\\])?(?: helper=${TEXT})?(?: use=${U32})?` +
    `(?: id=${id})?(?: labels=${TEXT})?$`;
}

/**
 * The part of any TCP line after the state word, for addresses matching `address`. The original
 * tuple's four values are groups from `first` on, so that a reply tuple that mirrors them (no NAT,
 * most entries) is matched by back-reference, several times faster than by the patterns again.
 */
function entryBody(address: string, first: number): string {
  const g = (n: number) => `\\${first + n}`;
  return `src=(${address}) dst=(${address}) sport=(${U16}) dport=(${U16})` +
    `(?: zone-orig=${U16})?${COUNTERS}${UNREPLIED_MAYBE} ` +
    `(?:src=${g(1)} dst=${g(0)} sport=${g(3)} dport=${g(2)}|${tuplePattern(address)})` +
    trailerPattern(false);
}

/**
 * Any well-formed TCP line, fully checked by the pattern: an IPv4 and an IPv6 alternative, so
 * that families cannot mix. test() only: its groups serve the back-references.
 */
const TCP_ENTRY = new RegExp(
  `^(?:(?:ipv4 +2 +)?tcp +6 +${U32} +${STATE} +${entryBody(V4, 1)}` +
    `|(?:ipv6 +10 +)?tcp +6 +${U32} +${STATE} +${entryBody(V6, 5)})`,
  "y",
);

// Groups of TCP_CANDIDATE. Each family's alternative has ten, in this order from its first.
const G_TIMEOUT = 1;
const G_IPV4 = 2;
const G_IPV6 = 12;
const G_TUPLE = 0; // the original tuple's text, from `src=` to the `dport=` value
const G_SRC = 1;
const G_DST = 2;
const G_SPORT = 3;
const G_DPORT = 4;
const G_ORIG_ZONE = 5;
const G_REPLY_SRC = 6; // the reply tuple's groups take part only when it is not the mirror
const G_REPLY_DST = 7;
const G_REPLY_SPORT = 8;
const G_REPLY_DPORT = 9;
const G_REPLY_ZONE = 22;
const G_ZONE = 23;
const G_DELTA = 24;
const G_ID = 25;

/**
 * A TCP `SYN_SENT [UNREPLIED]` line in the printer's field order, with an alternative per family
 * so that families cannot mix (an IPv4 address has no colon, an IPv6 one has one). IPv4 addresses
 * are checked in full; numbers are only shaped, and their ranges and IPv6 addresses are checked as
 * they are read, which costs less than a pattern that tries every form.
 *
 * The groups hold what a candidate keeps, so that reading it takes no search of the line: exec()
 * builds their substrings natively for less than a JavaScript walk of the line cost. A reply tuple
 * that mirrors the original crosswise (no NAT, nearly every candidate) is matched by
 * back-references and builds nothing; the groups of a NATed one take part instead.
 */
const TCP_CANDIDATE = candidatePattern();

function candidatePattern(): RegExp {
  const family = (address: string, first: number) => {
    const g = (n: number) => `\\${first + n}`;
    return `(src=(${address}) dst=(${address}) sport=(\\d{1,5}) dport=(\\d{1,5}))` +
      `(?: zone-orig=(\\d{1,5}))?${COUNTERS} \\[UNREPLIED\\] ` +
      `(?:src=${g(G_DST)} dst=${g(G_SRC)} sport=${g(G_DPORT)} dport=${g(G_SPORT)}` +
      `|src=(${address}) dst=(${address}) sport=(\\d{1,5}) dport=(\\d{1,5}))`;
  };
  // Any text with a colon may be IPv6, for isIPv6() to decide: matching a bounded class such as
  // `[0-9a-fA-F:.]{2,45}` costs more than that check.
  const v6 = "[^ ]*:[^ ]*";
  return new RegExp(
    `^(?:ipv4 +2 +|ipv6 +10 +)?tcp +6 +(\\d{1,10}) +SYN_SENT +` +
      `(?:${family(V4, G_IPV4)}|${family(v6, G_IPV6)})${trailerPattern(true)}`,
    "y",
  );
}

/** The fast path: a result for a TCP line in the printer's order, undefined for anything else. */
export function tokenizeTcpLine(line: string): ParsedLine | undefined {
  TCP_CANDIDATE.lastIndex = 0;
  const match = TCP_CANDIDATE.exec(line);
  if (match !== null) return candidateFromMatch(line, match);
  TCP_ENTRY.lastIndex = 0;
  return TCP_ENTRY.test(line) ? OTHER_LINE : undefined;
}

/**
 * Builds the candidate from a line {@link TCP_CANDIDATE} matched. Undefined when a number is out
 * of range or not written as conntrack writes it, an `ipv4 2` or `ipv6 10` head names the other
 * family, or an IPv6 address is impossible, for the field-by-field reader to explain.
 *
 * The hot path is kept small on purpose: V8 then inlines the digit loops, which as calls cost a
 * tenth of the whole line (digits.ts says how they are read). Zones and `delta-time=`, rare, are
 * read by {@link rareFields}; a NATed reply by {@link natReply}.
 */
function candidateFromMatch(line: string, m: RegExpExecArray): ParsedLine | undefined {
  const v6 = m[G_IPV6] !== undefined;
  if (line.charCodeAt(0) === 105 /* i */ && (line.charCodeAt(3) === 54) /* 6 */ !== v6) {
    return undefined;
  }
  const g = v6 ? G_IPV6 : G_IPV4;
  // The key holds the original tuple's text, which must read as flowKey() writes the numbers.
  const sport = portValue(m[g + G_SPORT]!);
  const dport = portValue(m[g + G_DPORT]!);
  const timeoutText = m[G_TIMEOUT]!;
  const timeout = digitsValue(timeoutText, 0, timeoutText.length);
  const idText = m[G_ID];
  const id = idText === undefined ? -1 : digitsValue(idText, 0, idText.length);
  if (sport < 0 || dport < 0 || timeout > MAX_U32 || id > MAX_U32) return undefined;
  const rare = m[g + G_ORIG_ZONE] !== undefined || m[G_REPLY_ZONE] !== undefined ||
      m[G_ZONE] !== undefined || m[G_DELTA] !== undefined
    ? rareFields(m, g)
    : NO_RARE_FIELDS;
  if (rare === undefined) return undefined;

  // `prefix + tuple` is a pair of pointers, the tuple a view of the line: as a key kept by the
  // tracker it would keep the line's decoded chunk of the dump (64 KiB) alive. Cutting the source
  // address out of the pair makes V8 copy it into one flat string in place first, for no more
  // than join() would cost; tests/tokenizer_memory_test.ts holds this.
  const key = rare.prefix + m[g + G_TUPLE];
  const oSrc = m[g + G_SRC]!;
  const oDst = m[g + G_DST]!;
  const srcAt = rare.prefix.length + 4; // after `src=`
  const dstAt = srcAt + oSrc.length + 5; // after ` dst=`
  const src = key.slice(srcAt, srcAt + oSrc.length);
  const dst = oDst.length < VIEW_MIN_LENGTH ? oDst : key.slice(dstAt, dstAt + oDst.length);

  const reply = m[g + G_REPLY_SRC] === undefined
    ? { src: dst, dst: src, sport: dport, dport: sport }
    : natReply(m, g, src, dst);
  if (reply === undefined || (v6 && !validIPv6Flow(src, dst, reply))) return undefined;
  const flow = flowOf(
    v6 ? "ipv6" : "ipv4",
    { src, dst, sport, dport },
    reply,
    rare.zone,
    rare.origZone,
    rare.replyZone,
  );
  return candidateOf(flow, key, timeout, rare.deltaTime, id);
}

/** The fields of a candidate line that are rarely printed, and the key prefix they make. */
interface RareFields {
  /** `zone=`, 0 when not printed. */
  readonly zone: number;
  /** `zone-orig=`, -1 when not printed. */
  readonly origZone: number;
  /** `zone-reply=`, -1 when not printed. */
  readonly replyZone: number;
  /** `delta-time=`, -1 when not printed. */
  readonly deltaTime: number;
  /** What {@link flowKey} writes before the original tuple. */
  readonly prefix: string;
}

/** A flow in zone 0 with no directional zones and no `delta-time=`, by far the most common. */
const NO_RARE_FIELDS: RareFields = Object.freeze({
  zone: 0,
  origZone: -1,
  replyZone: -1,
  deltaTime: -1,
  prefix: "0/-/- ",
});

/** The zones and `delta-time=` of a matched line, or undefined when one is out of range. */
function rareFields(m: RegExpExecArray, g: number): RareFields | undefined {
  const zone = optionalValue(m[G_ZONE], MAX_U16);
  const origZone = optionalValue(m[g + G_ORIG_ZONE], MAX_U16);
  const replyZone = optionalValue(m[G_REPLY_ZONE], MAX_U16);
  const deltaTime = optionalValue(m[G_DELTA], Number.MAX_SAFE_INTEGER);
  if (
    zone === OUT_OF_RANGE || origZone === OUT_OF_RANGE || replyZone === OUT_OF_RANGE ||
    deltaTime === OUT_OF_RANGE
  ) return undefined;
  const zoneNumber = Math.max(zone, 0);
  const prefix = `${zoneNumber}/${origZone < 0 ? "-" : origZone}/${
    replyZone < 0 ? "-" : replyZone
  } `;
  return { zone: zoneNumber, origZone, replyZone, deltaTime, prefix };
}

/** The reply tuple of a NATed candidate, or undefined when a port is out of range. */
function natReply(m: RegExpExecArray, g: number, src: string, dst: string): Tuple | undefined {
  const replySrc = m[g + G_REPLY_SRC]!;
  const replyDst = m[g + G_REPLY_DST]!;
  const sport = portValue(m[g + G_REPLY_SPORT]!);
  const dport = portValue(m[g + G_REPLY_DPORT]!);
  if (sport < 0 || dport < 0) return undefined;
  // A DNATed reply still usually repeats the client's address: share the string.
  return {
    src: replySrc === dst ? dst : ownCopy(replySrc),
    dst: replyDst === src ? src : ownCopy(replyDst),
    sport,
    dport,
  };
}

/** Whether the four addresses of an IPv6 candidate are all addresses `inet_ntop` could print. */
function validIPv6Flow(src: string, dst: string, reply: Tuple): boolean {
  return isIPv6(src, 0, src.length) && isIPv6(dst, 0, dst.length) &&
    (reply.src === dst || isIPv6(reply.src, 0, reply.src.length)) &&
    (reply.dst === src || isIPv6(reply.dst, 0, reply.dst.length));
}

/** A port as conntrack writes it (no leading zero, at most 65535), or -1. */
function portValue(digits: string): number {
  const length = digits.length;
  if (length > 5 || (length > 1 && digits.charCodeAt(0) === ZERO)) return -1;
  const value = digitsValue(digits, 0, length);
  return value <= MAX_U16 ? value : -1;
}

/** {@link optionalValue} of a number above its maximum. */
const OUT_OF_RANGE = -2;

/**
 * The value of an optional group's digits: -1 when the group did not take part, and
 * {@link OUT_OF_RANGE} above `max`.
 */
function optionalValue(digits: string | undefined, max: number): number {
  if (digits === undefined) return -1;
  const value = digitsValue(digits, 0, digits.length);
  return value <= max ? value : OUT_OF_RANGE;
}
