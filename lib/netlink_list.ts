/**
 * The listing backend that asks the kernel directly: a ctnetlink dump through libmnl
 * (`Deno.dlopen`, `--allow-ffi`), read by `ctnetlink.ts`, with no conntrack process, no text and
 * no pipe. It sees what `conntrack -L -p tcp -u UNREPLIED -o id` sees (the same kernel filter)
 * and costs less than that listing alone (bench/RESULTS.md, "A listing of our own").
 *
 * The receive runs as non-blocking FFI, on a helper thread, so the kernel's walk of a large
 * table never blocks the event loop: signals and probes are served during a listing.
 *
 * @module
 */
import type { Candidate } from "./flow.ts";
import { dumpRequest, errnoName, readDumpBuffer } from "./ctnetlink.ts";
import { libraryPaths } from "./library_paths.ts";
import type { Dump, Lister, ListOptions } from "./lister.ts";

/** Result of {@link openNetlinkLister}. */
export type NetlinkListerOpen =
  | {
    /** libmnl is loaded. */
    readonly kind: "ok";
    /** The lister; dispose it to unload the library. */
    readonly lister: Lister & Disposable;
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
   * @default {DEFAULT_MNL_PATHS}
   */
  readonly libraryPaths?: readonly string[];
  /** Wall-clock milliseconds, for `delta-time` (injected for tests). */
  readonly wallMs?: () => number;
}

const LIBRARY = "libmnl.so.0";

/** Where libmnl is looked for by default: the multiarch and lib64 directories. */
export const DEFAULT_MNL_PATHS: readonly string[] = libraryPaths(LIBRARY);

const SYMBOLS = {
  mnl_socket_open: { parameters: ["i32"], result: "pointer" },
  mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  mnl_socket_sendto: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  // The kernel walks the table inside recvmsg: keep that off the event loop.
  mnl_socket_recvfrom: {
    parameters: ["pointer", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  mnl_socket_close: { parameters: ["pointer"], result: "i32" },
} as const;

const NETLINK_NETFILTER = 12;
/** The kernel fills at most 32 KiB per message batch; twice that leaves room. */
const RECEIVE_SIZE = 64 * 1024;

/**
 * Loads libmnl and returns the netlink lister, or why it cannot be used (library missing,
 * `--allow-ffi` not granted). Nothing is opened until the first listing.
 */
export function openNetlinkLister(options: NetlinkListerOptions = {}): NetlinkListerOpen {
  let library: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
  let denied = false;
  for (const path of options.libraryPaths ?? DEFAULT_MNL_PATHS) {
    try {
      library = Deno.dlopen(path, SYMBOLS);
      break;
    } catch (error) {
      // A path-scoped --allow-ffi may still grant a later path: keep looking, remember why.
      if (
        error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ) {
        denied = true;
      }
    }
  }
  if (library === undefined) {
    return {
      kind: "unavailable",
      reason: denied ? "--allow-ffi not granted" : `${LIBRARY} not found`,
    };
  }
  return { kind: "ok", lister: new NetlinkLister(library, options.wallMs ?? Date.now) };
}

/**
 * One listing at a time (the agent's loop never overlaps two): the receive buffer is shared, and
 * disposing of the lister during a listing would unload the library under a pending receive.
 */
class NetlinkLister implements Lister, Disposable {
  readonly name = "netlink";
  readonly #library: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #wallMs: () => number;
  readonly #buffer = new Uint8Array(RECEIVE_SIZE);
  #seq = 0;
  #closed = false;

  constructor(library: Deno.DynamicLibrary<typeof SYMBOLS>, wallMs: () => number) {
    this.#library = library;
    this.#wallMs = wallMs;
  }

  async list(options: ListOptions): Promise<Dump> {
    if (this.#closed) return { kind: "failed", reason: "the netlink lister is closed" };
    const mnl = this.#library.symbols;
    // A socket per listing: a broken-off dump leaves nothing behind for the next one.
    const socket = mnl.mnl_socket_open(NETLINK_NETFILTER);
    if (socket === null) return { kind: "failed", reason: "Cannot open a netlink socket" };
    try {
      if (mnl.mnl_socket_bind(socket, 0, 0) < 0) {
        return { kind: "failed", reason: "Cannot bind a netlink socket" };
      }
      const seq = this.#seq = (this.#seq + 1) >>> 0;
      const request = dumpRequest(seq);
      if (Number(mnl.mnl_socket_sendto(socket, request, BigInt(request.length))) < 0) {
        return { kind: "failed", reason: "Cannot send the netlink dump request" };
      }
      let lines = 0;
      let unparsable = 0;
      let firstReason = "";
      for (;;) {
        // The pending receive must finish before the socket closes: check between receives.
        if (options.signal?.aborted) return { kind: "failed", reason: "aborted" };
        const got = Number(
          await mnl.mnl_socket_recvfrom(socket, this.#buffer, BigInt(this.#buffer.length)),
        );
        if (got <= 0) return { kind: "failed", reason: "netlink receive failed" };
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
    } finally {
      mnl.mnl_socket_close(socket);
    }
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#library.close();
  }
}

function errorReason(errno: number): string {
  return `netlink dump failed: ${errnoName(errno)}`;
}
