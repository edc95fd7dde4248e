/**
 * Scenario 6, dry run: the agent names the stale flow in its log and leaves it, so the client
 * stays stuck.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  agentCommand,
  createBed,
  e2eTest,
  holdEstablishedFlow,
  isStale,
  namesStuckFlow,
  scenarioFlags,
  sleep,
  stuckClient,
} from "./harness.ts";

e2eTest("dry run logs the stale flow, leaves its entry and the client stuck", async () => {
  const command = await agentCommand();
  await using bed = await createBed();
  await using held = await holdEstablishedFlow(bed, "ipv4");
  await using stuck = await stuckClient(bed, "ipv4");
  await using agent = await bed.startAgent(
    command,
    scenarioFlags({ periodMs: 1000, maxAge: "2s", natSource: "off" }, "--dry-run"),
  );
  const record = await agent.waitFor(
    (r) => r.message.startsWith("would delete stale flow") && namesStuckFlow(r, "ipv4"),
    10_000,
    "the dry-run line naming the stale flow",
  );
  assert.equal(record.properties["rule"], "age");
  assert.match(String(record.properties["flow"]), /198\.51\.100\.2:40000 -> 192\.0\.2\.10:80/);
  // Two more cycles and two more retries: a real deletion would have let the client through.
  await sleep(2500);
  assert.equal(stuck.client.isConnected(), false, "the client got through in dry run");
  const still = (await bed.entries()).find((e) => isStale(e, "ipv4"));
  assert.equal(still?.id, stuck.stale.id, "the stale entry was deleted in dry run");
  assert.equal(agent.records.filter((r) => r.message === "deleted stale flow").length, 0);
  await held.assertIntact(bed);
});
