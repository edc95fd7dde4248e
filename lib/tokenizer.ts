/**
 * Reads one line of `conntrack -L` output into a typed result, by field name.
 *
 * Every output form of conntrack-tools 1.4.x is understood: the default form, `-o extended`
 * (`ipv4 2` / `ipv6 10` first), `-o id`, `-o ktimestamp` (`[start=...]`, which contains spaces),
 * accounting (`packets=`/`bytes=` per direction), `-o save` (`-A -t 98 -u UNSET ...`), event
 * lines of `conntrack -E` and conntrack's summary line. Every line is checked in full, so a line
 * conntrack could not have printed is reported as malformed rather than half-read.
 *
 * The tokenizer is on the hot path: one call per table entry per cycle. TCP lines in the
 * printer's field order, nearly all of a dump, are matched by native patterns, which V8 runs
 * several times faster than any JavaScript character loop (they cost 2-4 ns a character, a
 * pattern about 0.5). A candidate's pattern captures what the candidate keeps, so reading it
 * takes no search of the line; any other TCP line is checked by a pattern that builds nothing.
 * Every other line goes to a reader that takes fields by name in any order and says what is wrong
 * with a malformed line; it walks the line by character code and keeps its state in local
 * variables. Both give the same results (a test holds them to it), and what a candidate keeps
 * holds no part of the text its line was cut from (another test holds that).
 *
 * @module
 */
import type { Candidate, Family, Flow, Tuple } from "./flow.ts";
import { ownCopy, VIEW_MIN_LENGTH } from "./copy.ts";
import { digitsValue } from "./digits.ts";
import { flowKey } from "./flow.ts";

/**
 * What one line of conntrack output is.
 * - `candidate`: a TCP entry in `SYN_SENT` that has seen no reply, the only kind the agent acts on.
 * - `other`: a well-formed entry that is not a candidate, a blank line, or conntrack's summary
 *   line. Always the same frozen object, {@link OTHER_LINE}.
 * - `malformed`: a line conntrack could not have printed; `reason` names what is wrong.
 */
export type ParsedLine =
  | {
    /** A TCP `SYN_SENT [UNREPLIED]` entry. */
    readonly kind: "candidate";
    /** The entry. */
    readonly candidate: Candidate;
  }
  | {
    /** Well formed, nothing to act on. */
    readonly kind: "other";
  }
  | {
    /** Not something conntrack prints. */
    readonly kind: "malformed";
    /** One short line naming what is wrong, e.g. `bad port "70000" in sport=`. */
    readonly reason: string;
  };

/** The one result for every well-formed line that is not a candidate (never a new object). */
export const OTHER_LINE: ParsedLine = Object.freeze({ kind: "other" });

const SPACE = 32;
const TAB = 9;
const CR = 13;
const LF = 10;
const OPEN = 91; // [
const CLOSE = 93; // ]
const DASH = 45;
const DOT = 46;
const COLON = 58;
const ZERO = 48;
const NINE = 57;

const MAX_U8 = 0xff;
const MAX_U16 = 0xffff;
const MAX_U32 = 0xffffffff;
const U64_DIGITS = 20;

// What a protocol carries in each tuple, after the addresses.
const L4_NONE = 0;
const L4_PORTS = 1;
const L4_ICMP = 2;
const L4_GRE = 3;

const TCP = 6;
const ICMP = 1;
const ICMPV6 = 58;
const SCTP = 132;
const DCCP = 33;

// Fields of the list form. Tuple fields come first so that `f <= LAST_TUPLE_FIELD` tells them
// apart; each field is also one bit of a `seen` mask.
const F_SRC = 1;
const F_DST = 2;
const F_SPORT = 3;
const F_DPORT = 4;
const F_TYPE = 5;
const F_CODE = 6;
const F_TUPLE_ID = 7;
const F_SRCKEY = 8;
const F_DSTKEY = 9;
const F_PACKETS = 10;
const F_BYTES = 11;
const LAST_TUPLE_FIELD = 11;
const F_ORIG_ZONE = 12;
const F_REPLY_ZONE = 13;
const F_UNREPLIED = 14;
const F_MARK = 15;
const F_SECMARK = 16;
const F_SECCTX = 17;
const F_ZONE = 18;
const F_DELTA = 19;
const F_START = 20;
const F_STOP = 21;
const F_HELPER = 22;
const F_USE = 23;
const F_ID = 24;
const F_LABELS = 25;
const F_TIMEOUT = 26;
const F_ASSURED = 27;
const F_OFFLOAD = 28;
const F_HW_OFFLOAD = 29;

// Sections of a list line, in the order conntrack prints them.
const S_HEAD = 0;
const S_ORIGINAL = 1;
const S_REPLY = 2;
const S_TRAILER = 3;

/**
 * Reads one line of conntrack output. Never throws.
 *
 * @example A candidate
 * ```ts
 * import { tokenizeLine } from "./tokenizer.ts";
 * const parsed = tokenizeLine(
 *   "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] " +
 *     "src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1",
 * );
 * if (parsed.kind === "candidate") parsed.candidate.flow.original.dport; // 80
 * ```
 *
 * @example Not a candidate, and not parseable
 * ```ts
 * import { OTHER_LINE, tokenizeLine } from "./tokenizer.ts";
 * tokenizeLine("") === OTHER_LINE; // true
 * tokenizeLine("tcp 6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=70000");
 * // { kind: "malformed", reason: 'bad port "70000" in sport=' }
 * ```
 */
export function tokenizeLine(line: string): ParsedLine {
  const first = line.charCodeAt(0);
  // Most lines of a dump are TCP entries in the printer's field order: one native pattern match
  // reads those several times faster than any character loop. Whatever it does not take, the
  // field-by-field reader decides, with a reason when malformed.
  if (first === 116 /* t */ || first === 105 /* i */) {
    const fast = tokenizeTcpLine(line);
    if (fast !== undefined) return fast;
  }
  return tokenizeLineByFields(line);
}

/**
 * The field-by-field reader behind {@link tokenizeLine}: takes fields in any order, understands
 * every form, and names what is wrong in a malformed line. {@link tokenizeLine} answers the
 * common TCP lines with one pattern first and gives the same result; this is exported so that
 * tests can hold the two to that.
 */
export function tokenizeLineByFields(line: string): ParsedLine {
  const end = contentEnd(line);
  const start = skipBlanks(line, 0, end);
  if (start === end) return OTHER_LINE;
  const first = line.charCodeAt(start);
  if (first === DASH) return tokenizeSaveLine(line, start, end);
  if (first === 99 /* c */ && line.startsWith("conntrack v", start)) {
    return summaryLine(line.slice(start, end));
  }
  return tokenizeListLine(line, start, end);
}

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
function tokenizeTcpLine(line: string): ParsedLine | undefined {
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

/** The list forms: default, extended, id, ktimestamp, acct, and `conntrack -E` events. */
function tokenizeListLine(line: string, start: number, end: number): ParsedLine {
  let i = start;
  let e = tokenEnd(line, i, end);
  let event = false;

  // `conntrack -E` prefixes `[sec.usec]` with `-o timestamp`, then the event type.
  if (line.charCodeAt(i) === OPEN && isEventTimestamp(line, i, e)) {
    i = skipBlanks(line, e, end);
    e = tokenEnd(line, i, end);
  }
  if (line.charCodeAt(i) === OPEN) {
    if (!isEventType(line, i, e)) return unexpected(line, i, e);
    event = true;
    i = skipBlanks(line, e, end);
    e = tokenEnd(line, i, end);
  }

  // `-o extended` prints the layer-3 protocol first.
  let l3 = 0;
  if (e - i === 4 && (line.startsWith("ipv4", i) || line.startsWith("ipv6", i))) {
    l3 = line.charCodeAt(i + 3) === 52 /* 4 */ ? 4 : 6;
    i = skipBlanks(line, e, end);
    e = tokenEnd(line, i, end);
    const number = parseDecimal(line, i, e, MAX_U8);
    if (number !== (l3 === 4 ? 2 : 10)) {
      return malformed(`bad layer-3 number ${quote(line, i, e)} after ipv${l3}`);
    }
    i = skipBlanks(line, e, end);
    e = tokenEnd(line, i, end);
  }

  if (i === end) return malformed("truncated: no protocol");
  const named = protocolByName(line, i, e);
  if (named === PROTO_INVALID) {
    return i === start
      ? unexpected(line, i, e)
      : malformed(`unknown protocol ${quote(line, i, e)}`);
  }
  const nameStart = i;
  const nameEnd = e;
  i = skipBlanks(line, e, end);
  e = tokenEnd(line, i, end);
  const protocol = parseDecimal(line, i, e, MAX_U8);
  if (protocol < 0) return malformed(`bad protocol number ${quote(line, i, e)}`);
  if (named !== protocolNumberName(protocol)) {
    return malformed(
      `protocol number ${protocol} does not match name ${quote(line, nameStart, nameEnd)}`,
    );
  }
  const l4 = l4Kind(protocol);
  i = skipBlanks(line, e, end);
  e = tokenEnd(line, i, end);

  let timeout = -1;
  if (i < end && isDigit(line.charCodeAt(i))) {
    timeout = parseDecimal(line, i, e, MAX_U32);
    if (timeout < 0) return malformed(`bad timeout ${quote(line, i, e)}`);
    i = skipBlanks(line, e, end);
    e = tokenEnd(line, i, end);
  }

  let synSent = false;
  if (i < end && hasState(protocol) && isStateWord(line, i, e)) {
    synSent = protocol === TCP && e - i === 8 && line.startsWith("SYN_SENT", i);
    i = skipBlanks(line, e, end);
  }

  let section = S_HEAD;
  let tupleSeen = 0; // fields of the tuple being read
  let seen = 0; // fields outside the tuples
  let oSrcStart = 0, oSrcEnd = 0, oDstStart = 0, oDstEnd = 0, oSport = 0, oDport = 0;
  let rSrcStart = 0, rSrcEnd = 0, rDstStart = 0, rDstEnd = 0, rSport = 0, rDport = 0;
  let family = 0;
  let zone = 0, origZone = -1, replyZone = -1, deltaTime = -1, id = -1;

  while (i < end) {
    // One token: up to the next space, or a whole `[...]` group (`[start=...]` has spaces).
    // Native indexOf finds the ends far faster than a loop; conntrack separates fields with
    // single spaces, so a stray tab stays inside a token and fails that token's check.
    let eq = -1;
    if (line.charCodeAt(i) === OPEN) {
      e = bracketEnd(line, i, end);
    } else {
      e = line.indexOf(" ", i);
      if (e < 0 || e > end) e = end;
      eq = line.indexOf("=", i);
      if (eq >= e) eq = -1;
    }

    let field: number;
    if (eq < 0) {
      field = flagField(line, i, e);
      if (field === 0) return unexpected(line, i, e);
    } else {
      field = fieldByKey(line, i, eq);
      if (field === 0) return malformed(`unknown field ${quote(line, i, eq + 1)}`);
      if (eq + 1 === e) return malformed(`empty value in ${line.slice(i, eq + 1)}`);
      // The first `id=` after an icmp tuple's code is the icmp id; a later one is the entry's.
      if (
        field === F_ID && l4 === L4_ICMP && (section === S_ORIGINAL || section === S_REPLY) &&
        (tupleSeen & bit(F_TUPLE_ID)) === 0
      ) field = F_TUPLE_ID;
    }

    if (field <= LAST_TUPLE_FIELD) {
      if (field === F_SRC) {
        if (section === S_ORIGINAL) {
          const missing = missingTupleField(l4, tupleSeen);
          if (missing !== undefined) return malformed(`missing ${missing} in original tuple`);
          section = S_REPLY;
          tupleSeen = 0;
        } else if (section === S_HEAD) {
          section = S_ORIGINAL;
        } else {
          return malformed(`a third tuple: src= after the reply tuple`);
        }
      } else if (section !== S_ORIGINAL && section !== S_REPLY) {
        return malformed(`${line.slice(i, eq + 1)} outside a tuple`);
      }
      if ((tupleSeen & bit(field)) !== 0) {
        return malformed(`duplicate ${line.slice(i, eq + 1)} in one tuple`);
      }
      if (!fieldFitsProtocol(field, l4)) {
        return malformed(
          `${line.slice(i, eq + 1)} in an entry of protocol ${protocolName(protocol)}`,
        );
      }
      tupleSeen |= bit(field);
      const vs = eq + 1;
      if (field === F_SRC || field === F_DST) {
        const f = addressFamily(line, vs, e);
        if (f === 0) return malformed(`bad address ${quote(line, vs, e)} in ${line.slice(i, vs)}`);
        if (family !== 0 && f !== family) return malformed("mixed address families in one entry");
        family = f;
        const original = section === S_ORIGINAL;
        if (field === F_SRC && original) {
          oSrcStart = vs;
          oSrcEnd = e;
        } else if (field === F_SRC) {
          rSrcStart = vs;
          rSrcEnd = e;
        } else if (original) {
          oDstStart = vs;
          oDstEnd = e;
        } else {
          rDstStart = vs;
          rDstEnd = e;
        }
      } else if (field === F_SPORT || field === F_DPORT) {
        const port = parseDecimal(line, vs, e, MAX_U16);
        if (port < 0) return malformed(`bad port ${quote(line, vs, e)} in ${line.slice(i, vs)}`);
        if (section === S_ORIGINAL) {
          if (field === F_SPORT) oSport = port;
          else oDport = port;
        } else if (field === F_SPORT) rSport = port;
        else rDport = port;
      } else if (field === F_SRCKEY || field === F_DSTKEY) {
        if (!isHexKey(line, vs, e)) {
          return malformed(`bad key ${quote(line, vs, e)} in ${line.slice(i, vs)}`);
        }
      } else {
        const max = field === F_TYPE || field === F_CODE
          ? MAX_U8
          : field === F_TUPLE_ID
          ? MAX_U16
          : -1;
        const ok = max < 0
          ? isDigits(line, vs, e, U64_DIGITS)
          : parseDecimal(line, vs, e, max) >= 0;
        if (!ok) return malformed(`bad number ${quote(line, vs, e)} in ${line.slice(i, vs)}`);
      }
      i = skipBlanks(line, e, end);
      continue;
    }

    if ((seen & bit(field)) !== 0) return malformed(`duplicate ${fieldText(line, i, e, eq)}`);
    seen |= bit(field);
    const vs = eq + 1;

    if (field === F_ORIG_ZONE || field === F_REPLY_ZONE || field === F_UNREPLIED) {
      // These follow a tuple but do not end it.
      const after = field === F_REPLY_ZONE ? S_REPLY : S_ORIGINAL;
      if (section < after) return malformed(`${fieldText(line, i, e, eq)} before its tuple`);
      if (field !== F_UNREPLIED) {
        const value = parseDecimal(line, vs, e, MAX_U16);
        if (value < 0) return malformed(`bad zone ${quote(line, vs, e)} in ${line.slice(i, vs)}`);
        if (field === F_ORIG_ZONE) origZone = value;
        else replyZone = value;
      }
      i = skipBlanks(line, e, end);
      continue;
    }

    // Everything else follows both tuples.
    if (section !== S_TRAILER) {
      if (section !== S_REPLY) {
        const tuple = section === S_HEAD ? "original" : "reply";
        return malformed(`${fieldText(line, i, e, eq)} before the ${tuple} tuple`);
      }
      const missing = missingTupleField(l4, tupleSeen);
      if (missing !== undefined) return malformed(`missing ${missing} in reply tuple`);
      section = S_TRAILER;
    }
    switch (field) {
      case F_MARK:
      case F_SECMARK:
      case F_USE:
      case F_ID: {
        const value = parseDecimal(line, vs, e, MAX_U32);
        if (value < 0) return malformed(`bad number ${quote(line, vs, e)} in ${line.slice(i, vs)}`);
        if (field === F_ID) id = value;
        break;
      }
      case F_ZONE:
        zone = parseDecimal(line, vs, e, MAX_U16);
        if (zone < 0) return malformed(`bad zone ${quote(line, vs, e)} in zone=`);
        break;
      case F_DELTA:
        deltaTime = parseDecimal(line, vs, e, Number.MAX_SAFE_INTEGER);
        if (deltaTime < 0) return malformed(`bad number ${quote(line, vs, e)} in delta-time=`);
        break;
      case F_START:
      case F_STOP:
        // `[start=Tue Nov 24 22:44:16 2026]`: ctime() text, not needed, only delimited.
        if (line.charCodeAt(e - 1) !== CLOSE || e - i < 9) {
          return malformed(`unterminated ${quote(line, i, e)}`);
        }
        break;
      default:
        // secctx=, helper=, labels=, timeout=, [ASSURED], [OFFLOAD], [HW_OFFLOAD]: free text or
        // a flag, nothing to check beyond being present once.
        break;
    }
    i = skipBlanks(line, e, end);
  }

  if (section === S_HEAD) return malformed("truncated: no original tuple");
  if (section === S_ORIGINAL) return malformed("truncated: no reply tuple");
  if (section === S_REPLY) {
    const missing = missingTupleField(l4, tupleSeen);
    if (missing !== undefined) return malformed(`missing ${missing} in reply tuple`);
  }
  if (l3 !== 0 && l3 !== family) {
    return malformed(`ipv${l3} entry with ipv${family} addresses`);
  }

  if (!synSent || event || (seen & bit(F_UNREPLIED)) === 0) return OTHER_LINE;
  if (timeout < 0) return malformed("missing timeout in a SYN_SENT entry");
  const flow = makeFlow(
    family === 4 ? "ipv4" : "ipv6",
    {
      src: line.slice(oSrcStart, oSrcEnd),
      dst: line.slice(oDstStart, oDstEnd),
      sport: oSport,
      dport: oDport,
    },
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
  return makeCandidate(flow, timeout, deltaTime, id);
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
function tokenizeSaveLine(line: string, start: number, end: number): ParsedLine {
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

/** The name conntrack uses for a protocol number, or the number. */
function protocolName(protocol: number): string {
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

/** The list form's field for `key` at `[start, eq)`, or 0. */
function fieldByKey(line: string, start: number, eq: number): number {
  switch (eq - start) {
    case 2:
      return line.startsWith("id", start) ? F_ID : 0;
    case 3:
      if (line.startsWith("src", start)) return F_SRC;
      if (line.startsWith("dst", start)) return F_DST;
      return line.startsWith("use", start) ? F_USE : 0;
    case 4:
      if (line.startsWith("type", start)) return F_TYPE;
      if (line.startsWith("code", start)) return F_CODE;
      if (line.startsWith("mark", start)) return F_MARK;
      return line.startsWith("zone", start) ? F_ZONE : 0;
    case 5:
      if (line.startsWith("sport", start)) return F_SPORT;
      if (line.startsWith("dport", start)) return F_DPORT;
      return line.startsWith("bytes", start) ? F_BYTES : 0;
    case 6:
      if (line.startsWith("srckey", start)) return F_SRCKEY;
      if (line.startsWith("dstkey", start)) return F_DSTKEY;
      if (line.startsWith("secctx", start)) return F_SECCTX;
      if (line.startsWith("helper", start)) return F_HELPER;
      return line.startsWith("labels", start) ? F_LABELS : 0;
    case 7:
      if (line.startsWith("packets", start)) return F_PACKETS;
      if (line.startsWith("secmark", start)) return F_SECMARK;
      return line.startsWith("timeout", start) ? F_TIMEOUT : 0;
    case 9:
      // libnetfilter_conntrack prints `zone-orig=`; `orig-zone=` is the option's spelling.
      if (line.startsWith("zone-orig", start) || line.startsWith("orig-zone", start)) {
        return F_ORIG_ZONE;
      }
      return 0;
    case 10:
      if (line.startsWith("delta-time", start)) return F_DELTA;
      if (line.startsWith("zone-reply", start) || line.startsWith("reply-zone", start)) {
        return F_REPLY_ZONE;
      }
      return 0;
    default:
      return 0;
  }
}

/** The list form's bracketed flag at `[start, end)`, or 0. */
function flagField(line: string, start: number, end: number): number {
  const length = end - start;
  if (length < 3 || line.charCodeAt(start) !== OPEN) return 0;
  if (line.startsWith("[start=", start)) return F_START;
  if (line.startsWith("[stop=", start)) return F_STOP;
  if (line.charCodeAt(end - 1) !== CLOSE) return 0;
  if (length === 11 && line.startsWith("[UNREPLIED]", start)) return F_UNREPLIED;
  if (length === 9 && line.startsWith("[ASSURED]", start)) return F_ASSURED;
  if (length === 9 && line.startsWith("[OFFLOAD]", start)) return F_OFFLOAD;
  if (length === 12 && line.startsWith("[HW_OFFLOAD]", start)) return F_HW_OFFLOAD;
  return 0;
}

/** Whether `field` can appear in a tuple of a protocol carrying `l4`. */
function fieldFitsProtocol(field: number, l4: number): boolean {
  switch (field) {
    case F_SPORT:
    case F_DPORT:
      return l4 === L4_PORTS;
    case F_TYPE:
    case F_CODE:
    case F_TUPLE_ID:
      return l4 === L4_ICMP;
    case F_SRCKEY:
    case F_DSTKEY:
      return l4 === L4_GRE;
    default:
      return true;
  }
}

/** The first field a tuple of a protocol carrying `l4` lacks, or undefined when complete. */
function missingTupleField(l4: number, tupleSeen: number): string | undefined {
  if ((tupleSeen & bit(F_DST)) === 0) return "dst=";
  switch (l4) {
    case L4_PORTS:
      if ((tupleSeen & bit(F_SPORT)) === 0) return "sport=";
      return (tupleSeen & bit(F_DPORT)) === 0 ? "dport=" : undefined;
    case L4_ICMP:
      if ((tupleSeen & bit(F_TYPE)) === 0) return "type=";
      if ((tupleSeen & bit(F_CODE)) === 0) return "code=";
      return (tupleSeen & bit(F_TUPLE_ID)) === 0 ? "id=" : undefined;
    case L4_GRE:
      if ((tupleSeen & bit(F_SRCKEY)) === 0) return "srckey=";
      return (tupleSeen & bit(F_DSTKEY)) === 0 ? "dstkey=" : undefined;
    default:
      return undefined;
  }
}

const PROTO_INVALID = -2;
const PROTO_UNKNOWN = -1;

/** The protocol number for a name conntrack prints, PROTO_UNKNOWN for `unknown`, or invalid. */
function protocolByName(line: string, start: number, end: number): number {
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
function protocolNumberName(protocol: number): number {
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

function l4Kind(protocol: number): number {
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
function hasState(protocol: number): boolean {
  return protocol === TCP || protocol === SCTP || protocol === DCCP;
}

/** `[A-Z][A-Z0-9_]*`: a state name such as `SYN_SENT` or `COOKIE_WAIT`. */
function isStateWord(line: string, start: number, end: number): boolean {
  if (start >= end) return false;
  const first = line.charCodeAt(start);
  if (first < 65 || first > 90) return false;
  for (let i = start + 1; i < end; i++) {
    const ch = line.charCodeAt(i);
    if (!((ch >= 65 && ch <= 90) || (ch >= ZERO && ch <= NINE) || ch === 95)) return false;
  }
  return true;
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

/** `[NEW]`, `[UPDATE]` or `[DESTROY]`, as `conntrack -E` prints before an entry. */
function isEventType(line: string, start: number, end: number): boolean {
  const length = end - start;
  return (length === 5 && line.startsWith("[NEW]", start)) ||
    (length === 8 && line.startsWith("[UPDATE]", start)) ||
    (length === 9 && line.startsWith("[DESTROY]", start));
}

/** `[1700000000.123456]`, as `conntrack -E -o timestamp` prints before an event. */
function isEventTimestamp(line: string, start: number, end: number): boolean {
  if (end - start < 3 || line.charCodeAt(end - 1) !== CLOSE) return false;
  let dots = 0;
  for (let i = start + 1; i < end - 1; i++) {
    const ch = line.charCodeAt(i);
    if (ch === DOT) dots++;
    else if (!isDigit(ch)) return false;
  }
  return dots <= 1;
}

/** conntrack's own message lines, which go to stderr but may be merged into stdout. */
function summaryLine(text: string): ParsedLine {
  const summary =
    /^conntrack v\S+ \(conntrack-tools\): (\d+ flow entries have been (shown|created|updated|deleted)|connection tracking table has been emptied)\.$/;
  return summary.test(text) ? OTHER_LINE : malformed(`conntrack message: ${cut(text, 80)}`);
}

/** 4 or 6 for a well-formed IPv4 or IPv6 address at `[start, end)`, 0 otherwise. */
function addressFamily(line: string, start: number, end: number): number {
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
function isIPv6(line: string, start: number, end: number): boolean {
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
function isHexKey(line: string, start: number, end: number): boolean {
  if (end - start < 3 || end - start > 10 || !line.startsWith("0x", start)) return false;
  for (let i = start + 2; i < end; i++) {
    if (!isHex(line.charCodeAt(i))) return false;
  }
  return true;
}

/** The decimal number at `[start, end)` if it is at most `max`, else -1. */
function parseDecimal(line: string, start: number, end: number, max: number): number {
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
function isDigits(line: string, start: number, end: number, maxDigits: number): boolean {
  if (start >= end || end - start > maxDigits) return false;
  for (let i = start; i < end; i++) {
    if (!isDigit(line.charCodeAt(i))) return false;
  }
  return true;
}

function isDigit(ch: number): boolean {
  return ch >= ZERO && ch <= NINE;
}

function isHex(ch: number): boolean {
  return (ch >= ZERO && ch <= NINE) || (ch >= 97 && ch <= 102) || (ch >= 65 && ch <= 70);
}

function bit(field: number): number {
  return 1 << field;
}

/** Index after the last character that is not a blank, CR or LF. */
function contentEnd(line: string): number {
  let end = line.length;
  while (end > 0) {
    const ch = line.charCodeAt(end - 1);
    if (ch !== SPACE && ch !== TAB && ch !== CR && ch !== LF) break;
    end--;
  }
  return end;
}

function skipBlanks(line: string, i: number, end: number): number {
  while (i < end) {
    const ch = line.charCodeAt(i);
    if (ch !== SPACE && ch !== TAB) break;
    i++;
  }
  return i;
}

/** End of the token at `start`: the next blank, or past the `]` of a `[...]` group. */
function tokenEnd(line: string, start: number, end: number): number {
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
function bracketEnd(line: string, start: number, end: number): number {
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

function fieldText(line: string, start: number, end: number, eq: number): string {
  return eq < 0 ? cut(line.slice(start, end), 40) : line.slice(start, eq + 1);
}

function quote(line: string, start: number, end: number): string {
  return JSON.stringify(cut(line.slice(start, end), 40));
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

function unexpected(line: string, start: number, end: number): ParsedLine {
  return malformed(`unexpected ${quote(line, start, end)}`);
}

function malformed(reason: string): ParsedLine {
  return { kind: "malformed", reason };
}

/**
 * Builds a flow from tuples as the field-by-field reader read them, whose addresses may still be
 * slices of the line: they are copied (see {@link own}).
 */
function makeFlow(
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
function flowOf(
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
function makeCandidate(flow: Flow, timeout: number, deltaTime: number, id: number): ParsedLine {
  return candidateOf(flow, flowKey(flow), timeout, deltaTime, id);
}

/** Wraps a flow as a candidate, leaving out what conntrack did not print (-1). */
function candidateOf(
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
