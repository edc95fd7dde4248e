/**
 * Scenario 3: on this kernel (6.x, no timer renewal) the age rule alone unsticks the client
 * within max-age + one period + one retry.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  agentCommand,
  createBed,
  deletionRecord,
  e2eTest,
  holdEstablishedFlow,
  isStale,
  listingCostMs,
  namesStuckFlow,
  RETRY_MS,
  scenarioFlags,
  SLACK_MS,
  stuckClient,
  timeToConnect,
} from "./harness.ts";

const PERIOD_MS = 1000;
const MAX_AGE_MS = 3000;

e2eTest(
  "age rule unsticks the client on a kernel that never renews within max-age + 2 s",
  async () => {
    const command = await agentCommand();
    await using bed = await createBed();
    const cost = await listingCostMs(bed);
    await using held = await holdEstablishedFlow(bed, "ipv4");
    await using stuck = await stuckClient(bed, "ipv4");
    await using agent = await bed.startAgent(
      command,
      scenarioFlags({ periodMs: PERIOD_MS, maxAge: `${MAX_AGE_MS / 1000}s`, natSource: "off" }),
    );
    const since = performance.now();
    const took = await timeToConnect(
      stuck.client,
      since,
      MAX_AGE_MS + PERIOD_MS + cost + RETRY_MS + SLACK_MS,
      agent,
    );
    const deletion = await deletionRecord(agent, (r) => namesStuckFlow(r, "ipv4"));
    assert.equal(deletion.properties["rule"], "age");
    // This kernel never renewed the timer while the client retried: age alone did it.
    assert.equal(deletion.properties["renewals"], 0);
    assert.ok(!(await bed.entries()).some((e) => isStale(e, "ipv4")));
    await held.assertIntact(bed);
    console.log(`ipv4: client through ${Math.round(took)} ms after the agent started`);
  },
);
