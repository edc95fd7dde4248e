/**
 * The nat rule on this kernel (6.x: no timer renewal), with the age rule off: once the Service's
 * DNAT rule appears, the stuck client gets through within one period plus one retry, for IPv4
 * and IPv6, with the rule written as a plain iptables DNAT, in kube-proxy's iptables shape (with
 * the nf_tables flavour of iptables, and with the legacy one on a node whose `iptables-save` is
 * the nf_tables flavour) and in kube-proxy's nftables shape. Meanwhile a stale entry to a port with no rule, and an ESTABLISHED
 * flow between the same hosts, keep their entries (same id).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { NatSource } from "../../lib/operator/config.ts";
import type { Family } from "../../lib/core/flow.ts";
import type { ConntrackEntry, DnatStyle, ProxyMode, Testbed } from "./testbed.ts";
import { ADDRESSES } from "./testbed.ts";
import {
  agentCommand,
  CLIENT_PORT,
  createBed,
  deletionRecord,
  e2eTest,
  holdEstablishedFlow,
  isStale,
  namesStuckFlow,
  RETRY_MS,
  scenarioFlags,
  SLACK_MS,
  sleep,
  timeToConnect,
  waitForStale,
} from "./harness.ts";

const PERIOD_MS = 1000;
/** A VIP port no rule ever covers: its stale entry must stay. */
const UNSERVED_PORT = 8081;
const UNSERVED_CLIENT_PORT = 40001;

interface Shape {
  /** Test-name words. */
  readonly what: string;
  readonly proxy: ProxyMode;
  readonly style: DnatStyle;
  /** `--nat-source` given to the agent; each shape uses a different one so all are run. */
  readonly source: NatSource;
}

const SHAPES: readonly Shape[] = [
  { what: "a plain iptables DNAT rule", proxy: "iptables", style: "plain", source: "iptables" },
  { what: "kube-proxy's iptables rules", proxy: "iptables", style: "kube", source: "auto" },
  { what: "kube-proxy's nftables rules", proxy: "nftables", style: "kube", source: "nftables" },
  {
    what: "kube-proxy's legacy iptables rules",
    proxy: "iptables-legacy",
    style: "kube",
    source: "auto",
  },
];

function isUnserved(e: ConntrackEntry, family: Family): boolean {
  return e.flow.family === family && e.flow.original.sport === UNSERVED_CLIENT_PORT &&
    e.flow.original.dst === ADDRESSES[family].vip && e.flow.original.dport === UNSERVED_PORT;
}

/** Asserts an entry is still there with the same id, still `SYN_SENT [UNREPLIED]`. */
async function assertSameEntry(bed: Testbed, before: ConntrackEntry, what: string) {
  const now = (await bed.entries()).find((e) =>
    e.flow.family === before.flow.family &&
    e.flow.original.sport === before.flow.original.sport &&
    e.flow.original.dst === before.flow.original.dst &&
    e.flow.original.dport === before.flow.original.dport
  );
  assert.ok(now, `${what} lost its conntrack entry`);
  assert.equal(now.id, before.id, `${what} was deleted (new id ${now.id}, was ${before.id})`);
  assert.equal(now.state, "SYN_SENT");
}

async function natUnsticks(shape: Shape, family: Family): Promise<void> {
  const command = await agentCommand();
  await using bed = await createBed({ proxy: shape.proxy });
  await using held = await holdEstablishedFlow(bed, family);
  await using unserved = await bed.startClient(family, {
    sport: UNSERVED_CLIENT_PORT,
    dport: UNSERVED_PORT,
    timeoutMs: RETRY_MS,
  });
  await using stuck = await bed.startClient(family, { sport: CLIENT_PORT, timeoutMs: RETRY_MS });
  const other = await bed.waitForEntry(
    (e) => isUnserved(e, family) && e.unreplied,
    5000,
    `the SYN_SENT entry to unserved port ${UNSERVED_PORT}`,
  );
  const stale = await waitForStale(bed, family);

  await using agent = await bed.startAgent(
    command,
    scenarioFlags({ periodMs: PERIOD_MS, maxAge: "0", natSource: shape.source }),
  );
  // Before the Service exists nothing is stale: two periods, and the entry is still the same.
  await sleep(2 * PERIOD_MS);
  await assertSameEntry(bed, stale, "the client's entry, before the Service existed,");
  assert.equal(stuck.isConnected(), false, "the client got through without a Service");

  await bed.addServiceDnat(family, { style: shape.style });
  const since = performance.now();
  const took = await timeToConnect(stuck, since, PERIOD_MS + RETRY_MS + SLACK_MS);
  const deletion = await deletionRecord(agent, (r) => namesStuckFlow(r, family));
  assert.equal(deletion.properties["rule"], "nat");
  assert.ok(!(await bed.entries()).some((e) => isStale(e, family)));

  // One more period, so a wrong deletion of the other flows would have happened by now.
  await sleep(PERIOD_MS + 500);
  await assertSameEntry(bed, other, `the stale entry to unserved port ${UNSERVED_PORT}`);
  assert.equal(unserved.isConnected(), false);
  await held.assertIntact(bed);
  const problems = agent.records.filter((r) => /^Cannot read/.test(r.message));
  assert.deepEqual(problems.map((r) => r.raw), [], "the agent could not read the NAT rules");
  console.log(`${family} ${shape.what}: client through ${Math.round(took)} ms after the rule`);
}

for (const shape of SHAPES) {
  for (const family of ["ipv4", "ipv6"] as const) {
    const v = family === "ipv4" ? "IPv4" : "IPv6";
    e2eTest(
      `nat rule unsticks an ${v} client within a period and a retry of ${shape.what} appearing`,
      () => natUnsticks(shape, family),
    );
  }
}
