import assert from "node:assert/strict";
import { parseCidr } from "../lib/core/cidr.ts";
import type { Flow } from "../lib/core/flow.ts";
import { BPF_MAXINSNS, eventFilterProgram } from "../lib/table/netlink/bpf_filter.ts";
import { getRequests } from "../lib/table/netlink/ct_get.ts";
import type { BpfInstruction } from "../lib/seams/netlink_socket.ts";

/** The kernel's `nla_find` over `[from, to)`: the offset of the first attribute of `type`, or 0. */
function nlaFind(view: DataView, from: number, to: number, type: number): number {
  for (let at = from; at + 4 <= to;) {
    const len = view.getUint16(at, true);
    if (len < 4 || at + len > to) return 0;
    if ((view.getUint16(at + 2, true) & 0x3fff) === type) return at;
    at += (len + 3) & ~3;
  }
  return 0;
}

/**
 * A classic BPF interpreter with the two netlink ancillary loads, enough for the filter: what the
 * kernel would return for the message.
 */
function run(program: readonly BpfInstruction[], bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mem = new Uint32Array(16);
  let a = 0, x = 0;
  for (let pc = 0; pc < program.length; pc++) {
    const { code, jt, jf, k } = program[pc]!;
    const cls = code & 0x07;
    const ancillary = (k | 0) - -0x1000;
    switch (cls) {
      case 0x00: { // LD
        const mode = code & 0xe0, size = code & 0x18;
        if (mode === 0x00) a = k;
        else if (mode === 0x60) a = mem[k]!;
        else if (mode === 0x20 && (k | 0) < 0) {
          if (ancillary === 12) a = a + 4 > bytes.length ? 0 : nlaFind(view, a, bytes.length, x);
          else if (ancillary === 16) {
            const len = view.getUint16(a, true);
            a = len > bytes.length - a ? 0 : nlaFind(view, a + 4, a + len, x);
          } else throw new Error(`ancillary ${ancillary}`);
        } else {
          const at = mode === 0x40 ? x + k : k;
          const width = size === 0x10 ? 1 : size === 0x08 ? 2 : 4;
          if (at + width > bytes.length) return 0;
          a = width === 1
            ? view.getUint8(at)
            : width === 2
            ? view.getUint16(at)
            : view.getUint32(at);
        }
        break;
      }
      case 0x01: // LDX
        x = k;
        break;
      case 0x02: // ST
        mem[k] = a;
        break;
      case 0x04: // ALU (only AND K is used)
        assert.equal(code & 0xf0, 0x50);
        a = (a & k) >>> 0;
        break;
      case 0x05: { // JMP
        const op = code & 0xf0;
        if (op === 0x00) pc += k;
        else if (op === 0x10) pc += a === k ? jt : jf;
        else throw new Error(`jump ${op}`);
        break;
      }
      case 0x06:
        return k;
      case 0x07:
        x = a;
        break;
    }
  }
  throw new Error("fell off the end of the program");
}

function flow(src: string, dst: string): Flow {
  const family = dst.includes(":") ? "ipv6" : "ipv4";
  return {
    family,
    original: { src, dst, sport: 40000, dport: 80 },
    reply: { src: dst, dst: src, sport: 80, dport: 40000 },
    zone: 0,
  };
}

/** A message with the tuple an event carries (a GET request has the same attributes). */
function keeps(blocks: readonly string[], dst: string, proto = 6): boolean {
  const src = dst.includes(":") ? "2001:db8:1::2" : "198.51.100.2";
  const bytes = getRequests([flow(src, dst)], 1).slice();
  if (proto !== 6) {
    const at = bytes.indexOf(6, 20);
    bytes[at] = proto;
  }
  return run(eventFilterProgram(blocks.map(parseCidr)), bytes) !== 0;
}

Deno.test("eventFilterProgram() keeps TCP towards the blocks and drops the rest", () => {
  const blocks = ["192.0.2.0/25", "2001:db8:2::/64", "203.0.113.7"];
  assert.equal(keeps(blocks, "192.0.2.0"), true);
  assert.equal(keeps(blocks, "192.0.2.127"), true);
  assert.equal(keeps(blocks, "192.0.2.128"), false);
  assert.equal(keeps(blocks, "203.0.113.7"), true);
  assert.equal(keeps(blocks, "203.0.113.8"), false);
  assert.equal(keeps(blocks, "2001:db8:2::ffff"), true);
  assert.equal(keeps(blocks, "2001:db8:2:0:ffff::1"), true);
  assert.equal(keeps(blocks, "2001:db8:2:1::1"), false);
  assert.equal(keeps(blocks, "192.0.2.10", 17), false);
});

Deno.test("eventFilterProgram() bridges IPv4-mapped IPv6 both ways, as the target filter does", () => {
  assert.equal(keeps(["192.0.2.0/24"], "::ffff:192.0.2.9"), true);
  assert.equal(keeps(["192.0.2.0/24"], "::ffff:192.0.3.9"), false);
  assert.equal(keeps(["::ffff:192.0.2.0/120"], "192.0.2.9"), true);
  assert.equal(keeps(["::ffff:192.0.2.0/120"], "192.0.3.9"), false);
  // `::/0` is every IPv6 destination, not IPv4 too.
  assert.equal(keeps(["::/0"], "192.0.2.9"), false);
  assert.equal(keeps(["::/0"], "2001:db8::1"), true);
});

Deno.test("eventFilterProgram() keeps every TCP event when no block is given", () => {
  assert.equal(keeps([], "198.51.100.200"), true);
  assert.equal(keeps([], "2001:db8::1"), true);
  assert.equal(keeps([], "198.51.100.200", 17), false);
  assert.equal(keeps(["0.0.0.0/0"], "198.51.100.200"), true);
});

Deno.test("eventFilterProgram() refuses more blocks than a program can hold", () => {
  const many = Array.from({ length: 2000 }, (_, i) => parseCidr(`10.${i >> 8}.${i & 255}.0/24`));
  assert.throws(() => eventFilterProgram(many), RangeError);
  assert.ok(eventFilterProgram(many.slice(0, 100)).length < BPF_MAXINSNS);
});
