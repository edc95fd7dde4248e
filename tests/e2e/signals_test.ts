/**
 * Signals sent to the real agent, each run in a fresh network namespace of its own (so port 9229
 * is private to the test): SIGUSR1 opens no debugger in any entry form we can run here, SIGHUP
 * leaves it running with one line, and SIGTERM ends it within 5 s even while its conntrack child
 * is stopped.
 *
 * @module
 */
import assert from "node:assert/strict";
import { runToEnd } from "../../lib/seams/spawn.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { HANGUP_MESSAGE } from "../../lib/seams/signals.ts";
import { agentCommand, e2eTest, ROOT, sleep } from "./harness.ts";

/** Deno's inspector port, opened by SIGUSR1 in Deno 2.9.2 and later unless it is ignored. */
const INSPECTOR_PORT = 9229;
/** When SIGUSR1 is sent, in ms after the agent was spawned: around Deno's 500 ms grace, and later. */
const USR1_AT_MS: readonly number[] = [300, 700, 2000, 5000];
/** The shutdown bound the issue asks for. */
const EXIT_LIMIT_MS = 5000;
/** Flags that keep the agent to its namespace and off the host: no listener, no NAT dumps. */
const FLAGS: readonly string[] = [
  "--log-format",
  "json",
  "--metrics-address",
  "",
  "--nat-source",
  "off",
  "--dry-run",
];

e2eTest("SIGUSR1 opens no debugger port and does not stop `deno task start`", async () => {
  await assertUsr1Harmless((await agentCommand()).argv);
});

e2eTest("SIGUSR1 opens no debugger port with the compile script's permission flags", async () => {
  // The binary cannot be built here (no denort): run main.ts with exactly the flags it bakes in.
  const flags = await compileFlags();
  assert.ok(flags.includes("--allow-ffi"), `compile.sh bakes in ${flags.join(" ")}`);
  await assertUsr1Harmless([
    Deno.execPath(),
    "run",
    ...flags,
    "--config",
    `${ROOT}/deno.json`,
    `${ROOT}/main.ts`,
  ]);
});

e2eTest("SIGHUP leaves the agent running and says a restart applies changes", async () => {
  const { argv } = await agentCommand();
  await using ns = await freshNamespace();
  await using agent = await ns.start([...argv, ...FLAGS]);
  await agent.waitFor("conntrack-cleaner started");
  Deno.kill(agent.pid, "SIGHUP");
  await agent.waitFor(HANGUP_MESSAGE);
  await sleep(300);
  assert.equal(agent.exited(), false, `the agent ended on SIGHUP:\n${agent.lines.join("\n")}`);
  const status = await agent.stop();
  assert.equal(status.code, 0, agent.lines.join("\n"));
  assert.equal(agent.lines.filter((l) => l.includes(HANGUP_MESSAGE)).length, 1);
  assert.ok(agent.lines.some((l) => l.includes("conntrack-cleaner stopped")));
});

e2eTest("SIGTERM ends the agent within 5 s while its conntrack child is stopped", async () => {
  const { argv } = await agentCommand();
  await using ns = await freshNamespace();
  const dir = await Deno.makeTempDir({ prefix: "cct-e2e-signals-" });
  try {
    const marker = `${dir}/hang`;
    const fake = `${dir}/conntrack`;
    const real = (await runToEnd(denoSpawn, "sh", ["-c", "command -v conntrack"])).stdout.trim();
    // The start probe goes to the real conntrack; once the marker exists, listings hang (exec:
    // one process, the agent's own child).
    await Deno.writeTextFile(
      fake,
      [
        "#!/bin/sh",
        `if [ -e ${marker} ] && [ "$1" = "-L" ]; then exec sleep 600; fi`,
        `exec ${real} "$@"`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    await using agent = await ns.start([
      ...withAllowRun(argv, fake),
      ...FLAGS,
      "--conntrack",
      fake,
      "--list-backend",
      "cli",
      // Dump mode lists every period, so a listing is the child that hangs.
      "--tracking",
      "dump",
      "--dump-frequency",
      "200ms",
    ]);
    await agent.waitFor("conntrack-cleaner started");
    await Deno.writeTextFile(marker, "");
    const child = await waitForChild(agent.pid, "sleep 600");
    Deno.kill(child, "SIGSTOP");
    const stopped = performance.now();
    Deno.kill(agent.pid, "SIGTERM");
    const status = await within(agent.status, 10_000, "the agent to exit after SIGTERM");
    const took = performance.now() - stopped;
    assert.equal(status.code, 0, agent.lines.join("\n"));
    assert.ok(took < EXIT_LIMIT_MS, `the agent took ${Math.round(took)} ms to exit`);
    assert.equal(await isRunning(child), false, `the stopped conntrack ${child} is still there`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Starts the agent in a fresh namespace, sends SIGUSR1 at each of {@link USR1_AT_MS}, and checks
 * after each that nothing listens on the inspector port, that the agent runs and that SIGUSR1 is
 * ignored; then SIGTERM must still end it with 0.
 */
async function assertUsr1Harmless(argv: readonly string[]): Promise<void> {
  await using ns = await freshNamespace();
  await using agent = await ns.start([...argv, ...FLAGS]);
  for (const at of USR1_AT_MS) {
    await sleep(Math.max(0, agent.spawnedAt + at - performance.now()));
    Deno.kill(agent.pid, "SIGUSR1");
    await sleep(150);
    const what = `after SIGUSR1 at ${at} ms`;
    assert.equal(agent.exited(), false, `the agent ended ${what}:\n${agent.lines.join("\n")}`);
    assert.deepEqual(await ns.listeningPorts(), [], `ports listening ${what}`);
    assert.equal(await ignoresUsr1(agent.pid), true, `SIGUSR1 is not ignored ${what}`);
  }
  assert.ok(!agent.lines.some((l) => l.includes("Debugger listening")), agent.lines.join("\n"));
  const status = await agent.stop();
  assert.equal(status.code, 0, agent.lines.join("\n"));
  // Nothing listened on the inspector port at any point the test looked.
  assert.ok(!(await ns.listeningPorts()).includes(INSPECTOR_PORT));
}

/** The permission flags `deploy/compile.sh` passes to `deno compile`, read by running it. */
async function compileFlags(): Promise<readonly string[]> {
  const dir = await Deno.makeTempDir({ prefix: "cct-e2e-compile-" });
  try {
    // A `deno` first on PATH that records `deno compile`'s arguments and runs anything else.
    await Deno.writeTextFile(
      `${dir}/deno`,
      [
        "#!/bin/sh",
        `if [ "$1" = compile ]; then shift; printf '%s\\n' "$@" > ${dir}/args; exit 0; fi`,
        `exec ${Deno.execPath()} "$@"`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const out = await runToEnd(denoSpawn, "env", [
      `PATH=${dir}:${Deno.env.get("PATH") ?? ""}`,
      "bash",
      `${ROOT}/deploy/compile.sh`,
    ]);
    assert.equal(out.code, 0, out.stderr);
    const args = (await Deno.readTextFile(`${dir}/args`)).trim().split("\n");
    const end = args.findIndex((a) => a === "--no-code-cache" || a === "--output");
    return args.slice(0, end < 0 ? args.length : end);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The start task's argv with `program` added to its `--allow-run` list. */
function withAllowRun(argv: readonly string[], program: string): readonly string[] {
  return argv.map((a) => a.startsWith("--allow-run=") ? `${a},${program}` : a);
}

/** A namespace of its own for one test, deleted on dispose. */
interface FreshNamespace extends AsyncDisposable {
  /** Starts the agent inside it. */
  start(argv: readonly string[]): Promise<RunningAgent>;
  /** TCP ports listening inside it. */
  listeningPorts(): Promise<readonly number[]>;
}

/** The agent as a process the test can signal. */
interface RunningAgent extends AsyncDisposable {
  /** Its pid (`ip netns exec` and the shell exec it). */
  readonly pid: number;
  /** `performance.now()` when it was spawned. */
  readonly spawnedAt: number;
  /** Everything it wrote so far, stdout and stderr. */
  readonly lines: readonly string[];
  /** Resolves when it has exited. */
  readonly status: Promise<{ readonly code: number }>;
  /** Whether it has exited. */
  exited(): boolean;
  /** Waits (up to 20 s) for a line containing `text`. */
  waitFor(text: string): Promise<void>;
  /** SIGTERM, then its exit status. */
  stop(): Promise<{ readonly code: number }>;
}

async function freshNamespace(): Promise<FreshNamespace> {
  const name = `cct-sig-${crypto.randomUUID().slice(0, 8)}`;
  await must(["ip", "netns", "add", name]);
  try {
    await must(["ip", "-n", name, "link", "set", "lo", "up"]);
  } catch (error) {
    await must(["ip", "netns", "del", name]);
    throw error;
  }
  return {
    start: (argv) => startIn(name, argv),
    listeningPorts: async () => {
      const out = await must(["ip", "netns", "exec", name, "ss", "-ltnH"]);
      return out.split("\n").filter((l) => l.trim() !== "").map((l) =>
        Number(l.trim().split(/\s+/)[3]?.split(":").at(-1))
      );
    },
    [Symbol.asyncDispose]: async () => {
      await must(["ip", "netns", "del", name]);
    },
  };
}

async function startIn(namespace: string, argv: readonly string[]): Promise<RunningAgent> {
  const stop = new AbortController();
  const spawnedAt = performance.now();
  // The shell prints its pid and execs, so that pid is the agent's.
  const child = denoSpawn(
    "ip",
    ["netns", "exec", namespace, "sh", "-c", 'echo "$$"; exec "$@" 2>&1', "sh", ...argv],
    { signal: stop.signal },
  );
  const lines: string[] = [];
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  let pidSeen: (pid: number) => void = () => {};
  const pid = new Promise<number>((resolve) => pidSeen = resolve);
  const reading = (async () => {
    // Line by line as written (lines.ts waits for 64 KiB or the end, for speed).
    let rest = "";
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + text).split("\n");
      rest = parts.pop() ?? "";
      for (const line of parts) {
        if (lines.length === 0) pidSeen(Number(line));
        lines.push(line);
      }
    }
  })();
  const agentPid = await within(pid, 10_000, "the agent's pid");
  const stopAgent = async () => {
    if (!exited) Deno.kill(agentPid, "SIGTERM");
    const s = await within(status, 10_000, "the agent to exit");
    await reading;
    return s;
  };
  return {
    pid: agentPid,
    spawnedAt,
    lines,
    status,
    exited: () => exited,
    waitFor: async (text) => {
      for (let waited = 0; !lines.some((l) => l.includes(text)); waited += 50) {
        if (exited || waited > 20_000) {
          throw new Error(`Cannot see "${text}" from the agent:\n${lines.join("\n")}`);
        }
        await sleep(50);
      }
    },
    stop: stopAgent,
    [Symbol.asyncDispose]: async () => {
      if (exited) return;
      try {
        await stopAgent();
      } catch {
        stop.abort();
        await status;
      }
    },
  };
}

/** Whether a process's SIGUSR1 disposition is "ignore" (bit 9 of SigIgn in its status). */
async function ignoresUsr1(pid: number): Promise<boolean> {
  const status = await must(["cat", `/proc/${pid}/status`]);
  const mask = /^SigIgn:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? "0";
  return (BigInt(`0x${mask}`) & (1n << 9n)) !== 0n;
}

/** Waits for a child of `parent` whose command line is `args`; returns its pid. */
async function waitForChild(parent: number, args: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const out = await runToEnd(denoSpawn, "ps", ["-o", "pid=,args=", "--ppid", String(parent)]);
    for (const line of out.stdout.split("\n")) {
      const match = line.trim().match(/^(\d+)\s+(.*)$/);
      if (match && match[2] === args) return Number(match[1]);
    }
    await sleep(50);
  }
  throw new Error(`Cannot see the agent's child "${args}" after 10 s`);
}

async function isRunning(pid: number): Promise<boolean> {
  return (await runToEnd(denoSpawn, "ps", ["-p", String(pid)])).code === 0;
}

async function must(argv: readonly string[]): Promise<string> {
  const [program = "", ...args] = argv;
  const out = await runToEnd(denoSpawn, program, args);
  if (out.code !== 0) throw new Error(`${argv.join(" ")} exited ${out.code}: ${out.stderr.trim()}`);
  return out.stdout;
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Cannot wait longer than ${ms} ms for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
