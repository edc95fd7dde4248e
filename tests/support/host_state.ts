/**
 * The host-wide state that the test suite and the benchmarks could change, read before and after
 * a run so that a run which leaves the host different is caught: the conntrack table limits, the
 * per-namespace parameters the tests set inside their own namespaces (here read in the initial
 * namespace, where a write that missed its namespace would land), and the network namespaces.
 *
 * @module
 */
import { runToEnd } from "../../lib/seams/spawn.ts";
import type { SpawnCommand } from "../../lib/seams/spawn.ts";
import { readSysctl, writeSysctls } from "./sysctl.ts";

/** Parameters compared before and after a run. */
export const WATCHED_SYSCTLS: readonly string[] = [
  // Host-wide: only the initial namespace may write them, and they size the live table.
  "net.netfilter.nf_conntrack_max",
  "net.netfilter.nf_conntrack_buckets",
  // Per namespace: the tests set them in their own namespaces, never here.
  "net.netfilter.nf_conntrack_timestamp",
  "net.ipv4.ip_forward",
  "net.ipv6.conf.all.forwarding",
];

/** Prefix of the namespaces the tests create (see `NAMESPACE_PREFIX` in `testbed.ts`). */
export const TEST_NAMESPACE_PREFIX = "cct-";

/** What was read at one moment. */
export interface HostState {
  /** {@link WATCHED_SYSCTLS} values; `undefined` for one the kernel lacks (module not loaded). */
  readonly sysctls: Readonly<Record<string, string | undefined>>;
  /** Namespaces named with {@link TEST_NAMESPACE_PREFIX}, sorted. */
  readonly testNamespaces: readonly string[];
  /** All network namespaces, whoever made them. */
  readonly namespaceCount: number;
}

/**
 * Reads the watched parameters and the namespace list.
 *
 * @example
 * ```ts ignore
 * import { readHostState } from "./host_state.ts";
 * import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
 * const before = await readHostState(denoSpawn);
 * ```
 */
export async function readHostState(spawn: SpawnCommand): Promise<HostState> {
  const sysctls: Record<string, string | undefined> = {};
  for (const name of WATCHED_SYSCTLS) sysctls[name] = await readSysctl(spawn, name);
  const out = await runToEnd(spawn, "ip", ["netns", "list"]);
  if (out.code !== 0) {
    throw new Error(
      `Cannot list network namespaces as ip exited ${out.code}: ` +
        `current value is "${out.stderr.trim()}"`,
    );
  }
  // Lines look like `cct-12-ab-node (id: 3)`, or the bare name for a namespace without an id.
  const names = out.stdout.split("\n").map((line) => line.trim().split(" ")[0] ?? "")
    .filter((name) => name !== "");
  return {
    sysctls,
    testNamespaces: names.filter((n) => n.startsWith(TEST_NAMESPACE_PREFIX)).sort(),
    namespaceCount: names.length,
  };
}

/**
 * What differs between two readings, one line each; empty when the host is as it was. A
 * parameter that did not exist before (the run loaded the conntrack module) is not compared: it
 * has the kernel's default, which no run chose.
 *
 * @example
 * ```ts
 * import { diffHostState } from "./host_state.ts";
 * const before = {
 *   sysctls: { "net.netfilter.nf_conntrack_buckets": "262144" },
 *   testNamespaces: [],
 *   namespaceCount: 0,
 * };
 * const after = {
 *   sysctls: { "net.netfilter.nf_conntrack_buckets": "1048576" },
 *   testNamespaces: ["cct-1-node"],
 *   namespaceCount: 1,
 * };
 * diffHostState(before, after);
 * // [
 * //   "net.netfilter.nf_conntrack_buckets is 1048576, was 262144",
 * //   "namespace cct-1-node was left behind",
 * //   "1 network namespaces, was 0",
 * // ]
 * ```
 */
export function diffHostState(before: HostState, after: HostState): readonly string[] {
  const lines: string[] = [];
  for (const [name, was] of Object.entries(before.sysctls)) {
    const now = after.sysctls[name];
    if (was !== undefined && now !== was) lines.push(`${name} is ${now ?? "unset"}, was ${was}`);
  }
  const had = new Set(before.testNamespaces);
  const has = new Set(after.testNamespaces);
  for (const name of after.testNamespaces) {
    if (!had.has(name)) lines.push(`namespace ${name} was left behind`);
  }
  for (const name of before.testNamespaces) {
    if (!has.has(name)) lines.push(`namespace ${name} was deleted`);
  }
  if (after.namespaceCount !== before.namespaceCount) {
    lines.push(`${after.namespaceCount} network namespaces, was ${before.namespaceCount}`);
  }
  return lines;
}

/**
 * Writes back every watched parameter that differs from `before`, and returns the names it
 * wrote. A last resort after a run that failed to clean up; namespaces are only reported, since
 * another program may own one.
 */
export async function restoreHostSysctls(
  spawn: SpawnCommand,
  before: HostState,
  after: HostState,
): Promise<readonly string[]> {
  const back: Record<string, string> = {};
  for (const [name, was] of Object.entries(before.sysctls)) {
    if (was !== undefined && after.sysctls[name] !== was) back[name] = was;
  }
  await writeSysctls(spawn, back);
  return Object.keys(back);
}
