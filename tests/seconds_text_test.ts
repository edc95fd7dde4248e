import assert from "node:assert/strict";
import { durationText, secondsColumn } from "../lib/core/seconds_text.ts";

Deno.test("durationText() shows tenths of a second, rounded down, without a trailing .0", () => {
  assert.equal(durationText(0), "0s");
  assert.equal(durationText(99), "0s");
  assert.equal(durationText(450), "0.4s");
  assert.equal(durationText(10_000), "10s");
  assert.equal(durationText(10_099), "10s");
  assert.equal(durationText(10_999), "10.9s");
  assert.equal(durationText(300_000), "300s");
});

Deno.test("durationText() never shows an age past its limit before it is reached", () => {
  // 9,999 ms is short of a 10 s limit and must not read as "10s".
  assert.notEqual(durationText(9_999), durationText(10_000));
  assert.equal(durationText(9_999), "9.9s");
});

Deno.test("secondsColumn() shows whole seconds, rounded down, like conntrack's timer", () => {
  assert.equal(secondsColumn(0), "0s");
  assert.equal(secondsColumn(999), "0s");
  assert.equal(secondsColumn(12_999), "12s");
  assert.equal(secondsColumn(120_000), "120s");
});
