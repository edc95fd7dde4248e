import assert from "node:assert/strict";
import type { SpawnCommand, SpawnOptions } from "../lib/seams/spawn.ts";
import {
  parseAgentLogLine,
  parseConntrackLine,
  startTaskArgv,
  Testbed,
  TestbedError,
} from "./e2e/testbed.ts";

const SYN_SENT_V6 = "tcp      6 116 SYN_SENT src=2001:db8::2 dst=2001:db8:100::10 sport=40200 " +
  "dport=80 packets=0 bytes=0 [UNREPLIED] src=2001:db8:100::10 dst=2001:db8::2 sport=80 " +
  "dport=40200 packets=0 bytes=0 mark=0 delta-time=1 use=1 id=1383102343";
const ESTABLISHED_DNAT = "tcp      6 431997 ESTABLISHED src=198.51.100.3 dst=192.0.2.10 " +
  "sport=40001 dport=443 packets=0 bytes=0 src=203.0.113.2 dst=198.51.100.3 sport=8443 " +
  "dport=40001 packets=0 bytes=0 [ASSURED] mark=0 delta-time=2 use=1 id=1076455330";

Deno.test("parseConntrackLine() reads an IPv6 SYN_SENT entry as a candidate with its id", () => {
  const entry = parseConntrackLine(SYN_SENT_V6);
  assert.ok(entry);
  assert.equal(entry.id, 1383102343);
  assert.equal(entry.state, "SYN_SENT");
  assert.equal(entry.unreplied, true);
  assert.equal(entry.flow.family, "ipv6");
  assert.deepEqual(entry.flow.original, {
    src: "2001:db8::2",
    dst: "2001:db8:100::10",
    sport: 40200,
    dport: 80,
  });
  assert.ok(entry.candidate, "the tokenizer should see a candidate");
});

Deno.test("parseConntrackLine() reads a DNATed ESTABLISHED entry, which is no candidate", () => {
  const entry = parseConntrackLine(ESTABLISHED_DNAT);
  assert.ok(entry);
  assert.equal(entry.id, 1076455330);
  assert.equal(entry.state, "ESTABLISHED");
  assert.equal(entry.unreplied, false);
  assert.deepEqual(entry.flow.reply, {
    src: "203.0.113.2",
    dst: "198.51.100.3",
    sport: 8443,
    dport: 40001,
  });
  assert.equal(entry.candidate, undefined);
});

Deno.test("parseConntrackLine() skips the summary, other protocols and lines without id", () => {
  for (
    const line of [
      "conntrack v1.4.7 (conntrack-tools): 8 flow entries have been shown.",
      "",
      "udp      17 27 src=198.51.100.2 dst=192.0.2.53 sport=33333 dport=53 [UNREPLIED] " +
      "src=192.0.2.53 dst=198.51.100.2 sport=53 dport=33333 mark=0 use=1 id=2009496100",
      SYN_SENT_V6.replace(/ id=\d+$/, ""),
    ]
  ) {
    assert.equal(parseConntrackLine(line), undefined, line);
  }
});

Deno.test("startTaskArgv() keeps the start task's flags and makes paths absolute", () => {
  const argv = startTaskArgv(
    "deno run --allow-run=conntrack --allow-env=A,B --allow-ffi main.ts",
    "/repo",
    "/bin/deno",
  );
  assert.deepEqual(argv, [
    "/bin/deno",
    "run",
    "--allow-run=conntrack",
    "--allow-env=A,B",
    "--allow-ffi",
    "--config",
    "/repo/deno.json",
    "/repo/main.ts",
  ]);
});

Deno.test("startTaskArgv() reads this project's start task", async () => {
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const config = JSON.parse(await Deno.readTextFile(`${root}/deno.json`));
  const task: string = config.tasks.start;
  const argv = startTaskArgv(task, root, "deno");
  assert.equal(argv[argv.length - 1], `${root}/main.ts`);
  const flags = task.split(/\s+/).filter((w) => w.startsWith("--"));
  for (const flag of flags) assert.ok(argv.includes(flag), `${flag} is lost`);
});

Deno.test("startTaskArgv() rejects a task that is not deno run", () => {
  assert.throws(() => startTaskArgv("deno compile main.ts", "/r", "deno"), TestbedError);
});

Deno.test("parseAgentLogLine() flattens LogTape's properties and skips non-JSON", () => {
  const flat = parseAgentLogLine(
    '{"@timestamp":"2026-01-01T00:00:00.000Z","level":"INFO","message":"deleted stale flow",' +
      '"sport":40000,"rule":"age"}',
    5,
  );
  assert.equal(flat?.message, "deleted stale flow");
  assert.equal(flat?.properties["rule"], "age");
  const nested = parseAgentLogLine(
    '{"level":"INFO","message":"deleted stale flow","properties":{"sport":40000}}',
    5,
  );
  assert.equal(nested?.properties["sport"], 40000);
  assert.equal(parseAgentLogLine("error: Uncaught (in promise)", 5), undefined);
});

/** A fake `ip`/`nft`/`deno` world that records every command and fails the one named. */
function fakeWorld(failOn: string) {
  const calls: { argv: string[]; stdin?: string }[] = [];
  const spawn: SpawnCommand = (program, args, options: SpawnOptions = {}) => {
    const argv = [program, ...args];
    calls.push({ argv, ...(options.stdin !== undefined ? { stdin: options.stdin } : {}) });
    const text = argv.some((a) => a.endsWith("backend.ts")) ? "listening 8080\n" : "";
    const failed = argv.includes(failOn);
    return {
      stdout: ReadableStream.from([new TextEncoder().encode(text)]),
      status: Promise.resolve({
        code: failed ? 1 : 0,
        stderr: failed ? `${failOn}: Error: something broke\n` : "",
      }),
    };
  };
  return { spawn, calls };
}

Deno.test("Testbed.create() removes its namespaces when a step fails", async () => {
  const world = fakeWorld("nft");
  await assert.rejects(
    Testbed.create({ spawn: world.spawn, root: "/repo", deno: "deno" }),
    (error: unknown) =>
      error instanceof TestbedError && /Error: something broke/.test(error.message),
  );
  const added = world.calls.filter((c) => c.argv.join(" ").startsWith("ip netns add"));
  const deleted = world.calls.filter((c) => c.argv.join(" ").startsWith("ip netns del"));
  assert.equal(added.length, 3);
  assert.deepEqual(deleted.map((c) => c.argv[3]), added.map((c) => c.argv[3]));
});

Deno.test("Testbed.addServiceDnat() writes kube-proxy's iptables chain shape", async () => {
  const world = fakeWorld("none");
  await using bed = await Testbed.create({ spawn: world.spawn, root: "/repo", deno: "deno" });
  await bed.addServiceDnat("ipv6", { style: "kube" });
  const rules = world.calls.at(-1);
  assert.ok(rules?.argv.includes("ip6tables-restore"));
  const text = rules?.stdin ?? "";
  const ext = text.match(/-d 2001:db8:100::10\/128 .* --dport 80 -j (KUBE-EXT-\S+)/)?.[1];
  assert.ok(ext, text);
  const svc = text.match(new RegExp(`-A ${ext} .*-j (KUBE-SVC-\\S+)`))?.[1];
  const sep = text.match(new RegExp(`-A ${svc} .*-j (KUBE-SEP-\\S+)`))?.[1];
  assert.match(text, new RegExp(`-A ${sep} .*-j DNAT --to-destination \\[2001:db8:2::2\\]:8080`));
});
