import assert from "node:assert/strict";
import { MAX_STRETCHED_PAUSE_MS, pauseAfter } from "../lib/pacing.ts";

Deno.test("pauseAfter() keeps the period while cycles fit under the busy limit", () => {
  assert.equal(pauseAfter(0, 1000, 0.25), 1000);
  assert.equal(pauseAfter(200, 1000, 0.25), 1000);
  assert.equal(pauseAfter(333, 1000, 0.25), 1000);
});

Deno.test("pauseAfter() stretches the pause so that cycles take at most the limit's share", () => {
  for (const limit of [0.01, 0.1, 0.25, 0.5, 0.9]) {
    for (const cycleMs of [400, 800, 1500, 4000]) {
      const pause = pauseAfter(cycleMs, 100, limit);
      const share = cycleMs / (cycleMs + pause);
      assert.ok(share <= limit + 1e-9 || pause === MAX_STRETCHED_PAUSE_MS, `${limit} ${cycleMs}`);
      // Not longer than needed: one millisecond less would break the limit.
      if (pause > 100 && pause < MAX_STRETCHED_PAUSE_MS) {
        assert.ok(cycleMs / (cycleMs + pause - 1) > limit, `${limit} ${cycleMs} ${pause}`);
      }
    }
  }
});

Deno.test("pauseAfter() never stretches at a limit of 100%", () => {
  assert.equal(pauseAfter(60_000, 1000, 1), 1000);
});

Deno.test("pauseAfter() caps a stretched pause at 30 s, unless the period is longer", () => {
  assert.equal(pauseAfter(60_000, 1000, 0.25), MAX_STRETCHED_PAUSE_MS);
  assert.equal(pauseAfter(60_000, 45_000, 0.25), 45_000);
});

Deno.test("pauseAfter() treats a cycle time that is not a positive number as no time", () => {
  assert.equal(pauseAfter(NaN, 1000, 0.25), 1000);
  assert.equal(pauseAfter(-5, 1000, 0.25), 1000);
});
