import assert from "node:assert/strict";
import { createAgent } from "../lib/loop/agent.ts";
import { createCliDeleter, createCliLister } from "../lib/table/conntrack_cli.ts";
import type { ScanOptions } from "../lib/operator/scan.ts";
import { runScan } from "../lib/operator/scan.ts";
import { FakeClock, FakeConntrack, RecordingLogger, staleFlow } from "./fakes.ts";

function setup(options: Partial<ScanOptions> = {}) {
  const clock = new FakeClock();
  const ct = new FakeConntrack(clock);
  const agent = createAgent({
    lister: createCliLister(ct.spawn, "conntrack"),
    clock,
    logger: new RecordingLogger(),
    deleter: createCliDeleter(ct.spawn, "conntrack"),
  }, {
    periodMs: 1000,
    renewalThreshold: 3,
    unrepliedMaxAgeMs: 1000,
    dryRun: false,
  });
  const out: string[] = [];
  const err: string[] = [];
  const controller = new AbortController();
  const scanOptions: ScanOptions = {
    json: false,
    watch: false,
    periodMs: 1000,
    clock,
    write: (text) => out.push(text),
    warn: (line) => err.push(line),
    signal: controller.signal,
    ...options,
  };
  return { clock, ct, agent, out, err, controller, scanOptions };
}

Deno.test("runScan() prints every candidate with its verdict and deletes nothing", async () => {
  const { ct, agent, out, scanOptions } = setup();
  ct.add(staleFlow(40000));
  ct.add(staleFlow(40001, { v6: true }));
  ct.add(staleFlow(40002), { state: "ESTABLISHED" });
  assert.equal(await runScan(agent, scanOptions), 0);
  const text = out.join("");
  assert.match(text, /3 entries listed, 2 candidates/);
  assert.match(text, /198\.51\.100\.2:40000/);
  assert.match(text, /2001:db8::2/);
  assert.doesNotMatch(text, /40002/);
  assert.equal(ct.count("-R"), 0);
  assert.equal(ct.table.length, 3);
});

Deno.test("runScan() --json writes one parsable object per candidate", async () => {
  const { ct, agent, out, scanOptions } = setup({ json: true });
  ct.add(staleFlow(40000, { zone: 7 }));
  await runScan(agent, scanOptions);
  const lines = out.join("").trim().split("\n");
  assert.equal(lines.length, 1);
  const record = JSON.parse(lines[0]!);
  assert.equal(record.src, "198.51.100.2");
  assert.equal(record.sport, 40000);
  assert.equal(record.zone, 7);
  assert.equal(record.verdict, "keep");
});

Deno.test("runScan() --watch repeats every period, shows the verdict change, and stops on abort", async () => {
  const { clock, ct, agent, out, controller, scanOptions } = setup({ json: true, watch: true });
  ct.add(staleFlow(40000));
  const sleep = clock.sleep.bind(clock);
  clock.sleep = (ms, signal) => {
    if (clock.sleeps.length === 2) controller.abort();
    return sleep(ms, signal);
  };
  assert.equal(await runScan(agent, scanOptions), 0);
  const verdicts = out.join("").trim().split("\n").map((l) => JSON.parse(l).verdict);
  // Unreplied for 2 s by the third scan, past the 1 s maximum age: condemned, but still there.
  assert.deepEqual(verdicts, ["keep", "delete", "delete"]);
  assert.equal(ct.count("-R"), 0);
  assert.equal(ct.table.length, 1);
});

Deno.test("runScan() exits 1 with one line when the listing fails", async () => {
  const { ct, agent, err, scanOptions } = setup();
  ct.behaviour = {
    kind: "fail",
    code: 1,
    stderr: "conntrack v1.4.7 (conntrack-tools): Operation failed: not permitted\n",
  };
  assert.equal(await runScan(agent, scanOptions), 1);
  assert.deepEqual(err, [
    "conntrack-cleaner: scan failed: conntrack exited 1: Operation failed: not permitted",
  ]);
});
