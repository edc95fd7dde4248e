/**
 * Scenario 5, no collateral: 1,000 ESTABLISHED flows between the same client and VIP (half
 * DNATed, half not) keep their entries, same ids, while 50 stale `SYN_SENT` entries from 50
 * source ports all go in one cycle; the long-lived real connection survives too.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ADDRESSES, BACKEND_PORT, type ConntrackEntry, SERVICE_PORT } from "./testbed.ts";
import { agentCommand, createBed, e2eTest, holdEstablishedFlow, scenarioFlags } from "./harness.ts";

const PERIOD_MS = 1000;
const ESTABLISHED = 1000;
const STALE = 50;
const FIRST_ESTABLISHED_PORT = 20000;
const FIRST_STALE_PORT = 41000;
const { client, vip, backend } = ADDRESSES.ipv4;

/** `conntrack -R` lines: ESTABLISHED flows, every other one DNATed to the backend. */
function establishedLines(): string {
  return Array.from({ length: ESTABLISHED }, (_, i) => {
    const sport = FIRST_ESTABLISHED_PORT + i;
    const [rsrc, rport] = i % 2 === 0 ? [backend, BACKEND_PORT] : [vip, SERVICE_PORT];
    return `-A -t 431999 -u SEEN_REPLY,ASSURED -s ${client} -d ${vip} -r ${rsrc} -q ${client} ` +
      `-p tcp --sport ${sport} --dport ${SERVICE_PORT} --reply-port-src ${rport} ` +
      `--reply-port-dst ${sport} --state ESTABLISHED`;
  }).join("\n") + "\n";
}

/** `conntrack -R` lines: stale un-NATed SYN_SENT entries as a kernel makes them (status UNSET). */
function staleLines(): string {
  return Array.from({ length: STALE }, (_, i) => {
    const sport = FIRST_STALE_PORT + i;
    return `-A -t 120 -u UNSET -s ${client} -d ${vip} -r ${vip} -q ${client} -p tcp ` +
      `--sport ${sport} --dport ${SERVICE_PORT} --reply-port-src ${SERVICE_PORT} ` +
      `--reply-port-dst ${sport} --state SYN_SENT`;
  }).join("\n") + "\n";
}

function isBulk(e: ConntrackEntry): boolean {
  const p = e.flow.original.sport;
  return e.flow.family === "ipv4" && p >= FIRST_ESTABLISHED_PORT &&
    p < FIRST_ESTABLISHED_PORT + ESTABLISHED;
}

function isStaleBulk(e: ConntrackEntry): boolean {
  const p = e.flow.original.sport;
  return e.flow.family === "ipv4" && p >= FIRST_STALE_PORT && p < FIRST_STALE_PORT + STALE;
}

function stamp(raw: Readonly<Record<string, unknown>>, fallback: number): number {
  const text = raw["@timestamp"];
  return typeof text === "string" ? Date.parse(text) : fallback;
}

e2eTest(
  "1,000 established flows keep their entries while 50 stale ones go in one cycle",
  async () => {
    const command = await agentCommand();
    await using bed = await createBed();
    await using held = await holdEstablishedFlow(bed, "ipv4");
    for (const lines of [establishedLines(), staleLines()]) {
      const out = await bed.conntrack(["-R", "-"], { stdin: lines });
      assert.equal(out.code, 0, out.stderr);
    }
    const before = await bed.entries();
    const ids = new Map(before.filter(isBulk).map((e) => [e.flow.original.sport, e.id]));
    assert.equal(ids.size, ESTABLISHED);
    assert.equal(before.filter(isStaleBulk).filter((e) => e.candidate).length, STALE);

    await using agent = await bed.startAgent(
      command,
      scenarioFlags({ periodMs: PERIOD_MS, maxAge: "2s", natSource: "off" }),
    );
    const deleted = () => agent.records.filter((r) => r.message === "deleted stale flow");
    await agent.waitFor(() => deleted().length >= STALE, 30_000, `${STALE} deletion log lines`);
    // One more period: anything a later cycle would still delete shows up here.
    await new Promise((resolve) => setTimeout(resolve, PERIOD_MS + 500));

    const records = deleted();
    const sports = records.map((r) => Number(r.properties["sport"])).sort((a, b) => a - b);
    const expected = Array.from({ length: STALE }, (_, i) => FIRST_STALE_PORT + i);
    assert.deepEqual(sports, expected, "the agent deleted other flows than the 50 stale ones");
    const times = records.map((r) => stamp(r.properties, r.readAt));
    const spread = Math.max(...times) - Math.min(...times);
    assert.ok(
      spread < PERIOD_MS,
      `the 50 deletions were spread over ${spread} ms: more than one cycle`,
    );

    const after = await bed.entries();
    assert.equal(after.filter(isStaleBulk).length, 0, "stale entries are left");
    const changed = after.filter(isBulk).filter((e) => ids.get(e.flow.original.sport) !== e.id);
    const kept = after.filter(isBulk).length;
    assert.equal(kept, ESTABLISHED, `only ${kept} of ${ESTABLISHED} established entries are left`);
    assert.equal(changed.length, 0, `${changed.length} established entries changed id`);
    await held.assertIntact(bed);
  },
);
