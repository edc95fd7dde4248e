/**
 * One ctnetlink GET per tracked flow, many to a datagram: the event mode's per-period reading of
 * its few candidates' timers (the renewal rule's evidence) and of whether each is still an
 * unreplied `SYN_SENT` entry. The kernel answers each GET inside the `send` itself (a request to a
 * kernel netlink socket is handled in the sender's system call), so the answers are all queued
 * when it returns and are taken without waiting.
 *
 * The encoding is pure ({@link getRequests}, the same request a DELETE is, by `ctnetlink.ts`'s
 * `writeFlowRequest`; {@link readGetAnswers}); {@link getFlows} drives a socket. Answers are read with the listing's codec (`readDumpBuffer`), so a GET's candidate is
 * exactly what a dump would have listed.
 *
 * @module
 */
import {
  errnoName,
  IPS_SEEN_REPLY,
  MAX_FLOW_REQUEST,
  readDumpBuffer,
  writeFlowRequest,
} from "./ctnetlink.ts";
import type { Candidate, Flow } from "../../core/flow.ts";
import type { RawNetlinkSocket } from "../../seams/netlink_socket.ts";

const NLMSG_HEADER = 16;
const NFGENMSG = 4;
const NLMSG_ERROR = 2;
const CT_NEW = (1 << 8) | 0;
const CTA_STATUS = 3;
const ENOENT = 2;

/** What the kernel said of one flow. */
export type GetAnswer =
  | {
    /** Still a TCP `SYN_SENT` unreplied entry: its reading, as a dump would list it. */
    readonly kind: "candidate";
    readonly candidate: Candidate;
  }
  | {
    /** The entry exists but is no longer a candidate (it saw a reply, or moved on). */
    readonly kind: "moved-on";
  }
  | {
    /** No such entry: it expired or was deleted. */
    readonly kind: "gone";
  }
  | {
    /** The kernel refused the request or its answer could not be read. */
    readonly kind: "failed";
    /** One line saying why. */
    readonly reason: string;
  };

/**
 * The GETs for `flows`, in one buffer, numbered `firstSeq`, `firstSeq + 1`, ...
 *
 * @throws {RangeError} when a flow's address or port does not fit (a flow the codec never makes).
 *
 * @example
 * ```ts
 * import { getRequests } from "./ct_get.ts";
 * const bytes = getRequests([{
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * }], 1);
 * bytes.length; // 72
 * ```
 */
export function getRequests(
  flows: readonly Flow[],
  firstSeq: number,
  into: Uint8Array = new Uint8Array(flows.length * MAX_FLOW_REQUEST),
): Uint8Array {
  const view = new DataView(into.buffer, into.byteOffset, into.byteLength);
  let at = 0;
  flows.forEach((flow, i) => {
    const message = encoded(flow);
    into.set(message, at);
    view.setUint32(at + 8, (firstSeq + i) >>> 0, true);
    at += message.length;
  });
  return into.subarray(0, at);
}

/**
 * Each tracked flow's GET, encoded once: the same flow is asked about every period, and parsing
 * its addresses again each time would be most of a round's garbage.
 */
const ENCODED = new WeakMap<Flow, Uint8Array>();

function encoded(flow: Flow): Uint8Array {
  let message = ENCODED.get(flow);
  if (message === undefined) {
    const bytes = new Uint8Array(MAX_FLOW_REQUEST);
    message = bytes.slice(
      0,
      writeFlowRequest(new DataView(bytes.buffer), bytes, 0, "get", { flow }, 0),
    );
    ENCODED.set(flow, message);
  }
  return message;
}

/**
 * Reads one datagram of GET answers: each message's sequence number and what it says.
 * `nowSeconds` (wall clock) turns a kernel start timestamp into `delta-time`, as a dump does.
 */
export function readGetAnswers(
  bytes: Uint8Array,
  length: number,
  nowSeconds: number,
): { readonly seq: number; readonly answer: GetAnswer }[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: { seq: number; answer: GetAnswer }[] = [];
  for (let at = 0; at + NLMSG_HEADER <= length;) {
    const size = view.getUint32(at, true);
    if (size < NLMSG_HEADER || at + size > length) break;
    const type = view.getUint16(at + 4, true);
    const seq = view.getUint32(at + 8, true);
    if (type === NLMSG_ERROR) {
      const errno = size >= NLMSG_HEADER + 4 ? -view.getInt32(at + NLMSG_HEADER, true) : -1;
      if (errno !== 0) {
        out.push({
          seq,
          answer: errno === ENOENT
            ? { kind: "gone" }
            : { kind: "failed", reason: `netlink GET failed: ${errnoName(errno)}` },
        });
      }
    } else if (type === CT_NEW && repliedStatus(view, at + NLMSG_HEADER + NFGENMSG, at + size)) {
      // Most answers under churn are for connections that got their reply: say so without
      // reading the whole entry.
      out.push({ seq, answer: { kind: "moved-on" } });
    } else {
      const read = readDumpBuffer(bytes.subarray(at, at + size), size, seq, nowSeconds);
      if (read.kind === "error") {
        out.push({
          seq,
          answer: { kind: "failed", reason: `netlink GET failed: ${errnoName(read.errno)}` },
        });
      } else if (read.unparsable > 0) {
        out.push({
          seq,
          answer: { kind: "failed", reason: read.firstReason ?? "unparsable answer" },
        });
      } else if (read.candidates[0] !== undefined) {
        out.push({ seq, answer: { kind: "candidate", candidate: read.candidates[0] } });
      } else if (read.entries > 0) {
        out.push({ seq, answer: { kind: "moved-on" } });
      }
    }
    at += (size + 3) & ~3;
  }
  return out;
}

/** Whether the entry's top-level `CTA_STATUS` says it saw a reply; false when it has none. */
function repliedStatus(view: DataView, from: number, to: number): boolean {
  for (let at = from; at + 8 <= to;) {
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > to) return false;
    if ((view.getUint16(at + 2, true) & 0x3fff) === CTA_STATUS) {
      return (view.getUint32(at + 4, false) & IPS_SEEN_REPLY) !== 0;
    }
    at += (len + 3) & ~3;
  }
  return false;
}

/** How many GETs go in one datagram: their answers must fit the socket's receive buffer. */
export const GETS_PER_SEND = 128;

/**
 * Asks the kernel for each of `flows` and hands each answer to `onAnswer`, in chunks of
 * {@link GETS_PER_SEND}. A flow whose answer never came gets `failed`. Returns false when a
 * send failed (the socket is unusable; the rest got `failed`).
 */
export function getFlows(
  socket: Pick<RawNetlinkSocket, "send" | "receiveNow">,
  flows: readonly Flow[],
  nowSeconds: number,
  onAnswer: (index: number, answer: GetAnswer) => void,
  buffer: Uint8Array = new Uint8Array(64 * 1024),
): boolean {
  // Answers left over from an earlier, broken-off round must not be taken for this one's.
  while (socket.receiveNow(buffer).kind === "data");
  const requests = new Uint8Array(GETS_PER_SEND * MAX_FLOW_REQUEST);
  let seqBase = 1;
  for (let from = 0; from < flows.length; from += GETS_PER_SEND) {
    const chunk = flows.slice(from, from + GETS_PER_SEND);
    const answered = new Uint8Array(chunk.length);
    if (!socket.send(getRequests(chunk, seqBase, requests))) {
      for (let i = from; i < flows.length; i++) {
        onAnswer(i, { kind: "failed", reason: "Cannot send the netlink GET requests" });
      }
      return false;
    }
    for (let left = chunk.length; left > 0;) {
      const got = socket.receiveNow(buffer);
      if (got.kind !== "data") break;
      for (const { seq, answer } of readGetAnswers(buffer, got.length, nowSeconds)) {
        const index = seq - seqBase;
        if (index < 0 || index >= chunk.length || answered[index] === 1) continue;
        answered[index] = 1;
        left--;
        onAnswer(from + index, answer);
      }
    }
    answered.forEach((done, i) => {
      if (done === 0) onAnswer(from + i, { kind: "failed", reason: "no answer to a netlink GET" });
    });
    seqBase += chunk.length;
  }
  return true;
}
