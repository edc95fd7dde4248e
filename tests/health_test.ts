import assert from "node:assert/strict";
import type { Clock } from "../lib/seams/clock.ts";
import { createHealth } from "../lib/operator/health.ts";
import type { Health } from "../lib/operator/health.ts";
import type { CycleReport } from "../lib/loop/cycle_report.ts";

/** Virtual time: only `advance()` moves it. */
class FakeClock implements Clock {
  #now = 1_000_000;
  monotonic(): number {
    return this.#now;
  }
  wall(): number {
    return 1_700_000_000_000 + this.#now;
  }
  sleep(ms: number): Promise<void> {
    this.#now += ms;
    return Promise.resolve();
  }
  advance(ms: number): void {
    this.#now += ms;
  }
}

function report(dump: CycleReport["dump"], dumpMs = 50): CycleReport {
  return {
    wallStart: 0,
    dumpMs,
    dump,
    tracked: 0,
    deletions: [],
    dryRun: false,
    deleteFailures: 0,
    overran: false,
    pauseMs: 1000,
  };
}

const ok = (dumpMs?: number) =>
  report({ kind: "ok", lines: 10, candidates: 1, unparsable: 0 }, dumpMs);
const failed = (reason = "conntrack exited 1: Operation not permitted") =>
  report({ kind: "failed", reason });

function setup(periodMs = 1000): { health: Health; clock: FakeClock } {
  const clock = new FakeClock();
  return { health: createHealth({ periodMs, clock }), clock };
}

Deno.test("readiness() is not ready before any dump, and says so", () => {
  const { health } = setup();
  assert.deepEqual(health.readiness(), { ok: false, reason: "no successful dump yet" });
});

Deno.test("readiness() names the failure when no dump has succeeded yet", () => {
  const { health } = setup();
  health.cycleCompleted(failed("conntrack exited 1: nf_conntrack not loaded"));
  health.cycleCompleted(failed("conntrack exited 1: nf_conntrack not loaded"));
  const ready = health.readiness();
  assert.equal(ready.ok, false);
  assert.equal(
    ready.reason,
    "no successful dump yet (2 failed: conntrack exited 1: nf_conntrack not loaded)",
  );
});

Deno.test("readiness() is ready right after a successful dump", () => {
  const { health, clock } = setup();
  clock.advance(200);
  health.cycleCompleted(ok());
  clock.advance(400);
  assert.deepEqual(health.readiness(), { ok: true, reason: "last successful dump 0.4s ago" });
});

Deno.test("readiness() stays ready through a short run of failed dumps", () => {
  const { health, clock } = setup(1000);
  health.cycleCompleted(ok());
  for (let i = 0; i < 3; i++) {
    clock.advance(1050);
    health.cycleCompleted(failed());
  }
  const ready = health.readiness();
  assert.equal(ready.ok, true);
  assert.match(ready.reason, /3 failed since/);
});

Deno.test("readiness() turns unready when dumps keep failing, and ready again on recovery", () => {
  const { health, clock } = setup(1000);
  health.cycleCompleted(ok());
  // With a 1 s period the limit is the 5 s floor: after 6 failed cycles the view is stale.
  for (let i = 0; i < 6; i++) {
    clock.advance(1050);
    health.cycleCompleted(failed("conntrack exited 1: Operation not permitted"));
  }
  const down = health.readiness();
  assert.equal(down.ok, false);
  assert.equal(
    down.reason,
    "last successful dump 6.3s ago, more than 5s (6 failed since: conntrack exited 1: " +
      "Operation not permitted)",
  );
  clock.advance(1050);
  health.cycleCompleted(ok());
  assert.deepEqual(health.readiness(), { ok: true, reason: "last successful dump 0s ago" });
});

Deno.test("readiness() turns unready when the loop stops reporting at all", () => {
  const { health, clock } = setup(1000);
  health.cycleCompleted(ok());
  clock.advance(5000);
  assert.equal(health.readiness().ok, true);
  clock.advance(1);
  assert.deepEqual(health.readiness(), {
    ok: false,
    reason: "last successful dump 5s ago, more than 5s",
  });
});

Deno.test("readiness() allows three periods plus the dump's duration for a long period", () => {
  const { health, clock } = setup(60_000);
  health.cycleCompleted(ok(2000));
  clock.advance(3 * 60_000 + 2_000);
  assert.equal(health.readiness().ok, true);
  clock.advance(1);
  assert.equal(health.readiness().ok, false);
});

Deno.test("readiness() keeps a multi-line failure reason to one line", () => {
  const { health } = setup();
  health.cycleCompleted(failed("conntrack exited 1:\nline two\n\tline three\n"));
  const { reason } = health.readiness();
  assert.equal(reason.includes("\n"), false);
  assert.match(reason, /conntrack exited 1: line two line three\)$/);
});

Deno.test("readiness() cuts a very long failure reason", () => {
  const { health } = setup();
  health.cycleCompleted(failed(`conntrack exited 1: ${"x".repeat(5000)}`));
  const { reason } = health.readiness();
  assert.ok(reason.length < 400, `reason is ${reason.length} characters`);
  assert.match(reason, /…\)$/);
});

Deno.test("liveness() is alive from the start and while cycles are reported", () => {
  const { health, clock } = setup(1000);
  assert.deepEqual(health.liveness(), { ok: true });
  for (let i = 0; i < 10; i++) {
    clock.advance(60_000);
    health.cycleCompleted(i % 2 === 0 ? failed() : ok());
  }
  assert.deepEqual(health.liveness(), { ok: true });
});

Deno.test("liveness() fails after five minutes without a report, with a one-line reason", () => {
  const { health, clock } = setup(1000);
  health.cycleCompleted(ok());
  clock.advance(5 * 60_000);
  assert.equal(health.liveness().ok, true);
  clock.advance(1);
  assert.deepEqual(health.liveness(), {
    ok: false,
    reason: "loop has not completed a cycle for 300s, more than 300s: it looks stuck",
  });
  health.cycleCompleted(ok());
  assert.deepEqual(health.liveness(), { ok: true });
});

Deno.test("liveness() allows ten periods for a long period", () => {
  const { health, clock } = setup(60_000);
  clock.advance(10 * 60_000);
  assert.equal(health.liveness().ok, true);
  clock.advance(1);
  assert.equal(health.liveness().ok, false);
});

Deno.test("markLoopAlive() keeps a slow but moving cycle alive", () => {
  const { health, clock } = setup(1000);
  for (let i = 0; i < 4; i++) {
    clock.advance(4 * 60_000);
    health.markLoopAlive();
  }
  assert.deepEqual(health.liveness(), { ok: true });
  // A heartbeat is not a successful dump.
  assert.equal(health.readiness().ok, false);
});

Deno.test("createHealth() rejects a negative period", () => {
  assert.throws(
    () => createHealth({ periodMs: -1, clock: new FakeClock() }),
    (error) => error instanceof RangeError && error.message.includes("current value is -1"),
  );
});

Deno.test("readiness() counts a pause the busy limit stretched as the period", () => {
  const { health, clock } = setup(1000);
  // A 2 s listing on a large table, followed by a 6 s pause: the next dump comes 6 s later.
  health.cycleCompleted({ ...ok(2000), pauseMs: 6000 });
  clock.advance(7000);
  assert.equal(health.readiness().ok, true);
  // Three stretched pauses plus the listing without a success is stale, as with the period.
  clock.advance(20_000 - 7000 + 1);
  assert.equal(health.readiness().ok, false);
});
