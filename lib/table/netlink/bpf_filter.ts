/**
 * The classic BPF program attached to the conntrack event socket (`SO_ATTACH_FILTER`): the kernel
 * runs it on each event before queueing it, and drops every event that is not TCP or whose
 * original destination lies outside the operator's destination blocks, so a node's UDP traffic and
 * its TCP traffic to other destinations never wake the agent nor fill its socket.
 *
 * The program finds the attributes with the kernel's netlink helpers (`SKF_AD_NLATTR` and
 * `SKF_AD_NLATTR_NEST`), as libnetfilter_conntrack's filter API does, so attribute order and
 * optional attributes do not matter. It keeps what the agent's own target filter would keep and
 * may keep more (ports and excluded blocks are left to that filter), never less: an event it
 * cannot read is kept, and the agent decides.
 *
 * Pure: builds instructions; `lib/seams/netlink_socket.ts` attaches them.
 *
 * @module
 */
import type { Cidr } from "../../core/cidr.ts";
import type { BpfInstruction } from "../../seams/netlink_socket.ts";

// Opcode parts (linux/filter.h, linux/bpf_common.h).
const LD = 0x00, LDX = 0x01, ST = 0x02, ALU = 0x04, JMP = 0x05, RET = 0x06, MISC = 0x07;
const W = 0x00, B = 0x10;
const IMM = 0x00, ABS = 0x20, IND = 0x40, MEM = 0x60;
const AND = 0x50, JEQ = 0x10, K = 0x00, TAX = 0x00;
/** Ancillary loads: `A = offset of attribute X` from offset A, at top level or inside a nest. */
const SKF_AD_OFF = -0x1000;
const SKF_AD_NLATTR = 12;
const SKF_AD_NLATTR_NEST = 16;

const NLMSG_HEADER = 16;
const NFGENMSG = 4;
const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;

/** `ret` values: the whole message, or nothing. */
const KEEP = 0xffff_ffff;
const DROP = 0;
/** Scratch memory slots. */
const M_TUPLE = 0, M_FAMILY = 1, M_ADDR = 2;

/** The kernel's limit on a classic BPF program's length. */
export const BPF_MAXINSNS = 4096;

const MAPPED_PREFIX = 0xffffn << 32n;

function op(code: number, k = 0, jt = 0, jf = 0): BpfInstruction {
  return { code, jt, jf, k: k >>> 0 };
}

/** `A = offset of attribute `type` (nested in the attribute at A when `nested`); drop if none. */
function findAttribute(type: number, nested: boolean): BpfInstruction[] {
  return [
    op(LDX | W | IMM, type),
    op(LD | W | ABS, SKF_AD_OFF + (nested ? SKF_AD_NLATTR_NEST : SKF_AD_NLATTR)),
    // Not found: keep the event (the agent reads it and decides) rather than drop blindly.
    op(JMP | JEQ | K, 0, 0, 1),
    op(RET | K, KEEP),
  ];
}

/** The blocks as the program compares them: IPv4 as one word, IPv6 as four. */
interface Blocks {
  readonly v4: readonly { readonly network: bigint; readonly prefix: number }[];
  readonly v6: readonly { readonly network: bigint; readonly prefix: number }[];
}

/**
 * Splits the blocks by the family of the events they match, bridging IPv4-mapped IPv6 both ways
 * exactly as `addressInCidr` does.
 */
function blocksByFamily(destinations: readonly Cidr[]): Blocks {
  const v4: { network: bigint; prefix: number }[] = [];
  const v6: { network: bigint; prefix: number }[] = [];
  for (const cidr of destinations) {
    if (cidr.family === "ipv4") {
      v4.push({ network: cidr.network, prefix: cidr.prefix });
      v6.push({ network: MAPPED_PREFIX | cidr.network, prefix: cidr.prefix + 96 });
    } else {
      v6.push({ network: cidr.network, prefix: cidr.prefix });
      if (cidr.prefix >= 96 && cidr.network >> 32n === 0xffffn) {
        v4.push({ network: cidr.network & 0xffff_ffffn, prefix: cidr.prefix - 96 });
      }
    }
  }
  return { v4, v6 };
}

/** The mask of a `prefix`-bit block over one 32-bit word of the address starting at `bit`. */
function wordMask(prefix: number, bit: number): number {
  const bits = Math.max(0, Math.min(32, prefix - bit));
  return bits === 0 ? 0 : bits === 32 ? 0xffff_ffff : (0xffff_ffff << (32 - bits)) >>> 0;
}

/** Compares the address words in scratch memory with each block; keeps on the first match. */
function matchBlocks(
  blocks: Blocks["v4"],
  words: number,
): BpfInstruction[] {
  const out: BpfInstruction[] = [];
  for (const block of blocks) {
    const tests: { word: number; mask: number; value: number }[] = [];
    for (let w = 0; w < words; w++) {
      const mask = wordMask(block.prefix, w * 32);
      if (mask === 0) continue;
      const shift = BigInt((words - 1 - w) * 32);
      const value = Number((block.network >> shift) & 0xffff_ffffn) & mask;
      tests.push({ word: w, mask, value: value >>> 0 });
    }
    if (tests.length === 0) return [...out, op(RET | K, KEEP)];
    // Each test is 3 instructions; a failed one skips the rest of the block and its `ret`.
    tests.forEach((t, i) => {
      const remaining = (tests.length - 1 - i) * 3 + 1;
      out.push(op(LD | MEM, M_ADDR + t.word));
      out.push(op(ALU | AND | K, t.mask));
      out.push(op(JMP | JEQ | K, t.value, 0, remaining));
    });
    out.push(op(RET | K, KEEP));
  }
  out.push(op(RET | K, DROP));
  return out;
}

/**
 * The filter program: keep a TCP event whose original destination lies in one of
 * `destinations` (every TCP event when the list is empty); drop the rest.
 *
 * @throws {RangeError} when there are so many blocks that the program exceeds the kernel's limit.
 *
 * @example
 * ```ts
 * import { eventFilterProgram } from "./bpf_filter.ts";
 * import { parseCidr } from "../../core/cidr.ts";
 * eventFilterProgram([parseCidr("192.0.2.0/24")]).length > 0; // true
 * ```
 */
export function eventFilterProgram(destinations: readonly Cidr[]): BpfInstruction[] {
  const program: BpfInstruction[] = [
    op(LD | B | ABS, NLMSG_HEADER),
    op(ST, M_FAMILY),
    op(LD | W | IMM, NLMSG_HEADER + NFGENMSG),
    ...findAttribute(CTA_TUPLE_ORIG, false),
    op(ST, M_TUPLE),
    ...findAttribute(CTA_TUPLE_PROTO, true),
    ...findAttribute(CTA_PROTO_NUM, true),
    op(MISC | TAX),
    op(LD | B | IND, 4),
    op(JMP | JEQ | K, IPPROTO_TCP, 1, 0),
    op(RET | K, DROP),
  ];
  if (destinations.length === 0) {
    program.push(op(RET | K, KEEP));
    return program;
  }
  const blocks = blocksByFamily(destinations);
  const v4 = [
    op(LD | MEM, M_TUPLE),
    ...findAttribute(CTA_TUPLE_IP, true),
    ...findAttribute(CTA_IP_V4_DST, true),
    op(MISC | TAX),
    op(LD | W | IND, 4),
    op(ST, M_ADDR),
    ...matchBlocks(blocks.v4, 1),
  ];
  const v6 = [
    op(LD | MEM, M_TUPLE),
    ...findAttribute(CTA_TUPLE_IP, true),
    ...findAttribute(CTA_IP_V6_DST, true),
    op(MISC | TAX),
    ...[0, 1, 2, 3].flatMap((w) => [op(LD | W | IND, 4 + 4 * w), op(ST, M_ADDR + w)]),
    ...matchBlocks(blocks.v6, 4),
  ];
  program.push(
    op(LD | MEM, M_FAMILY),
    op(JMP | JEQ | K, AF_INET, 1, 0),
    // A long jump over the IPv4 part would not fit the 8-bit offsets: `ja` takes 32 bits.
    op(JMP | K, v4.length),
    ...v4,
    op(LD | MEM, M_FAMILY),
    op(JMP | JEQ | K, AF_INET6, 1, 0),
    op(RET | K, KEEP),
    ...v6,
  );
  if (program.length > BPF_MAXINSNS) {
    throw new RangeError(
      `Cannot filter conntrack events in the kernel as the destination blocks make too long a ` +
        `program: current value is ${destinations.length} blocks (${program.length} instructions)`,
    );
  }
  return program;
}
