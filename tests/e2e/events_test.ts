/**
 * The seed scenarios with event tracking (`--tracking events`): the renewal, age and nat rules
 * unstick the client within the same limits as with a dump every period, whether the client's
 * entry was there when the agent started (found by the first dump) or appeared later (known only
 * from its new-entry event). And a socket too small for a burst of new entries loses events, which
 * the agent notices, resyncs with a dump, and still unsticks the client.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Family } from "../../lib/core/flow.ts";
import { ADDRESSES } from "./testbed.ts";
import type { AgentProcess, Testbed } from "./testbed.ts";
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
  sleep,
  stuckClient,
  timeToConnect,
} from "./harness.ts";

const PERIOD_MS = 1000;
const THRESHOLD = 3;
const MAX_AGE_MS = 3000;
const EVENTS = ["--tracking", "events"];

async function inEventMode(agent: AgentProcess): Promise<void> {
  const chosen = await agent.waitFor(
    (r) => r.message === "tracking candidates through conntrack events",
    5000,
    "the event-tracking log line",
  );
  assert.equal(chosen.properties["tracking"], "events");
}

async function deletedBy(agent: AgentProcess, family: Family, rule: string): Promise<void> {
  const deletion = await deletionRecord(agent, (r) => namesStuckFlow(r, family));
  assert.equal(deletion.properties["rule"], rule);
}

async function renewalUnsticks(family: Family, clientFirst: boolean): Promise<void> {
  const command = await agentCommand();
  await using bed = await createBed();
  const cost = await listingCostMs(bed);
  await using held = await holdEstablishedFlow(bed, family);
  const flags = scenarioFlags(
    { periodMs: PERIOD_MS, maxAge: "0", natSource: "off" },
    ...EVENTS,
    "--renewal-threshold",
    String(THRESHOLD),
  );
  let agent: AgentProcess | undefined;
  if (!clientFirst) {
    agent = await bed.startAgent(command, flags);
    await inEventMode(agent);
  }
  await using stuck = await stuckClient(bed, family);
  await using _renewer = bed.startRenewer(family, CLIENT_PORT, 500);
  const since = performance.now();
  agent ??= await bed.startAgent(command, flags);
  await using _agent = agent;
  await inEventMode(agent);
  const limit = (THRESHOLD + 1) * (PERIOD_MS + cost) + RETRY_MS + SLACK_MS;
  const took = await timeToConnect(stuck.client, since, limit, agent);
  await deletedBy(agent, family, "renewal");
  assert.ok(!(await bed.entries()).some((e) => isStale(e, family)));
  await held.assertIntact(bed);
  console.log(`${family}: through ${Math.round(took)} ms (limit ${Math.round(limit)} ms)`);
}

e2eTest(
  "event mode: renewal rule unsticks an IPv4 client found by the first dump",
  () => renewalUnsticks("ipv4", true),
);

e2eTest(
  "event mode: renewal rule unsticks an IPv6 client known only from its event",
  () => renewalUnsticks("ipv6", false),
);

async function ageUnsticks(
  bed: Testbed,
  extra: readonly string[],
  during?: () => Promise<unknown>,
): Promise<AgentProcess> {
  const command = await agentCommand();
  const cost = await listingCostMs(bed);
  const agent = await bed.startAgent(
    command,
    scenarioFlags(
      { periodMs: PERIOD_MS, maxAge: `${MAX_AGE_MS / 1000}s`, natSource: "off" },
      ...EVENTS,
      ...extra,
    ),
  );
  try {
    await inEventMode(agent);
    const since = performance.now();
    const [stuck] = await Promise.all([stuckClient(bed, "ipv4"), during?.()]);
    await using _stuck = stuck;
    const took = await timeToConnect(
      stuck.client,
      since,
      MAX_AGE_MS + PERIOD_MS + cost + RETRY_MS + SLACK_MS,
      agent,
    );
    await deletedBy(agent, "ipv4", "age");
    assert.ok(!(await bed.entries()).some((e) => isStale(e, "ipv4")));
    console.log(`ipv4: through ${Math.round(took)} ms after the client started`);
    return agent;
  } catch (error) {
    await agent[Symbol.asyncDispose]();
    throw error;
  }
}

e2eTest(
  "event mode: age rule unsticks a client known only from its event within max-age + 2 s",
  async () => {
    await using bed = await createBed();
    await using held = await holdEstablishedFlow(bed, "ipv4");
    await using _agent = await ageUnsticks(bed, []);
    await held.assertIntact(bed);
  },
);

e2eTest(
  "event mode: lost events (tiny socket, burst of new entries) resync and still unstick the client",
  async () => {
    await using bed = await createBed();
    // New TCP entries towards the VIP, each an event the filter keeps; short timers, so they
    // expire before the age rule would judge them.
    const vip = ADDRESSES.ipv4.vip;
    const burst = Array.from(
      { length: 3000 },
      (_, i) =>
        `-I -t 2 -u UNSET -p tcp -s 203.0.113.${1 + (i % 250)} -d ${vip} ` +
        `--sport ${20000 + i} --dport 80 --state SYN_SENT`,
    ).join("\n") + "\n";
    await using agent = await ageUnsticks(
      bed,
      ["--event-buffer", "1"],
      () => bed.conntrack(["-R", "-"], { stdin: burst }),
    );
    const lost = agent.records.find((r) =>
      r.message === "conntrack events were lost; resyncing with a dump"
    );
    assert.ok(lost, "the agent never noticed lost events");
  },
);

e2eTest(
  "event mode: nat rule unsticks a client known only from its event within a period and a retry",
  async () => {
    const command = await agentCommand();
    await using bed = await createBed({ proxy: "nftables" });
    await using agent = await bed.startAgent(
      command,
      scenarioFlags({ periodMs: PERIOD_MS, maxAge: "0", natSource: "nftables" }, ...EVENTS),
    );
    await inEventMode(agent);
    await using client = await bed.startClient("ipv4", {
      sport: CLIENT_PORT,
      timeoutMs: RETRY_MS,
    });
    await bed.waitForEntry((e) => isStale(e, "ipv4"), 5000, "the client's SYN_SENT entry");
    // Two periods without a Service: nothing is stale yet.
    await sleep(2 * PERIOD_MS);
    assert.equal(client.isConnected(), false, "the client got through without a Service");
    await bed.addServiceDnat("ipv4", { style: "kube" });
    const since = performance.now();
    const took = await timeToConnect(client, since, PERIOD_MS + RETRY_MS + SLACK_MS, agent);
    await deletedBy(agent, "ipv4", "nat");
    console.log(`ipv4: through ${Math.round(took)} ms after the rule`);
  },
);

e2eTest(
  "auto tracking keeps to dumps on a node whose conntrack events are off, and says so once",
  async () => {
    const command = await agentCommand();
    await using bed = await createBed();
    const off = await bed.exec("node", ["sysctl", "-qw", "net.netfilter.nf_conntrack_events=0"]);
    assert.equal(off.code, 0, off.stderr);
    await using agent = await bed.startAgent(
      command,
      scenarioFlags({ periodMs: PERIOD_MS, maxAge: `${MAX_AGE_MS / 1000}s`, natSource: "off" }),
    );
    const chosen = await agent.waitFor(
      (r) => r.message.startsWith("conntrack events unavailable"),
      5000,
      "the fallback log line",
    );
    assert.equal(chosen.properties["reason"], "net.netfilter.nf_conntrack_events is 0");
    await using stuck = await stuckClient(bed, "ipv4");
    await timeToConnect(stuck.client, performance.now(), MAX_AGE_MS + 2 * PERIOD_MS + SLACK_MS);
    await deletedBy(agent, "ipv4", "age");
  },
);
