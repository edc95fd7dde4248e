/**
 * Go duration strings (`300ms`, `1.5h`, `2h45m`), so that the agent accepts exactly the values the
 * original Go agent accepted in `CONNTRACK_TABLE_DUMP_FREQUENCY`.
 *
 * @module
 */

/** Nanoseconds per unit, keyed by every unit name Go's `time.ParseDuration` knows. */
const UNIT_NS: ReadonlyMap<string, bigint> = new Map([
  ["ns", 1n],
  ["us", 1_000n],
  ["µs", 1_000n], // U+00B5 MICRO SIGN
  ["μs", 1_000n], // U+03BC GREEK SMALL LETTER MU
  ["ms", 1_000_000n],
  ["s", 1_000_000_000n],
  ["m", 60_000_000_000n],
  ["h", 3_600_000_000_000n],
]);

/** Go keeps durations in an int64 of nanoseconds; anything beyond is out of range. */
const INT64_LIMIT = 1n << 63n;

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= "0" && c <= "9";

/** A run of digits at `start`: its value, its length, and (for fractions) its kept scale. */
interface Digits {
  readonly value: bigint;
  readonly length: number;
  /** 10^(digits kept); digits past int64 precision are dropped like Go does. */
  readonly scale: number;
}

function leadingDigits(text: string, start: number, isFraction: boolean): Digits | undefined {
  let value = 0n;
  let scale = 1;
  let i = start;
  let saturated = false;
  for (; isDigit(text[i]); i++) {
    if (saturated) continue;
    const next = value * 10n + BigInt(text.charCodeAt(i) - 48);
    if (next > INT64_LIMIT) {
      // An integer part this large cannot be a duration; a fraction just stops gaining precision.
      if (!isFraction) return undefined;
      saturated = true;
      continue;
    }
    value = next;
    scale *= 10;
  }
  return { value, length: i - start, scale };
}

/**
 * Parses a duration the way Go's `time.ParseDuration` does and returns it in milliseconds.
 *
 * The syntax is an optional sign followed by one or more `<number><unit>` groups, where a number
 * may have a fraction (`1.5`, `.5`, `5.`) and the unit is one of `ns`, `us`, `µs`, `μs`, `ms`,
 * `s`, `m`, `h`. The bare string `0` (optionally signed) is the only value allowed without a
 * unit. The result is nanosecond-exact before conversion and may be fractional (`1us` is
 * `0.001`). Values beyond Go's range (about 292 years) are rejected, as Go rejects them.
 *
 * @param text The duration as written by the user.
 * @returns The duration in milliseconds; negative for a leading `-`.
 * @throws {SyntaxError} When `text` is not a Go duration, e.g. `""`, `"1"` or `"banana"`.
 *
 * @example
 * ```ts
 * import { parseGoDuration } from "./duration.ts";
 * parseGoDuration("1m30s"); // 90000
 * parseGoDuration("300ms"); // 300
 * parseGoDuration("1.5h"); // 5400000
 * ```
 */
export function parseGoDuration(text: string): number {
  const fail = (why: string): never => {
    throw new SyntaxError(`Cannot parse ${JSON.stringify(text)} as a Go duration: ${why}`);
  };
  let i = 0;
  const negative = text[0] === "-";
  if (text[0] === "-" || text[0] === "+") i = 1;
  if (text.slice(i) === "0") return 0;
  if (i === text.length) fail("it is empty");

  let total = 0n;
  while (i < text.length) {
    const first = text[i];
    if (first !== "." && !isDigit(first)) {
      fail(`expected a number at ${JSON.stringify(text.slice(i))}`);
    }
    const whole = leadingDigits(text, i, false) ?? fail("it is out of range");
    i += whole.length;
    let fraction: Digits = { value: 0n, length: 0, scale: 1 };
    if (text[i] === ".") {
      fraction = leadingDigits(text, i + 1, true) ?? fraction;
      i += 1 + fraction.length;
    }
    if (whole.length === 0 && fraction.length === 0) fail("a number has no digits");

    const unitStart = i;
    while (i < text.length && text[i] !== "." && !isDigit(text[i])) i++;
    if (i === unitStart) fail("a number has no unit (use ns, us, ms, s, m or h)");
    const unitName = text.slice(unitStart, i);
    const unit = UNIT_NS.get(unitName) ??
      fail(`unknown unit ${JSON.stringify(unitName)} (use ns, us, ms, s, m or h)`);

    let part = whole.value * unit;
    if (part > INT64_LIMIT) fail("it is out of range");
    if (fraction.value > 0n) {
      // Go computes the fraction in float64 and truncates; doing the same keeps results identical.
      part += BigInt(Math.trunc(Number(fraction.value) * (Number(unit) / fraction.scale)));
      if (part > INT64_LIMIT) fail("it is out of range");
    }
    total += part;
    if (total > INT64_LIMIT) fail("it is out of range");
  }
  if (!negative && total > INT64_LIMIT - 1n) fail("it is out of range");

  // Split before converting so that small values stay exact in floating point.
  const ms = Number(total / 1_000_000n) + Number(total % 1_000_000n) / 1e6;
  // `0 - ms` rather than `-ms` so that "-0s" is 0, not -0, as in Go.
  return negative ? 0 - ms : ms;
}
