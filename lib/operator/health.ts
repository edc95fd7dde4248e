/**
 * Liveness and readiness of the agent, derived from the cycle reports (served on `/healthz` and
 * `/readyz`).
 *
 * - **Alive** while the loop keeps making progress: a cycle report or a heartbeat
 *   ({@link Health.markLoopAlive}) within the last `max(10 × period, 5 min)`. The floor is wide
 *   on purpose: a large table can take seconds to list and a large batch of deletions longer,
 *   and a restart in the middle of one helps nobody. Failing dumps do not make the agent dead;
 *   a restart would not fix a missing module or a broken `conntrack`.
 * - **Ready** once a dump has succeeded and the last success is recent: within
 *   `max(3 × period + the last successful dump's duration, 5 s)`, where a pause that the busy
 *   limit stretched counts as the period. That tolerates one or two
 *   failed listings in a row (a busy table, a transient `ENOBUFS`) and reports a persistent
 *   failure within a few periods.
 *
 * Ages are measured on the monotonic clock, from the moment the report arrives.
 *
 * @module
 */
import type { Clock } from "../seams/clock.ts";
import { durationText } from "../core/seconds_text.ts";
import type { CycleObserver, CycleReport } from "../loop/cycle_report.ts";

/** Whether the loop is making progress; the reason is one line for the probe's 503 body. */
export type Liveness =
  | {
    /** The loop reported recently. */
    readonly ok: true;
  }
  | {
    /** The loop has not reported for too long. */
    readonly ok: false;
    /** One line saying for how long. */
    readonly reason: string;
  };

/** Whether the agent's view of the conntrack table is fresh. */
export interface Readiness {
  /** True when a dump succeeded recently enough. */
  readonly ok: boolean;
  /** One line an operator can read, also when ready (e.g. `last successful dump 0.4s ago`). */
  readonly reason: string;
}

/** The agent's health, updated by each cycle's report. */
export interface Health extends CycleObserver {
  /** Whether the loop is alive (for `/healthz`). */
  liveness(): Liveness;
  /** Whether the agent is ready (for `/readyz`). */
  readiness(): Readiness;
  /**
   * Tells that the loop is making progress inside a long cycle (e.g. between deletion batches),
   * so that a slow but moving cycle is not taken for a stuck one.
   */
  markLoopAlive(): void;
}

/** Options for {@link createHealth}. */
export interface HealthOptions {
  /** The pause between cycles, in milliseconds (`CONNTRACK_TABLE_DUMP_FREQUENCY`). */
  readonly periodMs: number;
  /** The clock; ages use {@link Clock.monotonic}. */
  readonly clock: Clock;
}

/** The shortest time without a report after which the loop is taken for stuck. */
const MIN_STALL_MS = 5 * 60_000;
/** The shortest age of the last successful dump after which the agent is not ready. */
const MIN_STALE_MS = 5_000;

/** The longest a loop may go without reporting and still be alive, for a given period. */
function stallLimitMs(periodMs: number): number {
  return Math.max(10 * periodMs, MIN_STALL_MS);
}

/**
 * The oldest the last successful dump may be while ready, for a given period and the duration
 * of that dump.
 */
function staleLimitMs(periodMs: number, lastDumpMs: number): number {
  return Math.max(3 * periodMs + lastDumpMs, MIN_STALE_MS);
}

/**
 * Creates the health state. Before the first report, the loop counts as alive from the moment
 * of creation, and the agent is not ready.
 *
 * @example Not ready until a dump succeeds
 * ```ts
 * import { createHealth } from "./health.ts";
 * import { systemClock } from "../seams/clock.ts";
 * const health = createHealth({ periodMs: 1000, clock: systemClock });
 * health.readiness(); // { ok: false, reason: "no successful dump yet" }
 * health.cycleCompleted({
 *   wallStart: Date.now(),
 *   dumpMs: 10,
 *   dump: { kind: "ok", lines: 10, candidates: 0, unparsable: 0 },
 *   tracked: 0,
 *   deletions: [],
 *   dryRun: false,
 *   deleteFailures: 0,
 *   overran: false,
 *   pauseMs: 1000,
 * });
 * health.readiness().ok; // true
 * ```
 *
 * @throws {RangeError} When `periodMs` is negative or not a finite number.
 */
export function createHealth(options: HealthOptions): Health {
  const { periodMs, clock } = options;
  if (!Number.isFinite(periodMs) || periodMs < 0) {
    throw new RangeError(
      `Cannot create health checks as periodMs must be a finite number >= 0: current value is ${periodMs}`,
    );
  }
  const stallMs = stallLimitMs(periodMs);
  // The only mutable state, owned by this closure: what the probes need from past reports.
  let lastProgress = clock.monotonic();
  let lastSuccess:
    | { readonly at: number; readonly dumpMs: number; readonly pauseMs: number }
    | undefined;
  let failedSince = 0;
  let lastFailure = "";

  return {
    cycleCompleted(report: CycleReport): void {
      const now = clock.monotonic();
      lastProgress = now;
      if (report.dump.kind === "ok") {
        const dumpMs = Number.isFinite(report.dumpMs) ? report.dumpMs : 0;
        const pauseMs = Number.isFinite(report.pauseMs) ? report.pauseMs : 0;
        lastSuccess = { at: now, dumpMs: Math.max(0, dumpMs), pauseMs };
        failedSince = 0;
        lastFailure = "";
      } else {
        failedSince++;
        lastFailure = oneLine(report.dump.reason);
      }
    },
    markLoopAlive(): void {
      lastProgress = clock.monotonic();
    },
    liveness(): Liveness {
      const silentMs = clock.monotonic() - lastProgress;
      if (silentMs <= stallMs) return { ok: true };
      return {
        ok: false,
        reason: `loop has not completed a cycle for ${durationText(silentMs)}, more than ${
          durationText(stallMs)
        }: it looks stuck`,
      };
    },
    readiness(): Readiness {
      const failures = failedSince === 0
        ? ""
        : ` (${failedSince} failed${lastSuccess === undefined ? "" : " since"}: ${lastFailure})`;
      if (lastSuccess === undefined) {
        return { ok: false, reason: `no successful dump yet${failures}` };
      }
      const ageMs = clock.monotonic() - lastSuccess.at;
      // A pause the busy limit stretched counts as the period it replaced.
      const limitMs = staleLimitMs(Math.max(periodMs, lastSuccess.pauseMs), lastSuccess.dumpMs);
      if (ageMs <= limitMs) {
        return { ok: true, reason: `last successful dump ${durationText(ageMs)} ago${failures}` };
      }
      return {
        ok: false,
        reason: `last successful dump ${durationText(ageMs)} ago, more than ${
          durationText(limitMs)
        }${failures}`,
      };
    },
  };
}

const MAX_REASON = 300;

/** Keeps a failure reason to one bounded line, so a probe body stays one line. */
function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > MAX_REASON ? `${line.slice(0, MAX_REASON - 1)}…` : line;
}
