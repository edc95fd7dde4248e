import assert from "node:assert/strict";
import { parseGoDuration } from "../lib/operator/duration.ts";

const NS = 1e-6;
const US = 1e-3;
const MS = 1;
const S = 1000;
const M = 60 * S;
const H = 60 * M;

// Cases and expected values from Go's time.ParseDuration documentation and tests.
const VALID: ReadonlyArray<readonly [string, number]> = [
  ["0", 0],
  ["+0", 0],
  ["-0", 0],
  ["5s", 5 * S],
  ["30s", 30 * S],
  ["1478s", 1478 * S],
  ["-5s", -5 * S],
  ["+5s", 5 * S],
  ["-0s", 0],
  ["5.0s", 5 * S],
  ["5.6s", 5.6 * S],
  ["5.s", 5 * S],
  [".5s", 0.5 * S],
  ["1.004s", 1004 * MS],
  ["100.00100s", 100001 * MS],
  ["10ns", 10 * NS],
  ["11us", 11 * US],
  ["12µs", 12 * US],
  ["12μs", 12 * US],
  ["13ms", 13 * MS],
  ["15m", 15 * M],
  ["16h", 16 * H],
  ["300ms", 300 * MS],
  ["1.5h", 1.5 * H],
  ["2h45m", 2 * H + 45 * M],
  ["1m30s", 90 * S],
  ["3h30m", 3 * H + 30 * M],
  ["10.5s4m", 4 * M + 10.5 * S],
  ["-2m3.4s", -(2 * M + 3.4 * S)],
  ["1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS],
  ["39h9m14.425s", 39 * H + 9 * M + 14.425 * S],
  ["52763797000ns", 52763797000 * NS],
  ["0.3333333333333333333h", 20 * M],
  ["0.100000000000000000000h", 6 * M],
  ["9223372036854775807ns", 9223372036854.775807],
  ["-9223372036854775808ns", -9223372036854.775808],
];

for (const [text, expected] of VALID) {
  Deno.test(`parseGoDuration() reads ${JSON.stringify(text)} as Go does`, () => {
    const got = parseGoDuration(text);
    assert.ok(
      Math.abs(got - expected) <= Math.abs(expected) * 1e-12,
      `${text}: got ${got}, want ${expected}`,
    );
  });
}

Deno.test("parseGoDuration() returns 0, not -0, for a negative zero", () => {
  assert.ok(Object.is(parseGoDuration("-0s"), 0));
  assert.ok(Object.is(parseGoDuration("-0"), 0));
});

const INVALID: readonly string[] = [
  "",
  "1",
  "3",
  "-",
  "+",
  "s",
  ".",
  "-.",
  ".s",
  "+.s",
  "1d",
  "banana",
  "5 s",
  " 5s",
  "5s ",
  "1.5",
  "1h30",
  "--5s",
  "\x85\x85",
  "9223372036854775808ns",
  "9223372036854775810ns",
  "-9223372036854775809ns",
  "3000000h",
];

for (const text of INVALID) {
  Deno.test(`parseGoDuration() rejects ${JSON.stringify(text)} with a SyntaxError`, () => {
    assert.throws(
      () => parseGoDuration(text),
      (error: unknown) =>
        error instanceof SyntaxError &&
        error.message.startsWith(`Cannot parse ${JSON.stringify(text)} as a Go duration: `) &&
        !error.message.includes("\n"),
    );
  });
}

Deno.test("parseGoDuration() says which unit is unknown", () => {
  assert.throws(() => parseGoDuration("5d"), { message: /unknown unit "d"/ });
});
