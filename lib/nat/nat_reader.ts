/**
 * Reads the node's NAT rules for the `nat` rule, once per cycle with candidates: every source
 * the node has (see `rule_sources.ts`) is run, each family's rules are parsed into a ruleset
 * once, and the node's own addresses are read beside them; the result is a {@link NatView} that
 * answers per flow (see `nat_view.ts`).
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
import type { NatReadObserver } from "./nat_report.ts";
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
  const states = new Map<string, PartOutcome["kind"]>();
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

  return {
    async read(signal) {
      if (parts.length === 0) return undefined;
      const outcomes = await Promise.all(parts.map((p) => readWithin(p, signal, timeoutMs)));
      // A killed dumper looks like a failure; on shutdown there is nothing to report.
      if (signal?.aborted) return undefined;
      const rulesets: SourcedRuleset[] = [];
      const problems: Record<string, string> = {};
      parts.forEach((part, i) => {
        const outcome = outcomes[i] ?? { kind: "failed", reason: "no outcome" };
        logChange(logger, part.name, states.get(part.name), outcome);
        const read = { source: part.source, family: part.family, outcome: outcome.kind };
        options.observer?.natSourceRead(read);
        states.set(part.name, outcome.kind);
        if (outcome.kind === "ok") rulesets.push(...outcome.rulesets);
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
      const view: NatView = createNatView(
        rulesets,
        { localAddresses: localAddresses() },
        onUnknown,
      );
      logger.debug("Read the node's NAT rules", { natSource: source, rulesets: view.rulesets });
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
