import assert from "node:assert/strict";
import { openNetlinkLister } from "../lib/table/netlink/netlink_lister.ts";

Deno.test("openNetlinkLister() reports a missing library as unavailable", () => {
  assert.deepEqual(openNetlinkLister({ libraryPaths: ["/nonexistent/libmnl.so.0"] }), {
    kind: "unavailable",
    reason: "libmnl.so.0 not found",
  });
});

Deno.test({
  name: "openNetlinkLister() reports a missing --allow-ffi as unavailable",
  permissions: { ffi: false },
  fn: () => {
    assert.deepEqual(openNetlinkLister(), {
      kind: "unavailable",
      reason: "--allow-ffi not granted",
    });
  },
});

// The rest needs libmnl (and --allow-ffi); opening a netlink socket needs no privileges.
const available = (() => {
  const probe = openNetlinkLister();
  if (probe.kind === "ok") probe.lister[Symbol.dispose]();
  return probe.kind === "ok";
})();

Deno.test({
  name: "a netlink receive the kernel never answers gives up after the receive timeout",
  ignore: !available,
  fn: async () => {
    const opened = openNetlinkLister({ receiveTimeoutMs: 300 });
    if (opened.kind !== "ok") throw new Error(opened.reason);
    using lister = opened.lister;
    const socket = lister.openSocket();
    if (typeof socket === "string") throw new Error(socket);
    using _ = socket;
    // Nothing was asked, so nothing comes: a kernel that stopped answering, as a listing sees it.
    const started = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const got = await Promise.race([
      socket.receive(new Uint8Array(64 * 1024)),
      new Promise<string>((resolve) => timer = setTimeout(() => resolve("still waiting"), 5000)),
    ]);
    clearTimeout(timer);
    const waited = performance.now() - started;
    assert.equal(got, "the kernel sent nothing for 0.3 s; listing abandoned");
    assert.ok(waited >= 250 && waited < 5000, `gave up after ${waited} ms`);
  },
});

Deno.test({
  name: "a netlink lister that was disposed of fails its listings with a reason",
  ignore: !available,
  fn: async () => {
    const opened = openNetlinkLister();
    if (opened.kind !== "ok") throw new Error(opened.reason);
    opened.lister[Symbol.dispose]();
    opened.lister[Symbol.dispose]();
    const dump = await opened.lister.list({ onBatch: () => {} });
    assert.deepEqual(dump, { kind: "failed", reason: "the netlink lister is closed" });
  },
});
