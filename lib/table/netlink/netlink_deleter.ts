/**
 * A {@link Deleter} that talks to the kernel through libnetfilter_conntrack, loaded with
 * `Deno.dlopen`: one exact lookup (`IPCTNL_MSG_CT_GET`) and one delete (`IPCTNL_MSG_CT_DELETE`)
 * per flow, and no table dump. The conntrack CLI, by contrast, dumps the whole table for every
 * `-D`, which costs about 0.3 s per flow at 100k entries.
 *
 * Exactness: the lookup is by original tuple and zone, which identifies at most one entry; the
 * reply it returns must equal the flow's reply tuple and the entry must still be TCP `SYN_SENT`
 * without `SEEN_REPLY`; only then is it deleted by the same tuple. The kernel has no conditional
 * delete by state, so an entry that completes its handshake in the microseconds between lookup
 * and delete would still be deleted (the CLI's `-D --state SYN_SENT` has the same gap, widened by
 * its table dump). libnetfilter_conntrack does not send `CTA_ID` on delete (checked: a wrong id
 * still deletes), so the id cannot narrow it.
 *
 * Needs `--allow-ffi` and `CAP_NET_ADMIN` in the network namespace whose table is cleaned.
 *
 * @module
 */
import {
  type DeleteFailure,
  type DeleteOutcome,
  type Deleter,
  STOPPING_REASON,
} from "../deleter.ts";
import { addressBytes, hostPort } from "../../core/address.ts";
import type { Flow, Tuple } from "../../core/flow.ts";
import {
  AF_INET,
  AF_INET6,
  errnoName,
  IPPROTO_TCP,
  IPS_SEEN_REPLY,
  TCP_CONNTRACK_SYN_SENT,
} from "./ctnetlink.ts";
import {
  describeUnavailable,
  isPermissionError,
  libraryPaths,
  openLibrary,
} from "../../seams/native_library.ts";
import { errorLine } from "../../seams/message_line.ts";

/** Result of {@link openNetlinkDeleter}. */
export type NetlinkOpen =
  | {
    /** The library is loaded and a netlink socket is open. */
    readonly kind: "ok";
    /** The deleter; dispose it to close the socket and unload the library. */
    readonly deleter: Deleter & Disposable;
  }
  | {
    /** The backend cannot be used here; fall back to the CLI. */
    readonly kind: "unavailable";
    /** One line saying why, e.g. `libnetfilter_conntrack.so.3 not found`. */
    readonly reason: string;
  };

/** Options of {@link openNetlinkDeleter}. */
export interface NetlinkOptions {
  /**
   * Paths tried in order; a bare file name is left to the dynamic loader's search.
   * @default {DEFAULT_LIBRARY_PATHS}
   */
  readonly libraryPaths?: readonly string[];
}

const LIBRARY = "libnetfilter_conntrack.so.3";

/** Where libnetfilter_conntrack is looked for by default: the multiarch and lib64 directories. */
export const DEFAULT_LIBRARY_PATHS: readonly string[] = libraryPaths(LIBRARY);

// Values from libnetfilter_conntrack 1.0.9's headers and the kernel's uapi, checked by compiling
// a program against /usr/include/libnetfilter_conntrack (see bench/RESULTS.md).
const CONNTRACK = 1; // NFNL_SUBSYS_CTNETLINK
const NFCT_Q_DESTROY = 2;
const NFCT_Q_GET = 3;
const NFCT_T_ALL = 7;
const NFCT_CB_CONTINUE = 1;
const ATTR = {
  ORIG_IPV4_SRC: 0,
  ORIG_IPV4_DST: 1,
  REPL_IPV4_SRC: 2,
  REPL_IPV4_DST: 3,
  ORIG_IPV6_SRC: 4,
  ORIG_IPV6_DST: 5,
  REPL_IPV6_SRC: 6,
  REPL_IPV6_DST: 7,
  ORIG_PORT_SRC: 8,
  ORIG_PORT_DST: 9,
  REPL_PORT_SRC: 10,
  REPL_PORT_DST: 11,
  ORIG_L3PROTO: 15,
  ORIG_L4PROTO: 17,
  TCP_STATE: 19,
  STATUS: 32,
  ZONE: 61,
  ORIG_ZONE: 68,
  REPL_ZONE: 69,
} as const;
const ENOENT = 2;

const SYMBOLS = {
  nfct_open: { parameters: ["u8", "u32"], result: "pointer" },
  nfct_close: { parameters: ["pointer"], result: "i32" },
  nfct_new: { parameters: [], result: "pointer" },
  nfct_destroy: { parameters: ["pointer"], result: "void" },
  nfct_set_attr: { parameters: ["pointer", "i32", "buffer"], result: "void" },
  nfct_set_attr_u8: { parameters: ["pointer", "i32", "u8"], result: "void" },
  nfct_set_attr_u16: { parameters: ["pointer", "i32", "u16"], result: "void" },
  nfct_get_attr: { parameters: ["pointer", "i32"], result: "pointer" },
  nfct_get_attr_u8: { parameters: ["pointer", "i32"], result: "u8" },
  nfct_get_attr_u16: { parameters: ["pointer", "i32"], result: "u16" },
  nfct_get_attr_u32: { parameters: ["pointer", "i32"], result: "u32" },
  nfct_attr_is_set: { parameters: ["pointer", "i32"], result: "i32" },
  nfct_query: { parameters: ["pointer", "i32", "pointer"], result: "i32" },
  nfct_callback_register: {
    parameters: ["pointer", "i32", "function", "pointer"],
    result: "i32",
  },
  nfct_callback_unregister: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

const LIBC_SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Conntrack = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/**
 * Loads libnetfilter_conntrack and opens a ctnetlink socket in the current network namespace.
 * Never throws: a missing library or permission gives `{ kind: "unavailable", reason }`.
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
  const opened = openLibrary(options.libraryPaths ?? DEFAULT_LIBRARY_PATHS, SYMBOLS);
  if (opened.kind !== "ok") {
    return {
      kind: "unavailable",
      reason: describeUnavailable(LIBRARY, opened),
    };
  }
  const library = opened.library;
  let errno: Errno | undefined;
  try {
    errno = openErrno();
    const handle = library.symbols.nfct_open(CONNTRACK, 0);
    if (handle === null) {
      const reason = `Cannot open a conntrack netlink socket: ${errnoName(errno.read())}`;
      errno[Symbol.dispose]();
      library.close();
      return { kind: "unavailable", reason };
    }
    return { kind: "ok", deleter: new NetlinkDeleter(library, handle, errno) };
  } catch (error) {
    // The lookup callback needs --allow-ffi without a path list (Deno checks callbacks against
    // the full permission), so a scoped grant ends here: fall back rather than crash.
    errno?.[Symbol.dispose]();
    library.close();
    if (isPermissionError(error)) {
      return { kind: "unavailable", reason: "--allow-ffi must be granted for all paths" };
    }
    return { kind: "unavailable", reason: errorLine(error) };
  }
}

/** What the lookup callback saw of the entry. */
interface Seen {
  readonly state: number;
  readonly status: number;
  readonly reply: Uint8Array;
  readonly zone: number;
  readonly origZone: number | undefined;
  readonly replyZone: number | undefined;
}

/** How long a deletion batch may hold the event loop before it yields, in ms. */
const YIELD_EVERY_MS = 20;

class NetlinkDeleter implements Deleter, Disposable {
  readonly name = "netlink";
  readonly #library: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #nfct: Conntrack;
  readonly #handle: Deno.PointerObject;
  readonly #errno: Errno;
  readonly #callback: Deno.UnsafeCallback<{
    readonly parameters: readonly ["i32", "pointer", "pointer"];
    readonly result: "i32";
  }>;
  // The callback runs synchronously inside nfct_query and leaves what it saw here.
  #seen: Seen | undefined;
  #closed = false;

  constructor(
    library: Deno.DynamicLibrary<typeof SYMBOLS>,
    handle: Deno.PointerObject,
    errno: Errno,
  ) {
    this.#library = library;
    this.#nfct = library.symbols;
    this.#handle = handle;
    this.#errno = errno;
    this.#callback = new Deno.UnsafeCallback(
      { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const,
      (_type, ct) => {
        if (ct !== null) this.#seen = this.#read(ct);
        return NFCT_CB_CONTINUE;
      },
    );
    this.#nfct.nfct_callback_register(handle, NFCT_T_ALL, this.#callback.pointer, null);
  }

  async delete(
    flows: readonly Flow[],
    signal?: AbortSignal,
    progress?: () => void,
  ): Promise<DeleteOutcome> {
    const deleted: Flow[] = [];
    const gone: Flow[] = [];
    const failed: DeleteFailure[] = [];
    let yieldedAt = performance.now();
    for (const flow of flows) {
      // Each request is synchronous FFI: hand the event loop back now and then, so that SIGTERM
      // and the probes are served during a batch of tens of thousands of flows.
      if (performance.now() - yieldedAt > YIELD_EVERY_MS) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        yieldedAt = performance.now();
        progress?.();
      }
      if (this.#closed) {
        failed.push({ flow, reason: "Cannot delete as the netlink deleter is closed" });
        continue;
      }
      if (signal?.aborted) {
        failed.push({ flow, reason: STOPPING_REASON });
        continue;
      }
      const result = this.#deleteOne(flow);
      if (result === "deleted") deleted.push(flow);
      else if (result === "gone") gone.push(flow);
      else failed.push({ flow, reason: result.reason });
    }
    return { deleted, gone, failed };
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#nfct.nfct_callback_unregister(this.#handle);
    this.#nfct.nfct_close(this.#handle);
    this.#callback.close();
    this.#library.close();
    this.#errno[Symbol.dispose]();
  }

  #deleteOne(flow: Flow): "deleted" | "gone" | { readonly reason: string } {
    const encoded = encodeFlow(flow);
    if (encoded.kind === "invalid") return { reason: encoded.reason };
    const ct = this.#nfct.nfct_new();
    if (ct === null) return { reason: "Cannot allocate a conntrack object: out of memory" };
    try {
      this.#setOriginal(ct, flow, encoded);
      this.#seen = undefined;
      if (this.#nfct.nfct_query(this.#handle, NFCT_Q_GET, ct) !== 0) {
        const code = this.#errno.read();
        return code === ENOENT ? "gone" : { reason: `Cannot look up flow: ${errnoName(code)}` };
      }
      const seen = this.#seen as Seen | undefined;
      if (seen === undefined) return "gone";
      if (seen.state !== TCP_CONNTRACK_SYN_SENT || (seen.status & IPS_SEEN_REPLY) !== 0) {
        return "gone";
      }
      // Same original tuple but another reply tuple (NATed since) or zone: not our flow.
      if (
        !sameBytes(seen.reply, encoded.reply) || seen.zone !== flow.zone ||
        seen.origZone !== flow.origZone || seen.replyZone !== flow.replyZone
      ) return "gone";
      if (this.#nfct.nfct_query(this.#handle, NFCT_Q_DESTROY, ct) !== 0) {
        const code = this.#errno.read();
        return code === ENOENT ? "gone" : { reason: `Cannot delete flow: ${errnoName(code)}` };
      }
      return "deleted";
    } finally {
      this.#nfct.nfct_destroy(ct);
    }
  }

  #setOriginal(ct: Deno.PointerObject, flow: Flow, encoded: EncodedFlow): void {
    const n = this.#nfct;
    const v6 = flow.family === "ipv6";
    n.nfct_set_attr_u8(ct, ATTR.ORIG_L3PROTO, v6 ? AF_INET6 : AF_INET);
    n.nfct_set_attr_u8(ct, ATTR.ORIG_L4PROTO, IPPROTO_TCP);
    n.nfct_set_attr(ct, v6 ? ATTR.ORIG_IPV6_SRC : ATTR.ORIG_IPV4_SRC, encoded.src);
    n.nfct_set_attr(ct, v6 ? ATTR.ORIG_IPV6_DST : ATTR.ORIG_IPV4_DST, encoded.dst);
    n.nfct_set_attr(ct, ATTR.ORIG_PORT_SRC, encoded.sport);
    n.nfct_set_attr(ct, ATTR.ORIG_PORT_DST, encoded.dport);
    // Zones are host byte order in libnetfilter_conntrack, which converts them itself.
    if (flow.zone !== 0) n.nfct_set_attr_u16(ct, ATTR.ZONE, flow.zone);
    if (flow.origZone !== undefined) n.nfct_set_attr_u16(ct, ATTR.ORIG_ZONE, flow.origZone);
    if (flow.replyZone !== undefined) n.nfct_set_attr_u16(ct, ATTR.REPL_ZONE, flow.replyZone);
  }

  #read(ct: Deno.PointerObject): Seen {
    const n = this.#nfct;
    const isSet = (attr: number) => n.nfct_attr_is_set(ct, attr) > 0;
    const v6 = isSet(ATTR.REPL_IPV6_SRC);
    const bytes = (attr: number, length: number) => {
      const pointer = n.nfct_get_attr(ct, attr);
      return pointer === null
        ? new Uint8Array(length)
        : new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, length).slice(0));
    };
    const addressLength = v6 ? 16 : 4;
    const reply = concatBytes([
      bytes(v6 ? ATTR.REPL_IPV6_SRC : ATTR.REPL_IPV4_SRC, addressLength),
      bytes(v6 ? ATTR.REPL_IPV6_DST : ATTR.REPL_IPV4_DST, addressLength),
      bytes(ATTR.REPL_PORT_SRC, 2),
      bytes(ATTR.REPL_PORT_DST, 2),
    ]);
    return {
      state: isSet(ATTR.TCP_STATE) ? n.nfct_get_attr_u8(ct, ATTR.TCP_STATE) : -1,
      status: isSet(ATTR.STATUS) ? n.nfct_get_attr_u32(ct, ATTR.STATUS) : 0,
      reply,
      zone: isSet(ATTR.ZONE) ? n.nfct_get_attr_u16(ct, ATTR.ZONE) : 0,
      origZone: isSet(ATTR.ORIG_ZONE) ? n.nfct_get_attr_u16(ct, ATTR.ORIG_ZONE) : undefined,
      replyZone: isSet(ATTR.REPL_ZONE) ? n.nfct_get_attr_u16(ct, ATTR.REPL_ZONE) : undefined,
    };
  }
}

/** A flow's fields in the byte order netlink wants. */
type EncodedFlow = {
  readonly kind: "ok";
  readonly src: Uint8Array<ArrayBuffer>;
  readonly dst: Uint8Array<ArrayBuffer>;
  readonly sport: Uint8Array<ArrayBuffer>;
  readonly dport: Uint8Array<ArrayBuffer>;
  /** Reply source, destination, source port, destination port, concatenated. */
  readonly reply: Uint8Array;
};

function encodeFlow(
  flow: Flow,
): EncodedFlow | { readonly kind: "invalid"; readonly reason: string } {
  const o = flow.original;
  const r = flow.reply;
  const addresses = [o.src, o.dst, r.src, r.dst].map((a) => addressBytes(a, flow.family));
  const ports = [o.sport, o.dport, r.sport, r.dport].map(portBytes);
  const [src, dst, replySrc, replyDst] = addresses;
  const [sport, dport, replySport, replyDport] = ports;
  if (src === undefined || dst === undefined || replySrc === undefined || replyDst === undefined) {
    return { kind: "invalid", reason: `Cannot encode flow as ${flow.family}: ${tupleText(o, r)}` };
  }
  if (
    sport === undefined || dport === undefined || replySport === undefined ||
    replyDport === undefined
  ) {
    return { kind: "invalid", reason: `Cannot encode flow ports: ${tupleText(o, r)}` };
  }
  const zones = [flow.zone, flow.origZone ?? 0, flow.replyZone ?? 0];
  if (zones.some((z) => !Number.isInteger(z) || z < 0 || z > 0xffff)) {
    return { kind: "invalid", reason: `Cannot encode zone as u16: current value is ${zones}` };
  }
  const reply = concatBytes([replySrc, replyDst, replySport, replyDport]);
  return { kind: "ok", src, dst, sport, dport, reply };
}

function tupleText(o: Tuple, r: Tuple): string {
  const side = (t: Tuple) => `${hostPort(t.src, t.sport)}>${hostPort(t.dst, t.dport)}`;
  return `current value is ${side(o)} ${side(r)}`;
}

/**
 * A port in network byte order (big-endian, 2 bytes), or `undefined` when out of range.
 *
 * @example
 * ```ts
 * import { portBytes } from "./netlink_deleter.ts";
 * portBytes(443); // Uint8Array [1, 187]
 * ```
 */
export function portBytes(port: number): Uint8Array<ArrayBuffer> | undefined {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) return undefined;
  return new Uint8Array([port >> 8, port & 0xff]);
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The calling thread's errno, read through libc. */
interface Errno extends Disposable {
  /** The current errno; -1 when libc could not be loaded. */
  read(): number;
}

function openErrno(): Errno {
  const opened = openLibrary(["libc.so.6"], LIBC_SYMBOLS);
  if (opened.kind !== "ok") return { read: () => -1, [Symbol.dispose]: () => {} };
  const libc = opened.library;
  return {
    read: () => {
      const pointer = libc.symbols.__errno_location();
      return pointer === null ? -1 : new Deno.UnsafePointerView(pointer).getInt32();
    },
    [Symbol.dispose]: () => libc.close(),
  };
}
