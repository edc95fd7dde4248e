/**
 * The `scan` command: list once (or every period with `--watch`), print every candidate with its
 * verdict, delete nothing.
 *
 * @module
 */
import type { Assessor } from "../loop/agent.ts";
import type { Clock } from "../seams/clock.ts";
import { formatScanJson, formatScanTable } from "./scan_format.ts";

/** How to scan and where the output goes. */
export interface ScanOptions {
  /** JSON lines instead of a table. */
  readonly json: boolean;
  /** Repeat every period until `signal` aborts. */
  readonly watch: boolean;
  /** Pause between scans with `watch`, in milliseconds. */
  readonly periodMs: number;
  /** Time, for the pause and the timestamps. */
  readonly clock: Clock;
  /** Writes text to standard output. */
  readonly write: (text: string) => void;
  /** Writes one line to standard error. */
  readonly warn: (line: string) => void;
  /** Stops a watch. */
  readonly signal: AbortSignal;
}

/**
 * Runs the scan. Returns the exit code: 0, or 1 when a single scan's listing failed.
 * The agent is used with deletion turned off, so nothing is ever deleted.
 */
export async function runScan(agent: Assessor, options: ScanOptions): Promise<number> {
  const { clock, write } = options;
  for (;;) {
    const { report, assessments } = await agent.cycle(options.signal, false);
    if (options.signal.aborted) return 0;
    if (report.dump.kind === "failed") {
      options.warn(`conntrack-cleaner: scan failed: ${report.dump.reason}`);
      if (!options.watch) return 1;
    } else if (options.json) {
      const time = new Date(clock.wall()).toISOString();
      write(assessments.map((a) => formatScanJson(a, { time }) + "\n").join(""));
    } else {
      const time = new Date(clock.wall()).toISOString();
      const head = options.watch ? `${time}  ` : "";
      write(
        `${head}${report.dump.lines} entries listed, ${assessments.length} candidates\n` +
          (assessments.length > 0 ? formatScanTable(assessments) : "") + "\n",
      );
    }
    if (!options.watch) return 0;
    await clock.sleep(options.periodMs, options.signal);
    if (options.signal.aborted) return 0;
  }
}
