import assert from "node:assert/strict";
import type { Lister } from "../lib/table/lister.ts";
import type { EventListerOpen, EventSource } from "../lib/table/netlink/event_lister.ts";
import { EventLister } from "../lib/table/netlink/event_lister.ts";
import {
  selectTracking,
  type TrackingChoice,
  TrackingUnavailableError,
} from "../lib/table/tracking.ts";
import { RecordingLogger } from "./fakes.ts";

const dump: Lister = {
  name: "netlink",
  list: () => Promise.resolve({ kind: "ok", lines: 0, unparsable: undefined }),
};

let started = 0;
const source: EventSource = {
  run: () => {
    started++;
    return Promise.resolve();
  },
  drain: () => 0,
  counts: { received: { new: 0, update: 0, destroy: 0 }, lost: 0 },
  [Symbol.asyncDispose]: () => Promise.resolve(),
};
const available = (): EventListerOpen => ({
  kind: "ok",
  lister: new EventLister(dump, source, () => true, { monotonicMs: () => 0 }),
});
const unavailable = (): EventListerOpen => ({
  kind: "unavailable",
  reason: "net.netfilter.nf_conntrack_events is 0",
});
const mustNotOpen = (): never => {
  throw new Error("must not be called");
};

function select(choice: TrackingChoice, open: () => EventListerOpen) {
  const logger = new RecordingLogger();
  const tracking = selectTracking({
    choice,
    dump,
    destinations: [],
    resyncPeriodMs: 300_000,
    monotonicMs: () => 0,
    logger,
  }, open);
  return { tracking, logger };
}

Deno.test("selectTracking() prefers events under auto, reading at once, and says so once", async () => {
  const before = started;
  const { tracking, logger } = select("auto", available);
  assert.equal(tracking.mode, "events");
  assert.equal(tracking.lister.name, "events");
  assert.equal(started, before + 1);
  assert.deepEqual(logger.messages(), ["tracking candidates through conntrack events"]);
  assert.equal(logger.records[0]?.properties["tracking"], "events");
  await tracking[Symbol.asyncDispose]();
});

Deno.test("selectTracking() falls back to dumps under auto, saying why", () => {
  const { tracking, logger } = select("auto", unavailable);
  assert.equal(tracking.mode, "dump");
  assert.equal(tracking.lister, dump);
  assert.equal(logger.records.length, 1);
  assert.equal(logger.records[0]?.properties["reason"], "net.netfilter.nf_conntrack_events is 0");
});

Deno.test("selectTracking() refuses events it cannot have when asked for by name", () => {
  assert.throws(
    () => select("events", unavailable),
    TrackingUnavailableError,
    'Cannot use --tracking events (CONNTRACK_CLEANER_TRACKING): net.netfilter.nf_conntrack_events is 0; use "dump" or "auto"',
  );
});

Deno.test("selectTracking() dumps without subscribing when asked to", () => {
  const { tracking, logger } = select("dump", mustNotOpen);
  assert.equal(tracking.mode, "dump");
  assert.deepEqual(logger.messages(), ["tracking candidates by a dump every period"]);
});

Deno.test("selectTracking() keeps to dumps under auto when the table is listed by a program", () => {
  const logger = new RecordingLogger();
  const tracking = selectTracking({
    choice: "auto",
    dump: { ...dump, name: "cli" },
    destinations: [],
    resyncPeriodMs: 300_000,
    monotonicMs: () => 0,
    logger,
  }, mustNotOpen);
  assert.equal(tracking.mode, "dump");
  assert.match(String(logger.records[0]?.properties["reason"]), /listed by the cli backend/);
});
