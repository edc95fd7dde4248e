import assert from "node:assert/strict";
import { runToEnd } from "../lib/seams/spawn.ts";
import { addressBytes } from "../lib/core/address.ts";
import {
  createNetlinkDeleter,
  DEFAULT_LIBRARY_PATHS,
  openNetlinkDeleter,
} from "../lib/table/netlink/netlink_deleter.ts";
import { STOPPING_REASON } from "../lib/table/deleter.ts";
import type { Received } from "../lib/seams/netlink_socket.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
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

const v4Flow: Flow = {
  family: "ipv4",
  original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
  reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
  zone: 0,
};

Deno.test("addressBytes() puts an IPv4 address in network byte order", () => {
  assert.deepEqual([...addressBytes("192.0.2.10", "ipv4") ?? []], [192, 0, 2, 10]);
});

Deno.test("addressBytes() expands a compressed IPv6 address to 16 bytes", () => {
  const expected = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x0a];
  assert.deepEqual([...addressBytes("2001:db8::10a", "ipv6") ?? []], expected);
  assert.deepEqual([...addressBytes("2001:DB8:0:0:0:0:0:10A", "ipv6") ?? []], expected);
});

Deno.test("addressBytes() reads an IPv4-mapped IPv6 address", () => {
  const bytes = [...addressBytes("::ffff:192.0.2.1", "ipv6") ?? []];
  assert.deepEqual(bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
});

Deno.test("addressBytes() rejects text that is not an address of the family", () => {
  for (
    const [text, family] of [
      ["2001:db8::1", "ipv4"],
      ["192.0.2.256", "ipv4"],
      ["192.0.2", "ipv4"],
      ["192.0.2.01", "ipv4"],
      ["192.0.2.1", "ipv6"],
      ["2001:db8::1::2", "ipv6"],
      ["2001:db8:1:2:3:4:5:6:7", "ipv6"],
      ["2001:db8:1:2:3:4:5", "ipv6"],
      ["2001:db8::g", "ipv6"],
    ] as const
  ) {
    assert.equal(addressBytes(text, family), undefined, `${text} as ${family}`);
  }
});

/** What the fake kernel holds for a flow the deleter asks about. */
type Held =
  | { readonly kind: "absent" }
  | {
    readonly kind: "entry";
    readonly id: number;
    /** `SYN_SENT` unreplied, or `ESTABLISHED` with a reply. */
    readonly state: "SYN_SENT" | "ESTABLISHED";
    /** The reply tuple's source, when NATed. */
    readonly replySrc?: string;
  };

function tuple(src: string, dst: string, sport: number, dport: number): Attr[] {
  return [[1, [[1, v4(src)], [2, v4(dst)]]], [2, [[1, u8(6)], [2, be16(sport)], [3, be16(dport)]]]];
}

/** The kernel's answer to a GET for `v4Flow`-shaped flow `flow`: the entry, as a dump lists it. */
function entryAnswer(flow: Flow, held: Extract<Held, { kind: "entry" }>, seq: number) {
  const o = flow.original;
  const established = held.state === "ESTABLISHED";
  return message(
    0x100,
    0,
    seq,
    concat([
      nfgen(2),
      attrs([
        [1, tuple(o.src, o.dst, o.sport, o.dport)],
        [2, tuple(held.replySrc ?? o.dst, o.src, o.dport, o.sport)],
        [3, be32(established ? 0xe : 0x8)],
        [7, be32(117)],
        [12, be32(held.id)],
        [4, [[1, [[1, u8(established ? 3 : 1)]]]]],
      ]),
    ]),
  );
}

/**
 * A kernel that answers GETs from `held` (by the flow's source port) and DELETEs by the same
 * table, honouring `CTA_ID` as the kernel does; it records every DELETE's id.
 */
function fakeKernel(held: ReadonlyMap<number, Held>, deleteErrno = 0) {
  const queue: Uint8Array[] = [];
  const deletes: (number | undefined)[] = [];
  let closed = false;
  const socket = {
    send(request: Uint8Array): boolean {
      const view = new DataView(request.buffer, request.byteOffset, request.byteLength);
      const answers: Uint8Array[] = [];
      for (let at = 0; at < request.length; at += view.getUint32(at, true)) {
        const type = view.getUint16(at + 4, true);
        const seq = view.getUint32(at + 8, true);
        // The source port is the first u16 of CTA_TUPLE_PROTO, after the IPv4 addresses.
        const sport = view.getUint16(at + 20 + 4 + 20 + 4 + 8 + 4, false);
        const entry = held.get(sport) ?? { kind: "absent" };
        const id = attribute(view, at, 12);
        if (type === 0x101) {
          answers.push(
            entry.kind === "entry" ? entryAnswer(flowFrom(sport), entry, seq) : ack(seq, 2),
          );
        } else if (type === 0x102) {
          deletes.push(id);
          const miss = entry.kind === "absent" || (id !== undefined && id !== entry.id);
          answers.push(ack(seq, miss ? 2 : deleteErrno));
        }
      }
      queue.push(concat(answers));
      return true;
    },
    receiveNow(buffer: Uint8Array): Received {
      const next = queue.shift();
      if (next === undefined) return { kind: "empty" };
      buffer.set(next);
      return { kind: "data", length: next.length };
    },
    close() {
      closed = true;
    },
  };
  return { socket, deletes, closed: () => closed };
}

/** The u32 top-level attribute `type` of the message at `at`, when present. */
function attribute(view: DataView, at: number, type: number): number | undefined {
  const end = at + view.getUint32(at, true);
  for (let a = at + 20; a < end; a += (view.getUint16(a, true) + 3) & ~3) {
    if ((view.getUint16(a + 2, true) & 0x3fff) === type) return view.getUint32(a + 4, false);
  }
  return undefined;
}

function flowFrom(sport: number): Flow {
  return {
    ...v4Flow,
    original: { ...v4Flow.original, sport },
    reply: { ...v4Flow.reply, dport: sport },
  };
}

Deno.test("netlink delete() deletes a SYN_SENT flow by the kernel id its GET read", async () => {
  const kernel = fakeKernel(new Map([[40000, { kind: "entry", id: 77, state: "SYN_SENT" }]]));
  using deleter = createNetlinkDeleter(kernel.socket);
  assert.equal(deleter.name, "netlink");
  const outcome = await deleter.delete([v4Flow]);
  assert.deepEqual(outcome, { deleted: [v4Flow], gone: [], failed: [] });
  assert.deepEqual(kernel.deletes, [77]);
});

Deno.test("netlink delete() spares an entry re-created under the judged flow's tuple", async () => {
  const kernel = fakeKernel(new Map([[40000, { kind: "entry", id: 78, state: "SYN_SENT" }]]));
  using deleter = createNetlinkDeleter(kernel.socket);
  const judged = { ...v4Flow, id: 77 };
  assert.deepEqual(await deleter.delete([judged]), { deleted: [], gone: [judged], failed: [] });
  assert.deepEqual(kernel.deletes, [], "no DELETE sent");
  const current = { ...v4Flow, id: 78 };
  assert.deepEqual(await deleter.delete([current]), { deleted: [current], gone: [], failed: [] });
  assert.deepEqual(kernel.deletes, [78]);
});

Deno.test("netlink delete() sends no DELETE for an entry that saw a reply or was NATed since", async () => {
  const kernel = fakeKernel(
    new Map<number, Held>([
      [40000, { kind: "entry", id: 1, state: "ESTABLISHED" }],
      [40001, { kind: "entry", id: 2, state: "SYN_SENT", replySrc: "10.0.0.5" }],
    ]),
  );
  using deleter = createNetlinkDeleter(kernel.socket);
  const flows = [v4Flow, flowFrom(40001)];
  assert.deepEqual(await deleter.delete(flows), { deleted: [], gone: flows, failed: [] });
  assert.deepEqual(kernel.deletes, []);
});

Deno.test("netlink delete() reports an absent flow as gone and a refused DELETE as failed", async () => {
  const absent = fakeKernel(new Map());
  using gone = createNetlinkDeleter(absent.socket);
  assert.deepEqual(await gone.delete([v4Flow]), { deleted: [], gone: [v4Flow], failed: [] });
  const refusing = fakeKernel(new Map([[40000, { kind: "entry", id: 5, state: "SYN_SENT" }]]), 1);
  using refused = createNetlinkDeleter(refusing.socket);
  assert.deepEqual(await refused.delete([v4Flow]), {
    deleted: [],
    gone: [],
    failed: [{ flow: v4Flow, reason: "Cannot delete flow: EPERM (needs CAP_NET_ADMIN)" }],
  });
});

Deno.test("netlink delete() of an empty list deletes nothing", async () => {
  const kernel = fakeKernel(new Map());
  using deleter = createNetlinkDeleter(kernel.socket);
  assert.deepEqual(await deleter.delete([]), { deleted: [], gone: [], failed: [] });
});

Deno.test("netlink delete() fails a flow whose address does not fit its family, with a reason", async () => {
  const kernel = fakeKernel(new Map([[40000, { kind: "entry", id: 5, state: "SYN_SENT" }]]));
  using deleter = createNetlinkDeleter(kernel.socket);
  const bad: Flow = { ...v4Flow, original: { ...v4Flow.original, dst: "2001:db8::10" } };
  const outcome = await deleter.delete([bad, v4Flow]);
  assert.deepEqual(outcome.deleted, [v4Flow]);
  assert.deepEqual(outcome.gone, []);
  assert.equal(outcome.failed.length, 1);
  assert.equal(outcome.failed[0]?.flow, bad);
  assert.match(outcome.failed[0]?.reason ?? "", /^Cannot encode flow as ipv4: .*2001:db8::10/);
});

Deno.test("netlink delete() leaves every flow with the stopping reason once the agent stops", async () => {
  const kernel = fakeKernel(new Map([[40000, { kind: "entry", id: 5, state: "SYN_SENT" }]]));
  using deleter = createNetlinkDeleter(kernel.socket);
  const stop = new AbortController();
  stop.abort();
  const outcome = await deleter.delete([v4Flow], stop.signal);
  assert.deepEqual(outcome.failed, [{ flow: v4Flow, reason: STOPPING_REASON }]);
  assert.deepEqual(kernel.deletes, []);
});

Deno.test("netlink delete() refuses to work once disposed, and closes its socket", async () => {
  const kernel = fakeKernel(new Map([[40000, { kind: "entry", id: 5, state: "SYN_SENT" }]]));
  const deleter = createNetlinkDeleter(kernel.socket);
  deleter[Symbol.dispose]();
  deleter[Symbol.dispose]();
  assert.equal(kernel.closed(), true);
  const outcome = await deleter.delete([v4Flow]);
  assert.equal(outcome.failed.length, 1);
  assert.match(outcome.failed[0]?.reason ?? "", /closed/);
  assert.deepEqual(kernel.deletes, []);
});

Deno.test("openNetlinkDeleter() reports a missing library as unavailable", () => {
  const opened = openNetlinkDeleter({ libraryPaths: ["/nonexistent/libmnl.so.0"] });
  assert.deepEqual(opened, { kind: "unavailable", reason: "libmnl.so.0 not found" });
});

Deno.test({
  name: "openNetlinkDeleter() reports a missing --allow-ffi as unavailable",
  permissions: { ffi: false },
  fn: () => {
    assert.deepEqual(openNetlinkDeleter(), {
      kind: "unavailable",
      reason: "--allow-ffi not granted",
    });
  },
});

Deno.test("openNetlinkDeleter() falls back, without crashing, under a path-scoped --allow-ffi", async () => {
  const fixture = new URL("./fixtures/netlink-open.ts", import.meta.url).pathname;
  const libraries = DEFAULT_LIBRARY_PATHS.filter((p) => p.startsWith("/")).join(",");
  const scoped = await runToEnd(denoSpawn, Deno.execPath(), [
    "run",
    "--no-check",
    `--allow-ffi=${libraries}`,
    fixture,
  ]);
  assert.equal(scoped.code, 0, scoped.stderr);
  assert.equal(
    scoped.stdout,
    "unavailable: --allow-ffi not granted (libmnl.so.0 loads, libc.so.6 does not)\n",
  );
  const none = await runToEnd(denoSpawn, Deno.execPath(), ["run", "--no-check", fixture]);
  assert.match(none.stdout, /^unavailable: --allow-ffi not granted/);
});
