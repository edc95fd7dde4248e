import assert from "node:assert/strict";
import { STDERR_QUOTE_LENGTH, stderrLine } from "../lib/seams/stderr_line.ts";

Deno.test("stderrLine() quotes the last line that is not blank, trimmed", () => {
  assert.equal(stderrLine("warning: a\n  error: b  \n\n \n"), "error: b");
  assert.equal(stderrLine("only"), "only");
  assert.equal(stderrLine(""), "");
  assert.equal(stderrLine("\n\n"), "");
});

Deno.test("stderrLine() removes the prefix before measuring", () => {
  const prefix = /^conntrack v\S+ \(conntrack-tools\): /;
  assert.equal(
    stderrLine("conntrack v1.4.7 (conntrack-tools): Operation failed\n", 512, prefix),
    "Operation failed",
  );
});

Deno.test("stderrLine() cuts a flood to 512 characters and says how many bytes it left out", () => {
  const flood = "é".repeat(70_000);
  const quoted = stderrLine(flood);
  assert.equal(quoted, `${"é".repeat(STDERR_QUOTE_LENGTH)}… (${(70_000 - 512) * 2} more bytes)`);
  // 64 KiB of short lines: only the last is quoted.
  assert.equal(stderrLine("noise\n".repeat(10_000) + "the error\n"), "the error");
});

Deno.test("stderrLine() shows control characters instead of passing them on", () => {
  assert.equal(stderrLine("\x1b[2J\x07bad\r"), "\\x1b[2J\\x07bad");
  assert.equal(stderrLine("tab\tkept"), "tab\tkept");
});
