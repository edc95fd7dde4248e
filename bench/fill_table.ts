/**
 * Fills a network namespace's conntrack table with a realistic mix of entries, for the
 * benchmarks and the scale tests: mostly ESTABLISHED flows with long timers, a share of TCP
 * `SYN_SENT [UNREPLIED]` flows (some un-NATed and stale, some DNATed and fresh), in both families
 * and with a share in a non-default zone. Entries go in through `conntrack -R -` in chunks, which
 * creates them without the per-line table dump that `-D` lines cost.
 *
 * CLI: `deno run -A bench/fill_table.ts NETNS ENTRIES` (creates NETNS when missing; keeps it,
 * full; raises the host's conntrack limits for the fill and puts them back before it exits, which
 * leaves the entries in place but lets no new ones past the restored `nf_conntrack_max`).
 *
 * @module
 */
import { runToEnd } from "../lib/seams/spawn.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import type { Family, Flow } from "../lib/core/flow.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { cleanupOnInterrupt } from "../tests/support/interrupt_cleanup.ts";
import type { OnInterrupt } from "../tests/support/interrupt_cleanup.ts";
import { readSysctl, setSysctls } from "../tests/support/sysctl.ts";
import type { SetSysctlsOptions, SysctlChange } from "../tests/support/sysctl.ts";

/** How a table is filled. */
export interface FillOptions {
  /** Entries to create. */
  readonly entries: number;
  /**
   * Share of entries that are TCP `SYN_SENT [UNREPLIED]`; the rest are ESTABLISHED.
   * @default {0.05}
   */
  readonly synSentShare?: number;
  /**
   * Share of the `SYN_SENT` entries that are DNATed (reply from a backend, not the VIP).
   * @default {0.2}
   */
  readonly dnatShare?: number;
  /**
   * Share of all entries that are IPv6.
   * @default {0.1}
   */
  readonly ipv6Share?: number;
  /**
   * Share of all entries in conntrack zone {@link ZONE}.
   * @default {0.02}
   */
  readonly zonedShare?: number;
  /**
   * Timer of the `SYN_SENT` entries, in seconds (long, so they outlive a benchmark).
   * @default {3600}
   */
  readonly synSentTimeout?: number;
}

/** The kind of one generated entry. */
export type EntryKind = "established" | "stale" | "dnat";

/** One generated entry: its flow and kind. */
export interface FilledEntry {
  /** The flow, with both tuples and the zone. */
  readonly flow: Flow;
  /** `stale`: un-NATed SYN_SENT (what the agent deletes); `dnat`: DNATed SYN_SENT. */
  readonly kind: EntryKind;
}

/** The non-default zone some entries are put in. */
export const ZONE = 7;

const SPREAD = 200;

/**
 * The `index`-th entry of a fill. Deterministic, so a caller can rebuild any entry (for example
 * the stale ones to delete) without keeping a million of them in memory. All tuples differ.
 *
 * @example
 * ```ts
 * import { entryAt } from "./fill_table.ts";
 * entryAt(1, { entries: 100 }).kind; // "established"
 * ```
 */
export function entryAt(index: number, options: FillOptions): FilledEntry {
  const synEvery = Math.max(1, Math.round(1 / (options.synSentShare ?? 0.05)));
  const dnatEvery = Math.max(1, Math.round(1 / (options.dnatShare ?? 0.2)));
  const v6Every = Math.max(1, Math.round(1 / (options.ipv6Share ?? 0.1)));
  const zoneEvery = Math.max(1, Math.round(1 / (options.zonedShare ?? 0.02)));
  // A multiplicative hash keeps the kind, family and zone choices independent of each other.
  const hash = Math.imul(index, 2654435761) >>> 0;
  const syn = index % synEvery === 0;
  const kind: EntryKind = !syn ? "established" : (hash >>> 4) % dnatEvery === 0 ? "dnat" : "stale";
  const family: Family = (hash >>> 12) % v6Every === 0 ? "ipv6" : "ipv4";
  const zone = (hash >>> 20) % zoneEvery === 0 ? ZONE : 0;
  const a = index % SPREAD;
  const b = Math.floor(index / SPREAD) % SPREAD;
  const sport = 1024 + Math.floor(index / (SPREAD * SPREAD));
  const client = family === "ipv4" ? `198.51.100.${a + 1}` : `2001:db8:1::${(a + 1).toString(16)}`;
  const vip = family === "ipv4" ? `192.0.2.${b + 1}` : `2001:db8:2::${(b + 1).toString(16)}`;
  const backend = family === "ipv4" ? `203.0.113.${b + 1}` : `2001:db8:3::${(b + 1).toString(16)}`;
  const dport = 443;
  const original = { src: client, dst: vip, sport, dport };
  const replySrc = kind === "dnat" ? backend : vip;
  const reply = { src: replySrc, dst: client, sport: kind === "dnat" ? 8443 : dport, dport: sport };
  return { flow: { family, original, reply, zone }, kind };
}

/**
 * The `conntrack -R` line that creates an entry.
 *
 * @example
 * ```ts
 * import { entryAt, restoreLine } from "./fill_table.ts";
 * restoreLine(entryAt(0, { entries: 1 }), { entries: 1 }).startsWith("-A "); // true
 * ```
 */
export function restoreLine(entry: FilledEntry, options: FillOptions): string {
  const { original: o, reply: r, zone } = entry.flow;
  // `--state` is a TCP option, so conntrack only accepts it after `-p tcp`.
  const [timer, state] = entry.kind === "established"
    ? ["-t 432000 -u SEEN_REPLY,ASSURED", "ESTABLISHED"]
    : [`-t ${options.synSentTimeout ?? 3600} -u UNSET`, "SYN_SENT"];
  const zoneArg = zone === 0 ? "" : ` -w ${zone}`;
  return `-A ${timer}${zoneArg} -p tcp -s ${o.src} -d ${o.dst} -r ${r.src} -q ${r.dst} ` +
    `--sport ${o.sport} --dport ${o.dport} --reply-port-src ${r.sport} --reply-port-dst ${r.dport} ` +
    `--state ${state}`;
}

/** What a fill did. */
export interface FillResult {
  /** Entries in the namespace's table afterwards (`conntrack -C`). */
  readonly count: number;
  /** Wall seconds the fill took. */
  readonly seconds: number;
}

const CHUNK = 50_000;

/** Prefix of the namespaces {@link createNetns} makes, the one every test namespace has. */
export const NETNS_PREFIX = "cct-";

/** Runs a program inside a namespace and throws on a non-zero exit (bench helper). */
export async function inNetns(
  spawn: SpawnCommand,
  netns: string,
  args: readonly string[],
  stdin?: string,
): Promise<string> {
  const out = await runToEnd(
    spawn,
    "ip",
    ["netns", "exec", netns, ...args],
    stdin === undefined ? {} : { stdin },
  );
  if (out.code !== 0) {
    throw new Error(
      `Cannot run ${args.join(" ")} in ${netns}: exit ${out.code}: ${out.stderr.trim()}`,
    );
  }
  return out.stdout;
}

/**
 * Runs the Deno script at `script` (all permissions) inside a namespace, as a netlink socket
 * belongs to the namespace of its process, and returns its output; throws on a non-zero exit.
 */
export function runScriptInNetns(
  spawn: SpawnCommand,
  netns: string,
  script: string,
  args: readonly string[],
): Promise<string> {
  return inNetns(spawn, netns, [Deno.execPath(), "run", "-A", script, ...args]);
}

/**
 * Makes conntrack track the namespace's new connections: it runs in a namespace only once a rule
 * needs it, and the table of one that is never filled (a churn bench) would stay empty.
 */
export async function enableConntrack(spawn: SpawnCommand, netns: string): Promise<void> {
  await inNetns(
    spawn,
    netns,
    ["nft", "-f", "-"],
    [
      "table inet bench {",
      "  chain out { type filter hook output priority 0; ct state new counter; }",
      "}",
    ].join("\n"),
  );
}

/** The host-wide conntrack limits a table of some size needs. */
export interface ConntrackCapacity {
  /** `net.netfilter.nf_conntrack_max`: entries allowed per namespace. */
  readonly max: number;
  /** `net.netfilter.nf_conntrack_buckets`: the hash size, shared by every namespace. */
  readonly buckets: number;
}

const MAX_SYSCTL = "net.netfilter.nf_conntrack_max";
const BUCKETS_SYSCTL = "net.netfilter.nf_conntrack_buckets";

/**
 * The limits that fit `entries` with a quarter to spare: a power of two, at least 262,144 (the
 * default of a machine with 4 GiB or more), with half as many hash buckets, at most 1,048,576.
 *
 * @example
 * ```ts
 * import { conntrackCapacityFor } from "./fill_table.ts";
 * conntrackCapacityFor(1_000_000); // { max: 2097152, buckets: 1048576 }
 * ```
 */
export function conntrackCapacityFor(entries: number): ConntrackCapacity {
  const max = Math.max(262_144, 2 ** Math.ceil(Math.log2(entries * 1.25)));
  return { max, buckets: Math.min(max / 2, 1_048_576) };
}

/**
 * Raises the host-wide conntrack limits so that `entries` fit ({@link conntrackCapacityFor}),
 * never lowering one, and returns the change: disposing it (`await using`) writes back exactly
 * the values found, also when the caller throws, and a SIGINT or SIGTERM before that does the
 * same. `nf_conntrack_max` and `nf_conntrack_buckets` can only be written in the initial
 * namespace, so they are the host's: on a real node a raised hash resizes the live table.
 *
 * @example
 * ```ts ignore
 * import { createNetns, fillTable, raiseConntrackCapacity } from "./fill_table.ts";
 * import { denoSpawn } from "../lib/seams/spawn_deno.ts";
 * await using _capacity = await raiseConntrackCapacity(denoSpawn, 1_000_000);
 * await using ns = await createNetns(denoSpawn, "bench");
 * await fillTable(denoSpawn, ns.name, { entries: 1_000_000 });
 * ```
 */
export async function raiseConntrackCapacity(
  spawn: SpawnCommand,
  entries: number,
  options: SetSysctlsOptions = {},
): Promise<SysctlChange> {
  const want = conntrackCapacityFor(entries);
  if (await readSysctl(spawn, MAX_SYSCTL) === undefined) {
    // The limits exist once the conntrack module is loaded; asking for the count loads it.
    await runToEnd(spawn, "conntrack", ["-C"]);
  }
  const raise: Record<string, string> = {};
  for (const [name, value] of [[MAX_SYSCTL, want.max], [BUCKETS_SYSCTL, want.buckets]] as const) {
    const current = Number(await readSysctl(spawn, name));
    if (!(current >= value)) raise[name] = String(value);
  }
  return await setSysctls(spawn, raise, options);
}

/**
 * Fills `netns`'s table with `options.entries` generated entries ({@link entryAt}). Throws a
 * `RangeError` when `nf_conntrack_max` is below that: raise it first, for the caller's scope,
 * with {@link raiseConntrackCapacity}.
 *
 * @example
 * ```ts ignore
 * import { fillTable } from "./fill_table.ts";
 * import { denoSpawn } from "../lib/seams/spawn_deno.ts";
 * await fillTable(denoSpawn, "bench-1234", { entries: 100_000 });
 * ```
 */
export async function fillTable(
  spawn: SpawnCommand,
  netns: string,
  options: FillOptions,
): Promise<FillResult> {
  const start = performance.now();
  const max = Number(await readSysctl(spawn, MAX_SYSCTL));
  if (!(max >= options.entries)) {
    // Raising it here would outlive the caller's test; the caller scopes it instead.
    throw new RangeError(
      `Cannot fill ${options.entries} entries as ${MAX_SYSCTL} is smaller: current value is ` +
        `${max} (raise it with raiseConntrackCapacity())`,
    );
  }
  for (let from = 0; from < options.entries; from += CHUNK) {
    const to = Math.min(options.entries, from + CHUNK);
    const lines: string[] = [];
    for (let i = from; i < to; i++) lines.push(restoreLine(entryAt(i, options), options));
    await inNetns(spawn, netns, ["conntrack", "-R", "-"], lines.join("\n") + "\n");
  }
  const count = await tableCount(spawn, netns);
  return { count, seconds: (performance.now() - start) / 1000 };
}

/** Entries in a namespace's table. */
export async function tableCount(spawn: SpawnCommand, netns: string): Promise<number> {
  const out = await inNetns(spawn, netns, ["conntrack", "-C"]);
  return Number(out.trim());
}

/** A network namespace that is deleted on dispose. */
export interface Netns extends AsyncDisposable {
  /** Its name. */
  readonly name: string;
}

/**
 * Creates a namespace with loopback up, named `cct-<purpose>-<random>` (the prefix every test
 * namespace has, so a leftover is recognised). Disposing it deletes it, and so does a SIGINT or
 * SIGTERM before that; if setting it up fails, it is deleted before the error propagates.
 *
 * @example
 * ```ts ignore
 * import { createNetns } from "./fill_table.ts";
 * import { denoSpawn } from "../lib/seams/spawn_deno.ts";
 * await using ns = await createNetns(denoSpawn, "bench");
 * ```
 */
export async function createNetns(
  spawn: SpawnCommand,
  purpose: string,
  onInterrupt: OnInterrupt = cleanupOnInterrupt,
): Promise<Netns> {
  const name = `${NETNS_PREFIX}${purpose}-${crypto.randomUUID().slice(0, 8)}`;
  let deleted = false;
  const remove = async () => {
    if (deleted) return;
    deleted = true;
    const out = await runToEnd(spawn, "ip", ["netns", "del", name]);
    if (out.code !== 0) throw new Error(`Cannot delete netns ${name}: ${out.stderr.trim()}`);
  };
  // Registered before the namespace exists, so no moment is left where an interrupt leaks it.
  const guard = onInterrupt(remove);
  const out = await runToEnd(spawn, "ip", ["netns", "add", name]);
  if (out.code !== 0) {
    guard[Symbol.dispose]();
    throw new Error(`Cannot create netns ${name}: ${out.stderr.trim()}`);
  }
  try {
    await inNetns(spawn, name, ["ip", "link", "set", "lo", "up"]);
  } catch (error) {
    guard[Symbol.dispose]();
    await remove();
    throw error;
  }
  return {
    name,
    [Symbol.asyncDispose]: async () => {
      guard[Symbol.dispose]();
      await remove();
    },
  };
}

if (import.meta.main) {
  const [netns, entriesText] = Deno.args;
  const entries = Number(entriesText);
  if (netns === undefined || !Number.isInteger(entries) || entries <= 0) {
    console.error("usage: fill_table.ts NETNS ENTRIES");
    Deno.exit(2);
  }
  const exists = await runToEnd(denoSpawn, "ip", ["netns", "pids", netns]);
  if (exists.code !== 0) await runToEnd(denoSpawn, "ip", ["netns", "add", netns]);
  await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
  const result = await fillTable(denoSpawn, netns, { entries });
  console.log(JSON.stringify({ netns, entries, ...result }));
}
