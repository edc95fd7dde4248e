/**
 * `/metrics`, `/healthz` and `/readyz` of the real agent (`main.ts`, started with the `start`
 * task's permissions), scraped as Prometheus would.
 *
 * - A real deletion in a fresh network namespace moves `conntrack_cleaner_deleted_total` for
 *   the right rule and family. Needs root; ignored otherwise, and failing instead when CI=true.
 * - `/readyz` turns 503 while dumps keep failing and 200 again when they recover, with a fake
 *   conntrack (a kernel cannot be made to fail a listing on demand). Needs no root.
 * - The whole `/metrics` of an agent reading the nat rules passes `promtool check metrics`.
 *   Needs root and promtool; ignored without them, failing instead when CI=true.
 *
 * Every `/metrics` body is parsed whole by the strict exposition validator.
 */
import assert from "node:assert/strict";
import { rootTest } from "../root.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import type { CommandOutput, ExitStatus } from "../../lib/seams/spawn.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { prepareAgentCommand } from "./testbed.ts";
import { parseExposition, sampleValue } from "../exposition.ts";
import { promtool, promtoolMissing } from "../promtool.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const SCRAPE = `${ROOT}/tests/fixtures/metrics-scrape.ts`;

/** The agent as a child process, with everything it wrote kept for failure messages. */
interface Agent extends AsyncDisposable {
  /** Stops it (SIGTERM) and returns its exit code and everything it wrote. */
  stop(): Promise<string>;
}

function startAgent(argv: readonly string[], netns?: string): Agent {
  const stop = new AbortController();
  const [program = "", ...args] = netns === undefined
    ? argv
    : ["ip", "netns", "exec", netns, ...argv];
  const child = denoSpawn(program, args, { signal: stop.signal });
  const stdout = new Response(child.stdout).text();
  let stopped: Promise<string> | undefined;
  const stopAgent = () => {
    stopped ??= (async () => {
      stop.abort();
      const status: ExitStatus = await child.status;
      return `exit ${status.code}\n${await stdout}${status.stderr}`;
    })();
    return stopped;
  };
  return { stop: stopAgent, [Symbol.asyncDispose]: async () => void await stopAgent() };
}

/**
 * Polls `url` (from inside `netns` when given) until `STATUS BODY` matches `pattern`; on timeout
 * fails with the last answer and the agent's log.
 */
async function scrapeUntil(
  agent: Agent,
  url: string,
  pattern: string,
  options: { readonly netns?: string; readonly timeoutMs?: number } = {},
): Promise<{ readonly status: number; readonly body: string }> {
  const scrape = [
    Deno.execPath(),
    "run",
    "--no-prompt",
    "--allow-net=127.0.0.1",
    SCRAPE,
    url,
    String(options.timeoutMs ?? 20_000),
    pattern,
  ];
  const [program = "", ...args] = options.netns === undefined
    ? scrape
    : ["ip", "netns", "exec", options.netns, ...scrape];
  const out: CommandOutput = await runToEnd(denoSpawn, program, args);
  if (out.code !== 0) {
    throw new Error(`${out.stderr.trim()}\n--- agent output ---\n${await agent.stop()}`);
  }
  return JSON.parse(out.stdout) as { status: number; body: string };
}

async function must(argv: readonly string[]): Promise<string> {
  const [program = "", ...args] = argv;
  const out = await runToEnd(denoSpawn, program, args);
  if (out.code !== 0) throw new Error(`${argv.join(" ")} exited ${out.code}: ${out.stderr.trim()}`);
  return out.stdout;
}

/** The start task's argv with extra `--allow-run` entries, before the entry point. */
function withAllowRun(argv: readonly string[], programs: readonly string[]): readonly string[] {
  if (programs.length === 0) return argv;
  return [...argv.slice(0, -1), `--allow-run=${programs.join(",")}`, ...argv.slice(-1)];
}

function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const sampleLine = (name: string, labels: string, value: string) =>
  `^${escape(`${name}{${labels}}`)} ${value}$`;

rootTest(
  "main.ts (root, netns) counts a real deletion in conntrack_cleaner_deleted_total by rule and family",
  async () => {
    const command = await prepareAgentCommand(denoSpawn, ROOT);
    const netns = `ccm-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    await must(["ip", "netns", "add", netns]);
    try {
      const inNs = (...argv: string[]) => must(["ip", "netns", "exec", netns, ...argv]);
      await inNs("ip", "link", "set", "lo", "up");
      const syn = ["--state", "SYN_SENT", "-t", "117", "-u", "UNSET"];
      await inNs(
        "conntrack",
        ...["-I", "-p", "tcp", "-s", "198.51.100.2", "-d", "192.0.2.10"],
        ...["--sport", "40000", "--dport", "80", ...syn],
      );
      await inNs(
        "conntrack",
        ...["-I", "-p", "tcp", "-s", "2001:db8::2", "-d", "2001:db8:100::10"],
        ...["-r", "2001:db8:100::10", "-q", "2001:db8::2", "--sport", "40200", "--dport", "80"],
        ...["--reply-port-src", "80", "--reply-port-dst", "40200", ...syn],
      );
      // An established flow to the same VIP, which must survive.
      await inNs(
        "conntrack",
        ...["-I", "-p", "tcp", "-s", "198.51.100.3", "-d", "192.0.2.10"],
        ...["--sport", "40001", "--dport", "443", "--state", "ESTABLISHED", "-t", "600"],
        ...["-u", "SEEN_REPLY,ASSURED"],
      );

      const url = "http://127.0.0.1:9469";
      await using agent = startAgent([
        ...command.argv,
        ...["--unreplied-max-age", "1s", "--nat-source", "off", "--dump-frequency", "500ms"],
        ...["--metrics-address", "127.0.0.1:9469", "--log-format", "json"],
      ], netns);
      const name = "conntrack_cleaner_deleted_total";
      const both = `(?=[\\s\\S]*${sampleLine(name, 'rule="age",family="ipv4"', "1")})` +
        `(?=[\\s\\S]*${sampleLine(name, 'rule="age",family="ipv6"', "1")})`;
      const { body } = await scrapeUntil(agent, `${url}/metrics`, both, { netns });

      const families = parseExposition(body);
      for (const rule of ["nat", "renewal", "age"]) {
        for (const family of ["ipv4", "ipv6"]) {
          const want = rule === "age" ? 1 : 0;
          assert.equal(sampleValue(families, name, { rule, family }), want, `${rule}/${family}`);
        }
      }
      assert.equal(sampleValue(families, "conntrack_cleaner_dump_failures_total"), 0);
      assert.ok(sampleValue(families, "conntrack_cleaner_dumps_total") >= 2);
      assert.ok(
        sampleValue(families, "conntrack_cleaner_last_successful_dump_timestamp_seconds") > 0,
      );
      const ready = await scrapeUntil(agent, `${url}/readyz`, "^", { netns });
      assert.deepEqual(ready, { status: 200, body: "ok\n" });
      const live = await scrapeUntil(agent, `${url}/healthz`, "^", { netns });
      assert.deepEqual(live, { status: 200, body: "ok\n" });

      const table = await inNs("conntrack", "-L", "-p", "tcp");
      assert.doesNotMatch(table, /sport=40000 |sport=40200 /, "stale entries deleted");
      assert.match(table, /ESTABLISHED src=198\.51\.100\.3 dst=192\.0\.2\.10 sport=40001/);
    } finally {
      await runToEnd(denoSpawn, "ip", ["netns", "del", netns]);
    }
  },
);

/** A conntrack stand-in whose dumps succeed or fail as the word in its mode file says. */
async function writeFakeConntrack(dir: string): Promise<{ program: string; mode: string }> {
  const program = `${dir}/conntrack`;
  const mode = `${dir}/mode`;
  await Deno.writeTextFile(mode, "ok\n");
  await Deno.writeTextFile(
    program,
    `#!/bin/sh
# Fake conntrack for tests/e2e/metrics_e2e_test.ts; "ok" or "fail" in ${mode} decides.
case "$1" in
  --version) echo "conntrack v1.4.7 (conntrack-tools)"; exit 0 ;;
  -R) cat >/dev/null; exit 0 ;;
esac
if [ "$(cat '${mode}')" = fail ]; then
  echo "conntrack v1.4.7 (conntrack-tools): Operation failed: fake dump failure" >&2
  exit 1
fi
echo "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] \
src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1"
echo "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown." >&2
`,
  );
  await Deno.chmod(program, 0o755);
  return { program, mode };
}

Deno.test("main.ts /readyz turns 503 while dumps keep failing and 200 again when they recover", async () => {
  const command = await prepareAgentCommand(denoSpawn, ROOT);
  const dir = await Deno.makeTempDir({ prefix: "ccm-fake-" });
  try {
    const fake = await writeFakeConntrack(dir);
    const url = `http://127.0.0.1:${freeLoopbackPort()}`;
    // Dry run and the CLI backend: whatever happens, only the fake is ever asked to delete.
    await using agent = startAgent([
      ...withAllowRun(command.argv, [fake.program]),
      ...["--conntrack", fake.program, "--nat-source", "off", "--delete-backend", "cli"],
      // The fake conntrack stands in for listings that fail: list through it.
      ...["--list-backend", "cli"],
      ...["--dry-run", "--unreplied-max-age", "1s", "--dump-frequency", "500ms"],
      ...["--metrics-address", url.replace("http://", ""), "--log-format", "json"],
    ]);
    await scrapeUntil(agent, `${url}/readyz`, "^200 ok\\n$");
    const wouldDelete = sampleLine(
      "conntrack_cleaner_dry_run_would_delete_total",
      'rule="age",family="ipv4"',
      "[1-9][0-9]*",
    );
    let families = parseExposition((await scrapeUntil(agent, `${url}/metrics`, wouldDelete)).body);
    assert.equal(
      sampleValue(families, "conntrack_cleaner_deleted_total", { rule: "age", family: "ipv4" }),
      0,
      "dry run deletes nothing",
    );
    const failuresBefore = sampleValue(families, "conntrack_cleaner_dump_failures_total");
    assert.equal(failuresBefore, 0);

    await Deno.writeTextFile(fake.mode, "fail\n");
    const down = await scrapeUntil(
      agent,
      `${url}/readyz`,
      "^503 last successful dump [0-9.]+s ago, more than [0-9.]+s " +
        "\\([0-9]+ failed since: [^\\n]*fake dump failure\\)\\n$",
    );
    assert.equal(down.status, 503);
    // Failing dumps make the agent unready, not dead: a restart would not fix conntrack.
    const live = await scrapeUntil(agent, `${url}/healthz`, "^");
    assert.deepEqual(live, { status: 200, body: "ok\n" });
    families = parseExposition((await scrapeUntil(agent, `${url}/metrics`, "^")).body);
    assert.ok(sampleValue(families, "conntrack_cleaner_dump_failures_total") >= 2);

    await Deno.writeTextFile(fake.mode, "ok\n");
    const up = await scrapeUntil(agent, `${url}/readyz`, "^200 ok\\n$");
    assert.deepEqual(up, { status: 200, body: "ok\n" });
    families = parseExposition((await scrapeUntil(agent, `${url}/metrics`, "^")).body);
    const dumps = sampleValue(families, "conntrack_cleaner_dumps_total");
    const failures = sampleValue(families, "conntrack_cleaner_dump_failures_total");
    assert.ok(dumps > failures, `${dumps} dumps, ${failures} failed`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const noPromtool = promtoolMissing;
const promtoolName =
  "main.ts (root, netns) serves a /metrics that promtool check metrics accepts, nat sources included";

Deno.test({
  name: `${promtoolName}${
    (Deno.uid() !== 0 || noPromtool) && Deno.env.get("CI") !== "true"
      ? ` (ignored: needs root and promtool${noPromtool ? `; ${noPromtool}` : ""})`
      : ""
  }`,
  ignore: (Deno.uid() !== 0 || noPromtool !== undefined) && Deno.env.get("CI") !== "true",
  fn: async () => {
    if (noPromtool) throw new Error(`Cannot check /metrics with promtool: ${noPromtool}`);
    if (Deno.uid() !== 0) throw new Error(`Cannot run "${promtoolName}" as uid ${Deno.uid()}`);
    const command = await prepareAgentCommand(denoSpawn, ROOT);
    const netns = `ccp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    await must(["ip", "netns", "add", netns]);
    try {
      const inNs = (...argv: string[]) => must(["ip", "netns", "exec", netns, ...argv]);
      await inNs("ip", "link", "set", "lo", "up");
      // A candidate, so that every cycle reads the nat rules; dry run keeps it there.
      await inNs(
        "conntrack",
        ...["-I", "-p", "tcp", "-s", "198.51.100.2", "-d", "192.0.2.10"],
        ...["--sport", "40000", "--dport", "80", "--state", "SYN_SENT", "-t", "117", "-u", "UNSET"],
      );
      await using agent = startAgent([
        ...command.argv,
        ...["--nat-source", "auto", "--dry-run", "--dump-frequency", "500ms"],
        ...["--metrics-address", "127.0.0.1:9469", "--log-format", "json"],
      ], netns);
      const natRead = sampleLine(
        "conntrack_cleaner_nat_source_up",
        'source="iptables",family="ipv4"',
        "1",
      );
      const { body } = await scrapeUntil(agent, "http://127.0.0.1:9469/metrics", natRead, {
        netns,
      });
      parseExposition(body);
      const out = await promtool(["check", "metrics"], body);
      assert.equal(out.code, 0, `${out.stdout}${out.stderr}`);
      assert.equal(`${out.stdout}${out.stderr}`, "", "promtool has nothing to say");
    } finally {
      await runToEnd(denoSpawn, "ip", ["netns", "del", netns]);
    }
  },
});
