import assert from "node:assert/strict";
import { deleteRequests, readAcks } from "../lib/table/netlink/ctnetlink.ts";
import { type DeleteAnswer, deleteEntries } from "../lib/table/netlink/ct_delete.ts";
import type { Received } from "../lib/seams/netlink_socket.ts";
import type { Flow } from "../lib/core/flow.ts";
import {
  ack,
  type Attr,
  attrs,
  be16,
  be32,
  concat,
  message,
  nfgen,
  u8,
  v4,
} from "./support/netlink_messages.ts";

const CT_DELETE = 0x102;
const REQUEST_ACK = 0x1 | 0x4;
const AF_INET = 2;
const AF_INET6 = 10;

const v4Flow: Flow = {
  family: "ipv4",
  original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
  reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
  zone: 0,
};

const v6Flow: Flow = {
  family: "ipv6",
  original: { src: "2001:db8::2", dst: "2001:db8:100::10", sport: 40200, dport: 443 },
  reply: { src: "2001:db8:100::10", dst: "2001:db8::2", sport: 443, dport: 40200 },
  zone: 7,
  origZone: 9,
};

/** 16 bytes from 32 hex digits. */
function hex(digits: string): Uint8Array {
  return Uint8Array.from(digits.match(/../g)!.map((pair) => parseInt(pair, 16)));
}

/** `CTA_TUPLE_PROTO` of a TCP tuple. */
function tcp(sport: number, dport: number): Attr {
  return [2, [[1, u8(6)], [2, be16(sport)], [3, be16(dport)]]];
}

Deno.test("deleteRequests() encodes an IPv4 DELETE by original tuple and kernel id", () => {
  const expected = message(
    CT_DELETE,
    REQUEST_ACK,
    5,
    concat([
      nfgen(AF_INET),
      attrs([
        [1, [[1, [[1, v4("198.51.100.2")], [2, v4("192.0.2.10")]]], tcp(40000, 80)]],
        [12, be32(3000000007)],
      ]),
    ]),
  );
  assert.deepEqual(deleteRequests([{ flow: v4Flow, id: 3000000007 }], 5), expected);
});

Deno.test("deleteRequests() encodes an IPv6 DELETE with its zone and directional zone", () => {
  const expected = message(
    CT_DELETE,
    REQUEST_ACK,
    1,
    concat([
      nfgen(AF_INET6),
      attrs([
        [1, [
          [1, [
            [3, hex("20010db8000000000000000000000002")],
            [4, hex("20010db8010000000000000000000010")],
          ]],
          tcp(40200, 443),
          [3, be16(9)],
        ]],
        [18, be16(7)],
      ]),
    ]),
  );
  assert.deepEqual(deleteRequests([{ flow: v6Flow }], 1), expected);
});

Deno.test("deleteRequests() puts many DELETEs in one buffer, numbered in order", () => {
  const one = deleteRequests([{ flow: v4Flow, id: 1 }], 10);
  const two = deleteRequests([{ flow: v6Flow, id: 2 }], 11);
  assert.deepEqual(
    deleteRequests([{ flow: v4Flow, id: 1 }, { flow: v6Flow, id: 2 }], 10),
    concat([one, two]),
  );
});

Deno.test("deleteRequests() always carries the original tuple, without which the kernel flushes", () => {
  for (const flow of [v4Flow, v6Flow]) {
    const bytes = deleteRequests([{ flow }], 1);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    // The first attribute after the headers is CTA_TUPLE_ORIG, nested.
    assert.equal(view.getUint16(16 + 4 + 2, true), 1 | 0x8000);
  }
});

Deno.test("deleteRequests() refuses an address of another family and a port out of range", () => {
  const mixed: Flow = { ...v4Flow, original: { ...v4Flow.original, dst: "2001:db8::10" } };
  assert.throws(() => deleteRequests([{ flow: mixed }], 1), RangeError);
  const port: Flow = { ...v4Flow, original: { ...v4Flow.original, sport: 65536 } };
  assert.throws(
    () => deleteRequests([{ flow: port }], 1),
    new RangeError("Cannot encode port in a DELETE: current value is 65536"),
  );
  assert.throws(() => deleteRequests([{ flow: v4Flow, id: 2 ** 32 }], 1), RangeError);
});

Deno.test("readAcks() reads each acknowledgement's sequence number and errno", () => {
  const datagram = concat([ack(7, 0), ack(8, 2), message(0x100, 0, 9, nfgen(2)), ack(10, 1)]);
  assert.deepEqual(readAcks(datagram, datagram.length), [
    { seq: 7, errno: 0 },
    { seq: 8, errno: 2 },
    { seq: 10, errno: 1 },
  ]);
});

Deno.test("readAcks() stops at a message that overruns the datagram", () => {
  const datagram = concat([ack(7, 0), ack(8, 0)]);
  assert.deepEqual(readAcks(datagram, datagram.length - 4), [{ seq: 7, errno: 0 }]);
});

/** A kernel that acknowledges each DELETE of a datagram with the errno given for its index. */
function fakeKernel(errnos: readonly (number | undefined)[]) {
  const queue: Uint8Array[] = [];
  const sent: Uint8Array[] = [];
  let index = 0;
  return {
    sent,
    send(request: Uint8Array): boolean {
      sent.push(request.slice());
      const view = new DataView(request.buffer, request.byteOffset, request.byteLength);
      const acks: Uint8Array[] = [];
      for (let at = 0; at < request.length; at += view.getUint32(at, true)) {
        const errno = errnos[index++];
        if (errno !== undefined) acks.push(ack(view.getUint32(at + 8, true), errno));
      }
      queue.push(concat(acks));
      return true;
    },
    receiveNow(buffer: Uint8Array): Received {
      const next = queue.shift();
      if (next === undefined) return { kind: "empty" };
      buffer.set(next);
      return { kind: "data", length: next.length };
    },
  };
}

Deno.test("deleteEntries() maps 0 to deleted, ENOENT to gone and other errors to failures", () => {
  const kernel = fakeKernel([0, 2, 1, undefined]);
  const answers: DeleteAnswer[] = [];
  const flows = [v4Flow, v6Flow, v4Flow, v6Flow].map((flow) => ({ flow }));
  assert.equal(deleteEntries(kernel, flows, (i, a) => answers[i] = a), true);
  assert.deepEqual(answers, [
    { kind: "deleted" },
    { kind: "gone" },
    { kind: "failed", reason: "Cannot delete flow: EPERM (needs CAP_NET_ADMIN)" },
    { kind: "failed", reason: "Cannot delete flow: no answer from the kernel" },
  ]);
  assert.equal(kernel.sent.length, 1, "one datagram for four DELETEs");
});

Deno.test("deleteEntries() sends 300 DELETEs in three datagrams", () => {
  const kernel = fakeKernel(new Array(300).fill(0));
  let deleted = 0;
  deleteEntries(kernel, new Array(300).fill({ flow: v4Flow }), (_, a) => {
    if (a.kind === "deleted") deleted++;
  });
  assert.equal(deleted, 300);
  assert.equal(kernel.sent.length, 3);
});
