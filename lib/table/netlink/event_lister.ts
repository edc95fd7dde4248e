/**
 * The event-driven candidate source: a {@link Lister} whose cost follows connection attempts, not
 * the size of the table. The agent's loop and the tracker's rules are unchanged; only what one
 * "listing" does changes:
 *
 * - A **resync** is a full status-filtered dump (the netlink lister): at the first listing, at
 *   once after the kernel dropped events (`ENOBUFS`), after a failed round, and every
 *   `resyncPeriodMs` as the source of truth. Its candidates become the tracked set. It also
 *   stands in for a round of GETs that would cost more than the latest dump did (thousands of
 *   lingering entries on a small table), so event tracking never costs more than dumping.
 * - Between resyncs, new unreplied TCP entries come from the kernel's NEW events (filtered in the
 *   kernel to the operator's blocks), and each listing is one GET per tracked entry: the answer is
 *   the entry as a dump would list it (its timer read inside the listing's window, so the renewal
 *   rule keeps its no-false-renewal guarantee), or says it saw a reply or is gone, which ends its
 *   tracking.
 *
 * The tracker keeps its state across both kinds of listing, since each lists every live
 * candidate; a failed listing forgets nothing (the agent keeps the tracker as it was) and the
 * next listing resyncs.
 *
 * @module
 */
import type { Cidr } from "../../core/cidr.ts";
import type { Candidate, Flow } from "../../core/flow.ts";
import type { Dump, Lister, ListOptions } from "../lister.ts";
import { ConntrackEvents, type EventCounts, type EventSink } from "./ct_events.ts";
import { type GetAnswer, getFlows, GETS_PER_SEND } from "./ct_get.ts";
import {
  openNetlinkLibraries,
  RawNetlinkSocket,
  readSmallFile,
  type Received,
} from "../../seams/netlink_socket.ts";

/** The part of the event subscription the lister uses (a fake in tests). */
export interface EventSource extends AsyncDisposable {
  /** Reads events into `sink` until disposed. */
  run(sink: EventSink): Promise<void>;
  /** Reads what is queued now, without waiting. */
  drain(sink: EventSink): number;
  /** What was read and lost. */
  readonly counts: EventCounts;
}

/** The part of a netlink socket the GETs use (a fake in tests). */
export interface GetSocket {
  /** Sends netlink messages. */
  send(request: Uint8Array): boolean;
  /** Takes one queued datagram without waiting. */
  receiveNow(buffer: Uint8Array): Received;
}

/** Asks the kernel for each flow (injected so that tests need no kernel). */
export type GetRound = (
  flows: readonly Flow[],
  nowSeconds: number,
  onAnswer: (index: number, answer: GetAnswer) => void,
) => boolean;

/** How the event lister behaves. */
export interface EventListerOptions {
  /**
   * Period of the full resync dump, in milliseconds.
   * @default {300000}
   */
  readonly resyncPeriodMs?: number;
  /**
   * Tracked entries beyond which events are no longer followed one by one: the lister then
   * lists by dumps until a dump finds fewer. Thousands of GETs a period cost about what a dump of
   * a 100k-entry table does, and hold more memory (bench/RESULTS.md, "Event tracking").
   * @default {2000}
   */
  readonly maxTracked?: number;
  /** Monotonic milliseconds (the agent's clock). */
  readonly monotonicMs: () => number;
  /**
   * Wall-clock milliseconds, for `delta-time`.
   * @default {Date.now}
   */
  readonly wallMs?: () => number;
  /** Told of each resync dump as it starts, with its reason (for the log). */
  readonly onResync?: (reason: ResyncReason) => void;
}

/** Why the next listing is a resync, for logs and metrics. */
export type ResyncReason =
  | "start"
  | "lost events"
  | "period"
  | "failed round"
  | "too many"
  | "cheaper";

/** What the event lister counted, for metrics. */
export interface EventTrackingCounts extends EventCounts {
  /** Resync dumps started. */
  readonly resyncs: number;
  /** Entries tracked now. */
  readonly tracked: number;
  /** GETs sent. */
  readonly gets: number;
}

/**
 * Lists by events, GETs and resync dumps. Dispose of it to stop the event reader and dispose of
 * its event source (from {@link openEventLister}: the sockets and libraries too); the dump lister
 * stays the caller's.
 */
export class EventLister implements Lister, AsyncDisposable {
  /** The backend's name, as logs and metrics give it. */
  readonly name = "events";
  readonly #dump: Lister;
  readonly #events: EventSource;
  readonly #get: GetRound;
  readonly #resyncPeriodMs: number;
  readonly #maxTracked: number;
  readonly #monotonicMs: () => number;
  readonly #wallMs: () => number;
  readonly #onResync: ((reason: ResyncReason) => void) | undefined;
  #tracked = new Map<string, Flow>();
  #accept: ((flow: Flow) => boolean) | undefined;
  #resync: ResyncReason | undefined = "start";
  #lastResync = -Infinity;
  #resyncs = 0;
  #told: ResyncReason | undefined;
  /** What the latest complete resync dump took, ms: what a GET round is weighed against. */
  #dumpMs = Infinity;
  /** What one GET takes, ms (a running average); 0 until measured. */
  #perGetMs = 0;
  #gets = 0;
  #running: Promise<void> | undefined;
  readonly #sink: EventSink;

  /**
   * @param dump The status-filtered dump (the netlink lister).
   * @param events The open subscription (NEW events).
   * @param get One round of GETs ({@link socketGetRound} over a socket).
   */
  constructor(dump: Lister, events: EventSource, get: GetRound, options: EventListerOptions) {
    this.#dump = dump;
    this.#events = events;
    this.#get = get;
    this.#resyncPeriodMs = options.resyncPeriodMs ?? 300_000;
    this.#maxTracked = options.maxTracked ?? 2000;
    this.#monotonicMs = options.monotonicMs;
    this.#wallMs = options.wallMs ?? Date.now;
    this.#onResync = options.onResync;
    this.#sink = {
      onNew: (candidates) => this.#track(candidates),
      onLost: () => {
        this.#resync = "lost events";
      },
    };
  }

  /** Starts reading events in the background (before the first listing, so none is missed). */
  start(onError?: (reason: string) => void): void {
    if (this.#running !== undefined) return;
    this.#running = this.#events.run(onError ? { ...this.#sink, onError } : this.#sink);
  }

  /** Why the next listing will be a resync dump, or undefined when it will be GETs. */
  get pendingResync(): ResyncReason | undefined {
    return this.#resync;
  }

  /** Counts for metrics. */
  get counts(): EventTrackingCounts {
    return {
      ...this.#events.counts,
      resyncs: this.#resyncs,
      tracked: this.#tracked.size,
      gets: this.#gets,
    };
  }

  /** Lists every live candidate: by a resync dump when one is due, else by GETs. */
  async list(options: ListOptions): Promise<Dump> {
    this.#accept = options.accept;
    // Take what is queued, so that an entry created before this listing is in it.
    this.#events.drain(this.#sink);
    const now = this.#monotonicMs();
    if (this.#resync === undefined && now - this.#lastResync >= this.#resyncPeriodMs) {
      this.#resync = "period";
    }
    // Many lingering entries can make a GET each cost more than one dump: then dump instead.
    if (this.#resync === undefined && this.#tracked.size * this.#perGetMs > this.#dumpMs) {
      this.#resync = "cheaper";
    }
    const reason = this.#resync;
    if (reason === undefined) {
      this.#told = undefined;
      return await this.#getRound(options);
    }
    // A standing reason (too many, cheaper) is told once, not every period it lasts.
    if (reason !== this.#told) this.#onResync?.(reason);
    this.#told = reason === "too many" || reason === "cheaper" ? reason : undefined;
    return await this.#resyncDump(options, now);
  }

  async #resyncDump(options: ListOptions, now: number): Promise<Dump> {
    this.#resyncs++;
    this.#resync = undefined;
    // Events read during the dump go to the fresh set too; the old set is kept until the dump
    // succeeds, so a failed dump forgets nothing.
    const before = this.#tracked;
    const fresh = new Map<string, Flow>();
    this.#tracked = fresh;
    const started = this.#monotonicMs();
    // The consumer's time (the tracker, the nat rules) is not the dump's.
    let consumerMs = 0;
    let tooMany = false;
    const dump = await this.#dump.list({
      ...options,
      onBatch: async (batch) => {
        for (const c of batch) {
          // Beyond the limit the next listing is a dump again, so the set would never be asked
          // about: holding every candidate of a large table in it only held memory (at 1M
          // entries with 5% stale, 50,000 flows a period).
          if (fresh.size < this.#maxTracked) fresh.set(c.key, c.flow);
          else tooMany = true;
        }
        const handed = this.#monotonicMs();
        await options.onBatch(batch);
        consumerMs += this.#monotonicMs() - handed;
      },
    });
    if (dump.kind === "failed") {
      for (const [key, flow] of before) if (!fresh.has(key)) fresh.set(key, flow);
      this.#resync ??= "failed round";
      return dump;
    }
    this.#lastResync = now;
    this.#dumpMs = Math.max(0, this.#monotonicMs() - started - consumerMs);
    if (tooMany) this.#resync ??= "too many";
    return dump;
  }

  async #getRound(options: ListOptions): Promise<Dump> {
    const keys = [...this.#tracked.keys()];
    if (keys.length === 0) return { kind: "ok", lines: 0, unparsable: undefined };
    let failed = 0;
    let firstReason = "";
    let getMs = 0;
    this.#gets += keys.length;
    // Chunk by chunk, each handed on as soon as it is read (as a dump's batches are), so that a
    // round's candidates die young instead of all living until it ends.
    for (let from = 0; from < keys.length; from += GETS_PER_SEND) {
      if (options.signal?.aborted) return { kind: "failed", reason: "aborted" };
      const chunk = keys.slice(from, from + GETS_PER_SEND);
      const flows = chunk.map((k) => this.#tracked.get(k)!);
      const live: Candidate[] = [];
      const started = this.#monotonicMs();
      const sent = this.#get(flows, Math.floor(this.#wallMs() / 1000), (index, answer) => {
        const key = chunk[index]!;
        switch (answer.kind) {
          case "candidate":
            if (this.#accept === undefined || this.#accept(answer.candidate.flow)) {
              live.push(answer.candidate);
            } else {
              this.#tracked.delete(key);
            }
            break;
          case "moved-on":
          case "gone":
            this.#tracked.delete(key);
            break;
          case "failed":
            if (failed++ === 0) firstReason = answer.reason;
        }
      });
      getMs += this.#monotonicMs() - started;
      if (!sent || failed > 0) {
        // The tracker keeps what it knew; the next listing is a dump, the source of truth.
        this.#resync = "failed round";
        return {
          kind: "failed",
          reason: `${failed} of ${keys.length} conntrack GETs failed: ${firstReason}`,
        };
      }
      if (live.length > 0) await options.onBatch(live);
      // Between chunks, let the event loop run (probes, signals) and the collector with it.
      if (from + GETS_PER_SEND < keys.length) await new Promise((r) => setTimeout(r, 0));
    }
    const perGetMs = getMs / keys.length;
    this.#perGetMs = this.#perGetMs === 0 ? perGetMs : (this.#perGetMs + perGetMs) / 2;
    return { kind: "ok", lines: keys.length, unparsable: undefined };
  }

  #track(candidates: readonly Candidate[]): void {
    const accept = this.#accept;
    for (const c of candidates) {
      if (accept !== undefined && !accept(c.flow)) continue;
      if (this.#tracked.size >= this.#maxTracked) {
        this.#resync ??= "too many";
        return;
      }
      this.#tracked.set(c.key, c.flow);
    }
  }

  /** Stops the event reader and closes the subscription. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#events[Symbol.asyncDispose]();
    await this.#running;
  }
}

/**
 * One round of GETs over `socket`, as {@link EventLister} takes it.
 *
 * @example
 * ```ts ignore
 * const lister = new EventLister(dump, events, socketGetRound(socket), { monotonicMs });
 * ```
 */
export function socketGetRound(socket: GetSocket): GetRound {
  const buffer = new Uint8Array(64 * 1024);
  return (flows, nowSeconds, onAnswer) => getFlows(socket, flows, nowSeconds, onAnswer, buffer);
}

/** Result of {@link openEventLister}. */
export type EventListerOpen =
  | {
    /** Subscribed: the lister reads events once started. */
    readonly kind: "ok";
    /** The lister; dispose of it to unsubscribe and close its sockets. */
    readonly lister: EventLister;
  }
  | {
    /** Events cannot be had here; list by dumps. */
    readonly kind: "unavailable";
    /** One line saying why. */
    readonly reason: string;
  };

/** What {@link openEventLister} needs beyond {@link EventListerOptions}. */
export interface OpenEventListerOptions extends EventListerOptions {
  /** The status-filtered dump used to resync (the netlink lister). */
  readonly dump: Lister;
  /** Destination blocks the kernel filter keeps (all TCP when empty). */
  readonly destinations: readonly Cidr[];
  /**
   * Receive buffer of the event socket, in bytes.
   * @default {8388608}
   */
  readonly receiveBufferBytes?: number;
  /**
   * Reads `net.netfilter.nf_conntrack_events` (injected for tests); undefined when unreadable.
   * By default it is read through libc, since Deno refuses `/proc/sys` without `--allow-all`.
   */
  readonly eventsSysctl?: () => string | undefined;
}

/** Where the namespace's conntrack event setting is read. */
export const EVENTS_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_events";

/**
 * Subscribes to new-entry events and opens the GET socket, or says why event tracking cannot be
 * had (libraries or `--allow-ffi` missing, no `CAP_NET_ADMIN`, events turned off by
 * `nf_conntrack_events=0`, a refused filter).
 */
export function openEventLister(options: OpenEventListerOptions): EventListerOpen {
  const opened = openNetlinkLibraries();
  if (opened.kind !== "ok") return opened;
  const libs = opened.libraries;
  const setting = options.eventsSysctl?.() ?? readSmallFile(libs, EVENTS_SYSCTL);
  if (setting?.trim() === "0") {
    libs[Symbol.dispose]();
    return { kind: "unavailable", reason: "net.netfilter.nf_conntrack_events is 0" };
  }
  const events = ConntrackEvents.open(libs, {
    groups: ["new"],
    destinations: options.destinations,
    ...(options.receiveBufferBytes === undefined
      ? {}
      : { receiveBufferBytes: options.receiveBufferBytes }),
    ...(options.wallMs === undefined ? {} : { wallMs: options.wallMs }),
  });
  if (typeof events === "string") {
    libs[Symbol.dispose]();
    return { kind: "unavailable", reason: events };
  }
  // Room for a full round of answers (each under 1 KiB of socket accounting).
  const socket = RawNetlinkSocket.open(libs, { receiveBufferBytes: GETS_PER_SEND * 4096 });
  if (typeof socket === "string") {
    void events[Symbol.asyncDispose]().finally(() => libs[Symbol.dispose]());
    return { kind: "unavailable", reason: socket };
  }
  const owned: AsyncDisposable = {
    async [Symbol.asyncDispose]() {
      await events[Symbol.asyncDispose]();
      socket.close();
      libs[Symbol.dispose]();
    },
  };
  const source: EventSource = {
    run: (sink) => events.run(sink),
    drain: (sink) => events.drain(sink),
    get counts() {
      return events.counts;
    },
    [Symbol.asyncDispose]: () => owned[Symbol.asyncDispose](),
  };
  return {
    kind: "ok",
    lister: new EventLister(options.dump, source, socketGetRound(socket), options),
  };
}
