/**
 * The agent's loop: list, assess, delete, report; then wait one full period.
 *
 * Everything outside the process (conntrack, time, logs, deletion, the NAT rules) comes in
 * through {@link AgentDeps}, so the loop is tested without processes or sleeps.
 *
 * @module
 */
import type { Clock } from "../seams/clock.ts";
import type { Lister } from "../table/lister.ts";
import { pauseAfter, Spell, stretchThreshold } from "./pacing.ts";
import type { DeleteFailure, Deleter } from "../table/deleter.ts";
import type { Flow } from "../core/flow.ts";
import { describeFlow, flowKey } from "../core/flow.ts";
import type { Logger, LogProperties } from "../seams/logger.ts";
import type { NatReader, NatView } from "../nat/nat_reader.ts";
import type { NatRules } from "../core/nat_rule.ts";
import type { CycleObserver, CycleReport, DeletionRecord } from "./cycle_report.ts";
import { evidenceFields, flowFields } from "../core/flow_fields.ts";
import { Tracker } from "../core/tracker.ts";
import type { Assessment } from "../core/verdict.ts";

/** The outside world, as the loop sees it. */
export interface AgentDeps {
  /** Lists the table (conntrack or netlink). */
  readonly lister: Lister;
  /** Time and sleeping. */
  readonly clock: Clock;
  /** Where deletions, warnings and failures are logged. */
  readonly logger: Logger;
  /**
   * Deletes a cycle's stale flows. Only an agent that never deletes (dry run, or `scan`, which
   * only assesses) may do without one: {@link createAgent}'s overloads say which.
   */
  readonly deleter?: Deleter;
  /** Reads the node's NAT rules for the `nat` rule; absent when the rule is off. */
  readonly nat?: NatReader;
  /** Receives one report per cycle (metrics, health). */
  readonly observer?: CycleObserver;
}

/** What the loop does. */
export interface AgentOptions {
  /** Pause after each cycle, in milliseconds. */
  readonly periodMs: number;
  /**
   * Share of the time, in `(0, 1]`, that cycles may take: a slower cycle stretches the pause
   * after it (see {@link pauseAfter}); 1 keeps the pause at the period.
   * @default {1}
   */
  readonly busyLimit?: number;
  /** Renewals tolerated before the `renewal` rule deletes. */
  readonly renewalThreshold: number;
  /** Unreplied age at which the `age` rule deletes; 0 turns it off. */
  readonly unrepliedMaxAgeMs: number;
  /** Log and count what would be deleted; delete nothing. */
  readonly dryRun: boolean;
  /** Keeps only the flows the operator aimed the agent at. */
  readonly accept?: (flow: Flow) => boolean;
}

/** What one cycle found and did, for `scan` and tests. */
export interface CycleResult {
  /** The cycle's report, as the observer received it. */
  readonly report: CycleReport;
  /**
   * With `execute` false (`scan`), every candidate with its verdict; otherwise only the condemned
   * ones, so that a large table's verdicts are not all kept. Empty when the dump failed.
   */
  readonly assessments: readonly Assessment[];
}

/** {@link AgentDeps} with the deleter an agent that deletes cannot do without. */
export type DeletingAgentDeps = AgentDeps & { readonly deleter: Deleter };

/**
 * An agent that only assesses, as `scan` drives it: {@link createAgent} gives one when it has no
 * deleter and is not in dry run, so that nothing can ask it to delete.
 */
export interface Assessor {
  /** Lists and assesses once, deleting nothing; `execute` must be false. */
  cycle(signal: AbortSignal | undefined, execute: false): Promise<CycleResult>;
}

/**
 * One agent: the tracker's memory plus the little state the logs need. Create it with
 * {@link createAgent}; call {@link Agent.cycle} for one pass or {@link Agent.run} for the loop.
 */
export interface Agent extends Assessor {
  /** Lists, assesses and (unless `execute` is false or dry run) deletes, once. */
  cycle(signal?: AbortSignal, execute?: boolean): Promise<CycleResult>;
  /**
   * Runs cycles until `signal` aborts, pausing after each for the period, or longer when the
   * busy limit stretches it. Never rejects.
   */
  run(signal: AbortSignal): Promise<void>;
}

/**
 * Builds an agent from its dependencies. An agent that deletes needs a deleter; one in dry run
 * does not; without either, what comes back can only assess (see {@link Assessor}).
 *
 * @example One pass with a fake conntrack
 * ```ts ignore
 * const agent = createAgent(deps, { periodMs: 1000,
 *   renewalThreshold: 3, unrepliedMaxAgeMs: 10_000, dryRun: false });
 * const { report } = await agent.cycle();
 * ```
 */
export function createAgent(deps: DeletingAgentDeps, options: AgentOptions): Agent;
/** Builds an agent in dry run, which never deletes and so needs no deleter. */
export function createAgent(
  deps: AgentDeps,
  options: AgentOptions & { readonly dryRun: true },
): Agent;
/** Builds an agent without a deleter, for `scan`: it lists and assesses, and never deletes. */
export function createAgent(deps: AgentDeps, options: AgentOptions): Assessor;
export function createAgent(deps: AgentDeps, options: AgentOptions): Agent {
  const tracker = new Tracker({
    renewalThreshold: options.renewalThreshold,
    unrepliedMaxAgeMs: options.unrepliedMaxAgeMs,
  });
  // Dry run announces each flow once, not on every cycle it stays condemned.
  let announced = new Set<string>();
  const overrunning = new Spell();
  // The view the reader last gave and when the read that gave it started: a spaced reader hands
  // back the same view for several cycles, read when it was first handed out.
  let natSince: { readonly view: NatView; readonly at: number } | undefined;
  const natRulesOf = (view: NatView, readStartedAt: number): NatRules => {
    if (natSince?.view !== view) natSince = { view, at: readStartedAt };
    return { answer: (flow) => view.answer(flow), readStartedAt: natSince.at };
  };
  const stretching = new Spell();
  const { clock, logger } = deps;

  async function cycle(signal?: AbortSignal, execute = true): Promise<CycleResult> {
    const wallStart = clock.wall();
    const start = clock.monotonic();
    // Candidates are judged as they are read, so that a large listing's candidates die young
    // instead of all living until it ends; only what the caller needs is kept.
    const kept: Assessment[] = [];
    let candidates = 0;
    let natMs = 0;
    let nat: NatRules | undefined;
    let natRead = false;
    tracker.begin(start);
    const dump = await deps.lister.list({
      onBatch: async (batch) => {
        if (!natRead && deps.nat) {
          // Read only in cycles that have candidates; its time is not the listing's.
          natRead = true;
          const before = clock.monotonic();
          const view = await deps.nat.read(signal);
          natMs = clock.monotonic() - before;
          if (view) nat = natRulesOf(view, before);
        }
        deps.observer?.cycleProgressed?.();
        const readAt = clock.monotonic();
        for (const candidate of batch) {
          const assessment = tracker.see(candidate, readAt, nat);
          if (assessment === undefined) continue;
          candidates++;
          if (!execute || assessment.verdict.kind === "delete") kept.push(assessment);
        }
      },
      ...(options.accept ? { accept: options.accept } : {}),
      ...(signal ? { signal } : {}),
    });
    const dumpMs = Math.max(0, clock.monotonic() - start - natMs);
    const base = { wallStart, dumpMs, dryRun: options.dryRun, deleteFailures: 0 };
    if (dump.kind === "failed") {
      if (!signal?.aborted) {
        logger.warn("conntrack listing failed; retrying next period", { reason: dump.reason });
      }
      // What a partial listing showed was read correctly and stays tracked; nothing is forgotten
      // or deleted on its account.
      return finish({ ...base, dump, tracked: tracker.size, deletions: [] }, [], start);
    }
    tracker.finish();
    if (dump.unparsable) {
      logger.warn("skipped conntrack lines that could not be parsed", {
        count: dump.unparsable.count,
        first_line: dump.unparsable.firstLine,
        reason: dump.unparsable.firstReason,
      });
    }
    const dumpResult = {
      kind: "ok",
      lines: dump.lines,
      candidates,
      unparsable: dump.unparsable?.count ?? 0,
    } as const;
    if (!execute) {
      return finish(
        { ...base, dump: dumpResult, tracked: tracker.size, deletions: [] },
        kept,
        start,
      );
    }
    // With `execute`, only condemned candidates were kept.
    const condemned = kept;
    if (options.dryRun) {
      announced = announceDryRun(condemned, announced, tracker, logger);
      return finish(
        { ...base, dump: dumpResult, tracked: tracker.size, deletions: condemned.map(toRecord) },
        condemned,
        start,
      );
    }
    const deleter = deps.deleter;
    if (deleter === undefined) {
      // The overloads of createAgent() keep this from happening: only an Agent deletes.
      throw new TypeError(
        "Cannot delete stale flows as the agent has no deleter: current value is undefined",
      );
    }
    const outcome = await deleter.delete(
      // The kernel's id, when listed, lets the deleter spare an entry re-created since judged.
      condemned.map(({ candidate: c }) => c.id === undefined ? c.flow : { ...c.flow, id: c.id }),
      signal,
      () => deps.observer?.cycleProgressed?.(),
    );
    const byKey = new Map(condemned.map((a) => [a.candidate.key, a]));
    const deletions: DeletionRecord[] = [];
    for (const flow of outcome.deleted) {
      const a = byKey.get(flowKey(flow));
      if (!a) continue;
      deletions.push(toRecord(a));
      logger.info("deleted stale flow", { ...logFields(a), backend: deleter.name });
    }
    for (const flow of outcome.gone) {
      logger.debug("stale flow was gone before deletion", { flow: describeFlow(flow) });
    }
    logFailures(outcome.failed, signal?.aborted === true, logger);
    tracker.forget([...outcome.deleted, ...outcome.gone].map(flowKey));
    return finish(
      {
        ...base,
        dump: dumpResult,
        tracked: tracker.size,
        deletions,
        deleteFailures: outcome.failed.length,
      },
      condemned,
      start,
    );
  }

  function finish(
    partial: Omit<CycleReport, "overran" | "pauseMs">,
    assessments: readonly Assessment[],
    start: number,
  ): CycleResult {
    const tookMs = clock.monotonic() - start;
    const overran = tookMs > options.periodMs;
    // Each message once per spell (see Spell): cycle times near a limit would flip them.
    const overrun = overrunning.update(tookMs, options.periodMs);
    if (overrun === "began") {
      logger.warn("cycle took longer than the dump period; cycles now run back to back", {
        cycle_ms: Math.round(tookMs),
        period_ms: options.periodMs,
      });
    } else if (overrun === "ended") {
      logger.info("cycles fit in the dump period again", { cycle_ms: Math.round(tookMs) });
    }
    const busyLimit = options.busyLimit ?? 1;
    const pauseMs = pauseAfter(tookMs, options.periodMs, busyLimit);
    const stretch = stretching.update(tookMs, stretchThreshold(options.periodMs, busyLimit));
    if (stretch === "began") {
      logger.info("slow cycles: pausing longer than the dump period to stay under the busy limit", {
        cycle_ms: Math.round(tookMs),
        pause_ms: pauseMs,
        period_ms: options.periodMs,
        busy_limit: busyLimit,
      });
    } else if (stretch === "ended") {
      logger.info("pausing for the dump period again", { cycle_ms: Math.round(tookMs) });
    }
    const report: CycleReport = { ...partial, overran, pauseMs };
    deps.observer?.cycleCompleted(report);
    return { report, assessments };
  }

  async function run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const { report } = await cycle(signal);
      // At least a full period after the end of the cycle: the renewal rule needs the gap (see
      // README).
      await clock.sleep(report.pauseMs, signal);
    }
  }

  return { cycle, run };
}

function announceDryRun(
  condemned: readonly Assessment[],
  announced: ReadonlySet<string>,
  tracker: Tracker,
  logger: Logger,
): Set<string> {
  // The tracker holds exactly the keys of the latest dump: a flow that left the table and comes
  // back is announced again.
  const next = new Set([...announced].filter((k) => tracker.has(k)));
  for (const a of condemned) {
    if (next.has(a.candidate.key)) continue;
    next.add(a.candidate.key);
    logger.info("would delete stale flow (dry run)", logFields(a));
  }
  return next;
}

/** Failures logged one by one per cycle; the rest are counted in one line. */
const FAILURES_LOGGED = 10;

function logFailures(failed: readonly DeleteFailure[], stopping: boolean, logger: Logger): void {
  if (failed.length === 0) return;
  if (stopping) {
    logger.info("stopping: stale flows left for the next start", { count: failed.length });
    return;
  }
  for (const failure of failed.slice(0, FAILURES_LOGGED)) {
    logger.warn("could not delete stale flow", {
      flow: describeFlow(failure.flow),
      reason: failure.reason,
    });
  }
  if (failed.length > FAILURES_LOGGED) {
    logger.warn("could not delete more stale flows", { count: failed.length - FAILURES_LOGGED });
  }
}

function toRecord(a: Assessment): DeletionRecord {
  const rule = a.verdict.kind === "delete" ? a.verdict.rule : "age";
  const reason = a.verdict.kind === "delete" ? a.verdict.reason : undefined;
  return { rule, family: a.candidate.flow.family, ...(reason === undefined ? {} : { reason }) };
}

/** The structured fields of every log line about a flow and the verdict on it. */
function logFields(a: Assessment): LogProperties {
  return {
    flow: describeFlow(a.candidate.flow),
    ...flowFields(a.candidate),
    ...(a.verdict.kind === "delete" ? { rule: a.verdict.rule } : {}),
    ...evidenceFields(a.verdict),
  };
}
