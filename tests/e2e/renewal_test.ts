/**
 * Scenarios 2 and 4: on a kernel that renews a `SYN_SENT` entry's timer on every retried SYN
 * (emulated with `conntrack -U … -t 120` every 500 ms), the agent with the original Go agent's
 * settings unsticks the client within (threshold + 1) periods plus one retry, over IPv4 and IPv6.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Family } from "../../lib/core/flow.ts";
import {
  agentCommand,
  CLIENT_PORT,
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
const THRESHOLD = 3;

async function renewalUnsticks(family: Family): Promise<void> {
  const command = await agentCommand();
  await using bed = await createBed();
  const cost = await listingCostMs(bed);
  await using held = await holdEstablishedFlow(bed, family);
  await using stuck = await stuckClient(bed, family);
  await using _renewer = bed.startRenewer(family, CLIENT_PORT, 500);
  await using agent = await bed.startAgent(
    command,
    scenarioFlags(
      { periodMs: PERIOD_MS, maxAge: "0", natSource: "off" },
      "--renewal-threshold",
      String(THRESHOLD),
    ),
  );
  const since = performance.now();
  const limit = (THRESHOLD + 1) * (PERIOD_MS + cost) + RETRY_MS + SLACK_MS;
  const took = await timeToConnect(stuck.client, since, limit, agent);
  const deletion = await deletionRecord(agent, (r) => namesStuckFlow(r, family));
  assert.equal(deletion.properties["rule"], "renewal");
  assert.equal(deletion.properties["id"], stuck.stale.id);
  assert.ok(!(await bed.entries()).some((e) => isStale(e, family)));
  await held.assertIntact(bed);
  console.log(
    `${family}: through ${Math.round(took)} ms after the agent started (limit ${
      Math.round(limit)
    } ms, listing ${Math.round(cost)} ms)`,
  );
}

e2eTest(
  "renewal rule unsticks an IPv4 client on a renewing kernel within (threshold + 1) periods plus one retry",
  () => renewalUnsticks("ipv4"),
);

e2eTest(
  "renewal rule unsticks an IPv6 client on a renewing kernel within (threshold + 1) periods plus one retry",
  () => renewalUnsticks("ipv6"),
);
