import assert from "node:assert/strict";
import { BackendUnavailableError, selectDeleter } from "../lib/backend.ts";
import type { Deleter } from "../lib/deleter.ts";
import type { NetlinkOpen } from "../lib/netlink.ts";
import { FakeClock, FakeConntrack, RecordingLogger } from "./fakes.ts";

const netlink: Deleter & Disposable = {
  name: "netlink",
  delete: () => Promise.resolve({ deleted: [], gone: [], failed: [] }),
  [Symbol.dispose]: () => {},
};
const unavailable = (): NetlinkOpen => ({
  kind: "unavailable",
  reason: "libnetfilter_conntrack.so.3 not found",
});

function options(backend: "auto" | "netlink" | "cli", open: () => NetlinkOpen) {
  const logger = new RecordingLogger();
  const ct = new FakeConntrack(new FakeClock());
  return {
    logger,
    opts: { backend, conntrack: "conntrack", spawn: ct.spawn, openNetlink: open, logger },
  };
}

Deno.test("selectDeleter() prefers netlink when it can be opened", () => {
  const { opts } = options("auto", () => ({ kind: "ok", deleter: netlink }));
  assert.equal(selectDeleter(opts).name, "netlink");
});

Deno.test("selectDeleter() falls back to the CLI and says why, once", () => {
  const { opts, logger } = options("auto", unavailable);
  assert.equal(selectDeleter(opts).name, "cli");
  assert.equal(logger.records.length, 1);
  assert.match(String(logger.records[0]?.properties.reason), /not found/);
});

Deno.test("selectDeleter() refuses a named netlink backend it cannot open", () => {
  const { opts } = options("netlink", unavailable);
  assert.throws(() => selectDeleter(opts), BackendUnavailableError);
  assert.throws(() => selectDeleter(opts), /CONNTRACK_CLEANER_DELETE_BACKEND.*not found/);
});

Deno.test("selectDeleter() with cli never touches the library", () => {
  const { opts } = options("cli", () => {
    throw new Error("must not be called");
  });
  assert.equal(selectDeleter(opts).name, "cli");
});
