/**
 * The field-by-field reader of conntrack's list forms: default, `-o extended`, `-o id`,
 * `-o ktimestamp`, accounting, `conntrack -E` event lines and conntrack's summary line. It takes
 * fields by name in any order and says what is wrong with a malformed line. It walks the line by
 * character code and keeps its state in local variables.
 *
 * @module
 */
import {
  addressFamily,
  bit,
  bracketEnd,
  CLOSE,
  cut,
  DOT,
  fieldText,
  hasState,
  isDigit,
  isDigits,
  isHexKey,
  isStateWord,
  L4_GRE,
  L4_ICMP,
  L4_PORTS,
  l4Kind,
  makeCandidate,
  makeFlow,
  malformed,
  MAX_U16,
  MAX_U32,
  MAX_U8,
  OPEN,
  parseDecimal,
  PROTO_INVALID,
  protocolByName,
  protocolName,
  protocolNumberName,
  quote,
  skipBlanks,
  TCP,
  tokenEnd,
  U64_DIGITS,
  unexpected,
} from "./_scan.ts";
import { OTHER_LINE, type ParsedLine } from "./parsed_line.ts";

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

/** The list forms: default, extended, id, ktimestamp, acct, and `conntrack -E` events. */
export function tokenizeListLine(line: string, start: number, end: number): ParsedLine {
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
export function summaryLine(text: string): ParsedLine {
  const summary =
    /^conntrack v\S+ \(conntrack-tools\): (\d+ flow entries have been (shown|created|updated|deleted)|connection tracking table has been emptied)\.$/;
  return summary.test(text) ? OTHER_LINE : malformed(`conntrack message: ${cut(text, 80)}`);
}
