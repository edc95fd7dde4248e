import assert from "node:assert/strict";
import { LineMemo } from "../lib/table/text/line_memo.ts";
import { tokenizeLine } from "../lib/table/text/tokenizer.ts";

const line = (timer: number, sport = 40000, id = 3000000007, tail = "mark=0 use=1") =>
  `tcp      6 ${timer} SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=${sport} dport=80 ` +
  `[UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=${sport} ${tail} id=${id}`;

/** One listing through the memo. */
function list(memo: LineMemo, lines: readonly string[]) {
  memo.begin();
  const parsed = lines.map((l) => memo.read(l));
  memo.end();
  return parsed;
}

Deno.test("LineMemo.read() gives what the tokenizer gives, with the new timer", () => {
  const memo = new LineMemo();
  list(memo, [line(119)]);
  const [again] = list(memo, [line(118)]);
  assert.deepEqual(again, tokenizeLine(line(118)));
});

Deno.test("LineMemo.read() agrees with the tokenizer on every fixture line, listed twice", async () => {
  const dir = new URL("./fixtures/", import.meta.url);
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.name.startsWith("conntrack-")) continue;
    const lines = (await Deno.readTextFile(new URL(entry.name, dir))).split("\n");
    const memo = new LineMemo();
    for (let round = 0; round < 2; round++) {
      memo.begin();
      for (const l of lines) {
        assert.deepEqual(memo.read(l), tokenizeLine(l), `${entry.name}: ${l}`);
      }
      memo.end();
    }
  }
});

Deno.test("LineMemo.read() tokenizes a line whose text after the timer changed", () => {
  const memo = new LineMemo();
  list(memo, [line(119)]);
  // Same id, another flow: the id finds the slot, the text tells them apart.
  const [other] = list(memo, [line(118, 40001)]);
  assert.deepEqual(other, tokenizeLine(line(118, 40001)));
  const [changedMark] = list(memo, [line(117, 40001, 3000000007, "mark=5 use=1")]);
  assert.deepEqual(changedMark, tokenizeLine(line(117, 40001, 3000000007, "mark=5 use=1")));
});

Deno.test("LineMemo.read() keeps two entries whose ids collide apart", () => {
  const memo = new LineMemo();
  // 2^30 apart: the same slot, different ids and flows.
  const a = line(100, 40000, 5);
  const b = line(100, 40001, 5 + 2 ** 30);
  for (let round = 0; round < 3; round++) {
    const parsed = list(memo, [a, b]);
    assert.deepEqual(parsed, [tokenizeLine(a), tokenizeLine(b)]);
  }
});

Deno.test("LineMemo.read() never remembers a malformed line and says why each time", () => {
  const memo = new LineMemo();
  const bad = line(119, 99999);
  for (let round = 0; round < 2; round++) {
    const [parsed] = list(memo, [bad]);
    assert.equal(parsed?.kind, "malformed");
  }
  assert.equal(memo.size, 0);
});

Deno.test("LineMemo.read() does not take a line with a non-canonical timer or id from memory", () => {
  const memo = new LineMemo();
  list(memo, [line(119)]);
  for (
    const odd of [line(119).replace(" 119 ", " 0119 "), line(119).replace(" 119 ", " 99999999999 ")]
  ) {
    memo.begin();
    assert.deepEqual(memo.read(odd), tokenizeLine(odd));
    memo.end();
  }
});

Deno.test("LineMemo.end() forgets the lines a listing did not print", () => {
  const memo = new LineMemo();
  list(memo, [line(119, 40000, 1), line(119, 40001, 2), line(119, 40002, 3)]);
  assert.equal(memo.size, 3);
  list(memo, [line(118, 40001, 2)]);
  assert.equal(memo.size, 1);
});

Deno.test("LineMemo.read() tokenizes the second of two identical lines in one listing", () => {
  const memo = new LineMemo();
  list(memo, [line(119)]);
  const parsed = list(memo, [line(118), line(118)]);
  assert.deepEqual(parsed, [tokenizeLine(line(118)), tokenizeLine(line(118))]);
  assert.equal(memo.size, 1);
});
