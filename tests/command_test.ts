import assert from "node:assert/strict";
import type { SpawnCommand } from "../lib/command.ts";
import { CommandFailedError, runChecked, runToEnd } from "../lib/command.ts";

function fake(code: number, stdout: string, stderr: string): SpawnCommand {
  return () => ({
    stdout: ReadableStream.from([new TextEncoder().encode(stdout)]),
    status: Promise.resolve({ code, stderr }),
  });
}

Deno.test("runToEnd() collects standard output and the exit status", async () => {
  const out = await runToEnd(fake(3, "out\n", "err\n"), "prog", []);
  assert.deepEqual(out, { code: 3, stdout: "out\n", stderr: "err\n" });
});

Deno.test("runChecked() returns standard output of a program that succeeds", async () => {
  assert.equal(await runChecked(fake(0, "hello\n", ""), "prog", ["a"]), "hello\n");
});

Deno.test("runChecked() throws one line naming the command and its last error line", async () => {
  await assert.rejects(
    runChecked(fake(2, "", "warning: x\nfatal: no such table\n"), "nft", ["-j", "list"]),
    (error: Error) =>
      error instanceof CommandFailedError &&
      error.message === "Cannot run nft -j list: exit 2: fatal: no such table",
  );
});
