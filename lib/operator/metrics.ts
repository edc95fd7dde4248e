/**
 * Prometheus metrics for the agent, fed one {@link CycleReport} per cycle and rendered in the
 * text exposition format for `GET /metrics`.
 *
 * Every metric of the agent is prefixed `conntrack_cleaner_`. prom-client's default process
 * metrics are not used: under Deno they read `/proc` silently and report 0 for memory, so the
 * three process metrics that matter are computed from Deno's own APIs, which need no permission.
 *
 * @module
 */
import process from "node:process";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Family } from "../core/flow.ts";
import { NAT_MECHANISMS, NAT_READ_CAUSES, type NatReadCause } from "../nat/nat_report.ts";
import type { NatReadObserver, NatSourceRead } from "../nat/nat_report.ts";
import type { CycleObserver, CycleReport } from "../loop/cycle_report.ts";
import { RULES } from "../core/verdict.ts";
import { NAT_REASONS } from "../core/nat_rule.ts";

/**
 * Metrics of the agent, updated by each cycle's report and each read of the NAT rules, and
 * rendered on demand.
 */
export interface Metrics extends CycleObserver, NatReadObserver {
  /** The whole exposition text, as served on `/metrics`. */
  render(): Promise<string>;
  /** The `Content-Type` of {@link Metrics.render}'s text. */
  readonly contentType: string;
  /** Counts one read of the NAT rules by its cause. */
  natRulesRead(cause: NatReadCause): void;
}

/** What `conntrack_cleaner_build_info` shows. */
export interface BuildInfo {
  /** The agent's version, e.g. `0.1.0`. */
  readonly version: string;
  /** The Deno runtime's version (`Deno.version.deno`). */
  readonly denoVersion: string;
}

/** The process figures exported as `process_*` metrics. */
export interface ProcessStats {
  /** User plus system CPU time used since the process started, in seconds. */
  readonly cpuSeconds: number;
  /** Resident set size, in bytes. */
  readonly residentBytes: number;
  /** When the process started, in seconds since the Unix epoch. */
  readonly startTimeSeconds: number;
}

/** Reads the current {@link ProcessStats}; called once per scrape. */
export type ProcessSampler = () => ProcessStats;

/**
 * Samples the running Deno process. Needs no permission: `process.cpuUsage()` and
 * `Deno.memoryUsage()` are not gated, unlike reading `/proc/self/stat`.
 */
export const denoProcessSampler: ProcessSampler = () => {
  const cpu = process.cpuUsage();
  return {
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    residentBytes: Deno.memoryUsage().rss,
    startTimeSeconds: performance.timeOrigin / 1000,
  };
};

/** Options for {@link createMetrics}. */
export interface MetricsOptions {
  /**
   * Where the `process_*` metrics come from; tests inject fixed figures.
   * @default {denoProcessSampler}
   */
  readonly processSampler?: ProcessSampler;
  /**
   * The candidate tracking in use and its event counts, read at each scrape; absent, the
   * tracking metrics are not exported.
   */
  readonly tracking?: () => TrackingStatus;
}

/** What the tracking metrics show (see `lib/table/tracking.ts`). */
export interface TrackingStatus {
  /** `events` or `dump`. */
  readonly mode: "events" | "dump";
  /** New-entry events read since start. */
  readonly eventsReceived: number;
  /** Times the kernel dropped events for the agent (socket overflow, `ENOBUFS`). */
  readonly eventsLost: number;
  /** Full resync dumps made in event tracking. */
  readonly resyncs: number;
}

/**
 * Upper bounds of `conntrack_cleaner_dump_duration_seconds`: a small table lists in
 * milliseconds, a million entries in seconds; beyond 10 s the agent cannot keep a 1 s period.
 */
export const DUMP_DURATION_BUCKETS: readonly number[] = [
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];
const PREFIX = "conntrack_cleaner_";

/**
 * Creates the agent's metrics in a registry of their own (no global state), with every
 * `rule` × `family` series of the deletion counters, and every `source` × `family` series of the
 * NAT source failure counter, already at 0, so that `rate()` and `increase()` see the first
 * deletion or failure.
 *
 * @example Feed a report and render
 * ```ts
 * import { createMetrics } from "./metrics.ts";
 * const metrics = createMetrics({ version: "0.1.0", denoVersion: Deno.version.deno });
 * metrics.cycleCompleted({
 *   wallStart: Date.now(),
 *   dumpMs: 20,
 *   dump: { kind: "ok", lines: 120, candidates: 3, unparsable: 0 },
 *   tracked: 3,
 *   deletions: [{ rule: "age", family: "ipv4" }],
 *   dryRun: false,
 *   deleteFailures: 0,
 *   overran: false,
 *   pauseMs: 1000,
 * });
 * const text = await metrics.render();
 * console.log(text.includes('conntrack_cleaner_deleted_total{rule="age",family="ipv4"} 1')); // true
 * ```
 */
export function createMetrics(info: BuildInfo, options: MetricsOptions = {}): Metrics {
  const sampleProcess = options.processSampler ?? denoProcessSampler;
  const registry = new Registry();
  const registers = [registry];
  const byRuleAndFamily = ["rule", "family"] as const;

  const deleted = new Counter({
    name: `${PREFIX}deleted_total`,
    help: "Conntrack entries deleted, by the rule that condemned them and address family.",
    labelNames: byRuleAndFamily,
    registers,
  });
  const wouldDelete = new Counter({
    name: `${PREFIX}dry_run_would_delete_total`,
    help: "Conntrack entries that would have been deleted in dry run, by rule and family.",
    labelNames: byRuleAndFamily,
    registers,
  });
  for (const rule of RULES) {
    for (const family of FAMILIES) {
      deleted.inc({ rule, family }, 0);
      wouldDelete.inc({ rule, family }, 0);
    }
  }
  // Which half of the nat rule fired, in counters of their own: a label on deleted_total would
  // split the series that alerts sum without (rule, family).
  const byReasonAndFamily = ["reason", "family"] as const;
  const natDeleted = new Counter({
    name: `${PREFIX}nat_deleted_total`,
    help: "Conntrack entries deleted by the nat rule, by which half fired (no-dnat: no NAT " +
      "while the node now translates; endpoint-gone: translated to an endpoint the rules no " +
      'longer choose) and family; they sum to deleted_total{rule="nat"}.',
    labelNames: byReasonAndFamily,
    registers,
  });
  const natWouldDelete = new Counter({
    name: `${PREFIX}dry_run_nat_would_delete_total`,
    help: "Conntrack entries the nat rule would have deleted in dry run, by reason and family.",
    labelNames: byReasonAndFamily,
    registers,
  });
  for (const reason of NAT_REASONS) {
    for (const family of FAMILIES) {
      natDeleted.inc({ reason, family }, 0);
      natWouldDelete.inc({ reason, family }, 0);
    }
  }
  const deleteFailures = new Counter({
    name: `${PREFIX}delete_failures_total`,
    help: "Conntrack entries the deletion backend failed to delete.",
    registers,
  });
  const dumps = new Counter({
    name: `${PREFIX}dumps_total`,
    help: "Conntrack table listings attempted, successful or not.",
    registers,
  });
  const dumpFailures = new Counter({
    name: `${PREFIX}dump_failures_total`,
    help: "Conntrack table listings that failed.",
    registers,
  });
  const dumpDuration = new Histogram({
    name: `${PREFIX}dump_duration_seconds`,
    help: "Time taken by each conntrack table listing, successful or not.",
    buckets: [...DUMP_DURATION_BUCKETS],
    registers,
  });
  const entries = new Gauge({
    name: `${PREFIX}entries_last_dump`,
    help: "Entries (lines) in the last successful conntrack table listing.",
    registers,
  });
  const candidates = new Gauge({
    name: `${PREFIX}candidates_last_dump`,
    help: "TCP SYN_SENT [UNREPLIED] entries in the last successful listing, after filters.",
    registers,
  });
  const tracked = new Gauge({
    name: `${PREFIX}tracked_flows`,
    help: "Unreplied flows the agent is tracking between cycles.",
    registers,
  });
  const unparsable = new Counter({
    name: `${PREFIX}unparsable_lines_total`,
    help: "Lines of conntrack output that could not be parsed and were skipped.",
    registers,
  });
  const lastSuccess = new Gauge({
    name: `${PREFIX}last_successful_dump_timestamp_seconds`,
    help: "When the last successful listing finished, in seconds since the epoch; 0 before one.",
    registers,
  });
  const overrun = new Gauge({
    name: `${PREFIX}cycle_overrun`,
    help: "1 when the last cycle took longer than the dump period, else 0.",
    registers,
  });
  const overruns = new Counter({
    name: `${PREFIX}cycle_overruns_total`,
    help: "Cycles that took longer than the dump period.",
    registers,
  });
  const pause = new Gauge({
    name: `${PREFIX}pause_seconds`,
    help: "Pause after the last cycle: the dump period, or longer when the busy limit stretched " +
      "it; 0 before the first cycle.",
    registers,
  });
  const natSourceUp = new Gauge({
    name: `${PREFIX}nat_source_up`,
    help: "1 when the last read of this NAT rule source worked, 0 when it failed; no series " +
      "for a source the node does not have.",
    labelNames: ["source", "family"] as const,
    registers,
  });
  const natSourceFailures = new Counter({
    name: `${PREFIX}nat_source_failures_total`,
    help: "Reads of a NAT rule source that failed (the nat rule could not see its rules).",
    labelNames: ["source", "family"] as const,
    registers,
  });
  for (const source of NAT_MECHANISMS) {
    for (const family of FAMILIES) natSourceFailures.inc({ source, family }, 0);
  }
  const natRuleReads = new Counter({
    name: `${PREFIX}nat_rule_reads_total`,
    help: "Reads of the node's NAT rules (rule programs run), by cause: first, changed (the " +
      "nftables generation moved) or polled (rules no generation covers).",
    labelNames: ["cause"] as const,
    registers,
  });
  for (const cause of NAT_READ_CAUSES) natRuleReads.inc({ cause }, 0);
  const buildInfo = new Gauge({
    name: `${PREFIX}build_info`,
    help: "Always 1; the labels say which agent and runtime are running.",
    labelNames: ["version", "deno_version"] as const,
    registers,
  });
  buildInfo.set({ version: info.version, deno_version: info.denoVersion }, 1);
  lastSuccess.set(0);
  overrun.set(0);
  pause.set(0);

  new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    registers,
    collect() {
      // A counter can only go up by increments, so the absolute figure is set by reset + inc.
      this.reset();
      this.inc(nonNegative(sampleProcess().cpuSeconds));
    },
  });
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers,
    collect() {
      this.set(nonNegative(sampleProcess().residentBytes));
    },
  });
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since unix epoch in seconds.",
    registers,
    collect() {
      this.set(nonNegative(sampleProcess().startTimeSeconds));
    },
  });

  const tracking = options.tracking;
  if (tracking !== undefined) registerTracking(registers, tracking);

  return {
    contentType: registry.contentType,
    render: () => registry.metrics(),
    cycleCompleted(report: CycleReport): void {
      // Observers must not throw; prom-client throws on negative or NaN increments, so every
      // figure from the report is made safe first.
      // Reports are in ms; Prometheus's base unit is the second.
      const dumpSeconds = nonNegative(report.dumpMs) / 1000;
      dumps.inc();
      dumpDuration.observe(dumpSeconds);
      if (report.dump.kind === "ok") {
        entries.set(nonNegative(report.dump.lines));
        candidates.set(nonNegative(report.dump.candidates));
        unparsable.inc(nonNegative(report.dump.unparsable));
        lastSuccess.set(nonNegative(report.wallStart) / 1000 + dumpSeconds);
      } else {
        dumpFailures.inc();
      }
      tracked.set(nonNegative(report.tracked));
      const counter = report.dryRun ? wouldDelete : deleted;
      const natCounter = report.dryRun ? natWouldDelete : natDeleted;
      for (const { rule, family, reason } of report.deletions) {
        counter.inc({ rule, family });
        if (reason !== undefined) natCounter.inc({ reason, family });
      }
      deleteFailures.inc(nonNegative(report.deleteFailures));
      overrun.set(report.overran ? 1 : 0);
      if (report.overran) overruns.inc();
      pause.set(nonNegative(report.pauseMs) / 1000);
    },
    natSourceRead({ source, family, outcome }: NatSourceRead): void {
      const labels = { source, family };
      // A source that left the node (kube-proxy changed mode) is not down: its series goes.
      if (outcome === "absent") natSourceUp.remove(labels);
      else natSourceUp.set(labels, outcome === "ok" ? 1 : 0);
      if (outcome === "failed") natSourceFailures.inc(labels);
    },
    natRulesRead(cause: NatReadCause): void {
      natRuleReads.inc({ cause });
    },
  };
}

function nonNegative(value: number): number {
  return Number.isFinite(value) && value > 0 ? value : 0;
}

/** The tracking metrics, read from `status` at each scrape. */
function registerTracking(registers: Registry[], status: () => TrackingStatus): void {
  new Gauge({
    name: `${PREFIX}tracking_mode`,
    help: "1 for the candidate tracking in use (events, or a dump every period), 0 for the other.",
    labelNames: ["mode"] as const,
    registers,
    collect() {
      const mode = status().mode;
      this.set({ mode: "events" }, mode === "events" ? 1 : 0);
      this.set({ mode: "dump" }, mode === "dump" ? 1 : 0);
    },
  });
  const counters: readonly (readonly [string, string, (s: TrackingStatus) => number])[] = [
    [
      "events_received_total",
      "Conntrack new-entry events read (after the kernel filter).",
      (s) => s.eventsReceived,
    ],
    [
      "events_lost_total",
      "Times the kernel dropped conntrack events for the agent (socket overflow, ENOBUFS); " +
      "each forces a resync dump.",
      (s) => s.eventsLost,
    ],
    [
      "resyncs_total",
      "Full dumps made by event tracking: at start, after lost events, on the resync period.",
      (s) => s.resyncs,
    ],
  ];
  for (const [name, help, read] of counters) {
    new Counter({
      name: `${PREFIX}${name}`,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(nonNegative(read(status())));
      },
    });
  }
}
