/**
 * Splitting a program's output into lines as it arrives, so that a table dump of any size is
 * never held whole, and a line of any length is never held either.
 *
 * @module
 */

/**
 * The longest line kept, in UTF-16 code units (bytes, for conntrack's ASCII output): 16 KiB.
 *
 * A conntrack line is under 1 KiB: the longest, an IPv6 entry with both tuples, zones, labels,
 * timestamps and `-o id`, is about 600 bytes. The one field of unbounded-looking length is the
 * SELinux `secctx`, which the kernel caps at a page (4 KiB). 16 KiB leaves room for all of it
 * and for fields later releases add, while bounding what a broken or hostile program can make the
 * agent hold: without a bound, 600 MB without a newline ended the agent with `RangeError:
 * Invalid string length`, and 100 MB cost 477 MB of memory per listing.
 */
export const MAX_LINE_LENGTH = 16 * 1024;

/** How much of an overlong line is kept to show the operator. */
export const OVERLONG_HEAD_LENGTH = 200;

/** A line longer than the limit, skipped without being held. */
export interface OverlongLine {
  /** Its first {@link OVERLONG_HEAD_LENGTH} characters, to show what it looked like. */
  readonly head: string;
  /** Its full length in UTF-16 code units (without the `\n`). */
  readonly length: number;
}

/** Options of {@link LineSplitter}, {@link splitLines} and {@link splitLineBatches}. */
export interface SplitOptions {
  /**
   * Lines longer than this many UTF-16 code units are skipped, and reported to `onOverlong`.
   * @default {MAX_LINE_LENGTH}
   */
  readonly maxLineLength?: number;
  /** Told of each skipped overlong line once its end (`\n` or end of stream) is reached. */
  readonly onOverlong?: (line: OverlongLine) => void;
}

/**
 * The state of splitting text into lines: complete lines come out of {@link LineSplitter.push}
 * as soon as their `\n` arrives; the unfinished end is held, but never more than
 * {@link SplitOptions.maxLineLength} of it. Once an unfinished line outgrows the limit, all but
 * its head is dropped and the rest of it is skipped as it arrives, until its `\n`. A trailing `\r`
 * is dropped from each line.
 *
 * @example An overlong line is skipped and reported
 * ```ts
 * import { LineSplitter } from "./output_lines.ts";
 * const overlong: number[] = [];
 * const splitter = new LineSplitter({ maxLineLength: 4, onOverlong: (l) => overlong.push(l.length) });
 * splitter.push("ok\nfar too"); // ["ok"]
 * splitter.held; // 0: "far too" is already longer than 4
 * splitter.push(" long\nyes\n"); // ["yes"]
 * overlong; // [12]
 * splitter.end(); // []
 * ```
 */
export class LineSplitter {
  readonly #max: number;
  readonly #onOverlong: ((line: OverlongLine) => void) | undefined;
  /** Pieces of the unfinished line, joined once, when its `\n` arrives. */
  #pending: string[] = [];
  #held = 0;
  /** The overlong line being skipped: its head and length so far. */
  #skipping: { head: string; length: number } | undefined;

  /** @param options The limit and who is told of overlong lines. */
  constructor(options: SplitOptions = {}) {
    this.#max = options.maxLineLength ?? MAX_LINE_LENGTH;
    this.#onOverlong = options.onOverlong;
  }

  /** UTF-16 code units of the unfinished line held: never more than the limit. */
  get held(): number {
    return this.#held;
  }

  /** Splits the next piece of text; returns the lines it completes, in order (maybe none). */
  push(text: string): string[] {
    const lines: string[] = [];
    let newline = text.indexOf("\n");
    if (newline < 0) {
      this.#carry(text);
      return lines;
    }
    this.#finish(text.slice(0, newline), lines);
    let from = newline + 1;
    while ((newline = text.indexOf("\n", from)) >= 0) {
      if (newline - from > this.#max) {
        const head = text.slice(from, Math.min(newline, from + OVERLONG_HEAD_LENGTH));
        this.#report({ head, length: newline - from });
      } else {
        lines.push(dropCarriageReturn(text.slice(from, newline)));
      }
      from = newline + 1;
    }
    if (from < text.length) this.#carry(from === 0 ? text : text.slice(from));
    return lines;
  }

  /** Ends the text: returns the last line when it had no `\n` (and is not empty). */
  end(): string[] {
    const lines: string[] = [];
    if (this.#skipping !== undefined || this.#held > 0) this.#finish("", lines);
    return lines.length === 1 && lines[0] === "" ? [] : lines;
  }

  /** Adds `text`, which has no `\n`, to the unfinished line, or skips it. */
  #carry(text: string): void {
    if (text.length === 0) return;
    if (this.#skipping !== undefined) {
      this.#skip(this.#skipping, text);
    } else if (this.#held + text.length > this.#max) {
      // Keep only the head; the pieces held so far are at most the limit, so joining them is cheap.
      const head = (this.#pending.join("") + text.slice(0, OVERLONG_HEAD_LENGTH))
        .slice(0, OVERLONG_HEAD_LENGTH);
      this.#skipping = { head, length: this.#held + text.length };
      this.#pending = [];
      this.#held = 0;
    } else {
      this.#pending.push(text);
      this.#held += text.length;
    }
  }

  /** Ends the unfinished line with `last`, its part up to the `\n`. */
  #finish(last: string, lines: string[]): void {
    if (this.#skipping !== undefined) {
      this.#skip(this.#skipping, last);
      this.#report(this.#skipping);
      this.#skipping = undefined;
    } else if (this.#held + last.length > this.#max) {
      const head = (this.#pending.join("") + last.slice(0, OVERLONG_HEAD_LENGTH))
        .slice(0, OVERLONG_HEAD_LENGTH);
      this.#report({ head, length: this.#held + last.length });
    } else if (this.#pending.length > 0) {
      this.#pending.push(last);
      lines.push(dropCarriageReturn(this.#pending.join("")));
    } else {
      lines.push(dropCarriageReturn(last));
    }
    this.#pending = [];
    this.#held = 0;
  }

  /** Counts `text` into the overlong line being skipped, keeping it only to fill the head. */
  #skip(skipping: { head: string; length: number }, text: string): void {
    if (skipping.head.length < OVERLONG_HEAD_LENGTH) {
      skipping.head += text.slice(0, OVERLONG_HEAD_LENGTH - skipping.head.length);
    }
    skipping.length += text.length;
  }

  #report(line: OverlongLine): void {
    this.#onOverlong?.({ head: line.head, length: line.length });
  }
}

/**
 * Splits a byte stream into lines without ever holding the whole stream: chunks are decoded as
 * UTF-8 (a character cut between chunks is kept whole), split on `\n`, and the unfinished end is
 * carried into the next chunk. A trailing `\r` is dropped from each line (`\r\n` endings); a last
 * line without `\n` is included; an empty stream yields nothing. A line longer than
 * {@link MAX_LINE_LENGTH} (or `options.maxLineLength`) is skipped without being held, and
 * reported to `options.onOverlong`. Stopping early (`break`) cancels the stream.
 *
 * @example
 * ```ts
 * import { splitLines } from "./output_lines.ts";
 * const bytes = new TextEncoder().encode("tcp 6 116 SYN_SENT ...\r\nudp 17 28 ...");
 * const lines: string[] = [];
 * for await (const line of splitLines(ReadableStream.from([bytes]))) lines.push(line);
 * // ["tcp 6 116 SYN_SENT ...", "udp 17 28 ..."]
 * ```
 */
export async function* splitLines(
  stream: ReadableStream<Uint8Array>,
  options: SplitOptions = {},
): AsyncGenerator<string, void, undefined> {
  // A plain yield per line: `yield*` over an array would add a promise per line.
  for await (const batch of splitLineBatches(stream, options)) {
    for (const line of batch) yield line;
  }
}

/**
 * {@link splitLines}, one batch of lines per chunk read: the lines every chunk completes, in
 * order. An async generator step costs about as much as reading a line, so a hot loop over a
 * table dump takes whole batches and walks each with a plain loop. A batch is never empty, and
 * belongs to the caller until it asks for the next one. `options.onOverlong` is told of an
 * overlong line before the batch of the lines after it.
 *
 * @example
 * ```ts
 * import { splitLineBatches } from "./output_lines.ts";
 * const bytes = new TextEncoder().encode("one\ntwo\nthr");
 * const batches: string[][] = [];
 * for await (const batch of splitLineBatches(ReadableStream.from([bytes]))) batches.push(batch);
 * // [["one", "two"], ["thr"]]
 * ```
 */
export async function* splitLineBatches(
  stream: ReadableStream<Uint8Array>,
  options: SplitOptions = {},
): AsyncGenerator<string[], void, undefined> {
  const decoder = new TextDecoder();
  const splitter = new LineSplitter(options);
  for await (const chunk of chunksOf(stream)) {
    const batch = splitter.push(decoder.decode(chunk, { stream: true }));
    if (batch.length > 0) yield batch;
  }
  splitter.push(decoder.decode());
  const last = splitter.end();
  if (last.length > 0) yield last;
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
