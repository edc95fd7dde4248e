/**
 * Scenario 7, shutdown: SIGTERM while a cycle is under way (its `conntrack -L` made slow by a
 * wrapper named `conntrack` first on `PATH`) makes the agent exit 0 within 2 s, leaving no process
 * behind in the node namespace.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Testbed } from "./testbed.ts";
import { agentCommand, BASE_FLAGS, createBed, e2eTest, sleep } from "./harness.ts";

const EXIT_LIMIT_MS = 2000;

e2eTest("SIGTERM during a cycle exits 0 within 2 s and leaves no child process", async () => {
  const command = await agentCommand();
  await using bed = await createBed();
  const dir = await Deno.makeTempDir({ prefix: "cct-e2e-shutdown-" });
  try {
    const marker = `${dir}/slow`;
    // exec keeps one process per conntrack run, so "no child left" is about the agent alone.
    await Deno.writeTextFile(
      `${dir}/conntrack`,
      [
        "#!/bin/sh",
        `if [ -e ${marker} ] && [ "$1" = "-L" ]; then exec sleep 30; fi`,
        `PATH=${Deno.env.get("PATH")}`,
        'exec conntrack "$@"',
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    await using agent = await bed.startAgent(
      command,
      // The slow listing is conntrack's, so the agent must list through it.
      [...BASE_FLAGS, "--dump-frequency", "200ms", "--list-backend", "cli"],
      {
        pathPrefix: [dir],
      },
    );
    await Deno.writeTextFile(marker, "");
    await waitForSlowDump(bed);
    const stopped = performance.now();
    const status = await agent.stop();
    const took = performance.now() - stopped;
    assert.equal(status.code, 0, `the agent exited ${status.code}: ${agent.otherLines.join("\n")}`);
    assert.ok(took < EXIT_LIMIT_MS, `the agent took ${Math.round(took)} ms to exit`);
    await sleep(100);
    const left = await bed.processes("node");
    assert.deepEqual(left, [], `processes left in the node namespace: ${JSON.stringify(left)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Waits until the node namespace runs the wrapper's slow listing: a cycle is under way. */
async function waitForSlowDump(bed: Testbed): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const running = await bed.processes("node");
    if (running.some((p) => p.args === "sleep 30")) return;
    await sleep(50);
  }
  throw new Error(`Cannot see the slow conntrack listing in ${bed.names.node} after 5 s`);
}
