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
  const decoder = new TextDecoder();
  // Pieces of a line longer than a chunk; joined once, when its `\n` arrives.
  const pending: string[] = [];
  for await (const chunk of stream) {
    const text = decoder.decode(chunk, { stream: true });
    let newline = text.indexOf("\n");
    if (newline < 0) {
      if (text.length > 0) pending.push(text);
      continue;
    }
    const head = text.slice(0, newline);
    if (pending.length > 0) {
      pending.push(head);
      yield dropCarriageReturn(pending.join(""));
      pending.length = 0;
    } else {
      yield dropCarriageReturn(head);
    }
    let from = newline + 1;
    while ((newline = text.indexOf("\n", from)) >= 0) {
      yield dropCarriageReturn(text.slice(from, newline));
      from = newline + 1;
    }
    if (from < text.length) pending.push(text.slice(from));
  }
  const tail = decoder.decode();
  if (tail.length > 0) pending.push(tail);
  if (pending.length > 0) {
    const last = dropCarriageReturn(pending.join(""));
    if (last.length > 0) yield last;
  }
}

function dropCarriageReturn(line: string): string {
  return line.length > 0 && line.charCodeAt(line.length - 1) === 13 ? line.slice(0, -1) : line;
}
