import assert from "node:assert/strict";
import { BackendUnavailableError, selectDeleter, selectLister } from "../lib/table/backend.ts";
import type { Deleter } from "../lib/table/deleter.ts";
import type { Lister } from "../lib/table/lister.ts";
import { type NetlinkOpen, openNetlinkDeleter } from "../lib/table/netlink/netlink_deleter.ts";
import { type NetlinkListerOpen, openNetlinkLister } from "../lib/table/netlink/netlink_lister.ts";
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

/** A file that is there but is no shared library, removed when the test is done with it. */
async function textFile(): Promise<AsyncDisposable & { readonly path: string }> {
  const path = await Deno.makeTempFile({ prefix: "backend_test_", suffix: ".so.0" });
  await Deno.writeTextFile(path, "not a library\n");
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path) };
}

/** What `--list-backend netlink` / `--delete-backend netlink` say with the library at `paths`. */
function refusals(paths: readonly string[]): string[] {
  const { opts } = options("netlink");
  const messages: string[] = [];
  for (
    const select of [
      () => selectLister(opts, () => openNetlinkLister({ libraryPaths: paths })),
      () => selectDeleter(opts, () => openNetlinkDeleter({ libraryPaths: paths })),
    ]
  ) {
    assert.throws(select, (error: unknown) => {
      assert.ok(error instanceof BackendUnavailableError);
      messages.push(error.message);
      return true;
    });
  }
  return messages;
}

Deno.test("selectLister() and selectDeleter() say a library that loads but is not libmnl lacks a symbol", () => {
  // libc loads everywhere and has none of libmnl's symbols.
  const [list, del] = refusals(["libc.so.6"]);
  assert.match(
    list!,
    /^Cannot use --list-backend netlink \(CONNTRACK_CLEANER_LIST_BACKEND\): libmnl\.so\.0 found at \/\S*libc\.so\.6 but is not a usable libmnl\.so\.0: missing symbol mnl_\w+; use "cli" or "auto"$/,
  );
  assert.match(
    del!,
    /^Cannot use --delete-backend netlink \(CONNTRACK_CLEANER_DELETE_BACKEND\): libmnl\.so\.0 found at \/\S*libc\.so\.6 but is not a usable libmnl\.so\.0: missing symbol mnl_\w+; use "cli" or "auto"$/,
  );
});

Deno.test("selectLister() and selectDeleter() say a file that is no library cannot be loaded", async () => {
  await using file = await textFile();
  for (const message of refusals(["/nonexistent/libmnl.so.0", file.path])) {
    assert.match(
      message,
      new RegExp(`found at ${file.path} but is not a usable \\S+: cannot load: `),
    );
    assert.ok(!message.includes("\n"));
  }
});

Deno.test("selectLister() still says not found when no path holds a file", () => {
  const [list] = refusals(["/nonexistent/libmnl.so.0", "libnonexistent-mnl.so.0"]);
  assert.match(list!, /: libmnl\.so\.0 not found; use "cli" or "auto"$/);
});
