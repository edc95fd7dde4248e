import assert from "node:assert/strict";
import {
  MAX_STRETCHED_PAUSE_MS,
  pauseAfter,
  Spell,
  type SpellChange,
  stretchThreshold,
} from "../lib/loop/pacing.ts";

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

Deno.test("stretchThreshold() is the cycle time above which pauseAfter() stretches", () => {
  for (const limit of [0.05, 0.2, 0.25, 0.5, 0.9]) {
    const threshold = stretchThreshold(1000, limit);
    assert.equal(pauseAfter(Math.floor(threshold), 1000, limit), 1000, `${limit}`);
    assert.ok(pauseAfter(Math.floor(threshold) + 2, 1000, limit) > 1000, `${limit}`);
  }
  assert.equal(stretchThreshold(1000, 1), Infinity);
});

/** The changes a fresh spell goes through for `values` against a limit of 100. */
function changes(values: readonly number[]): SpellChange[] {
  const spell = new Spell();
  return values.map((value) => spell.update(value, 100));
}

Deno.test("Spell begins with the first value over the limit, and ends after three clearly under", () => {
  assert.deepEqual(changes([50, 101, 120, 10, 10, 10, 10]), [
    "unchanged",
    "began",
    "unchanged",
    "unchanged",
    "unchanged",
    "ended",
    "unchanged",
  ]);
});

Deno.test("Spell does not end on values under the limit but not clearly under it", () => {
  const values = Array.from({ length: 50 }, (_, i) => (i === 0 ? 150 : 80 + (i % 20)));
  assert.deepEqual(changes(values).filter((c) => c !== "unchanged"), ["began"]);
});

Deno.test("Spell starts counting again when a value goes back over the limit", () => {
  assert.deepEqual(
    changes([150, 10, 10, 150, 10, 10, 90, 10, 10, 10]).filter((c) => c !== "unchanged"),
    ["began", "ended"],
  );
});

Deno.test("Spell changes at most twice per four cycles, however values oscillate", () => {
  // The worst case: just enough cycles under the band to end, then one over the limit.
  const values = Array.from({ length: 400 }, (_, i) => (i % 4 === 0 ? 200 : 0));
  const changed = changes(values).filter((c) => c !== "unchanged").length;
  assert.equal(changed, 200);
  // Around the limit, within the band, it never flips.
  const near = Array.from({ length: 400 }, (_, i) => (i % 2 === 0 ? 119 : 81));
  assert.equal(changes(near).filter((c) => c !== "unchanged").length, 1);
});

Deno.test("Spell never begins under an infinite limit", () => {
  const spell = new Spell();
  assert.equal(spell.update(1e12, Infinity), "unchanged");
  assert.equal(spell.on, false);
});
