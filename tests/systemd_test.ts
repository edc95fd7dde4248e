/**
 * The systemd unit (`conntrack-cleaner.service`) and its settings file
 * (`deploy/conntrack-cleaner.default`): systemd itself checks the unit (`systemd-analyze verify`)
 * and rates its sandbox (`systemd-analyze security --offline=true`, exposure 2.0 or lower).
 *
 * `verify` insists that `ExecStart=` exists, so the unit is checked as a copy whose `ExecStart=`
 * points at a stub in a temporary directory; nothing else is changed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { OPTIONS } from "../lib/operator/command_line.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const UNIT = `${ROOT}/conntrack-cleaner.service`;
const DEFAULTS = `${ROOT}/deploy/conntrack-cleaner.default`;
const INSTALLED_BINARY = "/usr/local/bin/conntrack-cleaner";
/** The highest overall exposure `systemd-analyze security` rates "OK". */
const MAX_EXPOSURE = 2.0;

const hasSystemdAnalyze = (() => {
  const path = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  return path.some((dir) => {
    try {
      return Deno.statSync(`${dir}/systemd-analyze`).isFile;
    } catch {
      return false;
    }
  });
})();
const inCi = Deno.env.get("CI") === "true";

/** A `systemd-analyze` test: ignored without the program, failing instead under `CI=true`. */
function analyzeTest(name: string, fn: () => Promise<void>): void {
  const ignore = !hasSystemdAnalyze && !inCi;
  Deno.test({
    name: `conntrack-cleaner.service: ${name}${ignore ? " (ignored: needs systemd-analyze)" : ""}`,
    ignore,
    fn: async () => {
      if (!hasSystemdAnalyze) {
        throw new Error("Cannot check the unit under CI: systemd-analyze is not on PATH");
      }
      await fn();
    },
  });
}

/** One `Key=value` setting of a unit or environment file. */
interface Setting {
  readonly section: string;
  readonly key: string;
  readonly value: string;
}

/** Reads `[Section]` headers and `Key=value` lines; comments and blank lines are skipped. */
function parseSettings(text: string, commentedOut = false): readonly Setting[] {
  const settings: Setting[] = [];
  let section = "";
  for (const raw of text.split("\n")) {
    const line = commentedOut ? raw.replace(/^#(?=[A-Z_]+=)/, "") : raw;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1] ?? "";
      continue;
    }
    const setting = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (setting) settings.push({ section, key: setting[1] ?? "", value: setting[2] ?? "" });
  }
  return settings;
}

function values(settings: readonly Setting[], key: string): readonly string[] {
  return settings.filter((s) => s.key === key).map((s) => s.value);
}

/**
 * Writes the unit (optionally changed by `edit`) into a temporary directory with `ExecStart=`
 * on an executable stub there, and passes the unit's path to `fn`.
 */
async function withCheckableUnit(
  fn: (unitPath: string) => Promise<void>,
  edit: (text: string) => string = (text) => text,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ccf-systemd-" });
  try {
    const stub = `${dir}/conntrack-cleaner`;
    await Deno.writeTextFile(stub, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const text = edit(await Deno.readTextFile(UNIT));
    const rewritten = text.replaceAll(`ExecStart=${INSTALLED_BINARY}`, `ExecStart=${stub}`);
    assert.notEqual(rewritten, text, `the unit has no ExecStart=${INSTALLED_BINARY}`);
    const unitPath = `${dir}/conntrack-cleaner.service`;
    await Deno.writeTextFile(unitPath, rewritten);
    await fn(unitPath);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `systemd-analyze verify` and returns its exit code and everything it said. */
async function verify(unitPath: string): Promise<{ code: number; said: string }> {
  const out = await runToEnd(denoSpawn, "systemd-analyze", ["verify", unitPath]);
  return { code: out.code, said: (out.stdout + out.stderr).trim() };
}

analyzeTest("systemd-analyze verify accepts the unit without a warning", async () => {
  await withCheckableUnit(async (unitPath) => {
    const { code, said } = await verify(unitPath);
    assert.equal(said, "");
    assert.equal(code, 0);
  });
});

analyzeTest("systemd-analyze verify reports a key this systemd does not know", async () => {
  // Guards the test above: the check has to be able to fail, e.g. on RestartSteps= (254+).
  await withCheckableUnit(async (unitPath) => {
    const { said } = await verify(unitPath);
    assert.match(said, /Unknown key 'RestartStepz'/);
  }, (text) => text.replace("[Service]\n", "[Service]\nRestartStepz=5\n"));
});

analyzeTest(
  `systemd-analyze security rates the sandbox ${MAX_EXPOSURE.toFixed(1)} or lower`,
  async () => {
    await withCheckableUnit(async (unitPath) => {
      const out = await runToEnd(denoSpawn, "systemd-analyze", [
        "security",
        "--offline=true",
        "--no-pager",
        unitPath,
      ]);
      const level = /Overall exposure level for \S+: ([0-9.]+) (\S+)/.exec(out.stdout);
      assert.ok(level, `no exposure level in: ${out.stdout.slice(-300)} ${out.stderr}`);
      const exposure = Number(level[1]);
      assert.ok(
        exposure <= MAX_EXPOSURE,
        `exposure ${exposure} (${level[2]}) is above ${MAX_EXPOSURE}:\n` +
          out.stdout.split("\n").filter((l) => l.startsWith("✗")).join("\n"),
      );
    });
  },
);

Deno.test("conntrack-cleaner.service: the agent runs with CAP_NET_ADMIN as its only capability", async () => {
  const unit = parseSettings(await Deno.readTextFile(UNIT));
  assert.deepEqual(values(unit, "CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
  assert.deepEqual(values(unit, "AmbientCapabilities"), ["CAP_NET_ADMIN"]);
  assert.deepEqual(values(unit, "DynamicUser"), ["yes"]);
  assert.deepEqual(values(unit, "NoNewPrivileges"), ["yes"]);
  // Capabilities held in a private user namespace would not reach the host's conntrack table.
  assert.deepEqual(values(unit, "PrivateUsers"), []);
  assert.deepEqual(values(unit, "PrivateNetwork"), []);
});

Deno.test("conntrack-cleaner.service: settings come from an optional /etc/default file", async () => {
  const unit = parseSettings(await Deno.readTextFile(UNIT));
  assert.deepEqual(values(unit, "EnvironmentFile"), ["-/etc/default/conntrack-cleaner"]);
  assert.deepEqual(values(unit, "ExecStart"), [INSTALLED_BINARY]);
  assert.deepEqual(values(unit, "Restart"), ["on-failure"]);
  // A configuration error exits 2; restarting would only repeat it.
  assert.deepEqual(values(unit, "RestartPreventExitStatus"), ["2"]);
});

Deno.test("deploy/conntrack-cleaner.default: documents every option with its default", async () => {
  const text = await Deno.readTextFile(DEFAULTS);
  // Nothing is set by default: every line that assigns is commented out.
  assert.deepEqual(parseSettings(text), []);
  const documented = parseSettings(text, true).map((s) => [s.key, s.value]);
  assert.deepEqual(documented, OPTIONS.map((o) => [o.env, o.default]));
});

Deno.test("conntrack-cleaner.service: the only IP port the agent may bind is the default /metrics one", async () => {
  const unit = parseSettings(await Deno.readTextFile(UNIT));
  const metrics = OPTIONS.find((o) => o.env === "METRICS_ADDRESS")?.default ?? "";
  const port = metrics.split(":").at(-1);
  assert.deepEqual(values(unit, "SocketBindAllow"), [`tcp:${port}`]);
  // So Deno's SIGUSR1 inspector (127.0.0.1:9229) could not listen, even if the signal got through.
  assert.deepEqual(values(unit, "SocketBindDeny"), ["any"]);
});
