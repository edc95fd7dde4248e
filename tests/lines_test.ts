import assert from "node:assert/strict";
import {
  LineSplitter,
  MAX_LINE_LENGTH,
  type OverlongLine,
  splitLineBatches,
  splitLines,
} from "../lib/seams/output_lines.ts";

const encoder = new TextEncoder();

async function collect(chunks: readonly Uint8Array[]): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of splitLines(ReadableStream.from(chunks))) lines.push(line);
  return lines;
}

/** `bytes` cut at the given offsets. */
function cut(bytes: Uint8Array, offsets: readonly number[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const at of [...offsets, bytes.length]) {
    chunks.push(bytes.subarray(from, at));
    from = at;
  }
  return chunks;
}

const SAMPLE = Deno.readTextFileSync(
  new URL("./fixtures/conntrack-list-ktimestamp.txt", import.meta.url),
);

Deno.test("splitLines() yields the same lines wherever the chunks are cut", async () => {
  const bytes = encoder.encode(SAMPLE);
  const expected = SAMPLE.split("\n").slice(0, -1); // the file ends with "\n"
  assert.ok(expected.length > 5);
  for (let at = 0; at <= bytes.length; at++) {
    assert.deepEqual(await collect(cut(bytes, [at])), expected, `cut at ${at}`);
  }
});

Deno.test("splitLines() yields the same lines from one-byte chunks", async () => {
  const bytes = encoder.encode(SAMPLE);
  const offsets = Array.from({ length: bytes.length - 1 }, (_, n) => n + 1);
  assert.deepEqual(await collect(cut(bytes, offsets)), SAMPLE.split("\n").slice(0, -1));
});

Deno.test("splitLines() keeps a UTF-8 character cut between chunks whole", async () => {
  const bytes = encoder.encode("secctx=ü€𝄞\nnext\n");
  for (let at = 8; at < 18; at++) {
    assert.deepEqual(await collect(cut(bytes, [at])), ["secctx=ü€𝄞", "next"], `cut at ${at}`);
  }
});

Deno.test("splitLines() drops the \\r of \\r\\n endings, also when \\r and \\n arrive apart", async () => {
  const bytes = encoder.encode("one\r\ntwo\r\nthree\r\n");
  assert.deepEqual(await collect([bytes]), ["one", "two", "three"]);
  assert.deepEqual(await collect(cut(bytes, [4])), ["one", "two", "three"]);
});

Deno.test("splitLines() includes a last line without \\n", async () => {
  assert.deepEqual(await collect([encoder.encode("one\ntwo")]), ["one", "two"]);
  assert.deepEqual(await collect(cut(encoder.encode("one\ntwo\r"), [5])), ["one", "two"]);
});

Deno.test("splitLines() keeps empty lines between lines but adds none at the end", async () => {
  assert.deepEqual(await collect([encoder.encode("a\n\n\nb\n")]), ["a", "", "", "b"]);
  assert.deepEqual(await collect([]), []);
  assert.deepEqual(await collect([new Uint8Array(0)]), []);
  assert.deepEqual(await collect([encoder.encode("\n")]), [""]);
});

Deno.test("splitLines() joins a line of the longest length kept across many chunks", async () => {
  const long = "x".repeat(MAX_LINE_LENGTH);
  const bytes = encoder.encode(`${long}\nshort\n`);
  const offsets = Array.from({ length: 16 }, (_, n) => (n + 1) * 1000);
  assert.deepEqual(await collect(cut(bytes, offsets)), [long, "short"]);
});

Deno.test("splitLines() cancels the stream when the reader stops early", async () => {
  let cancelled = false;
  let pulls = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulls++;
      controller.enqueue(encoder.encode(`line ${pulls}\n`));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const line of splitLines(stream)) {
    if (line === "line 3") break;
  }
  assert.ok(cancelled);
  assert.ok(pulls < 10, `${pulls} chunks pulled`);
});

/** Lines and overlong lines from `chunks`, split with a small limit. */
async function collectWithLimit(
  chunks: readonly Uint8Array[],
  maxLineLength: number,
): Promise<{ lines: string[]; overlong: OverlongLine[] }> {
  const overlong: OverlongLine[] = [];
  const lines: string[] = [];
  const options = { maxLineLength, onOverlong: (line: OverlongLine) => overlong.push(line) };
  for await (const line of splitLines(ReadableStream.from(chunks), options)) lines.push(line);
  return { lines, overlong };
}

Deno.test("splitLines() skips and reports a line longer than the limit, wherever the chunks are cut", async () => {
  const bytes = encoder.encode("short\n0123456789abc\nok 1\nexactly10!\n0123456789ab");
  for (let at = 0; at <= bytes.length; at++) {
    const { lines, overlong } = await collectWithLimit(cut(bytes, [at]), 10);
    assert.deepEqual(lines, ["short", "ok 1", "exactly10!"], `cut at ${at}`);
    assert.deepEqual(overlong, [
      { head: "0123456789abc", length: 13 },
      { head: "0123456789ab", length: 12 },
    ], `cut at ${at}`);
  }
});

Deno.test("splitLines() skips a line longer than the limit from one-byte chunks", async () => {
  const bytes = encoder.encode("a\nbbbbbbbbbbbbbbbbbbbb\nc\n");
  const offsets = Array.from({ length: bytes.length - 1 }, (_, n) => n + 1);
  const { lines, overlong } = await collectWithLimit(cut(bytes, offsets), 5);
  assert.deepEqual(lines, ["a", "c"]);
  assert.deepEqual(overlong, [{ head: "bbbbbbbbbbbbbbbbbbbb", length: 20 }]);
});

/** 64 KiB of `a`, the size of one read of a child's stdout. */
const CHUNK = "a".repeat(64 * 1024);
/** 600 MB: more than V8's longest string, which the whole line would have had to become. */
const HUGE_CHUNKS = Math.ceil(600e6 / CHUNK.length);

Deno.test("LineSplitter never holds more than the limit of a 600 MB line without a newline", () => {
  const overlong: OverlongLine[] = [];
  const splitter = new LineSplitter({ onOverlong: (line) => overlong.push(line) });
  assert.deepEqual(splitter.push("before\n"), ["before"]);
  let mostHeld = 0;
  for (let n = 0; n < HUGE_CHUNKS; n++) {
    assert.deepEqual(splitter.push(CHUNK), []);
    mostHeld = Math.max(mostHeld, splitter.held);
  }
  assert.ok(mostHeld <= MAX_LINE_LENGTH, `held ${mostHeld}`);
  assert.deepEqual(splitter.push("\nudp after\n"), ["udp after"]);
  assert.equal(splitter.held, 0);
  assert.deepEqual(overlong, [{ head: "a".repeat(200), length: HUGE_CHUNKS * CHUNK.length }]);
  assert.deepEqual(splitter.end(), []);
});

Deno.test("splitLineBatches() reads the line after a 600 MB line without a newline", async () => {
  const bytes = encoder.encode(CHUNK);
  let sent = 0;
  // Made as it is read: the same 64 KiB chunk again and again, then a valid line.
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent++ < HUGE_CHUNKS) controller.enqueue(bytes);
      else {
        controller.enqueue(encoder.encode("\ntcp after\n"));
        controller.close();
      }
    },
  });
  const overlong: OverlongLine[] = [];
  const lines: string[] = [];
  for await (const batch of splitLineBatches(stream, { onOverlong: (l) => overlong.push(l) })) {
    lines.push(...batch);
  }
  assert.deepEqual(lines, ["tcp after"]);
  assert.deepEqual(overlong.map((l) => l.length), [HUGE_CHUNKS * CHUNK.length]);
});

Deno.test("splitLines() reports an overlong last line without a newline", async () => {
  const { lines, overlong } = await collectWithLimit([encoder.encode("ok\n" + "z".repeat(50))], 8);
  assert.deepEqual(lines, ["ok"]);
  assert.deepEqual(overlong.map((l) => l.length), [50]);
});
