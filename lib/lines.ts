/**
 * Splitting a program's output into lines as it arrives, so that a table dump of any size is
 * never held whole.
 *
 * @module
 */

/**
 * Splits a byte stream into lines without ever holding the whole stream: chunks are decoded as
 * UTF-8 (a character cut between chunks is kept whole), split on `\n`, and the unfinished end is
 * carried into the next chunk. A trailing `\r` is dropped from each line (`\r\n` endings); a last
 * line without `\n` is included; an empty stream yields nothing. Stopping early (`break`) cancels
 * the stream.
 *
 * @example
 * ```ts
 * import { splitLines } from "./lines.ts";
 * const bytes = new TextEncoder().encode("tcp 6 116 SYN_SENT ...\r\nudp 17 28 ...");
 * const lines: string[] = [];
 * for await (const line of splitLines(ReadableStream.from([bytes]))) lines.push(line);
 * // ["tcp 6 116 SYN_SENT ...", "udp 17 28 ..."]
 * ```
 */
export async function* splitLines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string, void, undefined> {
  // A plain yield per line: `yield*` over an array would add a promise per line.
  for await (const batch of splitLineBatches(stream)) {
    for (const line of batch) yield line;
  }
}

/**
 * {@link splitLines}, one batch of lines per chunk read: the lines every chunk completes, in
 * order. An async generator step costs about as much as reading a line, so a hot loop over a
 * table dump takes whole batches and walks each with a plain loop. A batch is never empty, and
 * belongs to the caller until it asks for the next one.
 *
 * @example
 * ```ts
 * import { splitLineBatches } from "./lines.ts";
 * const bytes = new TextEncoder().encode("one\ntwo\nthr");
 * const batches: string[][] = [];
 * for await (const batch of splitLineBatches(ReadableStream.from([bytes]))) batches.push(batch);
 * // [["one", "two"], ["thr"]]
 * ```
 */
export async function* splitLineBatches(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string[], void, undefined> {
  const decoder = new TextDecoder();
  // Pieces of a line longer than a chunk; joined once, when its `\n` arrives.
  const pending: string[] = [];
  for await (const chunk of chunksOf(stream)) {
    const text = decoder.decode(chunk, { stream: true });
    let newline = text.indexOf("\n");
    if (newline < 0) {
      if (text.length > 0) pending.push(text);
      continue;
    }
    const batch: string[] = [];
    const head = text.slice(0, newline);
    if (pending.length > 0) {
      pending.push(head);
      batch.push(dropCarriageReturn(pending.join("")));
      pending.length = 0;
    } else {
      batch.push(dropCarriageReturn(head));
    }
    let from = newline + 1;
    while ((newline = text.indexOf("\n", from)) >= 0) {
      batch.push(dropCarriageReturn(text.slice(from, newline)));
      from = newline + 1;
    }
    if (from < text.length) pending.push(text.slice(from));
    yield batch;
  }
  const tail = decoder.decode();
  if (tail.length > 0) pending.push(tail);
  if (pending.length > 0) {
    const last = dropCarriageReturn(pending.join(""));
    if (last.length > 0) yield [last];
  }
}

/** How much one read of a byte stream waits for: a pipe's capacity on Linux. */
const READ_SIZE = 64 * 1024;

/**
 * The chunks of `stream`, as large as it can give them. conntrack writes 4 KiB at a time, and
 * reading a pipe as it is written costs one wake-up, one buffer and one promise per 4 KiB: about
 * 20 µs each, 40 ms per dump of 50k candidates, a third of the agent's work. A byte stream (a
 * child's stdout) is therefore read into one reused buffer, each read waiting until 64 KiB have
 * arrived or the stream ends; any other stream is read as it comes. Stopping early cancels the
 * stream.
 */
async function* chunksOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = stream.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream.
    yield* stream;
    return;
  }
  let done = false;
  try {
    let buffer = new ArrayBuffer(READ_SIZE);
    while (!done) {
      const read = await reader.read(new Uint8Array(buffer), { min: READ_SIZE });
      done = read.done;
      if (read.value === undefined) break;
      // The read hands the buffer back (transferred); it is free again once the chunk is used.
      buffer = read.value.buffer;
      if (read.value.length > 0) yield read.value;
    }
  } finally {
    // An errored stream rejects cancel() with the error already being thrown.
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function dropCarriageReturn(line: string): string {
  return line.length > 0 && line.charCodeAt(line.length - 1) === 13 ? line.slice(0, -1) : line;
}
