/**
 * The conntrack-tools command line: listing the table as a stream, deleting flows in one
 * `conntrack -R -` batch, and probing the binary at start.
 *
 * @module
 */
import { runToEnd, SpawnError } from "../seams/spawn.ts";
import type { SpawnCommand } from "../seams/spawn.ts";
import {
  type DeleteFailure,
  type DeleteOutcome,
  type Deleter,
  STOPPING_REASON,
} from "./deleter.ts";
import type { Candidate, Flow } from "../core/flow.ts";
import { flowKey } from "../core/flow.ts";
import {
  MAX_LINE_LENGTH,
  type OverlongLine,
  splitLineBatches,
  splitLines,
} from "../seams/output_lines.ts";
import type { Dump, Lister, ListOptions } from "./lister.ts";
import { LineMemo } from "./text/line_memo.ts";
import { errorLine, QUOTE_LENGTH, stderrLine } from "../seams/message_line.ts";
import { tokenizeLine } from "./text/tokenizer.ts";

/**
 * Arguments of the one listing per cycle. `-u UNREPLIED` is filtered by the kernel since 5.15
 * (older kernels send every entry and the tokenizer drops them), and `-p tcp` narrows it further;
 * both families and every zone are listed because no `-f` and no `-w` are given. `-o id` costs
 * nothing measurable and puts the kernel's entry id in every log line (bench/RESULTS.md).
 */
export const LIST_ARGS: readonly string[] = ["-L", "-p", "tcp", "-u", "UNREPLIED", "-o", "id"];

/** Where and how to list with conntrack. */
export interface DumpOptions extends ListOptions {
  /** The conntrack program. */
  readonly conntrack: string;
  /** Extra listing arguments (kernel-side filters), appended to {@link LIST_ARGS}. */
  readonly extraArgs?: readonly string[];
  /** Remembers lines from one listing to the next, so that unchanged lines are not parsed. */
  readonly memo?: LineMemo;
  /**
   * A listing still running after this many ms is killed and counts as failed, so that a hung
   * conntrack costs one cycle, not the loop. A 1M-entry table lists in about a second.
   * @default {300000}
   */
  readonly timeoutMs?: number;
}

/**
 * Lists the table once, streaming conntrack's output through the tokenizer and handing the
 * candidates on batch by batch, so that neither the dump nor its candidates are ever held whole.
 *
 * A failed listing may already have handed on some candidates: each was read correctly, but the
 * listing is incomplete, so the absence of a flow from it means nothing.
 */
export async function listCandidates(spawn: SpawnCommand, options: DumpOptions): Promise<Dump> {
  const timeoutMs = options.timeoutMs ?? 300_000;
  const limit = AbortSignal.timeout(timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, limit]) : limit;
  let child;
  try {
    child = spawn(options.conntrack, [...LIST_ARGS, ...(options.extraArgs ?? [])], { signal });
  } catch (error) {
    return { kind: "failed", reason: errorLine(error) };
  }
  const memo = options.memo;
  memo?.begin();
  let lines = 0;
  let rejected = 0;
  let firstLine = "";
  let firstReason = "";
  // A line too long to be conntrack's is skipped unread, and counted as unparsable.
  const onOverlong = (line: OverlongLine) => {
    lines++;
    if (rejected++ === 0) {
      firstLine = line.head;
      firstReason = `line of ${line.length} characters is longer than the ${MAX_LINE_LENGTH} ` +
        "a conntrack line can be";
    }
  };
  // Whole batches and a plain loop: a generator step per line cost as much as reading it.
  for await (const batch of splitLineBatches(child.stdout, { onOverlong })) {
    const candidates: Candidate[] = [];
    for (const line of batch) {
      if (line.length === 0) continue;
      lines++;
      const parsed = memo ? memo.read(line) : tokenizeLine(line);
      if (parsed.kind === "candidate") {
        const c = parsed.candidate;
        if (options.accept && !options.accept(c.flow)) continue;
        candidates.push(c);
      } else if (parsed.kind === "malformed") {
        if (rejected++ === 0) {
          firstLine = line.slice(0, 200);
          firstReason = parsed.reason;
        }
      }
    }
    if (candidates.length > 0) await options.onBatch(candidates);
  }
  const status = await child.status;
  // A listing cut short printed only part of the table: forgetting the rest would cost a parse.
  if (status.code === 0 && !signal.aborted) memo?.end();
  if (options.signal?.aborted) return { kind: "failed", reason: "aborted" };
  if (limit.aborted) {
    return {
      kind: "failed",
      reason: `conntrack -L did not finish within ${timeoutMs / 1000} s; killed`,
    };
  }
  if (status.code !== 0) {
    return {
      kind: "failed",
      reason: `conntrack exited ${status.code}: ${lastLine(status.stderr)}`,
    };
  }
  const unparsable = rejected > 0 ? { count: rejected, firstLine, firstReason } : undefined;
  return { kind: "ok", lines, unparsable };
}

/**
 * The listing backend that runs `conntrack -L` (see {@link listCandidates}), with a
 * {@link LineMemo} of its own so that unchanged lines are not parsed again.
 */
export function createCliLister(spawn: SpawnCommand, conntrack: string): Lister {
  const memo = new LineMemo();
  return {
    name: "cli",
    list: (options) => listCandidates(spawn, { ...options, conntrack, memo }),
  };
}

/**
 * The `conntrack -R` line that deletes exactly one flow: protocol, both tuples, the zone (always,
 * `-w 0` included: without `-w` the line matches the same tuple in every zone), and the state
 * guard `--state SYN_SENT`, so a flow that completed in between is left alone.
 *
 * @example
 * ```ts
 * import { deleteLine } from "./conntrack_cli.ts";
 * deleteLine({
 *   family: "ipv4",
 *   original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
 *   reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
 *   zone: 0,
 * });
 * // "-D -p tcp -s 198.51.100.2 -d 192.0.2.10 --sport 40000 --dport 80 -r 192.0.2.10
 * //  -q 198.51.100.2 --reply-port-src 80 --reply-port-dst 40000 -w 0 --state SYN_SENT"
 * ```
 */
export function deleteLine(flow: Flow): string {
  const o = flow.original;
  const r = flow.reply;
  const zones = [`-w ${flow.zone}`];
  if (flow.origZone !== undefined) zones.push(`--orig-zone ${flow.origZone}`);
  if (flow.replyZone !== undefined) zones.push(`--reply-zone ${flow.replyZone}`);
  return `-D -p tcp -s ${o.src} -d ${o.dst} --sport ${o.sport} --dport ${o.dport} ` +
    `-r ${r.src} -q ${r.dst} --reply-port-src ${r.sport} --reply-port-dst ${r.dport} ` +
    `${zones.join(" ")} --state SYN_SENT`;
}

/**
 * Flows per `conntrack -R -` process. conntrack-tools dumps the whole table for every `-D` line
 * (about 6.6 s at 1M entries), so a batch is cut into pieces of this size, with progress reported
 * after each: well within a minute even on such a table.
 */
export const CLI_DELETE_PIECE = 8;

/**
 * Deletes flows through `conntrack -R -`, one process per {@link CLI_DELETE_PIECE} flows.
 * conntrack prints every entry it deleted, so what was deleted is read back rather than assumed;
 * a requested flow not printed was gone already or no longer `SYN_SENT`.
 */
export function createCliDeleter(spawn: SpawnCommand, conntrack: string): Deleter {
  return {
    name: "cli",
    async delete(flows, signal, progress): Promise<DeleteOutcome> {
      const deleted: Flow[] = [];
      const gone: Flow[] = [];
      const failed: DeleteFailure[] = [];
      for (let at = 0; at < flows.length; at += CLI_DELETE_PIECE) {
        const piece = flows.slice(at, at + CLI_DELETE_PIECE);
        const outcome = signal?.aborted
          ? {
            deleted: [],
            gone: [],
            failed: piece.map((flow) => ({ flow, reason: STOPPING_REASON })),
          }
          : await deletePiece(spawn, conntrack, piece, signal);
        deleted.push(...outcome.deleted);
        gone.push(...outcome.gone);
        failed.push(...outcome.failed);
        progress?.();
      }
      return { deleted, gone, failed };
    },
  };
}

/** One `conntrack -R -` process for a few flows. */
async function deletePiece(
  spawn: SpawnCommand,
  conntrack: string,
  flows: readonly Flow[],
  signal: AbortSignal | undefined,
): Promise<DeleteOutcome> {
  const script = flows.map((f) => deleteLine(f) + "\n").join("");
  let child;
  try {
    child = spawn(conntrack, ["-R", "-"], { stdin: script, ...(signal ? { signal } : {}) });
  } catch (error) {
    const reason = errorLine(error);
    return { deleted: [], gone: [], failed: flows.map((flow) => ({ flow, reason })) };
  }
  const printed = new Set<string>();
  for await (const line of splitLines(child.stdout)) {
    const parsed = tokenizeLine(line);
    if (parsed.kind === "candidate") printed.add(parsed.candidate.key);
  }
  const status = await child.status;
  const deleted = flows.filter((f) => printed.has(flowKey(f)));
  const rest = flows.filter((f) => !printed.has(flowKey(f)));
  if (status.code === 0) return { deleted, gone: rest, failed: [] };
  const reason = `conntrack -R exited ${status.code}: ${lastLine(status.stderr)}`;
  return { deleted, gone: [], failed: rest.map((flow) => ({ flow, reason })) };
}

/** Why conntrack cannot be used, as found at start. */
export class ConntrackUnusableError extends Error {
  /** Builds the error; the message is the one line shown to the operator. */
  constructor(message: string) {
    super(message);
    this.name = "ConntrackUnusableError";
  }
}

/**
 * Runs `conntrack --version` and returns the version number, e.g. `1.4.7`; throws
 * {@link ConntrackUnusableError} naming `--conntrack` / `CONNTRACK_BIN` when the program is
 * missing or is not conntrack-tools' conntrack.
 */
export async function conntrackVersion(spawn: SpawnCommand, conntrack: string): Promise<string> {
  const out = await run(spawn, conntrack, ["--version"]);
  const found = (out.stdout + out.stderr).match(/conntrack v(\S+)/)?.[1];
  if (out.code !== 0 || found === undefined) {
    throw new ConntrackUnusableError(
      `Cannot use ${conntrack} as conntrack (--conntrack / CONNTRACK_BIN): ` +
        `"--version" exited ${out.code}: ${lastLine(out.stderr || out.stdout)}`,
    );
  }
  return found;
}

/**
 * Checks at start that conntrack runs and may read the table: {@link conntrackVersion}, then one
 * listing of an empty selection. Returns `conntrack v<version>`; throws
 * {@link ConntrackUnusableError} naming `--conntrack` / `CONNTRACK_BIN` or the missing capability.
 */
export async function probeConntrack(spawn: SpawnCommand, conntrack: string): Promise<string> {
  const version = await conntrackVersion(spawn, conntrack);
  // The agent's own kernel-filtered listing, narrowed to port 0 so that it prints nothing: as
  // cheap as a cycle, and it fails exactly when the agent could not read the table.
  const probe = await run(spawn, conntrack, ["-L", "-p", "tcp", "-u", "UNREPLIED", "--dport", "0"]);
  if (probe.code !== 0) {
    const message = lastLine(probe.stderr);
    const hint = /CAP_NET_ADMIN|not permitted/i.test(message)
      ? " (the agent needs CAP_NET_ADMIN in the node's network namespace)"
      : "";
    throw new ConntrackUnusableError(
      `Cannot read the conntrack table with ${conntrack}: ${message}${hint}`,
    );
  }
  return `conntrack v${version}`;
}

async function run(spawn: SpawnCommand, program: string, args: readonly string[]) {
  try {
    return await runToEnd(spawn, program, args);
  } catch (error) {
    if (!(error instanceof SpawnError)) throw error;
    throw new ConntrackUnusableError(
      `${error.message} (--conntrack / CONNTRACK_BIN: a path to conntrack-tools' conntrack)`,
    );
  }
}

/** The line of conntrack's stderr (or stdout) worth quoting, bounded, without its banner. */
function lastLine(text: string): string {
  return stderrLine(text, QUOTE_LENGTH, /^conntrack v\S+ \(conntrack-tools\): /);
}
