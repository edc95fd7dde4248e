import assert from "node:assert/strict";
import { BackendUnavailableError, selectDeleter, selectLister } from "../lib/backend.ts";
import type { Deleter } from "../lib/deleter.ts";
import type { Lister } from "../lib/lister.ts";
import type { NetlinkOpen } from "../lib/netlink.ts";
import type { NetlinkListerOpen } from "../lib/netlink_list.ts";
import { FakeClock, FakeConntrack, RecordingLogger } from "./fakes.ts";

const netlinkDeleter: Deleter & Disposable = {
  name: "netlink",
  delete: () => Promise.resolve({ deleted: [], gone: [], failed: [] }),
  [Symbol.dispose]: () => {},
};
const netlinkLister: Lister & Disposable = {
  name: "netlink",
  list: () => Promise.resolve({ kind: "ok", lines: 0, unparsable: undefined }),
  [Symbol.dispose]: () => {},
};
const unavailable = (): NetlinkOpen & NetlinkListerOpen => ({
  kind: "unavailable",
  reason: "libsomething.so not found",
});
const mustNotOpen = (): never => {
  throw new Error("must not be called");
};

function options(backend: "auto" | "netlink" | "cli") {
  const logger = new RecordingLogger();
  const ct = new FakeConntrack(new FakeClock());
  return { logger, opts: { backend, conntrack: "conntrack", spawn: ct.spawn, logger } };
}

const KINDS = [
  {
    name: "selectDeleter()",
    variable: "CONNTRACK_CLEANER_DELETE_BACKEND",
    select: (opts: ReturnType<typeof options>["opts"], open: () => NetlinkOpen) =>
      selectDeleter(opts, open).name,
    ok: (): NetlinkOpen => ({ kind: "ok", deleter: netlinkDeleter }),
  },
  {
    name: "selectLister()",
    variable: "CONNTRACK_CLEANER_LIST_BACKEND",
    select: (opts: ReturnType<typeof options>["opts"], open: () => NetlinkListerOpen) =>
      selectLister(opts, open).name,
    ok: (): NetlinkListerOpen => ({ kind: "ok", lister: netlinkLister }),
  },
] as const;

for (const kind of KINDS) {
  // deno-lint-ignore no-explicit-any
  const select = kind.select as (opts: any, open: () => any) => string;

  Deno.test(`${kind.name} prefers netlink when it can be opened`, () => {
    const { opts } = options("auto");
    assert.equal(select(opts, kind.ok), "netlink");
  });

  Deno.test(`${kind.name} falls back to the CLI and says why, once`, () => {
    const { opts, logger } = options("auto");
    assert.equal(select(opts, unavailable), "cli");
    assert.equal(logger.records.length, 1);
    assert.match(String(logger.records[0]?.properties.reason), /not found/);
  });

  Deno.test(`${kind.name} refuses a named netlink backend it cannot open`, () => {
    const { opts } = options("netlink");
    assert.throws(() => select(opts, unavailable), BackendUnavailableError);
    assert.throws(() => select(opts, unavailable), new RegExp(`${kind.variable}.*not found`));
  });

  Deno.test(`${kind.name} with cli never touches the library`, () => {
    const { opts } = options("cli");
    assert.equal(select(opts, mustNotOpen), "cli");
  });
}
