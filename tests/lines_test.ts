import assert from "node:assert/strict";
import { splitLines } from "../lib/lines.ts";

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

Deno.test("splitLines() joins a line longer than many chunks", async () => {
  const long = "x".repeat(100_000);
  const bytes = encoder.encode(`${long}\nshort\n`);
  const offsets = Array.from({ length: 99 }, (_, n) => (n + 1) * 1000);
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
