/**
 * The renewal rule on a 1M-entry table, where one listing takes longer than the dump period, so
 * cycles stretch beyond it: the real agent (`main.ts` with the `start` task's permissions) must
 * still delete an entry whose timer is being renewed, as kernels before 6.x do on every retried
 * SYN (emulated with `conntrack -U -t 120`), and keep an entry that only counts down, together
 * with every other entry of the table.
 *
 * Slow (about a minute: the fill, and `conntrack -U` dumps the table each time). Needs root;
 * ignored otherwise, and failing instead when CI=true.
 */
import assert from "node:assert/strict";
import { runToEnd } from "../../lib/seams/spawn.ts";
import type { Flow } from "../../lib/core/flow.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import {
  createNetns,
  fillTable,
  inNetns,
  raiseConntrackCapacity,
  tableCount,
} from "../../bench/fill_table.ts";
import { startTaskFlags } from "../../bench/cycle.ts";

const ENTRIES = 1_000_000;
const DEADLINE_MS = 120_000;

const isRoot = Deno.uid() === 0;
const inCi = Deno.env.get("CI") === "true";
if (!isRoot && !inCi) console.warn("scale_renewal_test: (root, netns) tests ignored: not root");

function tupleArgs(f: Flow): string[] {
  const o = f.original;
  return [
    "-p",
    "tcp",
    "-s",
    o.src,
    "-d",
    o.dst,
    "--sport",
    String(o.sport),
    "--dport",
    String(
      o.dport,
    ),
  ];
}

function flow(sport: number): Flow {
  // Outside every address the fill uses (198.51.100.1-200), so no tuple can collide.
  const src = "198.51.100.250";
  const dst = "192.0.2.250";
  return {
    family: "ipv4",
    original: { src, dst, sport, dport: 80 },
    reply: { src: dst, dst: src, sport: 80, dport: sport },
    zone: 0,
  };
}

async function present(netns: string, f: Flow): Promise<boolean> {
  const out = await runToEnd(denoSpawn, "ip", [
    ...["netns", "exec", netns, "conntrack", "-G"],
    ...tupleArgs(f),
  ]);
  return out.code === 0;
}

Deno.test({
  name: "the agent deletes a renewing entry and keeps a counting-down one on a 1M table " +
    "when cycles outlast the period (root, netns)",
  ignore: !isRoot && !inCi,
  fn: async () => {
    if (!isRoot) throw new Error(`Cannot run a (root, netns) test as uid ${Deno.uid()}`);
    // Host-wide limits, put back when the test ends, whether it passes or not.
    await using _capacity = await raiseConntrackCapacity(denoSpawn, ENTRIES);
    await using ns = await createNetns(denoSpawn, "renewal");
    const fill = await fillTable(denoSpawn, ns.name, { entries: ENTRIES });
    assert.equal(fill.count, ENTRIES);
    const renewing = flow(50000);
    const countingDown = flow(50001);
    for (const f of [renewing, countingDown]) {
      await inNetns(denoSpawn, ns.name, [
        ...["conntrack", "-I", "-t", "120", "-u", "UNSET"],
        ...tupleArgs(f),
        ...["--state", "SYN_SENT"],
      ]);
    }

    const controller = new AbortController();
    const agent = denoSpawn("ip", [
      ...["netns", "exec", ns.name, Deno.execPath(), "run", ...startTaskFlags()],
      new URL("../../main.ts", import.meta.url).pathname,
      ...["--metrics-address", "", "--log-format", "json", "--dump-frequency", "200ms"],
      ...["--renewal-threshold", "1", "--unreplied-max-age", "0", "--nat-source", "off"],
    ], { signal: controller.signal });
    const stdout = new Response(agent.stdout).text();
    try {
      // Let the agent see both entries before the first renewal.
      await new Promise((r) => setTimeout(r, 5000));
      const start = performance.now();
      while (performance.now() - start < DEADLINE_MS && await present(ns.name, renewing)) {
        await runToEnd(denoSpawn, "ip", [
          ...["netns", "exec", ns.name, "conntrack", "-U"],
          ...tupleArgs(renewing),
          ...["-t", "120"],
        ]);
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      controller.abort();
    }
    // The agent logs to stderr; the status keeps its first 64 KiB.
    const { code, stderr } = await agent.status;
    await stdout;
    const deletions = stderr.split("\n").filter((line) => line.includes("deleted stale flow"));

    assert.equal(await present(ns.name, renewing), false, "the renewing entry was deleted");
    assert.equal(await present(ns.name, countingDown), true, "the counting-down entry stays");
    assert.equal(await tableCount(denoSpawn, ns.name), ENTRIES + 1, "nothing else was deleted");
    assert.equal(
      deletions.length,
      1,
      `one deletion logged (exit ${code}): ${stderr.slice(0, 2000)}`,
    );
    assert.match(deletions[0] ?? "", /renewal/);
    assert.match(deletions[0] ?? "", /198\.51\.100\.250/);
  },
});
