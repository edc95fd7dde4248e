/**
 * A subscription to the kernel's conntrack events (ctnetlink multicast groups), read with the
 * listing's codec into the same {@link Candidate}s a dump gives. The kernel filters the events
 * first (`bpf_filter.ts`), so only TCP events to the operator's destinations are queued.
 *
 * A full socket makes the kernel drop events; the next receive then fails with `ENOBUFS`, which
 * is reported as lost events (the caller resyncs with a dump). Waiting runs off the event loop and
 * closing ends it at once (`lib/seams/netlink_socket.ts`).
 *
 * @module
 */
import type { Cidr } from "../../core/cidr.ts";
import { errnoName, readDumpBuffer } from "./ctnetlink.ts";
import type { Candidate } from "../../core/flow.ts";
import { eventFilterProgram } from "./bpf_filter.ts";
import {
  encodeProgram,
  ENOBUFS,
  type NetlinkLibraries,
  RawNetlinkSocket,
} from "../../seams/netlink_socket.ts";

/** A conntrack event group: new entries, their changes, their removal. */
export type EventGroup = "new" | "update" | "destroy";

/** `NFNLGRP_CONNTRACK_*`, the kernel's group numbers. */
const GROUP_NUMBERS: Readonly<Record<EventGroup, number>> = { new: 1, update: 2, destroy: 3 };

const NLMSG_HEADER = 16;
const CT_NEW = (1 << 8) | 0;
const CT_DELETE = (1 << 8) | 2;
/** `NLM_F_CREATE`: set on the event of an entry's creation, not on its updates. */
const NLM_F_CREATE = 0x400;

/** How the subscription is made. */
export interface EventSubscriptionOptions {
  /**
   * Groups joined.
   * @default {["new"]}
   */
  readonly groups?: readonly EventGroup[];
  /**
   * Socket receive buffer asked for, in bytes: events that arrive while it is full are lost.
   * Each queued event takes about 1 KiB of it.
   * @default {8388608}
   */
  readonly receiveBufferBytes?: number;
  /**
   * Destination blocks kept by the kernel filter; every TCP event when empty. Undefined attaches
   * no filter at all (every event reaches the agent).
   * @default {[]}
   */
  readonly destinations?: readonly Cidr[] | undefined;
  /**
   * Milliseconds to let events gather after a batch was read, so that a busy node wakes the
   * agent at most about `1000 / batchDelayMs` times a second (each wake costs far more than
   * reading one more event: bench/RESULTS.md, "Event tracking"). The socket holds what comes in
   * meanwhile.
   * @default {100}
   */
  readonly batchDelayMs?: number;
  /** Wall-clock milliseconds, for `delta-time` (injected for tests). */
  readonly wallMs?: () => number;
}

/** Receives what the subscription reads. */
export interface EventSink {
  /** New unreplied TCP `SYN_SENT` entries of one batch of events (may be empty). */
  onNew(candidates: readonly Candidate[]): void;
  /** The kernel dropped events: what is known is incomplete until a dump. */
  onLost(): void;
  /** A receive failed for another reason (logged by the caller; reading goes on). */
  onError?(reason: string): void;
}

/** Counts since the subscription opened. */
export interface EventCounts {
  /** Event messages read, by kind. */
  readonly received: { readonly new: number; readonly update: number; readonly destroy: number };
  /** Overflows reported by the kernel (`ENOBUFS`): each lost one or more events. */
  readonly lost: number;
}

/** Datagrams read per wake before waiting again, so that a flood cannot hold the event loop. */
const DATAGRAMS_PER_WAKE = 512;

/**
 * The open subscription. Call {@link ConntrackEvents.run} once; dispose of it to stop and close.
 */
export class ConntrackEvents implements AsyncDisposable {
  readonly #socket: RawNetlinkSocket;
  readonly #wallMs: () => number;
  readonly #batchDelayMs: number;
  readonly #buffer = new Uint8Array(256 * 1024);
  readonly #received = { new: 0, update: 0, destroy: 0 };
  #lost = 0;
  #running: Promise<void> | undefined;
  #closing = false;

  private constructor(socket: RawNetlinkSocket, wallMs: () => number, batchDelayMs: number) {
    this.#socket = socket;
    this.#wallMs = wallMs;
    this.#batchDelayMs = batchDelayMs;
  }

  /**
   * Joins the groups with a filtered, sized socket, or says why it cannot (no permission, a
   * kernel without conntrack events, a refused filter).
   */
  static open(
    libs: NetlinkLibraries,
    options: EventSubscriptionOptions = {},
  ): ConntrackEvents | string {
    const groups = options.groups ?? ["new"];
    const mask = groups.reduce((m, g) => m | (1 << (GROUP_NUMBERS[g] - 1)), 0);
    const socket = RawNetlinkSocket.open(libs, {
      groups: mask,
      receiveBufferBytes: options.receiveBufferBytes ?? 8 * 1024 * 1024,
    });
    if (typeof socket === "string") return socket;
    const destinations = "destinations" in options ? options.destinations : [];
    if (destinations !== undefined) {
      let program: Uint8Array;
      try {
        program = encodeProgram(eventFilterProgram(destinations));
      } catch (error) {
        socket.close();
        return (error as Error).message;
      }
      if (!socket.attachFilter(program)) {
        socket.close();
        return "Cannot attach the conntrack event filter as the kernel refused it";
      }
    }
    return new ConntrackEvents(socket, options.wallMs ?? Date.now, options.batchDelayMs ?? 100);
  }

  /** The receive buffer the kernel granted, in bytes (its doubled accounting figure). */
  get receiveBufferBytes(): number {
    return this.#socket.receiveBufferBytes();
  }

  /** What was read and lost so far. */
  get counts(): EventCounts {
    return { received: { ...this.#received }, lost: this.#lost };
  }

  /** Reads events into `sink` until disposed. Call once; resolves when closed. */
  run(sink: EventSink): Promise<void> {
    if (this.#running !== undefined) {
      throw new Error("Cannot run a conntrack event subscription twice: it is already running");
    }
    this.#running = this.#loop(sink);
    return this.#running;
  }

  /**
   * Reads whatever is queued now, without waiting, into `sink` (the caller's catch-up before it
   * relies on what it knows). Returns the datagrams read.
   */
  drain(sink: EventSink): number {
    let datagrams = 0;
    for (; datagrams < DATAGRAMS_PER_WAKE * 8; datagrams++) {
      if (this.#closing) break;
      const got = this.#socket.receiveNow(this.#buffer);
      if (got.kind === "empty") break;
      if (got.kind === "error") {
        if (got.errno === ENOBUFS) {
          this.#lost++;
          sink.onLost();
        } else {
          sink.onError?.(`conntrack event receive failed: ${errnoName(got.errno)}`);
          break;
        }
        continue;
      }
      sink.onNew(this.#read(got.length));
    }
    return datagrams;
  }

  async #loop(sink: EventSink): Promise<void> {
    while (!this.#closing) {
      if ((await this.#socket.waitReadable()) === "closed") return;
      this.drain(sink);
      if (this.#batchDelayMs > 0 && !this.#closing) {
        await new Promise((resolve) => setTimeout(resolve, this.#batchDelayMs));
      }
    }
  }

  #read(length: number): Candidate[] {
    const view = new DataView(this.#buffer.buffer);
    let candidates: Candidate[] = [];
    for (let at = 0; at + NLMSG_HEADER <= length;) {
      const size = view.getUint32(at, true);
      if (size < NLMSG_HEADER || at + size > length) break;
      const type = view.getUint16(at + 4, true);
      if (type === CT_NEW) {
        if ((view.getUint16(at + 6, true) & NLM_F_CREATE) !== 0) {
          this.#received.new++;
          const read = readDumpBuffer(
            this.#buffer.subarray(at, at + size),
            size,
            view.getUint32(at + 8, true),
            Math.floor(this.#wallMs() / 1000),
          );
          if (read.kind === "entries" && read.candidates.length > 0) {
            candidates = candidates.concat(read.candidates);
          }
        } else {
          this.#received.update++;
        }
      } else if (type === CT_DELETE) {
        this.#received.destroy++;
      }
      at += (size + 3) & ~3;
    }
    return candidates;
  }

  /** Stops reading (a pending wait ends at once) and closes the socket. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closing = true;
    await this.#socket.closeAsync();
    await this.#running;
  }
}
