/**
 * The suite leaves the host as it found it: the conntrack limits the scale tests and benches
 * raise, and the namespaces tests create, are back to what they were after a test that fails, a
 * bench stopped by SIGTERM, and the whole-run guard of `deno task test` catches and undoes what a
 * careless run leaves. Each case runs real code in a child process and compares the host's state
 * before and after it.
 *
 * Needs root; ignored otherwise, and failing instead when CI=true. Assumes no other test run
 * changes the host at the same time.
 */
import assert from "node:assert/strict";
import { rootTest } from "../root.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import { diffHostState, readHostState } from "../support/host_state.ts";
import type { HostState } from "../support/host_state.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const GUARD = new URL("../host_guard.ts", import.meta.url).pathname;
const MAX = "net.netfilter.nf_conntrack_max";
const BUCKETS = "net.netfilter.nf_conntrack_buckets";
const BUCKETS_CAP = 1_048_576;

interface Seen {
  readonly max?: string;
  readonly buckets?: string;
  readonly namespaces: readonly string[];
}

function seenLines(stdout: string): Seen[] {
  return stdout.split("\n").flatMap((line) => {
    const at = line.indexOf("seen {");
    return at < 0 ? [] : [JSON.parse(line.slice(at + "seen ".length)) as Seen];
  });
}

/** The host's state, with the conntrack module loaded so that its limits exist. */
async function snapshot(): Promise<HostState> {
  await runToEnd(denoSpawn, "conntrack", ["-C"]);
  const state = await readHostState(denoSpawn);
  assert.ok(Number(state.sysctls[MAX]) > 0, `${MAX} is readable`);
  return state;
}

/** Makes the fixture raise both limits above the host's: room for twice the current maximum. */
function entriesAboveHost(before: HostState): string {
  return String(Number(before.sysctls[MAX]) * 2);
}

/** Asserts the fixture really changed the host while it ran, so the restore is tested. */
function assertChanged(seen: Seen | undefined, before: HostState): void {
  assert.ok(seen !== undefined, "the fixture reported what it saw");
  assert.ok(Number(seen.max) > Number(before.sysctls[MAX]), `${MAX} was raised: ${seen.max}`);
  const buckets = Number(before.sysctls[BUCKETS]);
  if (buckets < BUCKETS_CAP) {
    assert.ok(Number(seen.buckets) > buckets, `${BUCKETS} was raised: ${seen.buckets}`);
  }
  assert.ok(seen.namespaces.every((n) => n.startsWith("cct-")), seen.namespaces.join(" "));
}

rootTest(
  "raiseConntrackCapacity(), createNetns() and Testbed leave the host as found after failing " +
    "tests (root, netns)",
  async () => {
    const before = await snapshot();
    const entries = entriesAboveHost(before);

    const out = await runToEnd(denoSpawn, "env", [
      ...["NO_COLOR=1", `CCT_FIXTURE_ENTRIES=${entries}`],
      ...[Deno.execPath(), "test", "--allow-all", "--no-check"],
      `${FIXTURES}host_change_then_fail.ts`,
    ]);

    const report = out.stdout;
    assert.notEqual(out.code, 0, "the fixture's tests fail");
    assert.match(report, /failing on purpose after raising the capacity/);
    assert.match(report, /failing on purpose inside a testbed/);
    assert.match(report, /0 passed \| 2 failed/);
    const [raised, bed] = seenLines(report);
    assertChanged(raised, before);
    assert.equal(bed?.namespaces.length, 3, "the testbed made its three namespaces");
    assert.deepEqual(diffHostState(before, await readHostState(denoSpawn)), []);
  },
);

rootTest(
  "raiseConntrackCapacity() and createNetns() leave the host as found when SIGTERM stops a " +
    "bench (root, netns)",
  async () => {
    const before = await snapshot();
    const entries = entriesAboveHost(before);
    const stop = new AbortController();
    const child = denoSpawn("env", [
      `CCT_FIXTURE_ENTRIES=${entries}`,
      ...[Deno.execPath(), "run", "--allow-all", "--no-check"],
      `${FIXTURES}host_change_then_wait.ts`,
    ], { signal: stop.signal });

    // The first line says the change is in force; then SIGTERM (what aborting sends).
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    stop.abort();
    await reader.cancel();
    const status = await child.status;

    assertChanged(seenLines(text)[0], before);
    assert.equal(status.code, 143, `exits as SIGTERM would have it: ${status.stderr}`);
    assert.deepEqual(diffHostState(before, await readHostState(denoSpawn)), []);
  },
);

rootTest(
  "tests/host_guard.ts fails a run that leaves the host changed, names each change and writes " +
    "the sysctl back (root, netns)",
  async () => {
    const before = await snapshot();
    const leaked = `cct-leak-${crypto.randomUUID().slice(0, 8)}`;
    try {
      const out = await runToEnd(denoSpawn, "env", [
        `CCT_FIXTURE_NETNS=${leaked}`,
        ...[Deno.execPath(), "run", "--allow-run", "--no-check", GUARD],
        ...["run", "--allow-run", "--allow-env", "--no-check", `${FIXTURES}host_leak.ts`],
      ]);

      assert.equal(out.code, 1, out.stderr);
      assert.match(out.stderr, /host check: FAILED/);
      assert.match(out.stderr, /net\.netfilter\.nf_conntrack_timestamp is [01], was [01]/);
      assert.match(out.stderr, new RegExp(`namespace ${leaked} was left behind`));
      assert.match(out.stderr, /wrote back net\.netfilter\.nf_conntrack_timestamp/);
      const after = await readHostState(denoSpawn);
      assert.deepEqual(after.sysctls, before.sysctls, "the guard wrote the sysctl back");
    } finally {
      await runToEnd(denoSpawn, "ip", ["netns", "del", leaked]);
    }
  },
);

rootTest("tests/host_guard.ts passes a clean run through with its exit status (root)", async () => {
  const ok = await runToEnd(denoSpawn, Deno.execPath(), [
    ...["run", "--allow-run", "--no-check", GUARD],
    ...["eval", "console.log('suite ran')"],
  ]);
  const failed = await runToEnd(denoSpawn, Deno.execPath(), [
    ...["run", "--allow-run", "--no-check", GUARD],
    ...["eval", "Deno.exit(3)"],
  ]);

  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /suite ran\n/);
  assert.match(ok.stdout, /host check: .* as found/);
  assert.equal(failed.code, 3);
});
