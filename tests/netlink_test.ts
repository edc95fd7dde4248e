import assert from "node:assert/strict";
import { runToEnd } from "../lib/seams/spawn.ts";
import { addressBytes } from "../lib/core/address.ts";
import {
  DEFAULT_LIBRARY_PATHS,
  openNetlinkDeleter,
  portBytes,
} from "../lib/table/netlink/netlink_deleter.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import type { Flow } from "../lib/core/flow.ts";

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

Deno.test("portBytes() puts a port in network byte order and rejects out-of-range ports", () => {
  assert.deepEqual([...portBytes(443) ?? []], [0x01, 0xbb]);
  assert.deepEqual([...portBytes(65535) ?? []], [0xff, 0xff]);
  assert.equal(portBytes(65536), undefined);
  assert.equal(portBytes(-1), undefined);
  assert.equal(portBytes(80.5), undefined);
});

Deno.test("openNetlinkDeleter() reports a missing library as unavailable", () => {
  const opened = openNetlinkDeleter({
    libraryPaths: ["/nonexistent/libnetfilter_conntrack.so.3"],
  });
  assert.deepEqual(opened, {
    kind: "unavailable",
    reason: "libnetfilter_conntrack.so.3 not found",
  });
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

// The deleter tests need the library (and --allow-ffi); a socket needs no privileges.
const available = (() => {
  const probe = openNetlinkDeleter();
  if (probe.kind === "ok") probe.deleter[Symbol.dispose]();
  return probe.kind === "ok";
})();

Deno.test({
  name: "netlink delete() of an empty list deletes nothing",
  ignore: !available,
  fn: async () => {
    using deleter = openedDeleter();
    assert.equal(deleter.name, "netlink");
    assert.deepEqual(await deleter.delete([]), { deleted: [], gone: [], failed: [] });
  },
});

Deno.test({
  name: "netlink delete() fails a flow whose address does not fit its family, with a reason",
  ignore: !available,
  fn: async () => {
    using deleter = openedDeleter();
    const bad: Flow = { ...v4Flow, original: { ...v4Flow.original, dst: "2001:db8::10" } };
    const outcome = await deleter.delete([bad]);
    assert.deepEqual(outcome.deleted, []);
    assert.deepEqual(outcome.gone, []);
    assert.equal(outcome.failed.length, 1);
    assert.equal(outcome.failed[0]?.flow, bad);
    assert.match(outcome.failed[0]?.reason ?? "", /^Cannot encode flow as ipv4: .*2001:db8::10/);
  },
});

Deno.test({
  name: "netlink delete() refuses to work once disposed",
  ignore: !available,
  fn: async () => {
    const deleter = openedDeleter();
    deleter[Symbol.dispose]();
    deleter[Symbol.dispose]();
    const outcome = await deleter.delete([v4Flow]);
    assert.equal(outcome.failed.length, 1);
    assert.match(outcome.failed[0]?.reason ?? "", /closed/);
  },
});

function openedDeleter() {
  const again = openNetlinkDeleter();
  if (again.kind !== "ok") throw new Error(`Cannot open netlink: ${again.reason}`);
  return again.deleter;
}

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
  assert.match(scoped.stdout, /^unavailable: --allow-ffi must be granted for all paths/);
  const none = await runToEnd(denoSpawn, Deno.execPath(), ["run", "--no-check", fixture]);
  assert.match(none.stdout, /^unavailable: --allow-ffi not granted/);
});
