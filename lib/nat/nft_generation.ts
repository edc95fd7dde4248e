/**
 * The nftables generation id: a number the kernel changes on every nftables commit in the
 * network namespace (kube-proxy's nftables mode, and iptables-nft, whose rules are nftables
 * rules), read with one `NFT_MSG_GETGEN` request on `NETLINK_NETFILTER`. While it stays the same,
 * rules already read from those sources are still the node's rules, and need not be read again.
 *
 * This file is the codec (the request's bytes, the answer's decoding) and the function the
 * reader is given ({@link followGeneration}); the socket is `lib/seams/netfilter_request.ts`.
 *
 * @module
 */
import type { Logger } from "../seams/logger.ts";
import { type NetfilterRequestsOpen, openNetfilterRequests } from "../seams/netfilter_request.ts";

/** nfnetlink's subsystem for nftables (`NFNL_SUBSYS_NFTABLES`). */
const NFNL_SUBSYS_NFTABLES = 10;
/** The request (`NFT_MSG_GETGEN`). */
const NFT_MSG_GETGEN = 16;
/** The kernel's answer to it (`NFT_MSG_NEWGEN`). */
const NFT_MSG_NEWGEN = 15;
/** The attribute carrying the id, a big-endian u32 (`NFTA_GEN_ID`). */
const NFTA_GEN_ID = 1;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLMSG_HDRLEN = 16;
/** `struct nfgenmsg`: family, version, resource id. */
const NFGENMSG_LEN = 4;

/**
 * Reads the node's nftables generation id now: a number, or `undefined` when it cannot be told
 * (then the rules are read as if it had changed, spaced by their cost). Never throws.
 */
export type NftGeneration = () => Promise<number | undefined>;

/** What an answer to `NFT_MSG_GETGEN` said. */
export type GenerationAnswer =
  | {
    /** The generation id. */
    readonly kind: "generation";
    /** The id, an unsigned 32-bit number. */
    readonly id: number;
  }
  | {
    /** The kernel refused the request. */
    readonly kind: "error";
    /** The errno it gave (positive), e.g. 1 (`EPERM`) without `CAP_NET_ADMIN`. */
    readonly errno: number;
  };

/**
 * The bytes of one `NFT_MSG_GETGEN` request with sequence number `seq`: a netlink header and an
 * empty `nfgenmsg` (family unspecified, version 0).
 *
 * @example
 * ```ts
 * import { encodeGenerationRequest } from "./nft_generation.ts";
 * encodeGenerationRequest(7).length; // 20
 * ```
 */
export function encodeGenerationRequest(seq: number): Uint8Array {
  const bytes = new Uint8Array(NLMSG_HDRLEN + NFGENMSG_LEN);
  const view = new DataView(bytes.buffer);
  // Netlink headers are in the host's byte order: little-endian on every platform we run on.
  view.setUint32(0, bytes.length, true);
  view.setUint16(4, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, true);
  view.setUint16(6, NLM_F_REQUEST, true);
  view.setUint32(8, seq >>> 0, true);
  view.setUint32(12, 0, true);
  return bytes;
}

/**
 * Decodes the kernel's answer to the request numbered `seq`: the generation id, or the errno
 * of a refusal.
 *
 * @throws {SyntaxError} when the bytes are not such an answer (truncated, another message type,
 * another sequence number, no `NFTA_GEN_ID`).
 *
 * @example
 * ```ts
 * import { decodeGenerationAnswer } from "./nft_generation.ts";
 * const answer = new Uint8Array(28);
 * const view = new DataView(answer.buffer);
 * view.setUint32(0, 28, true);
 * view.setUint16(4, (10 << 8) | 15, true);
 * view.setUint32(8, 7, true);
 * view.setUint16(20, 8, true); // attribute length
 * view.setUint16(22, 1, true); // NFTA_GEN_ID
 * view.setUint32(24, 42); // big-endian
 * decodeGenerationAnswer(answer, 7); // { kind: "generation", id: 42 }
 * ```
 */
export function decodeGenerationAnswer(bytes: Uint8Array, seq: number): GenerationAnswer {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < NLMSG_HDRLEN) {
    throw new SyntaxError(
      `Cannot decode a generation answer as it is shorter than a netlink header: current value is ${bytes.length} bytes`,
    );
  }
  const length = view.getUint32(0, true);
  if (length < NLMSG_HDRLEN || length > bytes.length) {
    throw new SyntaxError(
      `Cannot decode a generation answer as its length does not fit the ${bytes.length} bytes received: current value is ${length}`,
    );
  }
  const type = view.getUint16(4, true);
  const answeredSeq = view.getUint32(8, true);
  if (answeredSeq !== seq >>> 0) {
    throw new SyntaxError(
      `Cannot decode a generation answer as it answers request ${answeredSeq}, not ${seq}: current value is ${answeredSeq}`,
    );
  }
  if (type === NLMSG_ERROR) {
    if (length < NLMSG_HDRLEN + 4) {
      throw new SyntaxError(
        `Cannot decode a netlink error as it has no error code: current value is ${length} bytes`,
      );
    }
    const code = view.getInt32(NLMSG_HDRLEN, true);
    return { kind: "error", errno: -code };
  }
  const expected = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN;
  if (type !== expected) {
    throw new SyntaxError(
      `Cannot decode a generation answer as its message type is not NFT_MSG_NEWGEN (${expected}): current value is ${type}`,
    );
  }
  // Attributes follow the nfgenmsg, each 4-byte aligned: length (incl. its 4-byte header), type.
  let at = NLMSG_HDRLEN + NFGENMSG_LEN;
  while (at + 4 <= length) {
    const attrLength = view.getUint16(at, true);
    const attrType = view.getUint16(at + 2, true) & 0x3fff;
    if (attrLength < 4 || at + attrLength > length) break;
    if (attrType === NFTA_GEN_ID && attrLength >= 8) {
      return { kind: "generation", id: view.getUint32(at + 4, false) };
    }
    at += (attrLength + 3) & ~3;
  }
  throw new SyntaxError(
    `Cannot decode a generation answer as it carries no NFTA_GEN_ID: current value is ${length} bytes`,
  );
}

/** Options of {@link followGeneration}. */
export interface FollowGenerationOptions {
  /** Where a generation that cannot be read is said (once per change). */
  readonly logger: Logger;
  /**
   * Opens the netlink socket, on the first read.
   * @default {openNetfilterRequests}
   */
  readonly open?: () => NetfilterRequestsOpen;
  /**
   * How long to wait for the kernel's answer, in ms.
   * @default {1000}
   */
  readonly timeoutMs?: number;
}

/** The generation as the nat reader reads it, and the socket it is read over. */
export interface GenerationSource extends Disposable {
  /** One GETGEN; `undefined` when it cannot be told. */
  readonly read: NftGeneration;
}

/**
 * The {@link NftGeneration} the nat reader is given: one GETGEN per call, over a socket opened on
 * the first call and kept until disposal. When the id cannot be read (no socket, refused, no
 * answer, a garbled answer) it answers `undefined` and warns once; when it can be read again it
 * says so once.
 *
 * @example
 * ```ts
 * import { followGeneration } from "./nft_generation.ts";
 * import { silentLogger } from "../seams/logger.ts";
 * using generation = followGeneration({
 *   logger: silentLogger,
 *   open: () => ({ kind: "unavailable", reason: "libmnl.so.0 not found" }),
 * });
 * await generation.read(); // undefined
 * ```
 */
export function followGeneration(options: FollowGenerationOptions): GenerationSource {
  const { logger } = options;
  const open = options.open ?? openNetfilterRequests;
  const timeoutMs = options.timeoutMs ?? 1000;
  let opened: NetfilterRequestsOpen | undefined;
  let seq = 0;
  let failing: string | undefined;
  const cannot = (reason: string): undefined => {
    if (failing === undefined) {
      logger.warn(
        "Cannot read the nftables generation; the nat rule polls the node's rules, spaced by their cost",
        { reason },
      );
    }
    failing = reason;
    return undefined;
  };
  return {
    read: async () => {
      opened ??= open();
      if (opened.kind !== "ok") return cannot(opened.reason);
      seq = (seq + 1) >>> 0;
      let answer: GenerationAnswer;
      try {
        const bytes = await opened.requests.request(encodeGenerationRequest(seq), timeoutMs);
        if (bytes === undefined) return cannot(`no answer within ${timeoutMs} ms`);
        answer = decodeGenerationAnswer(bytes, seq);
      } catch (error) {
        return cannot(error instanceof Error ? error.message : String(error));
      }
      if (answer.kind === "error") return cannot(`the kernel answered errno ${answer.errno}`);
      if (failing !== undefined) logger.info("Reading the nftables generation again", {});
      failing = undefined;
      return answer.id;
    },
    [Symbol.dispose]() {
      if (opened?.kind === "ok") opened.requests[Symbol.dispose]();
    },
  };
}
