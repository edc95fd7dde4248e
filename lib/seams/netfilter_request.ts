/**
 * One request, one answer on a `NETLINK_NETFILTER` socket, through libmnl: the seam the nat
 * view uses to ask the kernel small questions (the nftables generation id) without a process.
 *
 * The socket is opened once and kept for the process. The kernel handles a
 * netfilter request while it is being sent and queues its answer before `sendto` returns, so the
 * answer is taken at once, without a helper thread; a few short waits cover anything slower, up to
 * the caller's timeout.
 *
 * @module
 */
import { libraryPaths } from "./native_library.ts";
import { openNetlinkLibraries } from "./netlink_socket.ts";

const LIBMNL = "libmnl.so.0";
const NETLINK_NETFILTER = 12;
const MSG_DONTWAIT = 0x40;
/** Room for one answer (libmnl's `MNL_SOCKET_BUFFER_SIZE` on 4 KiB pages). */
const RECEIVE_BYTES = 8192;
/** Between two looks for an answer that was not queued yet, in ms. */
const RETRY_MS = 2;

/** Sends netlink requests and takes their answers, one at a time. */
export interface NetfilterRequests extends Disposable {
  /**
   * Sends `message` (one netlink message, sequence number set by the caller) and resolves with
   * the first datagram received after it, or `undefined` when none came within `timeoutMs`.
   * Datagrams queued before the send (late answers to an earlier request) are dropped first.
   * Throws `Error` when the kernel refuses the send; the caller decides what that means.
   */
  request(message: Uint8Array, timeoutMs: number): Promise<Uint8Array | undefined>;
}

/** Result of {@link openNetfilterRequests}. */
export type NetfilterRequestsOpen =
  | {
    /** Open and bound. */
    readonly kind: "ok";
    /** The socket; dispose of it to close it. */
    readonly requests: NetfilterRequests;
  }
  | {
    /** Cannot be had here. */
    readonly kind: "unavailable";
    /** One line saying why, e.g. `libmnl.so.0 not found`. */
    readonly reason: string;
  };

/**
 * Opens a `NETLINK_NETFILTER` socket (read without blocking) through libmnl, or says in one line why it
 * cannot.
 *
 * @param paths Where libmnl is looked for.
 *
 * @example
 * ```ts
 * import { openNetfilterRequests } from "./netfilter_request.ts";
 * const opened = openNetfilterRequests(["/nonexistent/libmnl.so.0"]);
 * opened.kind === "unavailable" && opened.reason; // "libmnl.so.0 not found"
 * ```
 */
export function openNetfilterRequests(
  paths: readonly string[] = libraryPaths(LIBMNL),
): NetfilterRequestsOpen {
  const opened = openNetlinkLibraries(paths);
  if (opened.kind !== "ok") return { kind: "unavailable", reason: opened.reason };
  const library = opened.libraries;
  const { mnl, libc } = library;
  const socket = mnl.mnl_socket_open(NETLINK_NETFILTER);
  if (socket === null) {
    library[Symbol.dispose]();
    return { kind: "unavailable", reason: "Cannot open a NETLINK_NETFILTER socket" };
  }
  if (mnl.mnl_socket_bind(socket, 0, 0) < 0) {
    mnl.mnl_socket_close(socket);
    library[Symbol.dispose]();
    return { kind: "unavailable", reason: "Cannot bind a NETLINK_NETFILTER socket" };
  }
  const fd = mnl.mnl_socket_get_fd(socket);
  const buffer = new Uint8Array(RECEIVE_BYTES);
  let closed = false;
  // One request at a time: a second caller waits for the first one's answer.
  let queue: Promise<unknown> = Promise.resolve();
  const receiveNow = (): Uint8Array | undefined => {
    // Never blocks: the answer is taken when it is queued, else looked for again shortly.
    const got = Number(libc.recv(fd, buffer, BigInt(buffer.length), MSG_DONTWAIT));
    return got > 0 ? buffer.slice(0, got) : undefined;
  };
  const exchange = async (message: Uint8Array, timeoutMs: number) => {
    if (closed) throw new Error("Cannot send a netlink request as the socket is closed");
    while (receiveNow() !== undefined) {
      // A late answer to an earlier request: not this one's.
    }
    const sent = Number(mnl.mnl_socket_sendto(socket, message, BigInt(message.length)));
    if (sent < 0) {
      throw new Error(
        `Cannot send a netlink request as the kernel refused it: current value is ${sent}`,
      );
    }
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const answer = receiveNow();
      if (answer !== undefined) return answer;
      if (performance.now() >= deadline) return undefined;
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      // Closed while waiting: the socket is gone, so it must not be read.
      if (closed) return undefined;
    }
  };
  return {
    kind: "ok",
    requests: {
      request(message, timeoutMs) {
        const result = queue.then(() => exchange(message, timeoutMs));
        queue = result.catch(() => undefined);
        return result;
      },
      [Symbol.dispose]() {
        if (closed) return;
        closed = true;
        mnl.mnl_socket_close(socket);
        library[Symbol.dispose]();
      },
    },
  };
}
