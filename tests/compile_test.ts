import assert from "node:assert/strict";
import { runToEnd } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";

const root = new URL("../", import.meta.url).pathname;

Deno.test("deno task compile uses DENORT_BIN instead of downloading a runtime", async () => {
  const dir = await Deno.makeTempDir();
  const out = await runToEnd(denoSpawn, "bash", [
    "-c",
    `cd "${root}" && NO_COLOR=1 DENORT_BIN=/nonexistent/denort deno task compile --output "${dir}/x"`,
  ]).finally(() => Deno.remove(dir, { recursive: true }));
  const text = out.stdout + out.stderr;
  assert.match(text, /Compile .*main\.ts/);
  assert.doesNotMatch(text, /Download/);
  // This machine has no denort; a machine with one at DENORT_BIN gets the binary instead.
  assert.notEqual(out.code, 0);
});

Deno.test("deno task compile bakes in the start task's permission flags", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  const script = await Deno.readTextFile(`${root}deploy/compile.sh`);
  assert.equal(config.tasks.compile, "bash deploy/compile.sh");
  assert.match(config.tasks.start, /^deno run (--(allow-[a-z]+|v8-flags)(=\S+)? )+main\.ts$/);
  assert.match(script, /tasks\.start/);
  assert.match(
    script,
    /deno compile \$flags --no-code-cache --output conntrack-cleaner "\$@" main\.ts/,
  );
});
