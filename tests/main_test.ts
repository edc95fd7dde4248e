/**
 * The agent as an operator meets it: `main.ts` run with the `start` task's permission flags,
 * exactly as `deno task start` and the compiled binary run it.
 */
import assert from "node:assert/strict";
import { OPTIONS } from "../lib/operator/command_line.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { rootTest } from "./root.ts";

const root = new URL("../", import.meta.url).pathname;
const start: string = JSON.parse(await Deno.readTextFile(`${root}deno.json`)).tasks.start;
const flags = start.replace(/^deno run /, "").replace(/ main\.ts$/, "").split(" ");

/** The argv of `deno task start` with `args`, runnable from any directory. */
function startArgv(args: readonly string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "--no-check",
    `--config=${root}deno.json`,
    ...flags,
    `${root}main.ts`,
    ...args,
  ];
}

function agent(args: readonly string[], env: Record<string, string> = {}) {
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return runToEnd(denoSpawn, "env", [...assignments, ...startArgv(args)]);
}

const badValues: readonly { args: string[]; env?: Record<string, string>; names: RegExp }[] = [
  {
    args: ["--dump-frequency", "banana"],
    names: /--dump-frequency.*CONNTRACK_TABLE_DUMP_FREQUENCY/,
  },
  {
    args: [],
    env: { CONNTRACK_TABLE_DUMP_FREQUENCY: "1us" },
    names: /CONNTRACK_TABLE_DUMP_FREQUENCY/,
  },
  { args: ["--dump-frequency", "-1s"], names: /--dump-frequency/ },
  { args: ["--renewal-threshold", "abc"], names: /CONNECTION_RENEWAL_THRESHOLD/ },
  { args: [], env: { CONNECTION_RENEWAL_THRESHOLD: "-1" }, names: /CONNECTION_RENEWAL_THRESHOLD/ },
  { args: ["--unreplied-max-age", "2.5"], names: /CONNTRACK_UNREPLIED_MAX_AGE/ },
  { args: ["--conntrack", "/nonexistent/conntrack"], names: /--conntrack \/ CONNTRACK_BIN/ },
  { args: ["--destination", "192.0.2.0/33"], names: /CONNTRACK_CLEANER_DESTINATIONS/ },
  { args: ["--bogus"], names: /unknown option '--bogus'/ },
];

for (const bad of badValues) {
  const shown = [...bad.args, ...Object.entries(bad.env ?? {}).map(([k, v]) => `${k}=${v}`)];
  Deno.test(`main.ts exits 2 with one line for ${shown.join(" ")}`, async () => {
    const out = await agent(bad.args, bad.env);
    assert.equal(out.code, 2, out.stderr);
    const lines = out.stderr.trim().split("\n");
    assert.equal(lines.length, 1, out.stderr);
    assert.match(lines[0]!, /^conntrack-cleaner: Cannot /);
    assert.match(lines[0]!, bad.names);
    assert.doesNotMatch(out.stderr, /\bat .*\.ts:\d+/); // no stack trace
  });
}

Deno.test("main.ts --version prints the agent, Deno and conntrack versions", async () => {
  const out = await agent(["--version"]);
  assert.equal(out.code, 0, out.stderr);
  const version = JSON.parse(await Deno.readTextFile(`${root}deno.json`)).version;
  assert.match(out.stdout, new RegExp(`^conntrack-cleaner ${version.replaceAll(".", "\\.")}\n`));
  assert.match(out.stdout, new RegExp(`\ndeno ${Deno.version.deno.replaceAll(".", "\\.")}\n`));
  assert.match(out.stdout, /\nconntrack \d+\.\d+\.\d+\n$/);
});

Deno.test("main.ts --version asks the conntrack named by --conntrack or CONNTRACK_BIN", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The start task may run only a `conntrack` found on PATH: put a fake one first.
    const fake = `${dir}/conntrack`;
    await Deno.writeTextFile(fake, "#!/bin/sh\necho 'conntrack v9.8.7 (conntrack-tools)'\n");
    await Deno.chmod(fake, 0o755);
    const env = { PATH: `${dir}:${Deno.env.get("PATH") ?? ""}` };
    const byFlag = await agent(["--version", "--conntrack", fake], env);
    assert.equal(byFlag.code, 0, byFlag.stderr);
    assert.match(byFlag.stdout, /\nconntrack 9\.8\.7\n$/);
    for (
      const out of [
        await agent(["--version", "--conntrack", `${dir}/missing`], env),
        await agent(["--version"], { ...env, CONNTRACK_BIN: `${dir}/missing` }),
      ]
    ) {
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /\nconntrack unavailable \(.*\/missing/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts --help names every environment variable", async () => {
  const out = await agent(["--help"]);
  assert.equal(out.code, 0);
  const help = out.stdout.replace(/\s+/g, " "); // commander wraps long lines
  for (const { env, flag } of OPTIONS) {
    assert.ok(help.includes(`env: ${env}`), env);
    assert.ok(help.includes(flag), flag);
  }
});

rootTest("main.ts (root) says in one line that CAP_NET_ADMIN is missing, exit 2", async () => {
  const out = await runToEnd(denoSpawn, "setpriv", [
    "--inh-caps=-all",
    "--bounding-set=-net_admin",
    ...startArgv(["--nat-source", "off"]),
  ]);
  assert.equal(out.code, 2, out.stderr);
  assert.equal(out.stderr.trim().split("\n").length, 1, out.stderr);
  assert.match(out.stderr, /needs CAP_NET_ADMIN/);
});
