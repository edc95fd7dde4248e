/**
 * Reads the node's NAT rules for the `nat` rule, once per cycle with candidates: every source
 * the node has (see `rule_sources.ts`) is run, each family's rules are parsed into a ruleset
 * once, and the node's own addresses are read beside them; the result is a {@link NatView} that
 * answers per flow (see `nat_view.ts`).
 *
 * Given the nftables generation id (`nft_generation.ts`), a source whose rules live in nftables
 * (kube-proxy's nftables table, iptables-nft) is read again only when the id changed, and then at
 * once; a source it does not cover (legacy iptables tables) or any source while the id cannot be
 * read is polled, spaced by its own cost. Which applies is logged once per change.
 *
 * Each command's state (working, absent, failing) is remembered so that a change is logged
 * once; a failing command is retried every read, and one that hangs is killed after a timeout.
 * Each rule the evaluators cannot evaluate is logged once, at debug, with its text.
 *
 * @module
 */
import type { Clock } from "../seams/clock.ts";
import type { SpawnCommand } from "../seams/spawn.ts";
import type { NatSource } from "./nat_source.ts";
import type { Logger } from "../seams/logger.ts";
import { type ReadNodeAddresses, readNodeAddresses } from "../seams/node_addresses.ts";
import type { NatReadCause, NatReadObserver } from "./nat_report.ts";
import type { NftGeneration } from "./nft_generation.ts";
import { createNatView, type NatReader, type NatView, type SourcedRuleset } from "./nat_view.ts";
import {
  messageOf,
  type NatPrograms,
  type Part,
  type PartOutcome,
  partsFor,
} from "./rule_sources.ts";

/** The view and reader types, for callers that know this file only. */
export type { NatReader, NatView } from "./nat_view.ts";

/** Options for {@link createNatReader}. */
export interface NatReaderOptions {
  /**
   * Where to read the rules: `iptables` runs `iptables-save -t nat` and `ip6tables-save -t nat`;
   * `nftables` runs `nft -j list table ip kube-proxy` and the same for `ip6`; `auto` runs all of
   * them and uses those the node has; `off` reads nothing.
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
  readonly programs?: NatPrograms;
  /**
   * How long one source may take before it is killed and counted as failed, in ms.
   * @default {60000}
   */
  readonly timeoutMs?: number;
  /**
   * Reads the node's own addresses (what `LOCAL` means to the rules), once per read of the
   * rules; tests and namespaces pass their own.
   * @default {readNodeAddresses}
   */
  readonly nodeAddresses?: ReadNodeAddresses;
  /**
   * Reads the nftables generation id. With it, sources whose rules live in nftables are read
   * again only when it changed (at once then); without it, or while it answers `undefined`,
   * every source is polled.
   */
  readonly generation?: NftGeneration;
  /**
   * How often iptables-nft's rules are read even with an unchanged generation, in ms: legacy
   * tables that appear beside them (kube-proxy in legacy mode started after the agent) are no
   * nftables commit, and only `iptables-save` says they exist (Deno does not let the agent read
   * `/proc/net/ip_tables_names`, where the kernel lists them).
   * @default {60000}
   */
  readonly legacyCheckMs?: number;
  /**
   * Spaces the polled sources' reads: after a read that took `T` ms, a polled source is read
   * again once `spacing × T` ms have passed since it started. Without a clock, polled sources
   * are read on every call.
   */
  readonly clock?: Pick<Clock, "monotonic">;
  /**
   * See `clock`.
   * @default {4}
   */
  readonly spacing?: number;
}

/** Rules already logged as unknown: each is logged once, and the memory stays bounded. */
const UNKNOWN_RULES_REMEMBERED = 1000;

/**
 * Creates the reader the agent calls once per cycle. The view holds the rulesets of the commands
 * that worked; `undefined` when none did.
 *
 * @example
 * ```ts
 * import { createNatReader } from "./nat_reader.ts";
 * import { denoSpawn } from "../seams/spawn_deno.ts";
 * import { silentLogger } from "../seams/logger.ts";
 * const nat = createNatReader({ source: "auto", spawn: denoSpawn, logger: silentLogger });
 * // const view = await nat.read(); view?.answer(flow)
 * ```
 */
export function createNatReader(options: NatReaderOptions): NatReader {
  const { spawn, logger, source } = options;
  const parts = partsFor(source, spawn, options.programs ?? {});
  const timeoutMs = options.timeoutMs ?? 60_000;
  const nodeAddresses = options.nodeAddresses ?? readNodeAddresses;
  // Remarks already made, by level and command: each is made once.
  const remarked = new Set<string>();
  const unknownRules = new Set<string>();
  let available: boolean | undefined;
  let addressesFailed = false;

  const onUnknown = (rule: string, command: string) => {
    const key = `${command}\n${rule}`;
    if (unknownRules.has(key)) return;
    if (unknownRules.size >= UNKNOWN_RULES_REMEMBERED) unknownRules.clear();
    unknownRules.add(key);
    logger.debug("The nat rule cannot evaluate a rule; the entries it decides are kept", {
      command,
      rule,
    });
  };

  const localAddresses = (): ReadonlySet<string> => {
    try {
      const addresses = nodeAddresses();
      if (addressesFailed) logger.info("Reading the node's addresses again", {});
      addressesFailed = false;
      return addresses;
    } catch (error) {
      if (!addressesFailed) {
        logger.warn(
          "Cannot read the node's addresses; the nat rule takes none as local (NodePorts and " +
            "rules on the node's own addresses are not seen)",
          { reason: messageOf(error) },
        );
      }
      addressesFailed = true;
      return new Set();
    }
  };

  const clock = options.clock;
  const spacing = options.spacing ?? 4;
  const lasts = new Map<Part, LastRead>();
  let view: NatView | undefined;
  let addresses: ReadonlySet<string> = new Set();
  let told: string | undefined;

  const legacyCheckMs = options.legacyCheckMs ?? 60_000;

  /** Whether `part`'s last rules stay current while the generation (when known) stays the same. */
  const followed = (part: Part, generation: number | undefined): boolean =>
    generation !== undefined && follows(lasts.get(part)?.outcome);

  /** Why `part` must be read now, or undefined when what it last gave still holds. */
  const causeFor = (
    part: Part,
    generation: number | undefined,
    now: number,
  ): NatReadCause | undefined => {
    const last = lasts.get(part);
    if (!last) return "first";
    if (followed(part, generation)) {
      if (last.generation !== generation) return "changed";
      // iptables-nft is looked at now and then for legacy tables appearing beside it.
      const checkDue = part.source === "iptables" && clock !== undefined &&
        now - last.startedAt >= legacyCheckMs;
      return checkDue ? "polled" : undefined;
    }
    if (!clock || now - last.startedAt >= spacing * last.tookMs) return "polled";
    return undefined;
  };

  /** Says once per change how the rules are kept current. */
  const tellFreshness = (generation: number | undefined) => {
    const working = parts.filter((p) => lasts.get(p)?.outcome.kind === "ok");
    const polled = working.filter((p) => !followed(p, generation)).map((p) => p.name);
    const following = working.filter((p) => followed(p, generation)).map((p) => p.name);
    const key = `${polled.join(",")};${following.join(",")}`;
    if (key === told || (polled.length === 0 && following.length === 0)) return;
    told = key;
    if (polled.length === 0) {
      logger.info(
        "NAT rules are read again only when the nftables generation changes",
        { natSource: source, followed: following },
      );
    } else if (following.length === 0) {
      logger.info(
        "NAT rules are polled, spaced by their cost: no nftables generation covers them",
        {
          natSource: source,
          polled,
        },
      );
    } else {
      logger.info(
        "NAT rules are read again when the nftables generation changes, and polled for legacy iptables tables",
        { natSource: source, followed: following, polled },
      );
    }
  };

  return {
    async read(signal) {
      if (parts.length === 0) return undefined;
      const now = clock?.monotonic() ?? 0;
      // Asked before any read: a commit during a read then shows as a change next time.
      const generation = options.generation ? await options.generation() : undefined;
      if (signal?.aborted) return undefined;
      const causes = parts.map((p) => causeFor(p, generation, now));
      const anyDue = causes.some((c) => c !== undefined);
      // A new view must be current as a whole: a polled source not yet due is read with it.
      const due = parts.map((p, i) => {
        if (causes[i] !== undefined || !anyDue) return causes[i];
        return followed(p, generation) ? undefined : "polled";
      });
      const readNow = parts.filter((_, i) => due[i] !== undefined);
      if (readNow.length === 0) return confirmed(generation);
      // Spaced by the cost of the whole read, as the sources run side by side: a polled source
      // is read again once `spacing` times that has passed.
      const startedAt = clock?.monotonic() ?? 0;
      const results = await Promise.all(readNow.map((p) => readWithin(p, signal, timeoutMs)));
      const tookMs = (clock?.monotonic() ?? 0) - startedAt;
      const outcomes = results.map((outcome) => ({ outcome, startedAt, tookMs }));
      // A killed dumper looks like a failure; on shutdown there is nothing to report.
      if (signal?.aborted) return undefined;
      readNow.forEach((part, i) => {
        const read = outcomes[i] ?? {
          outcome: { kind: "failed", reason: "no outcome" } as const,
          startedAt: now,
          tookMs: 0,
        };
        const { outcome } = read;
        logChange(logger, part.name, lasts.get(part)?.outcome.kind, outcome);
        lasts.set(part, { ...read, generation });
        options.observer?.natSourceRead({
          source: part.source,
          family: part.family,
          outcome: outcome.kind,
        });
        const remark = outcome.kind === "ok" ? outcome.remark : undefined;
        if (remark && !remarked.has(`${remark.level} ${part.name}`)) {
          remarked.add(`${remark.level} ${part.name}`);
          logger[remark.level](remark.text, { command: part.name });
        }
      });
      const cause: NatReadCause = due.includes("first")
        ? "first"
        : due.includes("changed")
        ? "changed"
        : "polled";
      options.observer?.natRulesRead?.(cause);
      // Without a generation to follow every source is read on every call: nothing to tell.
      if (options.generation) tellFreshness(generation);
      const rulesets: SourcedRuleset[] = [];
      const problems: Record<string, string> = {};
      for (const part of parts) {
        const outcome = lasts.get(part)?.outcome;
        if (outcome?.kind === "ok") rulesets.push(...outcome.rulesets);
        else if (outcome) problems[part.name] = outcome.reason;
      }
      const working = parts.some((p) => lasts.get(p)?.outcome.kind === "ok");
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
      if (!working) {
        view = undefined;
        return undefined;
      }
      addresses = localAddresses();
      view = createNatView(rulesets, { localAddresses: addresses }, onUnknown);
      logger.debug("Read the node's NAT rules", {
        natSource: source,
        rulesets: view.rulesets,
        cause,
        commands: readNow.map((p) => p.name),
      });
      return view;
    },
  };

  /**
   * Nothing was read. When every source that works follows the generation, which has not
   * changed, the rules are the node's rules now: a new view over the same rulesets (and their
   * answers) says so to the agent, which dates a view by the read that gave it. Otherwise the
   * last view, as old as its read.
   */
  function confirmed(generation: number | undefined): NatView | undefined {
    const current = view;
    if (!current) return undefined;
    if (!parts.every((p) => followed(p, generation))) return current;
    const fresh = localAddresses();
    if (!sameSet(fresh, addresses)) {
      // The node's addresses moved: LOCAL means something else now.
      addresses = fresh;
      const rulesets = parts.flatMap((p) => {
        const outcome = lasts.get(p)?.outcome;
        return outcome?.kind === "ok" ? outcome.rulesets : [];
      });
      view = createNatView(rulesets, { localAddresses: fresh }, onUnknown);
      return view;
    }
    return { rulesets: current.rulesets, answer: (flow) => current.answer(flow) };
  }
}

/** What a source gave last time, and when. */
interface LastRead {
  readonly outcome: PartOutcome;
  /** Monotonic ms at which the read started (0 without a clock). */
  readonly startedAt: number;
  /** How long it took, in ms. */
  readonly tookMs: number;
  /** The nftables generation asked just before it, when known. */
  readonly generation: number | undefined;
}

/** Whether what a source gave changes only with the nftables generation. */
function follows(outcome: PartOutcome | undefined): boolean {
  return outcome !== undefined && outcome.kind !== "failed" && outcome.followsGeneration;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
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
