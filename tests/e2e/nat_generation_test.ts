/**
 * The nat rule follows the nftables generation on a real kernel: with kube-proxy's nftables
 * rules loaded and a stale entry present (so every cycle has a candidate), the agent runs no
 * `nft` or `iptables-save` while the ruleset stays the same, and a Service's rule added later
 * still unsticks the client within one period plus a retry. The rule programs are counted
 * through wrappers of the same names put first on the agent's `PATH`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  agentCommand,
  CLIENT_PORT,
  createBed,
  deletionRecord,
  e2eTest,
  namesStuckFlow,
  RETRY_MS,
  scenarioFlags,
  SLACK_MS,
  sleep,
  timeToConnect,
  waitForStale,
} from "./harness.ts";

const PERIOD_MS = 1000;
const PROGRAMS = ["iptables-save", "ip6tables-save", "nft"] as const;

/** Wrappers that log each run to `log`, then run the real program. */
async function countingWrappers(dir: string, log: string): Promise<void> {
  for (const program of PROGRAMS) {
    await Deno.writeTextFile(
      `${dir}/${program}`,
      [
        "#!/bin/sh",
        `echo ${program} >> ${log}`,
        `PATH=${Deno.env.get("PATH")}`,
        `exec ${program} "$@"`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
  }
}

async function runs(log: string): Promise<readonly string[]> {
  try {
    return (await Deno.readTextFile(log)).split("\n").filter((l) => l !== "");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

e2eTest(
  "nat rule spawns no rule reader while nftables is unchanged, and still unsticks a client of a new Service",
  async () => {
    const command = await agentCommand();
    const dir = await Deno.makeTempDir({ prefix: "cct-nat-generation-" });
    const log = `${dir}/runs.log`;
    try {
      await countingWrappers(dir, log);
      await using bed = await createBed({ proxy: "nftables" });
      // Another Service's rules are there from the start: the ruleset is kube-proxy's.
      await bed.addServiceDnat("ipv4", { style: "kube", servicePort: 443 });
      await using stuck = await bed.startClient("ipv4", {
        sport: CLIENT_PORT,
        timeoutMs: RETRY_MS,
      });
      await waitForStale(bed, "ipv4");
      await using agent = await bed.startAgent(
        command,
        scenarioFlags({ periodMs: PERIOD_MS, maxAge: "0", natSource: "auto" }),
        { pathPrefix: [dir] },
      );
      await agent.waitFor(
        (r) => r.message === "NAT rules are read again only when the nftables generation changes",
        5000,
        "the line saying the nat rule follows the generation",
      );
      const first = await runs(log);
      // Five periods with a candidate in each, and an unchanged ruleset.
      await sleep(5 * PERIOD_MS);
      const quiet = await runs(log);
      assert.deepEqual(
        quiet.slice(first.length),
        [],
        `rule readers ran with an unchanged ruleset (first read: ${first.join(", ")})`,
      );
      assert.deepEqual([...new Set(first)].sort(), ["ip6tables-save", "iptables-save", "nft"]);

      await bed.addServiceDnat("ipv4", { style: "kube" });
      const since = performance.now();
      const took = await timeToConnect(stuck, since, PERIOD_MS + RETRY_MS + SLACK_MS, agent);
      const deletion = await deletionRecord(agent, (r) => namesStuckFlow(r, "ipv4"));
      assert.equal(deletion.properties["rule"], "nat");
      // The commit was read once, then nothing again.
      const after = (await runs(log)).slice(quiet.length);
      assert.ok(after.length > 0, "the new Service's rules were never read");
      await sleep(2 * PERIOD_MS);
      assert.deepEqual((await runs(log)).slice(quiet.length + after.length), []);
      console.log(
        `client through ${Math.round(took)} ms after the rule; ${first.length} runs at start, ` +
          `0 in ${5 * PERIOD_MS} ms unchanged, ${after.length} after the commit`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
