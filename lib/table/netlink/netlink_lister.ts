/**
 * The listing backend that asks the kernel directly: a ctnetlink dump through libmnl
 * (`Deno.dlopen`, `--allow-ffi`), read by `ctnetlink.ts`, with no conntrack process, no text and
 * no pipe. It sees what `conntrack -L -p tcp -u UNREPLIED -o id` sees (the same kernel filter)
 * and costs less than that listing alone (bench/RESULTS.md, "A listing of our own").
 *
 * The receive runs as non-blocking FFI, on a helper thread, so the kernel's walk of a large
 * table never blocks the event loop: signals and probes are served during a listing. A pending
 * receive cannot be interrupted, so the socket carries a receive timeout (`SO_RCVTIMEO`, set
 * through libc): a kernel that stops answering fails the listing after that long, as a
 * `conntrack -L` that hangs is killed, instead of holding the loop forever.
 *
 * @module
 */
import type { Candidate } from "../../core/flow.ts";
import { dumpRequest, errnoName, readDumpBuffer } from "./ctnetlink.ts";
import {
  lastErrno,
  type NetlinkLibraries,
  openNetlinkLibraries,
} from "../../seams/netlink_socket.ts";
import type { Dump, Lister, ListOptions } from "../lister.ts";

/**
 * Result of {@link openNetlinkLister}: the lister, or why the backend cannot be used. Callers that
 * only list take it as `NetlinkListerOpen` (any {@link Lister}), which tests can fake.
 */
export type NetlinkListerOpen<L extends Lister & Disposable = Lister & Disposable> =
  | {
    /** libmnl is loaded. */
    readonly kind: "ok";
    /** The lister; dispose it to unload the libraries. */
    readonly lister: L;
  }
  | {
    /** The backend cannot be used here; fall back to the CLI. */
    readonly kind: "unavailable";
    /** One line saying why, e.g. `libmnl.so.0 not found`. */
    readonly reason: string;
  };

/** Options of {@link openNetlinkLister}. */
export interface NetlinkListerOptions {
  /**
   * Paths tried in order; a bare file name is left to the dynamic loader's search.
   * @default {libraryPaths("libmnl.so.0")}
   */
  readonly libraryPaths?: readonly string[];
  /** Wall-clock milliseconds, for `delta-time` (injected for tests). */
  readonly wallMs?: () => number;
  /**
   * How long one receive may wait for the kernel before the listing fails: the same limit as the
   * `cli` listing's. Each receive normally takes about a millisecond, even on a 1M-entry table.
   * @default {300000}
   */
  readonly receiveTimeoutMs?: number;
}

/** socket() fails with these when the process or the system is out of descriptors. */
const EMFILE = 24;
const ENFILE = 23;
/** `SOL_SOCKET` and `SO_RCVTIMEO` (its 64-bit `timeval` form) on x86-64 and arm64 Linux. */
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;

const NETLINK_NETFILTER = 12;
/** The kernel fills at most 32 KiB per message batch; twice that leaves room. */
const RECEIVE_SIZE = 64 * 1024;

/**
 * Loads libmnl and returns the netlink lister, or why it cannot be used (library missing,
 * `--allow-ffi` not granted). Nothing is opened until the first listing.
 */
export function openNetlinkLister(
  options: NetlinkListerOptions = {},
): NetlinkListerOpen<NetlinkLister> {
  const opened = openNetlinkLibraries(options.libraryPaths);
  if (opened.kind !== "ok") return opened;
  return {
    kind: "ok",
    lister: new NetlinkLister(
      opened.libraries,
      options.wallMs ?? Date.now,
      options.receiveTimeoutMs ?? 300_000,
    ),
  };
}

/**
 * A bound netlink socket of the kind each listing opens, whose receives give up after the lister's
 * receive timeout. {@link NetlinkLister.openSocket} opens one; dispose of it to close it.
 */
export class NetlinkSocket implements Disposable {
  readonly #mnl: NetlinkLibraries["mnl"];
  readonly #socket: Deno.PointerObject;
  readonly #timeoutMs: number;
  #closed = false;

  private constructor(
    mnl: NetlinkLibraries["mnl"],
    socket: Deno.PointerObject,
    timeoutMs: number,
  ) {
    this.#mnl = mnl;
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
  }

  /** Opens, binds and limits a socket, or says which step failed. */
  static open(libs: NetlinkLibraries, timeoutMs: number): NetlinkSocket | string {
    const { mnl, libc } = libs;
    const socket = mnl.mnl_socket_open(NETLINK_NETFILTER);
    // Out of descriptors (EMFILE), this listing fails and the next one tries again.
    if (socket === null) return `Cannot open a netlink socket: ${socketErrno(libs)}`;
    const opened = new NetlinkSocket(mnl, socket, timeoutMs);
    if (mnl.mnl_socket_bind(socket, 0, 0) < 0) {
      opened[Symbol.dispose]();
      return "Cannot bind a netlink socket";
    }
    // struct timeval { time_t tv_sec; suseconds_t tv_usec; }: two 64-bit words, native order.
    const timeval = new Uint8Array(
      new BigInt64Array([
        BigInt(Math.floor(timeoutMs / 1000)),
        BigInt((timeoutMs % 1000) * 1000),
      ]).buffer,
    );
    const fd = mnl.mnl_socket_get_fd(socket);
    if (libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeval, timeval.length) !== 0) {
      opened[Symbol.dispose]();
      return "Cannot set the netlink socket's receive timeout";
    }
    return opened;
  }

  /** Sends one request; false when the kernel did not take it. */
  send(request: Uint8Array): boolean {
    return Number(this.#mnl.mnl_socket_sendto(this.#socket, request, BigInt(request.length))) >= 0;
  }

  /**
   * Receives into `buffer` off the event loop: the number of bytes, or why nothing came. A
   * pending receive cannot be interrupted, so close the socket only after it has returned.
   */
  async receive(buffer: Uint8Array): Promise<number | string> {
    const asked = performance.now();
    const got = Number(
      await this.#mnl.mnl_socket_recvfrom(this.#socket, buffer, BigInt(buffer.length)),
    );
    if (got > 0) return got;
    // errno is not readable here (the receive ran on a helper thread, and errno is per thread),
    // so a failure at the timeout is taken for it.
    const waited = performance.now() - asked;
    return waited >= this.#timeoutMs * 0.9
      ? `the kernel sent nothing for ${Math.round(waited / 100) / 10} s; listing abandoned`
      : "netlink receive failed";
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mnl.mnl_socket_close(this.#socket);
  }
}

/**
 * The netlink lister. One listing at a time (the agent's loop never overlaps two): the receive
 * buffer is shared, and disposing of the lister during a listing would unload the library under a
 * pending receive.
 */
export class NetlinkLister implements Lister, Disposable {
  /** The backend's name, as logs and metrics give it. */
  readonly name = "netlink";
  readonly #libs: NetlinkLibraries;
  readonly #wallMs: () => number;
  readonly #receiveTimeoutMs: number;
  readonly #buffer = new Uint8Array(RECEIVE_SIZE);
  #seq = 0;
  #closed = false;

  /** Use {@link openNetlinkLister}, which loads the libraries. */
  constructor(libs: NetlinkLibraries, wallMs: () => number, receiveTimeoutMs: number) {
    this.#libs = libs;
    this.#wallMs = wallMs;
    this.#receiveTimeoutMs = receiveTimeoutMs;
  }

  /** A socket of the kind each listing opens (see {@link NetlinkSocket}), or why it failed. */
  openSocket(): NetlinkSocket | string {
    if (this.#closed) return "the netlink lister is closed";
    return NetlinkSocket.open(this.#libs, this.#receiveTimeoutMs);
  }

  /** Lists the kernel's unreplied TCP entries in `SYN_SENT`, batch by batch. */
  async list(options: ListOptions): Promise<Dump> {
    // A socket per listing: a broken-off dump leaves nothing behind for the next one.
    const socket = this.openSocket();
    if (typeof socket === "string") return { kind: "failed", reason: socket };
    using _ = socket;
    const seq = this.#seq = (this.#seq + 1) >>> 0;
    if (!socket.send(dumpRequest(seq))) {
      return { kind: "failed", reason: "Cannot send the netlink dump request" };
    }
    let lines = 0;
    let unparsable = 0;
    let firstReason = "";
    for (;;) {
      // The pending receive must finish before the socket closes: check between receives.
      if (options.signal?.aborted) return { kind: "failed", reason: "aborted" };
      const got = await socket.receive(this.#buffer);
      if (typeof got === "string") return { kind: "failed", reason: got };
      const read = readDumpBuffer(this.#buffer, got, seq, Math.floor(this.#wallMs() / 1000));
      if (read.kind === "error") return { kind: "failed", reason: errorReason(read.errno) };
      lines += read.entries;
      if (read.unparsable > 0 && unparsable === 0) firstReason = read.firstReason ?? "";
      unparsable += read.unparsable;
      const accept = options.accept;
      const accepted = accept
        ? read.candidates.filter((c: Candidate) => accept(c.flow))
        : read.candidates;
      if (accepted.length > 0) await options.onBatch(accepted);
      if (read.done) break;
    }
    return {
      kind: "ok",
      lines,
      unparsable: unparsable === 0
        ? undefined
        : { count: unparsable, firstLine: "(netlink entry)", firstReason },
    };
  }

  /** Unloads the libraries; later listings fail with a reason. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#libs[Symbol.dispose]();
  }
}

/** Why socket() failed, from errno as the failed call left it. */
function socketErrno(libs: NetlinkLibraries): string {
  const errno = lastErrno(libs);
  if (errno === EMFILE) return "EMFILE (the agent has no file descriptor left)";
  if (errno === ENFILE) return "ENFILE (the system has no file descriptor left)";
  return errnoName(errno);
}

function errorReason(errno: number): string {
  return `netlink dump failed: ${errnoName(errno)}`;
}
