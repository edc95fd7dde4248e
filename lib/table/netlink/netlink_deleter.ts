/**
 * A {@link Deleter} that speaks ctnetlink itself, over the raw netlink socket the event mode uses
 * (`lib/seams/netlink_socket.ts`: libmnl and libc through `Deno.dlopen`), with the codec the listing
 * uses (`ctnetlink.ts`): for every 128 flows, one datagram of GETs (`ct_get.ts`) and one of
 * DELETEs (`ct_delete.ts`), and no table dump. The conntrack CLI, by contrast, dumps the whole
 * table for every `-D`, which costs about 0.3 s per flow at 100k entries.
 *
 * Exactness: the GET is by original tuple and zone, which identifies at most one entry; the entry
 * it returns must still be TCP `SYN_SENT` without `SEEN_REPLY`, have the flow's reply tuple and
 * zones, and, when the flow was judged with a kernel id, carry that id. Only then is it deleted,
 * by the same tuple and zone and by the id the GET read (`CTA_ID`), so the DELETE misses (the
 * kernel answers `ENOENT`) if the entry was replaced in between. The kernel has no conditional
 * delete by state, so an entry that completes its handshake in the microseconds between GET and
 * DELETE is still deleted (the CLI's `-D --state SYN_SENT` has the same gap, widened by its table
 * dump).
 *
 * The kernel's id is a hash of the entry's memory address, tuples and namespace, not a counter: an
 * entry re-created under the same tuple in the memory its predecessor freed gets the same id (seen
 * on Linux 6.18 in about 2 re-creations out of 5). The id then cannot tell the two apart, and
 * the guard is what is left: a new SYN's entry is `SYN_SENT` and unreplied too, a fresh stale
 * entry of the same client.
 *
 * Needs `--allow-ffi` and `CAP_NET_ADMIN` in the network namespace whose table is cleaned.
 *
 * @module
 */
import {
  type DeleteFailure,
  type DeleteOutcome,
  type Deleter,
  type DeleteTarget,
  STOPPING_REASON,
} from "../deleter.ts";
import { addressBytes, hostPort } from "../../core/address.ts";
import type { Flow, Tuple } from "../../core/flow.ts";
import type { DeleteEntry } from "./ctnetlink.ts";
import { type GetAnswer, getFlows } from "./ct_get.ts";
import { type DeleteAnswer, deleteEntries, DELETES_PER_SEND } from "./ct_delete.ts";
import { openNetlinkLibraries, RawNetlinkSocket } from "../../seams/netlink_socket.ts";
import { libraryPaths } from "../../seams/native_library.ts";

/** Result of {@link openNetlinkDeleter}. */
export type NetlinkOpen =
  | {
    /** The libraries are loaded and a netlink socket is open. */
    readonly kind: "ok";
    /** The deleter; dispose it to close the socket and unload the libraries. */
    readonly deleter: Deleter & Disposable;
  }
  | {
    /** The backend cannot be used here; fall back to the CLI. */
    readonly kind: "unavailable";
    /** One line saying why, e.g. `libmnl.so.0 not found`. */
    readonly reason: string;
  };

/** Options of {@link openNetlinkDeleter}. */
export interface NetlinkOptions {
  /**
   * Paths tried in order for libmnl; a bare file name is left to the dynamic loader's search.
   * @default {DEFAULT_LIBRARY_PATHS}
   */
  readonly libraryPaths?: readonly string[];
}

/** Where libmnl is looked for by default: the multiarch and lib64 directories. */
export const DEFAULT_LIBRARY_PATHS: readonly string[] = libraryPaths("libmnl.so.0");

/**
 * Loads libmnl and libc and opens a netlink socket in the current network namespace. Never
 * throws: a missing library or permission gives `{ kind: "unavailable", reason }`.
 *
 * @example Fall back to the CLI when netlink is unavailable
 * ```ts ignore
 * import { openNetlinkDeleter } from "./netlink_deleter.ts";
 * const opened = openNetlinkDeleter();
 * if (opened.kind === "ok") {
 *   using deleter = opened.deleter;
 *   await deleter.delete([]);
 * } else {
 *   console.warn(`netlink deletion unavailable: ${opened.reason}`);
 * }
 * ```
 */
export function openNetlinkDeleter(options: NetlinkOptions = {}): NetlinkOpen {
  const paths = options.libraryPaths ?? DEFAULT_LIBRARY_PATHS;
  const opened = openNetlinkLibraries(paths);
  if (opened.kind !== "ok") return opened;
  const libraries = opened.libraries;
  // Room for a whole datagram of GET answers, each of which the kernel accounts at a page or so.
  const socket = RawNetlinkSocket.open(libraries, {
    receiveBufferBytes: DELETES_PER_SEND * 4096,
  });
  if (typeof socket === "string") {
    libraries[Symbol.dispose]();
    return { kind: "unavailable", reason: socket };
  }
  return { kind: "ok", deleter: createNetlinkDeleter(socket, libraries) };
}

/** The part of a netlink socket the deleter uses (a fake in tests). */
export type DeleteSocket = Pick<RawNetlinkSocket, "send" | "receiveNow" | "close">;

/**
 * The deleter over an open socket: the lower-level constructor behind {@link openNetlinkDeleter},
 * which tests drive with a fake socket. Disposing of it closes the socket, then `libraries`.
 */
export function createNetlinkDeleter(
  socket: DeleteSocket,
  libraries?: Disposable,
): Deleter & Disposable {
  return new NetlinkDeleter(socket, libraries);
}

/** How long a deletion batch may hold the event loop before it yields, in ms. */
const YIELD_EVERY_MS = 20;
const CLOSED_REASON = "Cannot delete as the netlink deleter is closed";

class NetlinkDeleter implements Deleter, Disposable {
  readonly name = "netlink";
  readonly #socket: DeleteSocket;
  readonly #libraries: Disposable | undefined;
  readonly #buffer = new Uint8Array(64 * 1024);
  #closed = false;

  constructor(socket: DeleteSocket, libraries: Disposable | undefined) {
    this.#socket = socket;
    this.#libraries = libraries;
  }

  async delete(
    flows: readonly DeleteTarget[],
    signal?: AbortSignal,
    progress?: () => void,
  ): Promise<DeleteOutcome> {
    const outcome: Outcome = { deleted: [], gone: [], failed: [] };
    let yieldedAt = performance.now();
    for (let from = 0; from < flows.length; from += DELETES_PER_SEND) {
      // Each round is synchronous FFI: hand the event loop back now and then, so that SIGTERM and
      // the probes are served during a batch of tens of thousands of flows.
      if (performance.now() - yieldedAt > YIELD_EVERY_MS) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        yieldedAt = performance.now();
        progress?.();
      }
      const chunk = flows.slice(from, from + DELETES_PER_SEND);
      const unsent = this.#closed ? CLOSED_REASON : signal?.aborted ? STOPPING_REASON : undefined;
      if (unsent !== undefined) {
        for (const flow of chunk) outcome.failed.push({ flow, reason: unsent });
        continue;
      }
      this.#round(chunk, outcome);
    }
    return outcome;
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    this.#libraries?.[Symbol.dispose]();
  }

  /** One GET per flow, then one DELETE per flow the GET still showed as judged. */
  #round(flows: readonly DeleteTarget[], outcome: Outcome): void {
    const asked: DeleteTarget[] = [];
    for (const flow of flows) {
      const reason = unencodable(flow);
      if (reason === undefined) asked.push(flow);
      else outcome.failed.push({ flow, reason });
    }
    if (asked.length === 0) return;
    const answers: GetAnswer[] = [];
    getFlows(this.#socket, asked, Math.floor(Date.now() / 1000), (i, answer) => {
      answers[i] = answer;
    }, this.#buffer);
    const doomed: DeleteTarget[] = [];
    const entries: DeleteEntry[] = [];
    asked.forEach((flow, i) => {
      const verdict = guard(flow, answers[i]);
      if (verdict.kind === "delete") {
        doomed.push(flow);
        entries.push(verdict.id === undefined ? { flow } : { flow, id: verdict.id });
      } else if (verdict.kind === "gone") {
        outcome.gone.push(flow);
      } else {
        outcome.failed.push({ flow, reason: verdict.reason });
      }
    });
    deleteEntries(this.#socket, entries, (i, answer: DeleteAnswer) => {
      const flow = doomed[i]!;
      if (answer.kind === "deleted") outcome.deleted.push(flow);
      else if (answer.kind === "gone") outcome.gone.push(flow);
      else outcome.failed.push({ flow, reason: answer.reason });
    }, this.#buffer);
  }
}

/** {@link DeleteOutcome}, while it is filled. */
interface Outcome {
  readonly deleted: DeleteTarget[];
  readonly gone: DeleteTarget[];
  readonly failed: DeleteFailure[];
}

/** What the state guard makes of a GET's answer. */
type GuardVerdict =
  | { readonly kind: "delete"; readonly id: number | undefined }
  | { readonly kind: "gone" }
  | { readonly kind: "failed"; readonly reason: string };

/**
 * Delete only the entry that was judged: still an unreplied `SYN_SENT` entry (the GET's reading
 * is a candidate), of the same reply tuple and zones, and of the same kernel id when the flow
 * was judged with one. Anything else is not the flow asked for, which is gone.
 */
function guard(flow: DeleteTarget, answer: GetAnswer | undefined): GuardVerdict {
  if (answer === undefined) return { kind: "failed", reason: "Cannot look up flow: no answer" };
  if (answer.kind === "failed") {
    return { kind: "failed", reason: `Cannot look up flow: ${answer.reason}` };
  }
  if (answer.kind !== "candidate") return { kind: "gone" };
  const seen = answer.candidate;
  // Same original tuple but another reply tuple (NATed since) or zone: not our flow.
  if (
    !sameTuple(seen.flow.reply, flow.reply, flow.family) || seen.flow.zone !== flow.zone ||
    seen.flow.origZone !== flow.origZone || seen.flow.replyZone !== flow.replyZone
  ) return { kind: "gone" };
  // Another id: the judged entry was deleted and its tuple taken by a new one since.
  if (flow.id !== undefined && seen.id !== undefined && seen.id !== flow.id) {
    return { kind: "gone" };
  }
  return { kind: "delete", id: seen.id ?? flow.id };
}

function sameTuple(a: Tuple, b: Tuple, family: Flow["family"]): boolean {
  return a.sport === b.sport && a.dport === b.dport &&
    sameAddress(a.src, b.src, family) && sameAddress(a.dst, b.dst, family);
}

/** Texts of one address compare equal however they are written (IPv6 has several forms). */
function sameAddress(a: string, b: string, family: Flow["family"]): boolean {
  if (a === b) return true;
  const x = addressBytes(a, family);
  const y = addressBytes(b, family);
  return x !== undefined && y !== undefined && x.every((byte, i) => byte === y[i]);
}

/** Why a flow cannot be put into a request, or `undefined` when it can. */
function unencodable(flow: DeleteTarget): string | undefined {
  const o = flow.original;
  const r = flow.reply;
  // The original tuple is what goes to the kernel; the reply tuple is only compared with the
  // kernel's, which an address of another family never equals.
  if (
    addressBytes(o.src, flow.family) === undefined || addressBytes(o.dst, flow.family) === undefined
  ) {
    return `Cannot encode flow as ${flow.family}: ${tupleText(o, r)}`;
  }
  if ([o.sport, o.dport, r.sport, r.dport].some((p) => !fits(p, 0xffff))) {
    return `Cannot encode flow ports: ${tupleText(o, r)}`;
  }
  const zones = [flow.zone, flow.origZone ?? 0, flow.replyZone ?? 0];
  if (!zones.every((z) => fits(z, 0xffff))) {
    return `Cannot encode zone as u16: current value is ${zones}`;
  }
  if (flow.id !== undefined && !fits(flow.id, 0xffffffff)) {
    return `Cannot encode id as u32: current value is ${flow.id}`;
  }
  return undefined;
}

function fits(value: number, max: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= max;
}

function tupleText(o: Tuple, r: Tuple): string {
  const side = (t: Tuple) => `${hostPort(t.src, t.sport)}>${hostPort(t.dst, t.dport)}`;
  return `current value is ${side(o)} ${side(r)}`;
}
