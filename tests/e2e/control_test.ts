/**
 * Scenario 1, the control: without the agent, a client retrying from one port stays stuck after
 * the Service's DNAT rule appears, and deleting its stale entry by hand lets it through.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  createBed,
  e2eTest,
  holdEstablishedFlow,
  isStale,
  RETRY_MS,
  SLACK_MS,
  sleep,
  stuckClient,
  timeToConnect,
} from "./harness.ts";

e2eTest("without the agent the retrying client stays stuck on its stale entry", async () => {
  await using bed = await createBed();
  await using held = await holdEstablishedFlow(bed, "ipv4");
  await using stuck = await stuckClient(bed, "ipv4");
  // As long as the agent's slowest scenario takes to unstick it, with margin.
  await sleep(6000);
  assert.equal(stuck.client.isConnected(), false, "the client got through without the agent");
  const attempts = stuck.client.events.length;
  assert.ok(attempts >= 5, `the client made only ${attempts} attempts in 6 s`);
  const still = (await bed.entries()).find((e) => isStale(e, "ipv4"));
  assert.equal(still?.id, stuck.stale.id, "the stale entry did not stay");
  // The stale entry is the whole cause: delete it by hand and the next retry gets through.
  const deleted = await bed.conntrack([
    "-D",
    "-p",
    "tcp",
    "--sport",
    "40000",
    "--state",
    "SYN_SENT",
  ]);
  assert.equal(deleted.code, 0, deleted.stderr);
  const since = performance.now();
  await timeToConnect(stuck.client, since, RETRY_MS + SLACK_MS);
  await held.assertIntact(bed);
});
