import assert from "node:assert/strict";
import { dumpRequest, readDumpBuffer } from "../lib/table/netlink/ctnetlink.ts";
import {
  type Attr,
  attrs as encodeAttrs,
  be16,
  be32,
  concat,
  message as build,
  nfgen,
  u8,
  v4,
} from "./support/netlink_messages.ts";

/** A message of the kernel's answer: no flags. */
const message = (type: number, seq: number, payload: Uint8Array) => build(type, 0, seq, payload);

const CT_NEW = 0x100;
const SEQ = 42;

function tuple(src: string, dst: string, sport: number, dport: number, proto = 6): Attr[] {
  return [
    [1, [[1, v4(src)], [2, v4(dst)]]],
    [2, [[1, u8(proto)], [2, be16(sport)], [3, be16(dport)]]],
  ];
}

function entry(options: {
  readonly state?: number;
  readonly status?: number;
  readonly proto?: number;
  readonly extra?: readonly Attr[];
  readonly reply?: readonly Attr[];
} = {}): Uint8Array {
  const attrs: Attr[] = [
    [1, tuple("198.51.100.2", "192.0.2.10", 40000, 80, options.proto)],
    [2, options.reply ?? tuple("192.0.2.10", "198.51.100.2", 80, 40000, options.proto)],
    [3, be32(options.status ?? 0x8)],
    [7, be32(117)],
    [12, be32(3000000007)],
    [4, [[1, [[1, u8(options.state ?? 1)]]]]],
    ...(options.extra ?? []),
  ];
  return message(CT_NEW, SEQ, concat([nfgen(2), encodeAttrs(attrs)]));
}

const done = () => message(3, SEQ, new Uint8Array(4));

function read(...messages: Uint8Array[]) {
  const bytes = concat(messages);
  return readDumpBuffer(bytes, bytes.length, SEQ, 1_700_000_000);
}

Deno.test("dumpRequest() asks for a dump of every unreplied entry of both families", () => {
  const bytes = dumpRequest(7);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0, true), bytes.length);
  assert.equal(view.getUint16(4, true), 0x101); // CTNETLINK, CT_GET
  assert.equal(view.getUint16(6, true), 0x301); // REQUEST | DUMP
  assert.equal(view.getUint32(8, true), 7);
  assert.equal(bytes[16], 0); // AF_UNSPEC
  // CTA_STATUS 0 under CTA_STATUS_MASK IPS_SEEN_REPLY
  assert.deepEqual([view.getUint16(22, true), view.getUint32(24, false)], [3, 0]);
  assert.deepEqual([view.getUint16(30, true), view.getUint32(32, false)], [26, 2]);
});

Deno.test("readDumpBuffer() reads a SYN_SENT unreplied entry into a candidate", () => {
  const result = read(entry(), done());
  assert.equal(result.kind, "entries");
  if (result.kind !== "entries") return;
  assert.equal(result.done, true);
  assert.equal(result.entries, 1);
  assert.deepEqual(result.candidates, [{
    flow: {
      family: "ipv4",
      original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
      reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
      zone: 0,
    },
    key: "0/-/- src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80",
    timeout: 117,
    id: 3000000007,
  }]);
});

Deno.test("readDumpBuffer() keeps zones, directional zones and the kernel's start time", () => {
  const reply = [...tuple("10.0.0.5", "198.51.100.2", 8080, 40000), [3, be16(4)] as Attr];
  const start = new Uint8Array(8);
  new DataView(start.buffer).setBigUint64(0, 1_699_999_990n * 1_000_000_000n, false);
  const result = read(entry({ reply, extra: [[18, be16(7)], [20, [[1, start]]]] }));
  if (result.kind !== "entries") throw new Error(result.kind);
  const c = result.candidates[0]!;
  assert.equal(c.flow.zone, 7);
  assert.equal(c.flow.replyZone, 4);
  assert.equal(c.flow.origZone, undefined);
  assert.equal(c.flow.reply.src, "10.0.0.5");
  assert.equal(c.deltaTime, 10);
  assert.equal(c.key, "7/-/4 src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80");
  assert.equal(result.done, false);
});

Deno.test("readDumpBuffer() passes over replied, other-state and non-TCP entries", () => {
  const result = read(entry({ status: 0x2 }), entry({ state: 3 }), entry({ proto: 17 }), done());
  assert.equal(result.kind === "entries" && result.entries, 3);
  assert.equal(result.kind === "entries" && result.candidates.length, 0);
  assert.equal(result.kind === "entries" && result.unparsable, 0);
});

Deno.test("readDumpBuffer() counts a malformed entry and says why, and reads on", () => {
  const good = entry();
  const bad = good.slice();
  // Make the first attribute claim more bytes than the message holds.
  new DataView(bad.buffer).setUint16(20, 0xfff0, true);
  const result = read(bad, good, done());
  if (result.kind !== "entries") throw new Error(result.kind);
  assert.equal(result.unparsable, 1);
  assert.match(result.firstReason ?? "", /overruns/);
  assert.equal(result.candidates.length, 1);
});

Deno.test("readDumpBuffer() turns NLMSG_ERROR into the errno, and skips other sequences", () => {
  const error = new Uint8Array(20);
  new DataView(error.buffer).setInt32(0, -1, true);
  assert.deepEqual(read(message(2, SEQ, error)), { kind: "error", errno: 1 });
  const other = message(CT_NEW, SEQ + 1, entry().subarray(16));
  const result = read(other, done());
  assert.equal(result.kind === "entries" && result.entries, 0);
});

Deno.test("readDumpBuffer() rejects a message that claims more than the buffer holds", () => {
  const bytes = entry();
  new DataView(bytes.buffer).setUint32(0, bytes.length + 100, true);
  assert.equal(readDumpBuffer(bytes, bytes.length, SEQ, 0).kind, "error");
});
