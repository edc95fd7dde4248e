import assert from "node:assert/strict";
import { errorLine, QUOTE_LENGTH, stderrLine } from "../lib/seams/message_line.ts";

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
  assert.equal(quoted, `${"é".repeat(QUOTE_LENGTH)}… (${(70_000 - 512) * 2} more bytes)`);
  // 64 KiB of short lines: only the last is quoted.
  assert.equal(stderrLine("noise\n".repeat(10_000) + "the error\n"), "the error");
});

Deno.test("stderrLine() shows control characters instead of passing them on", () => {
  assert.equal(stderrLine("\x1b[2J\x07bad\r"), "\\x1b[2J\\x07bad");
  assert.equal(stderrLine("tab\tkept"), "tab\tkept");
});

Deno.test("errorLine() quotes the first line of an error's message, trimmed", () => {
  assert.equal(
    errorLine(new Error("Permission denied (os error 13)\n  at spawn\n")),
    "Permission denied (os error 13)",
  );
  assert.equal(errorLine(new Error("\n  \n  what went wrong  \ndetail")), "what went wrong");
  assert.equal(errorLine(new Error("")), "");
  assert.equal(errorLine("thrown text\nmore"), "thrown text");
  assert.equal(errorLine(42), "42");
});

Deno.test("errorLine() cuts and escapes like stderrLine()", () => {
  const long = new Error(`${"x".repeat(600)}\nsecond`);
  assert.equal(errorLine(long), `${"x".repeat(QUOTE_LENGTH)}… (88 more bytes)`);
  assert.equal(errorLine(new Error("bad \x1b[31mred\x1b[0m")), "bad \\x1b[31mred\\x1b[0m");
});

Deno.test("stderrLine() and errorLine() pick the line an operator needs from each source", () => {
  // A child warns first and fails last; a thrown error says what failed first, detail after.
  const stderr =
    "iptables-save: warning: legacy tables present\niptables-save: Permission denied\n";
  assert.equal(stderrLine(stderr), "iptables-save: Permission denied");
  const error = new Error("Cannot read rules: Permission denied\ncaused by: EACCES");
  assert.equal(errorLine(error), "Cannot read rules: Permission denied");
});
