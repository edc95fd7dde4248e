/**
 * A raw `NETLINK_NETFILTER` socket for the event subscription and the per-flow GETs: opened and
 * bound (to multicast groups or none) through libmnl, then driven through libc so that the errno
 * of a failed receive (`ENOBUFS`: events were lost) can be read, which a receive run on a helper
 * thread cannot give.
 *
 * Waiting is a `poll()` run as non-blocking FFI (on a helper thread) on the socket and on a wake
 * pipe; receiving is a synchronous `recv(MSG_DONTWAIT)` on the JavaScript thread, so errno is read
 * on the thread that set it. Closing writes to the wake pipe, so a pending wait ends at once and
 * nothing is closed under it.
 *
 * @module
 */
import { describeUnavailable, libraryPaths, openLibrary } from "./native_library.ts";

const MNL_SYMBOLS = {
  mnl_socket_open: { parameters: ["i32"], result: "pointer" },
  mnl_socket_get_fd: { parameters: ["pointer"], result: "i32" },
  mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  mnl_socket_sendto: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  // The dump lister's receive, in which the kernel walks the table: keep that off the event loop.
  mnl_socket_recvfrom: {
    parameters: ["pointer", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  mnl_socket_close: { parameters: ["pointer"], result: "i32" },
} as const;

const LIBC_SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  // The only call that waits: off the event loop.
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  __errno_location: { parameters: [], result: "pointer" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
} as const;

/** The loaded libraries a {@link RawNetlinkSocket} calls. */
export interface NetlinkLibraries extends Disposable {
  /** libmnl's symbols. */
  readonly mnl: Deno.DynamicLibrary<typeof MNL_SYMBOLS>["symbols"];
  /** libc's symbols. */
  readonly libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
}

/** Result of {@link openNetlinkLibraries}. */
export type NetlinkLibrariesOpen =
  | {
    /** Both libraries are loaded. */
    readonly kind: "ok";
    /** The libraries; dispose of them after every socket is closed. */
    readonly libraries: NetlinkLibraries;
  }
  | {
    /** The libraries cannot be had here. */
    readonly kind: "unavailable";
    /** One line saying why. */
    readonly reason: string;
  };

const LIBMNL = "libmnl.so.0";
const LIBC = "libc.so.6";

/**
 * Loads libmnl and libc for raw netlink sockets, or says in one line why they cannot be had: the
 * loader's diagnosis of a file that is there but is not a usable libmnl, and, when libmnl loads
 * but libc does not (under an `--allow-ffi` scoped to libmnl's paths, say), that libc is the
 * trouble.
 *
 * @param mnlPaths Where libmnl is looked for.
 *
 * @example
 * ```ts
 * import { openNetlinkLibraries } from "./netlink_socket.ts";
 * const opened = openNetlinkLibraries(["/nonexistent/libmnl.so.0"]);
 * opened.kind === "unavailable" && opened.reason; // "libmnl.so.0 not found"
 * ```
 */
export function openNetlinkLibraries(
  mnlPaths: readonly string[] = libraryPaths(LIBMNL),
): NetlinkLibrariesOpen {
  const mnl = openLibrary(mnlPaths, MNL_SYMBOLS);
  if (mnl.kind !== "ok") return { kind: "unavailable", reason: describeUnavailable(LIBMNL, mnl) };
  const libc = openLibrary([LIBC], LIBC_SYMBOLS);
  if (libc.kind !== "ok") {
    mnl.library.close();
    return {
      kind: "unavailable",
      reason: `${describeUnavailable(LIBC, libc)} (${LIBMNL} loads, ${LIBC} does not)`,
    };
  }
  let closed = false;
  return {
    kind: "ok",
    libraries: {
      mnl: mnl.library.symbols,
      libc: libc.library.symbols,
      [Symbol.dispose]() {
        if (closed) return;
        closed = true;
        mnl.library.close();
        libc.library.close();
      },
    },
  };
}

const NETLINK_NETFILTER = 12;
const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
const SO_ATTACH_FILTER = 26;
const POLLIN = 0x1;
const MSG_DONTWAIT = 0x40;
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
/** errno values a receive reports. */
export const EAGAIN = 11;
/** The socket's queue overflowed: the kernel dropped messages for it. */
export const ENOBUFS = 105;
const EINTR = 4;

/** One receive: a datagram, nothing queued, or a failure with its errno. */
export type Received =
  | { readonly kind: "data"; readonly length: number }
  | { readonly kind: "empty" }
  | { readonly kind: "error"; readonly errno: number };

/** How a socket is opened. */
export interface RawSocketOptions {
  /**
   * Multicast groups joined, as the bind mask (bit `n - 1` for group `n`); 0 for none.
   * @default {0}
   */
  readonly groups?: number;
  /**
   * Receive buffer size asked of the kernel, in bytes (it doubles it for bookkeeping); forced
   * past `net.core.rmem_max` where the process may (`CAP_NET_ADMIN`). 0 keeps the default.
   * @default {0}
   */
  readonly receiveBufferBytes?: number;
}

/**
 * A bound netlink socket plus a wake pipe. One wait at a time; {@link close} wakes it.
 */
export class RawNetlinkSocket {
  readonly #libs: NetlinkLibraries;
  readonly #socket: Deno.PointerObject;
  readonly #fd: number;
  readonly #wakeRead: number;
  readonly #wakeWrite: number;
  readonly #pollFds = new Uint8Array(16);
  #waiting: Promise<number> | undefined;
  #closed = false;

  private constructor(
    libs: NetlinkLibraries,
    socket: Deno.PointerObject,
    fd: number,
    wake: readonly [number, number],
  ) {
    this.#libs = libs;
    this.#socket = socket;
    this.#fd = fd;
    [this.#wakeRead, this.#wakeWrite] = wake;
    const view = new DataView(this.#pollFds.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
    view.setInt32(8, this.#wakeRead, true);
    view.setInt16(12, POLLIN, true);
  }

  /** Opens, binds and sizes a socket, or says which step failed. */
  static open(libs: NetlinkLibraries, options: RawSocketOptions = {}): RawNetlinkSocket | string {
    const { mnl, libc } = libs;
    const pipe = new Int32Array(2);
    if (libc.pipe2(new Uint8Array(pipe.buffer), O_CLOEXEC | O_NONBLOCK) !== 0) {
      return "Cannot create a wake pipe for the netlink socket";
    }
    const socket = mnl.mnl_socket_open(NETLINK_NETFILTER);
    if (socket === null) {
      libc.close(pipe[0]!);
      libc.close(pipe[1]!);
      return "Cannot open a netlink socket";
    }
    const fd = mnl.mnl_socket_get_fd(socket);
    const opened = new RawNetlinkSocket(libs, socket, fd, [pipe[0]!, pipe[1]!]);
    const size = options.receiveBufferBytes ?? 0;
    if (size > 0) {
      const value = new Uint8Array(new Int32Array([size]).buffer);
      if (
        libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, value, 4) !== 0 &&
        libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, value, 4) !== 0
      ) {
        opened.close();
        return `Cannot set the netlink receive buffer as the kernel refused: current value is ${size}`;
      }
    }
    if (mnl.mnl_socket_bind(socket, (options.groups ?? 0) >>> 0, 0) < 0) {
      opened.close();
      return "Cannot bind a netlink socket (needs CAP_NET_ADMIN for conntrack events)";
    }
    return opened;
  }

  /** The receive buffer size the kernel granted (the doubled figure it accounts with), bytes. */
  receiveBufferBytes(): number {
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    const ok = this.#libs.libc.getsockopt(
      this.#fd,
      SOL_SOCKET,
      SO_RCVBUF,
      new Uint8Array(value.buffer),
      new Uint8Array(length.buffer),
    );
    return ok === 0 ? value[0]! : -1;
  }

  /**
   * Attaches a classic BPF program (`SO_ATTACH_FILTER`): 8-byte `sock_filter` instructions, as
   * {@link encodeProgram} lays them out. False when the kernel refused it.
   */
  attachFilter(instructions: Uint8Array): boolean {
    const count = instructions.length / 8;
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; } on 64-bit Linux.
    const fprog = new Uint8Array(16);
    const view = new DataView(fprog.buffer);
    view.setUint16(0, count, true);
    const pointer = Deno.UnsafePointer.of(instructions);
    view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(pointer)), true);
    // The kernel copies the program during the call; `instructions` is alive until it returns.
    return this.#libs.libc.setsockopt(this.#fd, SOL_SOCKET, SO_ATTACH_FILTER, fprog, 16) === 0;
  }

  /** Sends one or more netlink messages in one datagram; false when the kernel refused them. */
  send(request: Uint8Array): boolean {
    if (this.#closed) return false;
    return Number(
      this.#libs.mnl.mnl_socket_sendto(this.#socket, request, BigInt(request.length)),
    ) >=
      0;
  }

  /** Takes one queued datagram without waiting. */
  receiveNow(buffer: Uint8Array): Received {
    if (this.#closed) return { kind: "error", errno: 9 };
    for (;;) {
      const got = Number(
        this.#libs.libc.recv(this.#fd, buffer, BigInt(buffer.length), MSG_DONTWAIT),
      );
      if (got >= 0) return { kind: "data", length: got };
      // Read at once, on the thread that made the call, before anything else can set it.
      const errno = lastErrno(this.#libs);
      if (errno === EINTR) continue;
      if (errno === EAGAIN) return { kind: "empty" };
      return { kind: "error", errno };
    }
  }

  /**
   * Waits, off the event loop, until a datagram is queued (`"readable"`) or {@link close} was
   * called (`"closed"`).
   */
  async waitReadable(): Promise<"readable" | "closed"> {
    for (;;) {
      if (this.#closed) return "closed";
      const view = new DataView(this.#pollFds.buffer);
      view.setInt16(6, 0, true);
      view.setInt16(14, 0, true);
      this.#waiting = this.#libs.libc.poll(this.#pollFds, 2n, -1);
      await this.#waiting;
      this.#waiting = undefined;
      if (this.#closed) return "closed";
      // revents of the socket: POLLIN, or POLLERR when an overflow left an error to read.
      if (view.getInt16(6, true) !== 0) return "readable";
    }
  }

  /** Closes the socket after waking and awaiting a pending wait. Safe to call twice. */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const waiting = this.#waiting;
    if (waiting !== undefined) {
      this.#libs.libc.write(this.#wakeWrite, new Uint8Array([1]), 1n);
      await waiting;
    }
    this.#release();
  }

  /** Closes a socket that has no pending wait (after open failed, or when never waited on). */
  close(): void {
    if (this.#waiting !== undefined) {
      throw new Error("Cannot close a netlink socket as a wait is pending: use closeAsync()");
    }
    this.#closed = true;
    this.#release();
  }

  #released = false;

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#libs.mnl.mnl_socket_close(this.#socket);
    this.#libs.libc.close(this.#wakeRead);
    this.#libs.libc.close(this.#wakeWrite);
  }
}

/**
 * errno as the last synchronous libc or libmnl call on this thread left it (-1 if unreadable).
 * Read it right after the failed call: the next call may overwrite it.
 */
export function lastErrno(libs: NetlinkLibraries): number {
  const location = libs.libc.__errno_location();
  return location === null ? -1 : new Deno.UnsafePointerView(location).getInt32();
}

/** Lays out classic BPF instructions as the kernel's `struct sock_filter` array. */
export function encodeProgram(program: readonly BpfInstruction[]): Uint8Array {
  const bytes = new Uint8Array(program.length * 8);
  const view = new DataView(bytes.buffer);
  program.forEach((ins, i) => {
    view.setUint16(i * 8, ins.code, true);
    view.setUint8(i * 8 + 2, ins.jt);
    view.setUint8(i * 8 + 3, ins.jf);
    view.setUint32(i * 8 + 4, ins.k >>> 0, true);
  });
  return bytes;
}

/** One classic BPF instruction (`struct sock_filter`). */
export interface BpfInstruction {
  /** Opcode. */
  readonly code: number;
  /** Instructions skipped when a jump's test holds. */
  readonly jt: number;
  /** Instructions skipped when it does not. */
  readonly jf: number;
  /** The constant operand. */
  readonly k: number;
}

/**
 * Reads a small file (a sysctl under `/proc/sys`) through libc, or undefined when it cannot be
 * read. Deno refuses `/proc/sys` reads without `--allow-all`; the agent already holds
 * `--allow-ffi`, which is no narrower, so asking for more would widen nothing.
 */
export function readSmallFile(libs: NetlinkLibraries, path: string): string | undefined {
  const fd = libs.libc.open(new TextEncoder().encode(`${path}\0`), O_CLOEXEC);
  if (fd < 0) return undefined;
  try {
    const buffer = new Uint8Array(256);
    const got = Number(libs.libc.read(fd, buffer, BigInt(buffer.length)));
    return got < 0 ? undefined : new TextDecoder().decode(buffer.subarray(0, got));
  } finally {
    libs.libc.close(fd);
  }
}
