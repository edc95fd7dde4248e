/**
 * Shared steps of the namespace scenarios: registering a root-only test, the long-lived
 * ESTABLISHED flow every scenario keeps an eye on, the client stuck on a stale entry, and running
 * a fixture script inside a namespace.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Family } from "../../lib/core/flow.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import {
  ADDRESSES,
  type AgentCommand,
  type AgentLogRecord,
  type AgentProcess,
  type ConntrackEntry,
  missingPrerequisites,
  prepareAgentCommand,
  type RetryingClient,
  SERVICE_PORT,
  Testbed,
  type TestbedOptions,
} from "./testbed.ts";

/** The project root. */
export const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** The source port the stuck client retries from. */
export const CLIENT_PORT = 40000;
/** The other Service port, DNATed from the start, that the long-lived flow uses. */
export const HELD_SERVICE_PORT = 443;
/** The long-lived flow's source port. */
export const HELD_PORT = 30443;
/** The client's connect timeout: one retry. */
export const RETRY_MS = 1000;
/**
 * Scheduling slack on top of every deadline: process start, dump time and the moment within a
 * retry at which the entry goes.
 */
export const SLACK_MS = 2000;

const missing = missingPrerequisites();
const inCi = Deno.env.get("CI") === "true";

/**
 * Registers a namespace test named `e2e (root, netns): <name>`. Without root or the programs it
 * is ignored and says why in its name; under `CI=true` it runs and fails instead, so a CI that
 * lost a prerequisite never passes silently.
 */
export function e2eTest(name: string, fn: () => Promise<void>): void {
  const ignore = missing.length > 0 && !inCi;
  Deno.test({
    name: `e2e (root, netns): ${name}${ignore ? ` (ignored: needs ${missing.join("; ")})` : ""}`,
    ignore,
    fn: async () => {
      if (missing.length > 0) {
        throw new Error(
          `Cannot run the namespace tests under CI as this runner lacks: ${missing.join("; ")}`,
        );
      }
      await fn();
    },
  });
}

/** A new testbed on the real system. */
export function createBed(options: Partial<TestbedOptions> = {}): Promise<Testbed> {
  return Testbed.create({ spawn: denoSpawn, root: ROOT, ...options });
}

/** The agent's argv, from `deno.json`'s start task. */
export function agentCommand(): Promise<AgentCommand> {
  return prepareAgentCommand(denoSpawn, ROOT);
}

/** Flags every scenario gives the agent: JSON logs, no metrics listener. */
export const BASE_FLAGS: readonly string[] = ["--log-format", "json", "--metrics-address", ""];

/** The rules of one scenario's agent, as {@link scenarioFlags} turns them into flags. */
export interface ScenarioRules {
  /** `--dump-frequency`, in ms. */
  readonly periodMs: number;
  /** `--unreplied-max-age`, as the flag takes it (`"0"` turns the age rule off). */
  readonly maxAge: string;
  /** `--nat-source` (`"off"` turns the nat rule off). */
  readonly natSource: string;
}

/** {@link BASE_FLAGS}, a scenario's rules, then any `extra` flags. */
export function scenarioFlags(rules: ScenarioRules, ...extra: readonly string[]): string[] {
  return [
    ...BASE_FLAGS,
    ...["--dump-frequency", `${rules.periodMs}ms`, "--unreplied-max-age", rules.maxAge],
    ...["--nat-source", rules.natSource],
    ...extra,
  ];
}

/**
 * Waits up to a second for the agent's log line deleting the flow that `matches` (by default the
 * stuck client's), once the client got through.
 */
export function deletionRecord(
  agent: AgentProcess,
  matches: (record: AgentLogRecord) => boolean,
): Promise<AgentLogRecord> {
  return agent.waitFor(
    (r) => r.message === "deleted stale flow" && matches(r),
    1000,
    "the deletion log line",
  );
}

/** The long-lived ESTABLISHED flow and how to check it survived. */
export interface HeldFlow extends AsyncDisposable {
  /** Its conntrack entry when it was set up. */
  readonly entry: ConntrackEntry;
  /** Asserts the same entry (same id) is still in the table, still ESTABLISHED. */
  assertIntact(bed: Testbed): Promise<void>;
}

/**
 * Opens a connection from the client to `VIP:443` (DNATed to the backend from the start) from
 * the same client address as the stuck client, and keeps it open.
 */
export async function holdEstablishedFlow(bed: Testbed, family: Family): Promise<HeldFlow> {
  await bed.addServiceDnat(family, { servicePort: HELD_SERVICE_PORT });
  const client = await bed.startClient(family, {
    sport: HELD_PORT,
    dport: HELD_SERVICE_PORT,
    mode: "hold",
  });
  await client.connected;
  const entry = await bed.waitForEntry(
    (e) => isHeld(e, family) && e.state === "ESTABLISHED",
    5000,
    "the long-lived ESTABLISHED flow",
  );
  return {
    entry,
    assertIntact: async (current) => {
      const now = (await current.entries()).find((e) => isHeld(e, family));
      assert.ok(now, `the long-lived flow ${describe(entry)} lost its conntrack entry`);
      assert.equal(now.id, entry.id, "the long-lived flow's entry was replaced (new id)");
      assert.equal(now.state, "ESTABLISHED");
    },
    [Symbol.asyncDispose]: async () => {
      await client.stop();
    },
  };
}

function isHeld(e: ConntrackEntry, family: Family): boolean {
  return e.flow.family === family && e.flow.original.sport === HELD_PORT &&
    e.flow.original.dst === ADDRESSES[family].vip;
}

/** The retrying client and the stale entry it is stuck on. */
export interface StuckClient extends AsyncDisposable {
  /** The client. */
  readonly client: RetryingClient;
  /** Its stale `SYN_SENT [UNREPLIED]` entry, without DNAT. */
  readonly stale: ConntrackEntry;
}

/**
 * Starts the retrying client while no Service exists, waits for its un-NATed `SYN_SENT` entry on
 * the node, then installs the Service's DNAT rule: from here on the client is stuck.
 */
export async function stuckClient(bed: Testbed, family: Family): Promise<StuckClient> {
  const client = await bed.startClient(family, { sport: CLIENT_PORT, timeoutMs: RETRY_MS });
  const stale = await waitForStale(bed, family);
  await bed.addServiceDnat(family, { style: "kube" });
  return {
    client,
    stale,
    [Symbol.asyncDispose]: async () => {
      await client.stop();
    },
  };
}

/**
 * Waits for the retrying client's un-NATed `SYN_SENT` entry on the node and checks the tokenizer
 * sees it as a candidate.
 */
export async function waitForStale(bed: Testbed, family: Family): Promise<ConntrackEntry> {
  const stale = await bed.waitForEntry(
    (e) => isStale(e, family),
    5000,
    `the client's SYN_SENT entry from port ${CLIENT_PORT}`,
  );
  assert.ok(stale.candidate, `the tokenizer does not see ${stale.line} as a candidate`);
  return stale;
}

/** Whether an entry is the stuck client's stale one. */
export function isStale(e: ConntrackEntry, family: Family): boolean {
  return e.flow.family === family && e.flow.original.sport === CLIENT_PORT &&
    e.flow.original.dst === ADDRESSES[family].vip && e.flow.original.dport === SERVICE_PORT &&
    e.state === "SYN_SENT" && e.unreplied;
}

/** Whether a log record is a deletion (or dry-run would-be deletion) of the stuck client's flow. */
export function namesStuckFlow(record: AgentLogRecord, family: Family): boolean {
  const p = record.properties;
  return p["src"] === ADDRESSES[family].client && p["sport"] === CLIENT_PORT &&
    p["dst"] === ADDRESSES[family].vip && p["dport"] === SERVICE_PORT;
}

/**
 * What one table listing costs here, in ms (the slowest of three). The agent's cycle is its pause
 * plus a listing, and a listing walks the kernel's whole conntrack hash, every namespace's entries
 * included, so deadlines stated in periods add this cost per period.
 */
export async function listingCostMs(bed: Testbed): Promise<number> {
  let worst = 0;
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    await bed.conntrack(["-L", "-p", "tcp", "-u", "UNREPLIED"]);
    worst = Math.max(worst, performance.now() - start);
  }
  return worst;
}

/** How {@link fixtureInNetns} runs a fixture script. */
export interface FixtureRun {
  /** Deno's permission flags for it, e.g. `--allow-ffi`. */
  readonly permissions: readonly string[];
  /**
   * Its arguments.
   * @default {[]}
   */
  readonly args?: readonly string[];
  /** What it reads on standard input; nothing when absent. */
  readonly stdin?: string;
}

/**
 * Runs the Deno script `fixture` inside the namespace `netns` (a netlink socket belongs to the
 * namespace of its process), asserts that it exited 0, and returns what it printed, parsed as
 * JSON.
 */
export async function fixtureInNetns<T>(
  netns: string,
  fixture: string,
  run: FixtureRun,
): Promise<T> {
  const out = await runToEnd(
    denoSpawn,
    "ip",
    [
      "netns",
      "exec",
      netns,
      Deno.execPath(),
      "run",
      ...run.permissions,
      fixture,
      ...run.args ?? [],
    ],
    run.stdin === undefined ? {} : { stdin: run.stdin },
  );
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout) as T;
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(e: ConntrackEntry): string {
  const o = e.flow.original;
  return `${o.src}:${o.sport} -> ${o.dst}:${o.dport} (id ${e.id})`;
}

/**
 * Waits for the client to connect and returns milliseconds since `since` (performance.now());
 * fails with the client's attempts when it has not connected within `limitMs` of `since`.
 */
export async function timeToConnect(
  client: RetryingClient,
  since: number,
  limitMs: number,
  agent?: AgentProcess,
): Promise<number> {
  const left = Math.max(0, since + limitMs - performance.now());
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), left);
  });
  try {
    const outcome = await Promise.race([client.connected, late]);
    const took = performance.now() - since;
    assert.notEqual(
      outcome,
      "late",
      `the client did not get through within ${limitMs} ms; attempts: ` +
        JSON.stringify(client.events) +
        (agent ? `; the agent wrote:\n  ${agent.records.map((r) => r.raw).join("\n  ")}` : ""),
    );
    return took;
  } finally {
    clearTimeout(timer);
  }
}
