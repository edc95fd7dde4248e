import assert from "node:assert/strict";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import { CommandFailedError, runChecked } from "./support/run_checked.ts";
import { splitLineBatches } from "../lib/seams/output_lines.ts";
import { createDenoSpawn, denoSpawn } from "../lib/seams/spawn_deno.ts";

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

// Real processes through the adapter: the kill escalation is about what the kernel does.
const spawn = createDenoSpawn({ killGraceMs: 200 });

/** Resolves with the program's status, or rejects after `ms`: a kill that never lands. */
function within<T>(status: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the program was still running after ${ms} ms`)), ms);
  });
  return Promise.race([status, late]).finally(() => clearTimeout(timer));
}

Deno.test("denoSpawn() kills a program that ignores SIGTERM with SIGKILL when aborted", async () => {
  const abort = new AbortController();
  // An ignored signal stays ignored across exec, so sleep itself ignores SIGTERM.
  const child = spawn("sh", ["-c", "trap '' TERM; exec sleep 600"], { signal: abort.signal });
  await new Promise((resolve) => setTimeout(resolve, 100));
  abort.abort();
  const [stdout, status] = await Promise.all([
    new Response(child.stdout).text(),
    within(child.status, 10_000),
  ]);
  assert.equal(stdout, "");
  assert.equal(status.code, 137);
});

Deno.test("denoSpawn() kills a stopped (SIGSTOP) program when its timeout fires", async () => {
  // The program stops itself, as `kill -STOP` would: SIGTERM stays pending, only SIGKILL acts.
  const child = spawn("sh", ["-c", "kill -STOP $$; exec sleep 600"], {
    signal: AbortSignal.timeout(300),
  });
  await child.stdout.cancel();
  assert.equal((await within(child.status, 10_000)).code, 137);
});

Deno.test("denoSpawn() ends the output of a killed program whose own child holds its pipes", async () => {
  const abort = new AbortController();
  // The background loop inherits stdout and stderr and outlives the shell; it dies of SIGPIPE
  // once the pipes are given up.
  const child = spawn("sh", [
    "-c",
    "(while sleep 0.1; do echo x; echo y >&2; done) & exec sleep 600",
  ], {
    signal: abort.signal,
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  abort.abort();
  const [, status] = await Promise.all([
    within(new Response(child.stdout).text(), 10_000),
    within(child.status, 10_000),
  ]);
  assert.equal(status.code, 143);
});

Deno.test("denoSpawn() reports a program outside --allow-run as not allowed, not as denied", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { denoSpawn } from "${new URL("../lib/seams/spawn_deno.ts", import.meta.url)}";
      try { denoSpawn("/nonexistent/conntrack", []); } catch (e) { console.log(e.reason, e.message); }`,
    );
    // Only conntrack may run, as in the start task.
    const out = await runToEnd(denoSpawn, Deno.execPath(), [
      "run",
      "--allow-run=conntrack",
      script,
    ]);
    assert.match(
      out.stdout,
      /^not-allowed Cannot run \/nonexistent\/conntrack: it is not in the --allow-run list/,
    );
    assert.doesNotMatch(out.stdout, /permission denied/);
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("denoSpawn() streams a large output whole, through byte-stream reads too", async () => {
  // 2.3 MB, many times the 64 KiB a read asks for.
  const child = spawn("seq", ["1", "400000"]);
  let count = 0;
  let last = "";
  for await (const batch of splitLineBatches(child.stdout)) {
    count += batch.length;
    last = batch.at(-1) ?? last;
  }
  assert.deepEqual({ count, last }, { count: 400_000, last: "400000" });
  assert.equal((await child.status).code, 0);
});
