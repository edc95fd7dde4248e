/**
 * Output of the `scan` command: a table for people and JSON lines for programs.
 *
 * @module
 */
import { type Flow, isUnNATed, type Tuple } from "../core/flow.ts";
import { evidenceFields, flowFields } from "../core/flow_fields.ts";
import type { Assessment } from "../core/verdict.ts";
import { hostPort } from "../core/address.ts";
import { secondsColumn } from "../core/seconds_text.ts";

const HEADERS = ["FAMILY", "ZONE", "FLOW", "TIMER", "AGE", "RENEWALS", "VERDICT", "WHY"] as const;
/** Columns whose values are numbers, aligned to the right. */
const RIGHT_ALIGNED: ReadonlySet<number> = new Set([3, 5]);

/**
 * Renders assessments as an aligned table, one row per entry in the given order, with a header.
 * Addresses are shown as conntrack prints them, IPv6 in brackets; a NATed entry also shows its
 * reply tuple. The result has no trailing newline.
 *
 * @example
 * ```ts
 * import { formatScanTable } from "./scan_format.ts";
 * console.log(formatScanTable([]));
 * // FAMILY  ZONE  FLOW  TIMER  AGE  RENEWALS  VERDICT  WHY
 * // (no TCP SYN_SENT [UNREPLIED] entries)
 * ```
 */
export function formatScanTable(assessments: readonly Assessment[]): string {
  const rows = assessments.map(tableRow);
  const widths = HEADERS.map((header, column) =>
    rows.reduce((width, row) => Math.max(width, row[column]?.length ?? 0), header.length)
  );
  const render = (cells: readonly string[]) =>
    cells.map((cell, column) => {
      if (column === cells.length - 1) return cell;
      const width = widths[column] ?? 0;
      return RIGHT_ALIGNED.has(column) ? cell.padStart(width) : cell.padEnd(width);
    }).join("  ");
  const lines = [render(HEADERS), ...rows.map(render)];
  if (rows.length === 0) lines.push("(no TCP SYN_SENT [UNREPLIED] entries)");
  return lines.join("\n");
}

function tableRow({ candidate, verdict }: Assessment): readonly string[] {
  const flow = candidate.flow;
  const nat = isUnNATed(flow) ? "" : ` (reply ${tupleText(flow.reply)})`;
  const age = `${secondsColumn(verdict.ageMs)} (${verdict.ageSource})`;
  return [
    flow.family,
    zoneText(flow),
    tupleText(flow.original) + nat,
    `${candidate.timeout}s`,
    age,
    String(verdict.renewals),
    verdict.kind === "keep" ? "keep" : `delete (${verdict.rule})`,
    verdict.why,
  ];
}

function tupleText(tuple: Tuple): string {
  return `${hostPort(tuple.src, tuple.sport)} → ${hostPort(tuple.dst, tuple.dport)}`;
}

/** `zone`, or `zone/orig-zone/reply-zone` when conntrack printed directional zones. */
function zoneText(flow: Flow): string {
  if (flow.origZone === undefined && flow.replyZone === undefined) return String(flow.zone);
  return `${flow.zone}/${flow.origZone ?? "-"}/${flow.replyZone ?? "-"}`;
}

/**
 * One assessment as one line of JSON with stable snake_case fields, in a fixed order.
 *
 * Always present: `time`, `family`, `zone`, `src`, `sport`, `dst`, `dport`, `reply_src`,
 * `reply_sport`, `reply_dst`, `reply_dport`, `timeout_s`, `age_s`, `age_source`, `renewals`,
 * `verdict` (`"keep"` or `"delete"`), `rule` (`null` when kept), `reason` (which half of the
 * `nat` rule fired, `"no-dnat"` or `"endpoint-gone"`; `null` for other rules) and `why`. Present only when
 * known: `orig_zone`, `reply_zone`, `delta_time_s` and `id`.
 *
 * @example
 * ```ts
 * import { formatScanJson } from "./scan_format.ts";
 * const line = formatScanJson({
 *   candidate: {
 *     flow: {
 *       family: "ipv4",
 *       original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *       reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *       zone: 0,
 *     },
 *     key: "k",
 *     timeout: 117,
 *   },
 *   verdict: { kind: "keep", why: "new: first seen", renewals: 0, ageMs: 0, ageSource: "observed" },
 * }, { time: "2025-01-01T00:00:00.000Z" });
 * JSON.parse(line).verdict; // "keep"
 * ```
 */
export function formatScanJson(assessment: Assessment, extra: { readonly time: string }): string {
  const { candidate, verdict } = assessment;
  const { id, ...flow } = flowFields(candidate);
  const { why, reason, ...evidence } = evidenceFields(verdict);
  return JSON.stringify({
    time: extra.time,
    ...flow,
    timeout_s: candidate.timeout,
    ...(candidate.deltaTime === undefined ? {} : { delta_time_s: candidate.deltaTime }),
    ...evidence,
    verdict: verdict.kind,
    rule: verdict.kind === "delete" ? verdict.rule : null,
    reason: reason ?? null,
    why,
    ...(id === undefined ? {} : { id }),
  });
}
