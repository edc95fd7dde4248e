import assert from "node:assert/strict";
import type { Candidate, Flow } from "../lib/core/flow.ts";
import { flowKey } from "../lib/core/flow.ts";
import type { Dump, Lister, ListOptions } from "../lib/table/lister.ts";
import type { EventCounts, EventSink } from "../lib/table/netlink/ct_events.ts";
import type { GetAnswer } from "../lib/table/netlink/ct_get.ts";
import {
  EventLister,
  type EventSource,
  openEventLister,
} from "../lib/table/netlink/event_lister.ts";

function candidate(sport: number, timeout = 110): Candidate {
  const flow: Flow = {
    family: "ipv4",
    original: { src: "198.51.100.2", dst: "192.0.2.10", sport, dport: 80 },
    reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: sport },
    zone: 0,
  };
  return { flow, key: flowKey(flow), timeout };
}

/** A kernel table of candidates (key -> candidate) and what the fakes did with it. */
class World {
  readonly table = new Map<string, Candidate>();
  dumps = 0;
  gets = 0;
  failDump = false;
  failGets = false;
  queued: Candidate[][] = [];
  lost = false;

  readonly dump: Lister = {
    name: "netlink",
    list: async (options: ListOptions): Promise<Dump> => {
      this.dumps++;
      if (this.failDump) return { kind: "failed", reason: "boom" };
      await options.onBatch([...this.table.values()]);
      return { kind: "ok", lines: this.table.size, unparsable: undefined };
    },
  };

  readonly events: EventSource = {
    run: () => Promise.resolve(),
    drain: (sink: EventSink) => {
      if (this.lost) {
        this.lost = false;
        sink.onLost();
      }
      for (const batch of this.queued) sink.onNew(batch);
      const n = this.queued.length;
      this.queued = [];
      return n;
    },
    get counts(): EventCounts {
      return { received: { new: 0, update: 0, destroy: 0 }, lost: 0 };
    },
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };

  get = (
    flows: readonly Flow[],
    _now: number,
    onAnswer: (i: number, a: GetAnswer) => void,
  ): boolean => {
    flows.forEach((flow, i) => {
      this.gets++;
      if (this.failGets) return onAnswer(i, { kind: "failed", reason: "EPERM" });
      const c = this.table.get(flowKey(flow));
      onAnswer(i, c === undefined ? { kind: "gone" } : { kind: "candidate", candidate: c });
    });
    return true;
  };

  /** A new entry: in the table, and announced by an event. */
  create(c: Candidate): void {
    this.table.set(c.key, c);
    this.queued.push([c]);
  }
}

function setup(world: World, now = { ms: 0 }) {
  const lister = new EventLister(world.dump, world.events, world.get, {
    monotonicMs: () => now.ms,
    resyncPeriodMs: 60_000,
  });
  lister.start();
  const listed = async () => {
    const keys: string[] = [];
    const dump = await lister.list({ onBatch: (b) => void keys.push(...b.map((c) => c.key)) });
    return { dump, keys: keys.sort() };
  };
  return { lister, listed, now };
}

Deno.test("EventLister.list() dumps first, then asks only about entries events announced", async () => {
  const world = new World();
  const a = candidate(40000);
  world.table.set(a.key, a);
  const { listed } = setup(world);
  assert.deepEqual((await listed()).keys, [a.key]);
  assert.equal(world.dumps, 1);
  const b = candidate(40001);
  world.create(b);
  // Not announced: never asked about, as a dump-free listing cannot see it.
  world.table.set(candidate(40002).key, candidate(40002));
  assert.deepEqual((await listed()).keys, [a.key, b.key].sort());
  assert.equal(world.dumps, 1);
  assert.equal(world.gets, 2);
});

Deno.test("EventLister.list() stops asking about an entry that is gone or replied", async () => {
  const world = new World();
  const { listed, lister } = setup(world);
  await listed();
  const b = candidate(40001);
  world.create(b);
  assert.deepEqual((await listed()).keys, [b.key]);
  world.table.delete(b.key);
  assert.deepEqual((await listed()).keys, []);
  assert.equal(lister.counts.tracked, 0);
  const gets = world.gets;
  await listed();
  assert.equal(world.gets, gets);
});

Deno.test("EventLister.list() resyncs at once after lost events, and on its period", async () => {
  const world = new World();
  const { listed, now, lister } = setup(world);
  await listed();
  world.lost = true;
  const hidden = candidate(40003);
  world.table.set(hidden.key, hidden);
  assert.deepEqual((await listed()).keys, [hidden.key]);
  assert.equal(world.dumps, 2);
  await listed();
  assert.equal(world.dumps, 2);
  now.ms = 60_000;
  await listed();
  assert.equal(world.dumps, 3);
  assert.equal(lister.counts.resyncs, 3);
});

Deno.test("EventLister.list() fails a round whose GETs fail, keeps its set and resyncs next", async () => {
  const world = new World();
  const { listed, lister } = setup(world);
  await listed();
  const b = candidate(40001);
  world.create(b);
  world.failGets = true;
  const failed = await listed();
  assert.equal(failed.dump.kind, "failed");
  assert.equal(lister.pendingResync, "failed round");
  world.failGets = false;
  world.failDump = true;
  assert.equal((await listed()).dump.kind, "failed");
  // The failed dump forgot nothing: the set still holds the entry.
  assert.equal(lister.counts.tracked, 1);
  world.failDump = false;
  assert.deepEqual((await listed()).keys, [b.key]);
});

Deno.test("EventLister.list() keeps only the flows the operator aimed it at", async () => {
  const world = new World();
  const lister = new EventLister(world.dump, world.events, world.get, { monotonicMs: () => 0 });
  const accept = (flow: Flow) => flow.original.sport !== 40001;
  const keys: string[] = [];
  await lister.list({ onBatch: () => {}, accept });
  world.create(candidate(40001));
  world.create(candidate(40002));
  await lister.list({ onBatch: (b) => void keys.push(...b.map((c) => c.key)), accept });
  assert.deepEqual(keys, [candidate(40002).key]);
  assert.equal(world.gets, 1);
});

Deno.test("EventLister.list() falls back to dumps while it would track too many entries", async () => {
  const world = new World();
  const lister = new EventLister(world.dump, world.events, world.get, {
    monotonicMs: () => 0,
    maxTracked: 2,
  });
  const list = () => lister.list({ onBatch: () => {} });
  await list();
  for (let i = 0; i < 5; i++) world.create(candidate(41000 + i));
  await list();
  assert.equal(world.dumps, 2);
  assert.equal(world.gets, 0);
  // Still too many after the dump: dump again.
  await list();
  assert.equal(world.dumps, 3);
  for (let i = 0; i < 5; i++) world.table.delete(candidate(41000 + i).key);
  await list();
  await list();
  assert.equal(world.dumps, 4);
});

Deno.test("EventLister.list() holds no more entries than its limit from a dump that finds more", async () => {
  const world = new World();
  for (let i = 0; i < 50; i++) world.table.set(candidate(44000 + i).key, candidate(44000 + i));
  const lister = new EventLister(world.dump, world.events, world.get, {
    monotonicMs: () => 0,
    maxTracked: 3,
  });
  const listed: string[] = [];
  await lister.list({ onBatch: (b) => void listed.push(...b.map((c) => c.key)) });
  // Every candidate still reaches the tracker; the lister itself keeps only its limit.
  assert.equal(listed.length, 50);
  assert.equal(lister.counts.tracked, 3);
  assert.equal(lister.pendingResync, "too many");
});

Deno.test("EventLister.list() dumps instead of asking when the GETs would cost more", async () => {
  const world = new World();
  const clock = { ms: 0 };
  // A dump takes 10 ms whatever the table; each GET 1 ms.
  const timedDump: Lister = {
    name: "netlink",
    list: async (options) => {
      clock.ms += 10;
      return await world.dump.list(options);
    },
  };
  const lister = new EventLister(timedDump, world.events, (flows, now, onAnswer) => {
    clock.ms += flows.length;
    return world.get(flows, now, onAnswer);
  }, { monotonicMs: () => clock.ms });
  const list = () => lister.list({ onBatch: () => {} });
  await list();
  for (let i = 0; i < 5; i++) world.create(candidate(42000 + i));
  await list();
  assert.equal(world.dumps, 1);
  for (let i = 5; i < 20; i++) world.create(candidate(42000 + i));
  await list();
  assert.equal(world.dumps, 2, "20 GETs of 1 ms each should have given way to a 10 ms dump");
  for (let i = 0; i < 18; i++) world.table.delete(candidate(42000 + i).key);
  await list();
  await list();
  assert.equal(world.dumps, 3);
});

Deno.test("EventLister.list() tells a standing reason to dump once, not every period", async () => {
  const world = new World();
  const told: string[] = [];
  const lister = new EventLister(world.dump, world.events, world.get, {
    monotonicMs: () => 0,
    maxTracked: 2,
    onResync: (reason) => void told.push(reason),
  });
  const list = () => lister.list({ onBatch: () => {} });
  await list();
  for (let i = 0; i < 5; i++) world.create(candidate(43000 + i));
  for (let i = 0; i < 4; i++) await list();
  assert.equal(world.dumps, 5);
  assert.deepEqual(told, ["start", "too many"]);
  world.lost = true;
  await list();
  assert.deepEqual(told, ["start", "too many", "lost events"]);
});

Deno.test("openEventLister() keeps to dumps where nf_conntrack_events is 0", () => {
  const world = new World();
  const opened = openEventLister({
    dump: world.dump,
    destinations: [],
    monotonicMs: () => 0,
    eventsSysctl: () => "0",
  });
  assert.deepEqual(opened, {
    kind: "unavailable",
    reason: "net.netfilter.nf_conntrack_events is 0",
  });
});
