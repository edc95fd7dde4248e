import assert from "node:assert/strict";
import type { Agent, AgentDeps, AgentOptions } from "../lib/loop/agent.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { createAgent } from "../lib/loop/agent.ts";
import { CLI_DELETE_PIECE, createCliDeleter, createCliLister } from "../lib/table/conntrack_cli.ts";
import type { NatReader, NatView } from "../lib/nat/nat_reader.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import type { CycleReport } from "../lib/loop/cycle_report.ts";
import { FakeClock, FakeConntrack, RecordingLogger, staleFlow } from "./fakes.ts";

const ORIGINAL: AgentOptions = {
  periodMs: 1000,
  renewalThreshold: 3,
  unrepliedMaxAgeMs: 0,
  dryRun: false,
};

function setup(options: Partial<AgentOptions> = {}, nat?: NatReader) {
  const clock = new FakeClock();
  const ct = new FakeConntrack(clock);
  const logger = new RecordingLogger();
  const reports: CycleReport[] = [];
  // Calls through `ct.spawn` late, so a test can slow the fake down after the agent is built.
  const spawn: SpawnCommand = (program, args, opts) => ct.spawn(program, args, opts);
  const agent = createAgent({
    lister: createCliLister(spawn, "conntrack"),
    clock,
    logger,
    deleter: createCliDeleter(spawn, "conntrack"),
    observer: { cycleCompleted: (r) => reports.push(r) },
    ...(nat ? { nat } : {}),
  }, { ...ORIGINAL, ...options });
  return { clock, ct, logger, reports, agent };
}

/**
 * Makes the n-th listing (from 0) of the fake take `durationOf(n)` ms of virtual time; returns the
 * monotonic times at which listings start, filled in as they run.
 */
function timeListings(ct: FakeConntrack, durationOf: (n: number) => number): number[] {
  const starts: number[] = [];
  const list = ct.spawn;
  Object.defineProperty(ct, "spawn", {
    value: ((program, args, options) => {
      if (args[0] === "-L") {
        starts.push(ct.clock.monotonic());
        ct.clock.advance(durationOf(starts.length - 1));
      }
      return list(program, args, options);
    }) satisfies typeof list,
  });
  return starts;
}

/** Runs the loop until it has slept `sleeps` times, then stops it. */
async function runUntilSleeps(agent: Agent, clock: FakeClock, sleeps: number): Promise<void> {
  const controller = new AbortController();
  const original = clock.sleep.bind(clock);
  clock.sleep = (ms, signal) => {
    if (clock.sleeps.length === sleeps) controller.abort();
    return original(ms, signal);
  };
  await agent.run(controller.signal);
}

Deno.test("agent deletes an entry renewed on every retry after threshold + 1 renewals", async () => {
  const { clock, ct, agent, logger } = setup();
  const entry = ct.add(staleFlow(40000));
  let cycles = 0;
  while (ct.table.includes(entry) && cycles < 20) {
    await agent.cycle();
    cycles++;
    clock.advance(1000);
    entry.expires = clock.monotonic() + 120_000; // the client's retried SYN renews the timer
  }
  // First sighting, then one renewal per cycle: the 4th renewal (5th cycle) deletes.
  assert.equal(cycles, 5);
  const deletion = logger.records.find((r) => r.message === "deleted stale flow");
  assert.equal(deletion?.properties.rule, "renewal");
  assert.equal(deletion?.properties.src, "198.51.100.2");
  assert.equal(deletion?.properties.sport, 40000);
});

Deno.test("agent never deletes an entry that only counts down (age rule off)", async () => {
  const { clock, ct, agent } = setup();
  const entry = ct.add(staleFlow(40000), { timeoutS: 120 });
  for (let i = 0; i < 110; i++) {
    await agent.cycle();
    clock.advance(1000);
  }
  assert.ok(ct.table.includes(entry));
  assert.equal(ct.count("-R"), 0);
});

Deno.test("agent deletes an unreplied entry once it is older than the maximum age", async () => {
  const { clock, ct, agent, reports } = setup({ unrepliedMaxAgeMs: 3000 });
  const entry = ct.add(staleFlow(40000));
  let cycles = 0;
  while (ct.table.includes(entry) && cycles < 20) {
    await agent.cycle();
    cycles++;
    clock.advance(1000);
  }
  assert.ok(cycles >= 4 && cycles <= 5, `deleted after ${cycles} cycles`);
  assert.deepEqual(reports.at(-1)?.deletions, [{ rule: "age", family: "ipv4" }]);
});

Deno.test("agent deletes 50 stale flows in one cycle with one -L and a few -R, sparing 1,000", async () => {
  const { ct, agent } = setup({ unrepliedMaxAgeMs: 1000 });
  const established = [];
  for (let i = 0; i < 1000; i++) {
    established.push(ct.add(staleFlow(20000 + i), { state: "ESTABLISHED", timeoutS: 432000 }));
  }
  for (let i = 0; i < 50; i++) ct.add(staleFlow(40000 + i));
  await agent.cycle();
  ct.clock.advance(1500);
  const before = ct.spawned.length;
  const { report } = await agent.cycle();
  const pieces = Math.ceil(50 / CLI_DELETE_PIECE);
  assert.deepEqual(ct.spawned.slice(before).map((a) => a[0]), ["-L", ...Array(pieces).fill("-R")]);
  assert.equal(report.deletions.length, 50);
  assert.deepEqual(ct.table, established);
});

Deno.test("agent logs a failing dump, keeps going and recovers on the next period", async () => {
  const { ct, agent, logger, reports } = setup();
  ct.behaviour = { kind: "fail", code: 1, stderr: "conntrack v1.4.7 (conntrack-tools): boom\n" };
  await agent.cycle();
  assert.equal(reports[0]?.dump.kind, "failed");
  assert.deepEqual(logger.messages("warn"), ["conntrack listing failed; retrying next period"]);
  ct.behaviour = { kind: "ok" };
  ct.add(staleFlow(1));
  await agent.cycle();
  assert.deepEqual(reports[1]?.dump, { kind: "ok", lines: 1, candidates: 1, unparsable: 0 });
});

Deno.test("agent logs unparsable lines once per cycle and acts on none of them", async () => {
  const { ct, agent, logger, reports } = setup({ unrepliedMaxAgeMs: 1000 });
  ct.behaviour = {
    kind: "garbage",
    lines: ["garbage one", "tcp 6 x SYN_SENT", "tcp      6 116 SYN_SENT src=1.2.3.999"],
  };
  await agent.cycle();
  ct.clock.advance(5000);
  await agent.cycle();
  const warnings = logger.records.filter((r) => r.level === "warn");
  assert.equal(warnings.length, 2);
  assert.equal(warnings[0]?.properties.count, 3);
  assert.equal(ct.count("-R"), 0);
  assert.equal(reports[1]?.dump.kind === "ok" && reports[1].dump.unparsable, 3);
});

Deno.test("agent in dry run deletes nothing, logs the flow once and reports it", async () => {
  const { clock, ct, agent, logger, reports } = setup({ dryRun: true, unrepliedMaxAgeMs: 1000 });
  ct.add(staleFlow(40000, { v6: true }));
  for (let i = 0; i < 5; i++) {
    await agent.cycle();
    clock.advance(1000);
  }
  assert.equal(ct.table.length, 1);
  assert.equal(ct.count("-R"), 0);
  const lines = logger.records.filter((r) => r.message.startsWith("would delete"));
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.properties.src, "2001:db8::2");
  assert.ok(reports.at(-1)?.dryRun);
  assert.deepEqual(reports.at(-1)?.deletions, [{ rule: "age", family: "ipv6" }]);
});

Deno.test("createAgent() without a deleter assesses, and in dry run reports, but never deletes", async () => {
  const clock = new FakeClock();
  const ct = new FakeConntrack(clock);
  const deps = {
    lister: createCliLister(ct.spawn, "conntrack"),
    clock,
    logger: new RecordingLogger(),
  };
  ct.add(staleFlow(40000));
  const assessor = createAgent(deps, { ...ORIGINAL, unrepliedMaxAgeMs: 1000 });
  const dryRun = createAgent(deps, { ...ORIGINAL, unrepliedMaxAgeMs: 1000, dryRun: true });
  for (let i = 0; i < 3; i++) {
    const scanned = await assessor.cycle(undefined, false);
    assert.equal(scanned.assessments.length, 1);
    const { report } = await dryRun.cycle();
    assert.equal(report.deletions.length, i === 0 ? 0 : 1);
    clock.advance(1000);
  }
  assert.equal(ct.count("-R"), 0);
  assert.equal(ct.table.length, 1);
});

/** Never called: the type checker fails the test file if a deleting agent may lack a deleter. */
function _deletingNeedsADeleter(deps: Omit<AgentDeps, "deleter">, signal: AbortSignal): void {
  const assessor = createAgent(deps, ORIGINAL);
  // @ts-expect-error: without a deleter, only a dry run agent runs the loop
  void assessor.run(signal);
  // @ts-expect-error: an agent without a deleter must be told not to delete
  void assessor.cycle(signal);
  void createAgent(deps, { ...ORIGINAL, dryRun: true }).run(signal);
}

/** NAT rules translating 192.0.2.10:80 to `endpoint`, and nothing else. */
function viewTo(endpoint: string): NatView {
  const [address = "", port = "0"] = endpoint.split(":");
  return {
    rulesets: 1,
    answer: (flow) =>
      flow.original.dst === "192.0.2.10" && flow.original.dport === 80
        ? { kind: "dnat", endpoints: [{ address, port: Number(port) }] }
        : { kind: "none" },
  };
}

Deno.test("agent deletes an un-NATed entry at once when the node now translates its destination", async () => {
  const nat: NatReader = { read: () => Promise.resolve(viewTo("10.244.1.5:8080")) };
  const { ct, agent, reports, logger } = setup({}, nat);
  ct.add(staleFlow(40000));
  const other = ct.add(staleFlow(40001, { dport: 81 }));
  await agent.cycle();
  assert.deepEqual(reports[0]?.deletions, [{ rule: "nat", reason: "no-dnat", family: "ipv4" }]);
  assert.deepEqual(ct.table, [other]);
  const line = logger.records.find((r) => r.message === "deleted stale flow");
  assert.equal(line?.properties?.reason, "no-dnat");
});

Deno.test("agent deletes an entry pinned to a gone endpoint once rules read after it say so", async () => {
  let view = viewTo("10.244.1.5:8080");
  let reads = 0;
  const nat: NatReader = {
    read: () => {
      reads++;
      return Promise.resolve(view);
    },
  };
  const { ct, agent, reports, logger, clock } = setup({}, nat);
  const client = staleFlow(40000);
  const pinned = ct.add({ ...client, reply: { ...client.reply, src: "10.244.1.5", sport: 8080 } });
  await agent.cycle();
  clock.advance(1000);
  // The Service's only endpoint moves; a spaced reader would hand the old view back first.
  await agent.cycle();
  assert.deepEqual(ct.table, [pinned]);
  view = viewTo("10.244.2.9:8080");
  clock.advance(1000);
  await agent.cycle();
  assert.equal(reads, 3);
  assert.deepEqual(ct.table, []);
  assert.deepEqual(reports.at(-1)?.deletions, [
    { rule: "nat", reason: "endpoint-gone", family: "ipv4" },
  ]);
  const line = logger.records.find((r) => r.message === "deleted stale flow");
  assert.equal(line?.properties?.reason, "endpoint-gone");
  assert.match(
    String(line?.properties?.why),
    /10\.244\.1\.5:8080, no longer an endpoint of 192\.0\.2\.10:80/,
  );
});

Deno.test("agent does not judge an entry by rules read before it was first seen", async () => {
  const view = viewTo("10.244.2.9:8080");
  // The reader hands back one view, read once before the entry appeared (a spaced read).
  const nat: NatReader = { read: () => Promise.resolve(view) };
  const { ct, agent, clock } = setup({}, nat);
  ct.add(staleFlow(40001, { dport: 81 }));
  await agent.cycle();
  clock.advance(1000);
  const client = staleFlow(40000);
  const fresh = ct.add({ ...client, reply: { ...client.reply, src: "10.244.3.3", sport: 8080 } });
  for (let i = 0; i < 3; i++) {
    await agent.cycle();
    clock.advance(1000);
  }
  assert.ok(ct.table.includes(fresh), "an entry newer than the rules was judged by them");
});

Deno.test("agent does not read NAT rules when there are no candidates", async () => {
  let reads = 0;
  const nat: NatReader = {
    read: () => {
      reads++;
      return Promise.resolve(undefined);
    },
  };
  const { ct, agent } = setup({}, nat);
  ct.add(staleFlow(1), { state: "ESTABLISHED" });
  ct.behaviour = { kind: "garbage", lines: [] };
  await agent.cycle();
  assert.equal(reads, 0);
});

Deno.test("agent.run() waits one full period after the end of each cycle and stops on abort", async () => {
  const { clock, ct, agent, reports } = setup({ periodMs: 700 });
  // Each listing takes 250 ms of virtual time.
  const starts = timeListings(ct, () => 250);
  await runUntilSleeps(agent, clock, 2);
  assert.equal(reports.length, 3);
  // End-to-start: 250 ms of listing plus a full 700 ms pause; start-to-start would give 700.
  assert.deepEqual(starts.slice(1).map((t, i) => t - starts[i]!), [950, 950]);
});

Deno.test("agent logs once when cycles overrun the period, and once when they fit again", async () => {
  const { clock, ct, agent, logger, reports } = setup({ periodMs: 100 });
  let slow = true;
  // Each listing of the fake table takes 250 ms of virtual time while `slow`.
  const behave = ct.spawn;
  Object.defineProperty(ct, "spawn", {
    value: ((program, args, options) => {
      if (slow && args[0] === "-L") clock.advance(250);
      return behave(program, args, options);
    }) satisfies typeof behave,
  });
  await agent.cycle();
  await agent.cycle();
  slow = false;
  await agent.cycle();
  await agent.cycle();
  assert.equal(logger.messages("info").includes("cycles fit in the dump period again"), false);
  await agent.cycle();
  assert.deepEqual(reports.map((r) => r.overran), [true, true, false, false, false]);
  assert.equal(logger.messages("warn").length, 1);
  // Only after three cycles in a row clearly inside the period.
  assert.deepEqual(logger.messages("info"), ["cycles fit in the dump period again"]);
});

Deno.test("agent.run() stretches the pause after slow cycles to stay under the busy limit", async () => {
  const { clock, ct, agent, logger, reports } = setup({ periodMs: 1000, busyLimit: 0.25 });
  // Listings take 800, 800, then 100 ms of virtual time: a large table, then a small one.
  const durations = [800, 800, 100, 100, 100];
  const starts = timeListings(ct, (n) => durations[n] ?? 100);
  await runUntilSleeps(agent, clock, 4);
  // 800 ms busy at 25% means 2400 ms of pause; 100 ms fits the 1000 ms period.
  assert.deepEqual(reports.map((r) => r.pauseMs), [2400, 2400, 1000, 1000, 1000]);
  assert.deepEqual(starts.slice(1).map((t, i) => t - starts[i]!), [3200, 3200, 1100, 1100]);
  const infos = logger.messages("info");
  assert.equal(infos.filter((m) => m.startsWith("slow cycles")).length, 1);
  assert.equal(infos.filter((m) => m === "pausing for the dump period again").length, 1);
  // 800 ms fits in the 1000 ms period: stretching is not an overrun.
  assert.deepEqual(reports.map((r) => r.overran), [false, false, false, false, false]);
});

Deno.test("agent logs a bounded number of pacing lines while cycle times wander around the limits", async () => {
  // Busy limit 20% of a 1000 ms period: pauses stretch above 250 ms cycles. 300 cycles (5
  // minutes) wander within ±20% of 250 ms, then within ±20% of the period, each for 150.
  const { clock, ct, agent, logger, reports } = setup({ periodMs: 1000, busyLimit: 0.2 });
  let seed = 7;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const around = (limit: number) => Math.round(limit * (0.8 + 0.4 * random()));
  timeListings(ct, (n) => around(n < 150 ? 250 : 1000));
  await runUntilSleeps(agent, clock, 299);
  assert.equal(reports.length, 300);
  // Both limits were crossed many times...
  const stretched = reports.map((r) => r.pauseMs > 1000);
  const flips = stretched.filter((s, i) => i > 0 && s !== stretched[i - 1]).length;
  assert.ok(flips > 20, `${flips} flips`);
  // ... and each message came once: the first crossing of each limit.
  const pacing = logger.records.filter((r) =>
    /slow cycles|dump period again|back to back|fit in the dump period/.test(r.message)
  );
  assert.deepEqual(pacing.map((r) => r.message), [
    "slow cycles: pausing longer than the dump period to stay under the busy limit",
    "cycle took longer than the dump period; cycles now run back to back",
  ]);
});

Deno.test("agent logs that pacing is back to the period once cycles stay clearly under the limit", async () => {
  const { clock, ct, agent, logger } = setup({ periodMs: 1000, busyLimit: 0.2 });
  // Over 250 ms, then just under it (no end), a spike, then three under 200 ms: one end.
  const durations = [300, 240, 240, 240, 260, 190, 190, 150, 100, 300, 100, 100, 100];
  timeListings(ct, (n) => durations[n] ?? 100);
  await runUntilSleeps(agent, clock, durations.length - 1);
  const pacing = logger.records.filter((r) => r.level === "info" && /pausing/.test(r.message));
  assert.deepEqual(pacing.map((r) => [r.message, r.properties.cycle_ms]), [
    ["slow cycles: pausing longer than the dump period to stay under the busy limit", 300],
    ["pausing for the dump period again", 150],
    ["slow cycles: pausing longer than the dump period to stay under the busy limit", 300],
    ["pausing for the dump period again", 100],
  ]);
});

Deno.test("agent without a busy limit pauses for the period after any cycle", async () => {
  const { clock, ct, agent } = setup({ periodMs: 100 });
  const behave = ct.spawn;
  Object.defineProperty(ct, "spawn", {
    value: ((program, args, options) => {
      if (args[0] === "-L") clock.advance(5000);
      return behave(program, args, options);
    }) satisfies typeof behave,
  });
  const { report } = await agent.cycle();
  assert.equal(report.pauseMs, 100);
});

Deno.test("agent counts a flow printed twice in one listing once", async () => {
  const { ct, agent, reports } = setup();
  ct.behaviour = {
    kind: "garbage",
    lines: [
      "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1 id=7",
      "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1 id=7",
    ],
  };
  const { assessments } = await agent.cycle(undefined, false);
  assert.equal(assessments.length, 1);
  assert.equal(reports[0]?.dump.kind === "ok" && reports[0].dump.candidates, 1);
});

Deno.test("dry run announces a flow again after it left the table and came back", async () => {
  const { clock, ct, agent, logger } = setup({ dryRun: true, unrepliedMaxAgeMs: 1000 });
  const flow = staleFlow(40000);
  ct.add(flow);
  const announcements = () =>
    logger.messages("info").filter((m) => m === "would delete stale flow (dry run)").length;
  for (let i = 0; i < 4; i++) {
    await agent.cycle();
    clock.advance(1000);
  }
  assert.equal(announcements(), 1);
  ct.table.length = 0;
  await agent.cycle();
  ct.add(flow);
  for (let i = 0; i < 3; i++) {
    await agent.cycle();
    clock.advance(1000);
  }
  assert.equal(announcements(), 2);
});

Deno.test("agent reports progress inside a cycle while it lists and while it deletes", async () => {
  const clock = new FakeClock();
  const ct = new FakeConntrack(clock);
  for (let i = 0; i < 3; i++) ct.add(staleFlow(40000 + i));
  const events: string[] = [];
  const agent = createAgent({
    lister: createCliLister(ct.spawn, "conntrack"),
    clock,
    logger: new RecordingLogger(),
    deleter: {
      name: "slow",
      delete: (flows, _signal, progress) => {
        events.push("delete");
        progress?.();
        return Promise.resolve({ deleted: flows, gone: [], failed: [] });
      },
    },
    observer: {
      cycleCompleted: () => events.push("completed"),
      cycleProgressed: () => events.push("progressed"),
    },
  }, { ...ORIGINAL, unrepliedMaxAgeMs: 1000 });
  // The fake prints the kernel's delta-time, so the flows are condemned at first sight.
  await agent.cycle();
  assert.deepEqual(events, ["progressed", "delete", "progressed", "completed"]);
});

Deno.test("agent logs ten failed deletions one by one and counts the rest in one line", async () => {
  const clock = new FakeClock();
  const ct = new FakeConntrack(clock);
  const logger = new RecordingLogger();
  for (let i = 0; i < 25; i++) ct.add(staleFlow(40000 + i));
  const agent = createAgent({
    lister: createCliLister(ct.spawn, "conntrack"),
    clock,
    logger,
    deleter: {
      name: "broken",
      delete: (flows) =>
        Promise.resolve({
          deleted: [],
          gone: [],
          failed: flows.map((flow) => ({ flow, reason: "Operation not permitted" })),
        }),
    },
  }, { ...ORIGINAL, unrepliedMaxAgeMs: 1000 });
  await agent.cycle();
  clock.advance(1500);
  const { report } = await agent.cycle();
  assert.equal(report.deleteFailures, 25);
  assert.equal(
    logger.messages("warn").filter((m) => m === "could not delete stale flow").length,
    10,
  );
  const summary = logger.records.find((r) => r.message === "could not delete more stale flows");
  assert.equal(summary?.properties.count, 15);
});

Deno.test("agent warns of a 200 MB line from a real conntrack process and keeps cycling", async () => {
  await using dir = await tempDir();
  const conntrack = `${dir.path}/conntrack`;
  // 200 MB without a newline, then a line, as a broken conntrack (or a hostile one) could print.
  await Deno.writeTextFile(
    conntrack,
    "#!/bin/sh\nhead -c 200M /dev/zero | tr '\\0' a\nprintf '\\n'\n" +
      "printf 'tcp      6 117 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 " +
      "[UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1 id=7\\n'\n",
    { mode: 0o755 },
  );
  const clock = new FakeClock();
  const logger = new RecordingLogger();
  const reports: CycleReport[] = [];
  const agent = createAgent({
    lister: createCliLister(denoSpawn, conntrack),
    clock,
    logger,
    observer: { cycleCompleted: (r) => reports.push(r) },
  }, { ...ORIGINAL, dryRun: true });
  await runUntilSleeps(agent, clock, 2);
  assert.equal(reports.length, 3);
  for (const report of reports) {
    assert.deepEqual(report.dump, { kind: "ok", lines: 2, candidates: 1, unparsable: 1 });
  }
  const warnings = logger.records.filter((r) => r.level === "warn");
  assert.equal(warnings.length, 3);
  for (const warning of warnings) {
    assert.equal(warning.message, "skipped conntrack lines that could not be parsed");
    assert.equal(warning.properties.count, 1);
    assert.equal(warning.properties.first_line, "a".repeat(200));
    assert.match(String(warning.properties.reason), /^line of 209715200 characters is longer/);
  }
});

/** A temporary directory, removed when the test is done with it. */
async function tempDir(): Promise<AsyncDisposable & { readonly path: string }> {
  const path = await Deno.makeTempDir({ prefix: "agent_test_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}
