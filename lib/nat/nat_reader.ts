/**
 * The `nat` rule's knowledge: which destinations (family, address, TCP port) the node translates
 * now. A stale entry is one with no NAT while the node has a DNAT rule for its destination.
 *
 * Destinations come from `iptables-save -t nat` / `ip6tables-save -t nat` (plain DNAT rules and
 * kube-proxy's iptables mode, either backend; see `nat_iptables.ts`) and from kube-proxy's
 * nftables tables `ip kube-proxy` / `ip6 kube-proxy` (see `nat_nftables.ts`). Only exact
 * destinations count: one address and one port. A rule for a subnet, a port range or any port is
 * never widened into the addresses or ports it covers.
 *
 * @module
 */
import type { Clock } from "../seams/clock.ts";
import type { SpawnCommand } from "../seams/spawn.ts";
import { runToEnd, SpawnError } from "../seams/spawn.ts";
import type { NatSource } from "../operator/config.ts";
import type { Family, Flow } from "../core/flow.ts";
import { splitLines } from "../seams/output_lines.ts";
import type { Logger } from "../seams/logger.ts";
import { parseIptablesSave } from "./iptables_save.ts";
import type { NatMechanism, NatReadObserver } from "./nat_report.ts";
import { parseNftKubeProxy } from "./nftables_json.ts";

/** One destination the node translates: TCP to `address` port `port`. */
export interface NatDestination {
  /** Address family. */
  readonly family: Family;
  /** The address as the rule source printed it (canonicalised when looked up). */
  readonly address: string;
  /** Destination port, 0-65535. */
  readonly port: number;
}

/** The node's NAT destinations, as read once. */
export interface NatView {
  /** True when the node translates this flow's original destination (address, tcp, port). */
  translates(flow: Flow): boolean;
  /** Number of distinct destinations. */
  readonly size: number;
}

/** Reads the node's NAT destinations, once per cycle. */
export interface NatReader {
  /**
   * Reads the rules once (call once per cycle, only when there are candidates). undefined when
   * the source is off or unavailable (logged once, retried each cycle, logged again when it
   * recovers). Never throws.
   */
  read(signal?: AbortSignal): Promise<NatView | undefined>;
}

/** Options for {@link createNatReader}. */
export interface NatReaderOptions {
  /**
   * Where to read the rules: `iptables` runs `iptables-save -t nat` and `ip6tables-save -t nat`;
   * `nftables` runs `nft -j list map ip kube-proxy service-ips` and the same for `ip6`; `auto`
   * runs all of them and uses those the node has; `off` reads nothing.
   */
  readonly source: NatSource;
  /** Starts the rule dumpers. */
  readonly spawn: SpawnCommand;
  /** Where unavailable and recovered sources are logged (once per change). */
  readonly logger: Logger;
  /** Told how each source's read went, every read (metrics). */
  readonly observer?: NatReadObserver;
  /**
   * Program names, for nodes where they live elsewhere. The legacy programs are run only when
   * the nf_tables flavour of `iptables-save` says that legacy tables exist beside its own.
   * Each defaults to its own name: `iptables-save`, `ip6tables-save`, `iptables-legacy-save`,
   * `ip6tables-legacy-save` and `nft`.
   */
  readonly programs?: {
    readonly iptablesSave?: string;
    readonly ip6tablesSave?: string;
    readonly iptablesLegacySave?: string;
    readonly ip6tablesLegacySave?: string;
    readonly nft?: string;
  };
  /**
   * How long one source may take before it is killed and counted as failed, in ms.
   * @default {60000}
   */
  readonly timeoutMs?: number;
}

/**
 * Builds a {@link NatView} from destinations. Addresses that do not parse as their family are
 * dropped, so a garbled rule never matches anything.
 *
 * @example
 * ```ts
 * import { createNatView } from "./nat_reader.ts";
 * const view = createNatView([{ family: "ipv4", address: "192.0.2.10", port: 80 }]);
 * view.translates({
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * }); // true
 * ```
 */
export function createNatView(destinations: Iterable<NatDestination>): NatView {
  const keys = new Set<string>();
  for (const d of destinations) {
    const key = destinationKey(d.family, d.address, d.port);
    if (key !== undefined) keys.add(key);
  }
  return {
    translates: (flow) => {
      const key = destinationKey(flow.family, flow.original.dst, flow.original.dport);
      return key !== undefined && keys.has(key);
    },
    size: keys.size,
  };
}

function destinationKey(family: Family, address: string, port: number): string | undefined {
  const canonical = family === "ipv4" ? canonicalIpv4(address) : canonicalIpv6(address);
  return canonical === undefined ? undefined : `${family} ${canonical} ${port}`;
}

function canonicalIpv4(text: string): string | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const octets = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  return octets.every((o) => o <= 255) ? octets.join(".") : undefined;
}

// Full eight-group lower-case hex: a key only, so it need not be RFC 5952's short form; what
// matters is that `2001:db8::a` and `2001:DB8:0::A` give the same key.
function canonicalIpv6(text: string): string | undefined {
  let rest = text.toLowerCase();
  const tail: number[] = [];
  const dotted = rest.match(/^(.*:)(\d+\.\d+\.\d+\.\d+)$/);
  if (dotted) {
    const v4 = canonicalIpv4(dotted[2] ?? "");
    if (v4 === undefined) return undefined;
    const [a = 0, b = 0, c = 0, d = 0] = v4.split(".").map(Number);
    tail.push((a << 8) | b, (c << 8) | d);
    rest = dotted[1] ?? "";
    if (rest.endsWith(":") && !rest.endsWith("::")) rest = rest.slice(0, -1);
  }
  const halves = rest.split("::");
  if (halves.length > 2) return undefined;
  const parse = (s: string) => (s === "" ? [] : s.split(":").map(hexGroup));
  const head = parse(halves[0] ?? "");
  const after = halves.length === 2 ? parse(halves[1] ?? "") : [];
  const given = head.length + after.length + tail.length;
  if (head.includes(NaN) || after.includes(NaN)) return undefined;
  if (halves.length === 2 ? given > 7 : given !== 8) return undefined;
  const zeros = new Array<number>(8 - given).fill(0);
  return [...head, ...zeros, ...after, ...tail].map((g) => g.toString(16)).join(":");
}

function hexGroup(text: string): number {
  return /^[0-9a-f]{1,4}$/.test(text) ? parseInt(text, 16) : NaN;
}

/** What reading one source gave this cycle. */
type PartOutcome =
  | {
    /** Read and parsed. */
    readonly kind: "ok";
    readonly destinations: readonly NatDestination[];
    /**
     * Something to tell the operator once about this source: at `warn`, what it could not see;
     * at `info`, what else it read.
     */
    readonly remark?: { readonly level: "warn" | "info"; readonly text: string };
  }
  | {
    /** Not on this node (program not installed in `auto`, or no kube-proxy table): no rules. */
    readonly kind: "absent";
    readonly reason: string;
  }
  | {
    /** There, but reading it failed. */
    readonly kind: "failed";
    readonly reason: string;
  };

/** One command whose output gives some of the destinations. */
interface Part {
  /** The command line, for logs. */
  readonly name: string;
  /** What it reads, for metrics. */
  readonly source: NatMechanism;
  readonly family: Family;
  readonly read: (signal: AbortSignal | undefined) => Promise<PartOutcome>;
}

/**
 * Creates the reader the agent calls once per cycle. Each command's state (working, absent,
 * failing) is remembered so that a change is logged once; a failing command is retried every
 * cycle. The view is the union of the commands that worked; `undefined` when none did.
 *
 * @example
 * ```ts
 * import { createNatReader } from "./nat_reader.ts";
 * import { denoSpawn } from "../seams/spawn_deno.ts";
 * import { silentLogger } from "../seams/logger.ts";
 * const nat = createNatReader({ source: "auto", spawn: denoSpawn, logger: silentLogger });
 * // const view = await nat.read(); view?.translates(flow)
 * ```
 */
export function createNatReader(options: NatReaderOptions): NatReader {
  const { spawn, logger, source } = options;
  const parts = partsFor(source, spawn, options.programs ?? {});
  const timeoutMs = options.timeoutMs ?? 60_000;
  const states = new Map<string, PartOutcome["kind"]>();
  // Remarks already made, by level and command: each is made once.
  const remarked = new Set<string>();
  let available: boolean | undefined;

  return {
    async read(signal) {
      if (parts.length === 0) return undefined;
      const outcomes = await Promise.all(parts.map((p) => readWithin(p, signal, timeoutMs)));
      // A killed dumper looks like a failure; on shutdown there is nothing to report.
      if (signal?.aborted) return undefined;
      const destinations: NatDestination[] = [];
      const problems: Record<string, string> = {};
      parts.forEach((part, i) => {
        const outcome = outcomes[i] ?? { kind: "failed", reason: "no outcome" };
        logChange(logger, part.name, states.get(part.name), outcome);
        const read = { source: part.source, family: part.family, outcome: outcome.kind };
        options.observer?.natSourceRead(read);
        states.set(part.name, outcome.kind);
        if (outcome.kind === "ok") destinations.push(...outcome.destinations);
        else problems[part.name] = outcome.reason;
        const remark = outcome.kind === "ok" ? outcome.remark : undefined;
        if (remark && !remarked.has(`${remark.level} ${part.name}`)) {
          remarked.add(`${remark.level} ${part.name}`);
          logger[remark.level](remark.text, { command: part.name });
        }
      });
      const working = outcomes.some((o) => o.kind === "ok");
      if (!working && available !== false) {
        logger.warn("Cannot read the node's NAT rules from any source; the nat rule is off", {
          natSource: source,
          reasons: problems,
        });
      } else if (working && available === false) {
        logger.info("Reading the node's NAT rules again; the nat rule is back on", {
          natSource: source,
        });
      }
      available = working;
      if (!working) return undefined;
      const view = createNatView(destinations);
      logger.debug("Read the node's NAT rules", { natSource: source, destinations: view.size });
      return view;
    },
  };
}

/**
 * Reads one source, killing it after `ms`: a hung `iptables-save` or `nft` must cost one failed
 * read, not every later cycle of the loop.
 */
async function readWithin(
  part: Part,
  signal: AbortSignal | undefined,
  ms: number,
): Promise<PartOutcome> {
  const limit = AbortSignal.timeout(ms);
  const outcome = await part.read(signal ? AbortSignal.any([signal, limit]) : limit);
  if (limit.aborted && !signal?.aborted) {
    return { kind: "failed", reason: `did not finish within ${ms / 1000} s; killed` };
  }
  return outcome;
}

function logChange(
  logger: Logger,
  name: string,
  before: PartOutcome["kind"] | undefined,
  now: PartOutcome,
): void {
  if (before === now.kind) return;
  if (now.kind === "failed") {
    logger.warn("Cannot read NAT rules from a source; skipping it until it works", {
      command: name,
      reason: now.reason,
    });
  } else if (now.kind === "absent") {
    logger.debug("NAT rule source not present on this node", { command: name, reason: now.reason });
  } else if (before === "failed") {
    logger.info("NAT rule source works again", { command: name });
  }
}

function partsFor(
  source: NatSource,
  spawn: SpawnCommand,
  programs: NonNullable<NatReaderOptions["programs"]>,
): readonly Part[] {
  // In `auto` a missing program only means the node does not use that mechanism.
  const optional = source === "auto";
  const iptables = [
    iptablesPart(spawn, {
      program: programs.iptablesSave ?? "iptables-save",
      legacyProgram: programs.iptablesLegacySave ?? "iptables-legacy-save",
      family: "ipv4",
      optional,
    }),
    iptablesPart(spawn, {
      program: programs.ip6tablesSave ?? "ip6tables-save",
      legacyProgram: programs.ip6tablesLegacySave ?? "ip6tables-legacy-save",
      family: "ipv6",
      optional,
    }),
  ];
  const nft = [
    nftPart(spawn, programs.nft ?? "nft", "ipv4", optional),
    nftPart(spawn, programs.nft ?? "nft", "ipv6", optional),
  ];
  switch (source) {
    case "off":
      return [];
    case "iptables":
      return iptables;
    case "nftables":
      return nft;
    case "auto":
      return [...iptables, ...nft];
  }
}

/** What {@link iptablesPart} runs for one family. */
interface IptablesPrograms {
  /** The node's `iptables-save` (either flavour). */
  readonly program: string;
  /** The legacy flavour, run when the nf_tables flavour reports legacy tables beside its own. */
  readonly legacyProgram: string;
  readonly family: Family;
  /** Whether a missing `program` means the node simply does not use it (`auto`). */
  readonly optional: boolean;
}

function iptablesPart(spawn: SpawnCommand, programs: IptablesPrograms): Part {
  const { program, legacyProgram, family, optional } = programs;
  return {
    name: `${program} ${SAVE_ARGS.join(" ")}`,
    source: "iptables",
    family,
    read: async (signal) => {
      let own: IptablesRead;
      try {
        own = await readIptablesSave(spawn, program, family, signal);
      } catch (error) {
        return spawnFailure(error, optional);
      }
      if (own.kind === "failed") return own;
      if (!own.legacyTablesBeside) return { kind: "ok", destinations: own.destinations };
      // kube-proxy in legacy mode on a node whose iptables is the nf_tables flavour. Only now is
      // the legacy program run: on a node without legacy tables, reading one would make the
      // kernel load legacy iptables and create them.
      let legacy: IptablesRead;
      try {
        legacy = await readIptablesSave(spawn, legacyProgram, family, signal);
      } catch (error) {
        legacy = { kind: "failed", reason: messageOf(error) };
      }
      if (legacy.kind === "failed") {
        return {
          kind: "ok",
          destinations: own.destinations,
          remark: { level: "warn", text: `${LEGACY_CAVEAT} (${legacyProgram}: ${legacy.reason})` },
        };
      }
      return {
        kind: "ok",
        destinations: [...own.destinations, ...legacy.destinations],
        remark: {
          level: "info",
          text: `The node also has legacy iptables rules; reading them with ${legacyProgram} too`,
        },
      };
    },
  };
}

/** What one run of an `iptables-save` gave. */
type IptablesRead =
  | {
    readonly kind: "ok";
    readonly destinations: readonly NatDestination[];
    /** The nf_tables flavour said that legacy tables exist beside its own. */
    readonly legacyTablesBeside: boolean;
  }
  | { readonly kind: "failed"; readonly reason: string };

/** What every `iptables-save` is run with: the nat table only. */
const SAVE_ARGS: readonly string[] = ["-t", "nat"];

/** Runs `program -t nat` and parses it; throws a {@link SpawnError} when it cannot start. */
async function readIptablesSave(
  spawn: SpawnCommand,
  program: string,
  family: Family,
  signal: AbortSignal | undefined,
): Promise<IptablesRead> {
  const child = spawn(program, SAVE_ARGS, signal ? { signal } : {});
  const legacy = { present: false };
  const lines = watchForLegacyTables(splitLines(child.stdout), legacy);
  const parsed = await parseIptablesSave(lines, family).then(
    (destinations) => ({ destinations }),
    (error: unknown) => ({ error }),
  );
  const status = await child.status;
  if (status.code !== 0) return { kind: "failed", reason: exitReason(status) };
  if ("error" in parsed) return { kind: "failed", reason: messageOf(parsed.error) };
  return {
    kind: "ok",
    destinations: parsed.destinations,
    legacyTablesBeside: legacy.present || LEGACY_WARNING.test(status.stderr),
  };
}

/**
 * What iptables-nft says when legacy tables exist, `iptables-legacy` or `ip6tables-legacy` by
 * family: on stderr (1.8.9), on stdout (earlier releases).
 */
const LEGACY_WARNING = /ip6?tables-legacy tables present/;

const LEGACY_CAVEAT = "The node also has legacy iptables rules, which the nat rule cannot read; " +
  "Services whose DNAT lives there are left to the renewal and age rules";

/** Passes lines through, noting a legacy-tables warning among them. */
async function* watchForLegacyTables(
  lines: AsyncIterable<string>,
  legacy: { present: boolean },
): AsyncGenerator<string> {
  for await (const line of lines) {
    if (line.startsWith("# Warning:") && LEGACY_WARNING.test(line)) legacy.present = true;
    yield line;
  }
}

function nftPart(spawn: SpawnCommand, program: string, family: Family, optional: boolean): Part {
  const table = family === "ipv4" ? "ip" : "ip6";
  // Only the map: listing the whole table (every Service's chains) takes ~6 times as long and
  // prints ~7 times as much (bench/nat_rules.ts).
  const args = ["-j", "list", "map", table, "kube-proxy", "service-ips"];
  return {
    name: `${program} ${args.join(" ")}`,
    source: "nftables",
    family,
    read: async (signal) => {
      try {
        const out = await runToEnd(spawn, program, args, signal ? { signal } : {});
        // nft's only way of saying "no such table or map" is ENOENT's text on stderr.
        if (out.code !== 0 && /No such file or directory/.test(out.stderr)) {
          return { kind: "absent", reason: `no table ${table} kube-proxy` };
        }
        if (out.code !== 0) return { kind: "failed", reason: exitReason(out) };
        return { kind: "ok", destinations: parseNftKubeProxy(out.stdout) };
      } catch (error) {
        return spawnFailure(error, optional);
      }
    },
  };
}

function spawnFailure(error: unknown, optional: boolean): PartOutcome {
  if (optional && error instanceof SpawnError && error.reason === "not-found") {
    return { kind: "absent", reason: error.message };
  }
  return { kind: "failed", reason: messageOf(error) };
}

function exitReason(status: { readonly code: number; readonly stderr: string }): string {
  const line = status.stderr.split("\n").find((l) => l.trim() !== "")?.trim();
  return `exit code ${status.code}${line ? `: ${line}` : ""}`;
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "";
}

/**
 * Spaces the reads of an expensive rule source by their own cost: after a read that took `T`
 * ms, the view is reused until `spacing × T` ms have passed since it started. A node whose
 * rules dump in milliseconds is read every cycle; one with ~10,000 Services in iptables mode,
 * where `iptables-save` takes seconds, spends at most 1/`spacing` of its time reading rules,
 * and the `nat` rule fires up to `spacing × T` later there.
 *
 * @example
 * ```ts ignore
 * const nat = spaceNatReads(createNatReader({ source: "auto", spawn, logger }), systemClock);
 * ```
 */
export function spaceNatReads(
  reader: NatReader,
  clock: Pick<Clock, "monotonic">,
  spacing = 4,
): NatReader {
  let last: { view: NatView | undefined; startedAt: number; tookMs: number } | undefined;
  return {
    async read(signal) {
      const now = clock.monotonic();
      if (last && now - last.startedAt < spacing * last.tookMs) return last.view;
      const view = await reader.read(signal);
      last = { view, startedAt: now, tookMs: clock.monotonic() - now };
      return view;
    },
  };
}
