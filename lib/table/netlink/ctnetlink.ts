/**
 * The ctnetlink messages of a table listing, as bytes: the dump request the agent sends and the
 * reading of what the kernel answers, entry by entry, into the same {@link Candidate}s the
 * tokenizer makes of `conntrack -L` lines; and the deletion of exact entries
 * ({@link deleteRequests}, {@link readAcks}), whose request, but for its type, is also the GET of
 * one entry ({@link writeFlowRequest}).
 *
 * Pure: no socket here (see `netlink_list.ts`). The attribute numbers are the kernel's
 * (`include/uapi/linux/netfilter/nfnetlink_conntrack.h`); integers in attributes are big-endian,
 * netlink headers native (little-endian on every platform the agent is built for).
 *
 * @module
 */
import type { Candidate, Family, Flow, Tuple } from "../../core/flow.ts";
import { flowKey } from "../../core/flow.ts";
import { addressBytes, formatIPv6 } from "../../core/address.ts";

const NLMSG_HEADER = 16;
const NFGENMSG = 4;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLMSG_OVERRUN = 4;
/** `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW`: how the kernel tags each listed entry. */
const CT_NEW = (1 << 8) | 0;
/** `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET`. */
const CT_GET = (1 << 8) | 1;
/** `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE`. */
const CT_DELETE = (1 << 8) | 2;
const NLM_F_ACK = 0x4;
const NLA_F_NESTED = 0x8000;
/** Address families, as the kernel numbers them. */
export const AF_INET = 2;
/** See {@link AF_INET}. */
export const AF_INET6 = 10;
const NLA_TYPE_MASK = 0x3fff;

// enum ctattr_type
const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_REPLY = 2;
const CTA_STATUS = 3;
const CTA_PROTOINFO = 4;
const CTA_TIMEOUT = 7;
const CTA_ID = 12;
const CTA_ZONE = 18;
const CTA_TIMESTAMP = 20;
const CTA_STATUS_MASK = 26;
// enum ctattr_tuple, ctattr_ip, ctattr_l4proto, ctattr_protoinfo(_tcp), ctattr_tstamp
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_TUPLE_ZONE = 3;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;
const CTA_PROTOINFO_TCP = 1;
const CTA_PROTOINFO_TCP_STATE = 1;
const CTA_TIMESTAMP_START = 1;

/** The conntrack status bit of an entry that has seen a reply. */
export const IPS_SEEN_REPLY = 1 << 1;
/** TCP's protocol number. */
export const IPPROTO_TCP = 6;
/** The kernel's number for the TCP conntrack state `SYN_SENT`. */
export const TCP_CONNTRACK_SYN_SENT = 1;

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM (needs CAP_NET_ADMIN)",
  2: "ENOENT",
  4: "EINTR",
  12: "ENOMEM",
  13: "EACCES",
  16: "EBUSY",
  22: "EINVAL",
  74: "EBADMSG",
  105: "ENOBUFS",
  111: "ECONNREFUSED",
};

/**
 * A name for an errno that netlink calls report, with what to do where that is clear.
 *
 * @example
 * ```ts
 * import { errnoName } from "./ctnetlink.ts";
 * errnoName(1); // "EPERM (needs CAP_NET_ADMIN)"
 * errnoName(99); // "errno 99"
 * ```
 */
export function errnoName(code: number): string {
  return ERRNO_NAMES[code] ?? `errno ${code}`;
}

/**
 * The request for every entry that has seen no reply, of both families and all zones: the
 * kernel filter `conntrack -u UNREPLIED` sends (`CTA_STATUS` 0 under `CTA_STATUS_MASK`
 * `IPS_SEEN_REPLY`; kernels before 5.15 ignore it and send every entry, which
 * {@link readDumpBuffer} then filters).
 *
 * @example
 * ```ts
 * import { dumpRequest } from "./ctnetlink.ts";
 * dumpRequest(7).length; // 36
 * ```
 */
export function dumpRequest(seq: number): Uint8Array {
  const bytes = new Uint8Array(NLMSG_HEADER + NFGENMSG + 8 + 8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, bytes.length, true);
  view.setUint16(4, CT_GET, true);
  view.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  view.setUint32(8, seq >>> 0, true);
  // Port id 0 (the kernel's), then nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0.
  const at = NLMSG_HEADER + NFGENMSG;
  view.setUint16(at, 8, true);
  view.setUint16(at + 2, CTA_STATUS, true);
  view.setUint32(at + 4, 0, false);
  view.setUint16(at + 8, 8, true);
  view.setUint16(at + 10, CTA_STATUS_MASK, true);
  view.setUint32(at + 12, IPS_SEEN_REPLY, false);
  return bytes;
}

/** What one buffer of a dump's answer held. */
export type DumpBuffer =
  | {
    readonly kind: "entries";
    /** Entries listed in this buffer (every kind, as conntrack would print lines). */
    readonly entries: number;
    /** The TCP `SYN_SENT` unreplied entries among them, in order. */
    readonly candidates: readonly Candidate[];
    /** Entries whose attributes could not be read, and why the first could not. */
    readonly unparsable: number;
    /** Why the first unparsable entry was rejected, when there was one. */
    readonly firstReason: string | undefined;
    /** True when the buffer ended the dump (`NLMSG_DONE`). */
    readonly done: boolean;
  }
  | {
    /** The kernel refused or broke off the dump. */
    readonly kind: "error";
    /** The positive errno, e.g. 1 for EPERM. */
    readonly errno: number;
  };

/**
 * Reads the first `length` bytes of a buffer received from a dump with sequence number `seq`.
 * Messages of another sequence are skipped. `nowSeconds` (wall clock, whole seconds) turns the
 * kernel's start timestamp into `delta-time` as conntrack computes it.
 */
export function readDumpBuffer(
  bytes: Uint8Array,
  length: number,
  seq: number,
  nowSeconds: number,
): DumpBuffer {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const candidates: Candidate[] = [];
  let entries = 0;
  let unparsable = 0;
  let firstReason: string | undefined;
  let at = 0;
  while (at + NLMSG_HEADER <= length) {
    const size = view.getUint32(at, true);
    const type = view.getUint16(at + 4, true);
    if (size < NLMSG_HEADER || at + size > length) {
      return { kind: "error", errno: EBADMSG };
    }
    if (view.getUint32(at + 8, true) === (seq >>> 0)) {
      if (type === NLMSG_DONE) {
        return { kind: "entries", entries, candidates, unparsable, firstReason, done: true };
      }
      if (type === NLMSG_ERROR || type === NLMSG_OVERRUN) {
        const errno = size >= NLMSG_HEADER + 4 ? -view.getInt32(at + NLMSG_HEADER, true) : EBADMSG;
        // An error message with errno 0 is an acknowledgement, not an error.
        if (errno !== 0) return { kind: "error", errno };
      } else if (type === CT_NEW && size >= NLMSG_HEADER + NFGENMSG) {
        entries++;
        const read = readEntry(bytes, view, at + NLMSG_HEADER, at + size, nowSeconds);
        if (typeof read === "string") {
          if (unparsable++ === 0) firstReason = read;
        } else if (read !== undefined) {
          candidates.push(read);
        }
      }
    }
    at += align(size);
  }
  return { kind: "entries", entries, candidates, unparsable, firstReason, done: false };
}

const EBADMSG = 74;

function align(n: number): number {
  return (n + 3) & ~3;
}

/** A tuple as read, with its protocol and directional zone. */
interface ReadTuple {
  readonly tuple: Tuple;
  readonly proto: number;
  readonly zone: number | undefined;
}

/**
 * One listed entry: its candidate, undefined when it is not a TCP `SYN_SENT` unreplied entry,
 * or a reason when its attributes are malformed.
 */
function readEntry(
  bytes: Uint8Array,
  view: DataView,
  from: number,
  to: number,
  nowSeconds: number,
): Candidate | undefined | string {
  const l3 = bytes[from]!;
  if (l3 !== AF_INET && l3 !== AF_INET6) return undefined;
  const family: Family = l3 === AF_INET ? "ipv4" : "ipv6";
  let status = -1, timeout = -1, id = -1, zone = 0, state = -1, started = -1;
  let orig: ReadTuple | string | undefined;
  let reply: ReadTuple | string | undefined;
  for (let at = from + NFGENMSG; at < to;) {
    if (at + 4 > to) return "truncated attribute";
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > to) return `attribute of length ${len} overruns the entry`;
    const type = view.getUint16(at + 2, true) & NLA_TYPE_MASK;
    const body = at + 4;
    const end = at + len;
    switch (type) {
      case CTA_STATUS:
        if (len < 8) return "short CTA_STATUS";
        status = view.getUint32(body, false);
        break;
      case CTA_TIMEOUT:
        if (len < 8) return "short CTA_TIMEOUT";
        timeout = view.getUint32(body, false);
        break;
      case CTA_ID:
        if (len < 8) return "short CTA_ID";
        id = view.getUint32(body, false);
        break;
      case CTA_ZONE:
        if (len < 6) return "short CTA_ZONE";
        zone = view.getUint16(body, false);
        break;
      case CTA_TUPLE_ORIG:
        orig = readTuple(bytes, view, body, end, family);
        break;
      case CTA_TUPLE_REPLY:
        reply = readTuple(bytes, view, body, end, family);
        break;
      case CTA_PROTOINFO:
        state = nestedU8(view, body, end, CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE);
        break;
      case CTA_TIMESTAMP:
        started = timestampStartSeconds(view, body, end);
        break;
    }
    at += align(len);
  }
  if (typeof orig === "string") return orig;
  if (typeof reply === "string") return reply;
  if (orig === undefined || reply === undefined || status < 0) return "entry without its tuples";
  if ((status & IPS_SEEN_REPLY) !== 0 || orig.proto !== IPPROTO_TCP) return undefined;
  if (state !== TCP_CONNTRACK_SYN_SENT) return undefined;
  if (timeout < 0) return "TCP entry without CTA_TIMEOUT";
  const flow: Flow = orig.zone === undefined && reply.zone === undefined
    ? { family, original: orig.tuple, reply: reply.tuple, zone }
    : {
      family,
      original: orig.tuple,
      reply: reply.tuple,
      zone,
      ...(orig.zone === undefined ? {} : { origZone: orig.zone }),
      ...(reply.zone === undefined ? {} : { replyZone: reply.zone }),
    };
  const key = flowKey(flow);
  // conntrack prints delta-time as time(NULL) minus the start in whole seconds.
  const deltaTime = started < 0 ? -1 : Math.max(0, nowSeconds - started);
  if (id < 0) {
    return deltaTime < 0 ? { flow, key, timeout } : { flow, key, timeout, deltaTime };
  }
  return deltaTime < 0 ? { flow, key, timeout, id } : { flow, key, timeout, deltaTime, id };
}

/** Reads `CTA_TUPLE_*`: addresses, protocol and ports, and a directional zone. */
function readTuple(
  bytes: Uint8Array,
  view: DataView,
  from: number,
  to: number,
  family: Family,
): ReadTuple | string {
  let src = "", dst = "", sport = -1, dport = -1, proto = -1;
  let zone: number | undefined;
  for (let at = from; at < to;) {
    if (at + 4 > to) return "truncated tuple";
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > to) return "tuple attribute overruns its tuple";
    const type = view.getUint16(at + 2, true) & NLA_TYPE_MASK;
    const end = at + len;
    if (type === CTA_TUPLE_IP) {
      for (let inner = at + 4; inner < end;) {
        if (inner + 4 > end) return "truncated address";
        const ilen = view.getUint16(inner, true);
        if (ilen < 4 || inner + ilen > end) return "address overruns its tuple";
        const itype = view.getUint16(inner + 2, true) & NLA_TYPE_MASK;
        const body = inner + 4;
        if (itype === CTA_IP_V4_SRC || itype === CTA_IP_V4_DST) {
          if (ilen < 8 || family !== "ipv4") return "IPv4 address out of place";
          const text = `${bytes[body]}.${bytes[body + 1]}.${bytes[body + 2]}.${bytes[body + 3]}`;
          if (itype === CTA_IP_V4_SRC) src = text;
          else dst = text;
        } else if (itype === CTA_IP_V6_SRC || itype === CTA_IP_V6_DST) {
          if (ilen < 20 || family !== "ipv6") return "IPv6 address out of place";
          const text = formatIPv6(bytes, body);
          if (itype === CTA_IP_V6_SRC) src = text;
          else dst = text;
        }
        inner += align(ilen);
      }
    } else if (type === CTA_TUPLE_PROTO) {
      for (let inner = at + 4; inner < end;) {
        if (inner + 4 > end) return "truncated protocol";
        const ilen = view.getUint16(inner, true);
        if (ilen < 4 || inner + ilen > end) return "protocol overruns its tuple";
        const itype = view.getUint16(inner + 2, true) & NLA_TYPE_MASK;
        const body = inner + 4;
        if (itype === CTA_PROTO_NUM && ilen >= 5) proto = bytes[body]!;
        else if (itype === CTA_PROTO_SRC_PORT && ilen >= 6) sport = view.getUint16(body, false);
        else if (itype === CTA_PROTO_DST_PORT && ilen >= 6) dport = view.getUint16(body, false);
        inner += align(ilen);
      }
    } else if (type === CTA_TUPLE_ZONE) {
      if (len < 6) return "short CTA_TUPLE_ZONE";
      zone = view.getUint16(at + 4, false);
    }
    at += align(len);
  }
  if (proto < 0) return "tuple without a protocol";
  if (proto !== IPPROTO_TCP) return { tuple: { src, dst, sport: 0, dport: 0 }, proto, zone };
  if (src === "" || dst === "" || sport < 0 || dport < 0) {
    return "TCP tuple without its addresses or ports";
  }
  return { tuple: { src, dst, sport, dport }, proto, zone };
}

/** The u8 attribute `inner` inside the nested attribute `outer`, or -1. */
function nestedU8(view: DataView, from: number, to: number, outer: number, inner: number): number {
  for (let at = from; at + 4 <= to;) {
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > to) return -1;
    if ((view.getUint16(at + 2, true) & NLA_TYPE_MASK) === outer) {
      for (let i = at + 4; i + 4 <= at + len;) {
        const ilen = view.getUint16(i, true);
        if (ilen < 4 || i + ilen > at + len) return -1;
        if ((view.getUint16(i + 2, true) & NLA_TYPE_MASK) === inner && ilen >= 5) {
          return view.getUint8(i + 4);
        }
        i += align(ilen);
      }
    }
    at += align(len);
  }
  return -1;
}

/** `CTA_TIMESTAMP_START` (ns since the epoch) in whole seconds, or -1. */
function timestampStartSeconds(view: DataView, from: number, to: number): number {
  for (let at = from; at + 4 <= to;) {
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > to) return -1;
    if ((view.getUint16(at + 2, true) & NLA_TYPE_MASK) === CTA_TIMESTAMP_START && len >= 12) {
      return Number(view.getBigUint64(at + 4, false) / 1_000_000_000n);
    }
    at += align(len);
  }
  return -1;
}

/** One entry to delete: the flow that names it and, when known, the kernel's id of the entry. */
export interface DeleteEntry {
  /** The flow: its original tuple and zones are what the kernel looks the entry up by. */
  readonly flow: Flow;
  /**
   * The kernel's id of the entry (`CTA_ID`). With it, the kernel deletes only an entry with this
   * id and answers `ENOENT` for any other holding the same tuple.
   */
  readonly id?: number;
}

/**
 * The longest request {@link writeFlowRequest} writes: an IPv6 original tuple with its zone, the
 * zone, and the id.
 */
export const MAX_FLOW_REQUEST = NLMSG_HEADER + NFGENMSG + 4 + (4 + 2 * 20) + (4 + 3 * 8) + 8 + 8 +
  8;

/**
 * The `IPCTNL_MSG_CT_DELETE` requests for `entries`, one netlink message each in one buffer (one
 * datagram), numbered `firstSeq`, `firstSeq + 1`, ..., each asking for an acknowledgement.
 *
 * Each message carries the original tuple (`CTA_TUPLE_ORIG`, with its directional zone), the zone
 * (`CTA_ZONE`) when not 0 and the id (`CTA_ID`) when known. The reply tuple is left out: the
 * kernel looks an entry up by the original tuple alone and never reads a reply tuple sent beside
 * it. The original tuple is never left out either, since a DELETE without a tuple is the kernel's
 * request to flush the whole table.
 *
 * @throws {RangeError} when an address does not fit its family, or a port, zone or id its width.
 *
 * @example
 * ```ts
 * import { deleteRequests } from "./ctnetlink.ts";
 * const flow = {
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * } as const;
 * deleteRequests([{ flow, id: 3000000007 }], 1).length; // 80
 * ```
 */
export function deleteRequests(entries: readonly DeleteEntry[], firstSeq: number): Uint8Array {
  const bytes = new Uint8Array(entries.length * MAX_FLOW_REQUEST);
  const view = new DataView(bytes.buffer);
  let at = 0;
  entries.forEach((entry, i) => {
    at = writeFlowRequest(view, bytes, at, "delete", entry, firstSeq + i);
  });
  return bytes.subarray(0, at);
}

/**
 * Writes at `start` the request of `kind` for one entry, named by its original tuple (with its
 * directional zone), its zone when not 0 and its id when known, and returns where it ends: a
 * `delete` asks for an acknowledgement, a `get` is answered with the entry (`ct_get.ts`). `bytes`
 * and `view` are one buffer with room for {@link MAX_FLOW_REQUEST} bytes from `start`.
 *
 * @throws {RangeError} when an address does not fit its family, or a port, zone or id its width.
 *
 * @example
 * ```ts
 * import { MAX_FLOW_REQUEST, writeFlowRequest } from "./ctnetlink.ts";
 * const bytes = new Uint8Array(MAX_FLOW_REQUEST);
 * const flow = {
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * } as const;
 * writeFlowRequest(new DataView(bytes.buffer), bytes, 0, "get", { flow }, 1); // 72
 * ```
 */
export function writeFlowRequest(
  view: DataView,
  bytes: Uint8Array,
  start: number,
  kind: "get" | "delete",
  entry: DeleteEntry,
  seq: number,
): number {
  const { flow, id } = entry;
  const o = flow.original;
  const src = addressBytes(o.src, flow.family);
  const dst = addressBytes(o.dst, flow.family);
  if (src === undefined || dst === undefined) {
    throw new RangeError(
      `Cannot encode a ${kind.toUpperCase()} as ${flow.family}: current value is ${o.src} > ${o.dst}`,
    );
  }
  checkWidth(kind, "port", o.sport, 0xffff);
  checkWidth(kind, "port", o.dport, 0xffff);
  checkWidth(kind, "zone", flow.zone, 0xffff);
  if (flow.origZone !== undefined) checkWidth(kind, "zone", flow.origZone, 0xffff);
  if (id !== undefined) checkWidth(kind, "id", id, 0xffffffff);
  let at = start + NLMSG_HEADER;
  bytes[at] = flow.family === "ipv4" ? AF_INET : AF_INET6;
  // NFNETLINK_V0 and res_id 0.
  bytes[at + 1] = 0;
  view.setUint16(at + 2, 0, false);
  at += NFGENMSG;
  const tupleAt = at;
  at += 4;
  const ipAt = at;
  at += 4;
  const v6 = flow.family === "ipv6";
  at = putBytes(view, bytes, at, v6 ? CTA_IP_V6_SRC : CTA_IP_V4_SRC, src);
  at = putBytes(view, bytes, at, v6 ? CTA_IP_V6_DST : CTA_IP_V4_DST, dst);
  putHeader(view, ipAt, at - ipAt, CTA_TUPLE_IP | NLA_F_NESTED);
  const protoAt = at;
  at += 4;
  at = putBytes(view, bytes, at, CTA_PROTO_NUM, TCP_PROTO_NUM);
  at = putU16(view, at, CTA_PROTO_SRC_PORT, o.sport);
  at = putU16(view, at, CTA_PROTO_DST_PORT, o.dport);
  putHeader(view, protoAt, at - protoAt, CTA_TUPLE_PROTO | NLA_F_NESTED);
  if (flow.origZone !== undefined) at = putU16(view, at, CTA_TUPLE_ZONE, flow.origZone);
  putHeader(view, tupleAt, at - tupleAt, CTA_TUPLE_ORIG | NLA_F_NESTED);
  if (flow.zone !== 0) at = putU16(view, at, CTA_ZONE, flow.zone);
  if (id !== undefined) {
    putHeader(view, at, 8, CTA_ID);
    view.setUint32(at + 4, id, false);
    at += 8;
  }
  view.setUint32(start, at - start, true);
  view.setUint16(start + 4, kind === "delete" ? CT_DELETE : CT_GET, true);
  view.setUint16(start + 6, kind === "delete" ? NLM_F_REQUEST | NLM_F_ACK : NLM_F_REQUEST, true);
  view.setUint32(start + 8, seq >>> 0, true);
  view.setUint32(start + 12, 0, true);
  return at;
}

/** `CTA_PROTO_NUM`'s value, made once rather than per request. */
const TCP_PROTO_NUM = Uint8Array.of(IPPROTO_TCP);

function checkWidth(kind: string, what: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(
      `Cannot encode ${what} in a ${kind.toUpperCase()}: current value is ${value}`,
    );
  }
}

function putHeader(view: DataView, at: number, length: number, type: number): void {
  view.setUint16(at, length, true);
  view.setUint16(at + 2, type, true);
}

/** An attribute of raw bytes, padded to 4; returns where the next one starts. */
function putBytes(
  view: DataView,
  bytes: Uint8Array,
  at: number,
  type: number,
  value: Uint8Array,
): number {
  putHeader(view, at, 4 + value.length, type);
  bytes.set(value, at + 4);
  bytes.fill(0, at + 4 + value.length, at + align(4 + value.length));
  return at + align(4 + value.length);
}

/** A big-endian u16 attribute, padded to 4. */
function putU16(view: DataView, at: number, type: number, value: number): number {
  putHeader(view, at, 6, type);
  view.setUint16(at + 4, value, false);
  view.setUint16(at + 6, 0, false);
  return at + 8;
}

/** The kernel's answer to one request sent with `NLM_F_ACK`. */
export interface Ack {
  /** The request's sequence number. */
  readonly seq: number;
  /** 0 when the request was carried out, else the positive errno (2, ENOENT: no such entry). */
  readonly errno: number;
}

/**
 * Reads the acknowledgements (`NLMSG_ERROR` messages) in the first `length` bytes of a received
 * datagram, in order; other messages are skipped. Stops at a malformed message.
 *
 * @example
 * ```ts
 * import { readAcks } from "./ctnetlink.ts";
 * const bytes = new Uint8Array(36);
 * const view = new DataView(bytes.buffer);
 * view.setUint32(0, 36, true); // length
 * view.setUint16(4, 2, true); // NLMSG_ERROR
 * view.setUint32(8, 5, true); // seq
 * view.setInt32(16, -2, true); // -ENOENT
 * readAcks(bytes, 36); // [{ seq: 5, errno: 2 }]
 * ```
 */
export function readAcks(bytes: Uint8Array, length: number): Ack[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const acks: Ack[] = [];
  for (let at = 0; at + NLMSG_HEADER <= length;) {
    const size = view.getUint32(at, true);
    if (size < NLMSG_HEADER || at + size > length) break;
    if (view.getUint16(at + 4, true) === NLMSG_ERROR && size >= NLMSG_HEADER + 4) {
      acks.push({
        seq: view.getUint32(at + 8, true),
        // 0 minus, not unary minus: a success is 0, never -0.
        errno: 0 - view.getInt32(at + NLMSG_HEADER, true),
      });
    }
    at += align(size);
  }
  return acks;
}
