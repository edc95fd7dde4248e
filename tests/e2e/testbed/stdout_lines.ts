/**
 * Reading a child's output line by line, for the programs the testbed starts (backend, client,
 * agent).
 *
 * @module
 */

/** The lines of `stream`, decoded as UTF-8, without their newlines; a last unfinished one too. */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    const lines = rest.split("\n");
    rest = lines.pop() ?? "";
    yield* lines;
  }
  if (rest !== "") yield rest;
}

/** Reads `lines` to the end in the background, so that the child never blocks on a full pipe. */
export function drain(lines: AsyncGenerator<string>): void {
  (async () => {
    for await (const _ of lines) {
      // Keep the pipe flowing so the server never blocks on a full stdout.
    }
  })();
}
