/**
 * What the agent keeps of a `cli` listing must not keep the listing: conntrack's output is
 * decoded 64 KiB at a time, and V8 keeps a cut of 13 characters or more as a view of the string it
 * was cut from. A candidate, a memo slot or a tracker key that held such a view would keep its
 * whole chunk alive, and a few thousand of them the whole listing.
 */
import assert from "node:assert/strict";

const HELPER = new URL("./fixtures/retention.ts", import.meta.url).pathname;

Deno.test("candidates kept from a listing do not keep its decoded chunks alive", async () => {
  const chunks = 1500 * 64 * 1024;
  // The control keeps 1,500 lines, and with them their chunks: about 98 MB. A run whose control
  // did not grow so was disturbed (a collection of the warm-up's garbage landed inside it) and
  // says nothing: measure again, at most three times.
  let result = await measure();
  for (let attempt = 1; attempt < 3 && result.controlGrowth <= chunks * 0.9; attempt++) {
    result = await measure();
  }
  const { kept, keys, growth, controlGrowth } = result;
  assert.equal(kept, 3000);
  assert.equal(keys, 1500);
  assert.ok(controlGrowth > chunks * 0.9, `control grew ${controlGrowth} bytes`);
  // 3,000 candidates, 1,500 memo slots and keys are a few hundred bytes each.
  assert.ok(growth < 2_000 * 1500, `what was kept grew the heap by ${growth} bytes`);
});

async function measure(): Promise<
  { kept: number; keys: number; growth: number; controlGrowth: number }
> {
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-read", "--v8-flags=--expose-gc", HELPER],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(run.stderr);
  assert.equal(run.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(run.stdout));
}
