import assert from "node:assert/strict";
import { mulberry32 } from "../bench/random.ts";
import { digitsValue } from "../lib/table/text/_digits.ts";

Deno.test("digitsValue() reads the numbers at the edges of every field's range", () => {
  for (
    const text of [
      "0",
      "7",
      "65535",
      "999999999",
      "1000000000",
      "2147483648",
      "4294967295",
      "4294967296",
      "9007199254740991",
      "0000000000000042",
    ]
  ) {
    assert.equal(digitsValue(text, 0, text.length), Number(text), text);
  }
});

Deno.test("digitsValue() reads only [start, end) of a line", () => {
  const line = "tcp      6 117 SYN_SENT ... use=1 id=4294967295";
  assert.equal(digitsValue(line, 11, 14), 117);
  assert.equal(digitsValue(line, line.length - 10, line.length), 4294967295);
});

Deno.test("digitsValue() agrees with Number() on every length from 1 to 16 digits", () => {
  const next = mulberry32(7);
  for (let length = 1; length <= 16; length++) {
    for (let n = 0; n < 2000; n++) {
      let text = "";
      for (let i = 0; i < length; i++) text += String(Math.floor(next() * 10));
      // Above 2^53 neither reading is exact; conntrack prints no such number in a field we keep.
      if (Number(text) > Number.MAX_SAFE_INTEGER) continue;
      assert.equal(digitsValue(`x=${text} `, 2, 2 + length), Number(text), text);
    }
  }
});
