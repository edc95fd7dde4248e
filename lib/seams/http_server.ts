/**
 * A small HTTP/1.1 server with hard limits, for a port that anyone on the node's network can
 * reach. `Deno.serve` has no connection cap and no header or idle timeout, so a few hundred
 * connections that send one byte a second held the agent's descriptors until it died; this one
 * bounds every resource a client can hold (connections, bytes, time) and turns every failure
 * into a closed connection, never an exception.
 *
 * Requests carry no body, responses are small and complete (`Content-Length`), and any protocol
 * error answers 400 (or 413, 431) and closes.
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import { headEnd, parseRequestHead } from "./http_request.ts";
import type { HttpRequestHead } from "./http_request.ts";
import type { Logger, LogProperties } from "./logger.ts";
import { errorLine } from "./message_line.ts";

/** The limits of {@link serveBounded}; every field is optional. */
export interface HttpLimits {
  /**
   * Connections held at once. At the cap, a new connection evicts the oldest one that is still
   * waiting for a request (a slow or idle client), so a probe gets through at once.
   * @default {32}
   */
  readonly maxConnections?: number;
  /**
   * Bytes of a request head (request line and header fields); a longer head gets 431.
   * @default {8192}
   */
  readonly maxHeadBytes?: number;
  /**
   * Milliseconds for a whole request head to arrive, from the connection's start or from the
   * first byte of a later request on it; then the connection is closed.
   * @default {5000}
   */
  readonly headTimeoutMs?: number;
  /**
   * Milliseconds a kept-alive connection may wait for its next request before it is closed.
   * @default {10000}
   */
  readonly idleTimeoutMs?: number;
  /**
   * Requests served on one connection before it is closed after the response.
   * @default {100}
   */
  readonly maxRequestsPerConnection?: number;
  /**
   * Milliseconds to write one response to a client that does not read; then it is closed.
   * @default {5000}
   */
  readonly writeTimeoutMs?: number;
}

/** The defaults of {@link HttpLimits}. */
export const DEFAULT_HTTP_LIMITS: Readonly<Required<HttpLimits>> = {
  maxConnections: 32,
  maxHeadBytes: 8192,
  headTimeoutMs: 5000,
  idleTimeoutMs: 10_000,
  maxRequestsPerConnection: 100,
  writeTimeoutMs: 5000,
};

/** A complete response; the server adds `Content-Length` and `Connection`. */
export interface HttpResponse {
  /** The status code, e.g. 200. */
  readonly status: number;
  /** Header fields, lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body; not sent for HEAD, though its length is. */
  readonly body: string;
}

/** Answers one well-formed request. It should not throw; if it does, the client gets 500. */
export type HttpHandler = (request: HttpRequestHead) => Promise<HttpResponse> | HttpResponse;

/** Options of {@link serveBounded}. */
export interface ServeBoundedOptions {
  /** A bound listener, which the server closes when the signal aborts. */
  readonly listener: Deno.TcpListener;
  /** Answers requests. */
  readonly handler: HttpHandler;
  /** Protocol errors go to debug; evictions and accept failures to warn, once per minute. */
  readonly logger: Logger;
  /** Aborting stops accepting, closes waiting connections and lets responses finish. */
  readonly signal: AbortSignal;
  /** For rate-limiting log lines. */
  readonly clock: Clock;
  /** Limits; unset fields take {@link DEFAULT_HTTP_LIMITS}. */
  readonly limits?: HttpLimits;
}

/**
 * Serves connections from `listener` until the signal aborts, and resolves once the listener and
 * every connection are closed. Never rejects.
 *
 * @example Serve "ok" on a free port until aborted
 * ```ts
 * import { serveBounded } from "./http_server.ts";
 * import { systemClock } from "./clock.ts";
 * import { silentLogger } from "./logger.ts";
 * const controller = new AbortController();
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const finished = serveBounded({
 *   listener,
 *   handler: () => ({ status: 200, headers: { "content-type": "text/plain" }, body: "ok\n" }),
 *   logger: silentLogger,
 *   clock: systemClock,
 *   signal: controller.signal,
 * });
 * controller.abort();
 * await finished;
 * ```
 */
export function serveBounded(options: ServeBoundedOptions): Promise<void> {
  return new BoundedServer(options).run();
}

/** The longest pause after a failed accept, e.g. while the process is out of descriptors. */
const MAX_ACCEPT_BACKOFF_MS = 1000;
/** Milliseconds between two log lines about the same kind of trouble. */
const LOG_INTERVAL_MS = 60_000;

class BoundedServer {
  readonly #options: ServeBoundedOptions;
  readonly #limits: Readonly<Required<HttpLimits>>;
  /** Open connections in the order they were accepted: the first waiting one is the oldest. */
  readonly #open = new Set<Connection>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #crowdLog: BurstLog;
  readonly #acceptLog: BurstLog;

  constructor(options: ServeBoundedOptions) {
    this.#options = options;
    this.#limits = { ...DEFAULT_HTTP_LIMITS, ...options.limits };
    this.#crowdLog = new BurstLog(options.logger, options.clock);
    this.#acceptLog = new BurstLog(options.logger, options.clock);
  }

  async run(): Promise<void> {
    const { listener, signal } = this.#options;
    const stop = () => {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      for (const connection of this.#open) if (connection.waiting) connection.close();
    };
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
    try {
      await this.#acceptLoop();
    } finally {
      signal.removeEventListener("abort", stop);
      stop();
      while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    }
  }

  async #acceptLoop(): Promise<void> {
    const { listener, signal } = this.#options;
    let backoffMs = 10;
    while (!signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (signal.aborted || error instanceof Deno.errors.BadResource) return;
        // Out of descriptors (EMFILE, ENFILE) or a connection reset before it was taken: the
        // pending connection stays queued, so pause instead of spinning, free a descriptor if a
        // slow client holds one, and try again.
        this.#acceptLog.note("cannot accept a connection on the metrics listener; retrying", {
          error: errorLine(error),
          connections: this.#open.size,
        });
        this.#evictOldestWaiting(false);
        await sleep(backoffMs, signal);
        backoffMs = Math.min(backoffMs * 2, MAX_ACCEPT_BACKOFF_MS);
        continue;
      }
      backoffMs = 10;
      if (this.#open.size >= this.#limits.maxConnections && !this.#evictOldestWaiting()) {
        // Every slot is busy writing a response: refuse rather than exceed the cap.
        closeQuietly(conn);
        this.#noteCrowded("refused");
        continue;
      }
      const connection = new Connection(conn, (c) => this.#open.delete(c));
      this.#open.add(connection);
      const task = this.#serve(connection).catch((error) => {
        this.#options.logger.error("metrics connection failed", { error: errorLine(error) });
      }).finally(() => {
        connection.close();
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  /**
   * Closes the oldest connection still waiting for a request; false when there is none. `full`
   * says the cause is the connection cap (logged as such) rather than a lack of descriptors.
   */
  #evictOldestWaiting(full = true): boolean {
    for (const connection of this.#open) {
      if (!connection.waiting) continue;
      connection.close();
      if (full) this.#noteCrowded("evicted");
      return true;
    }
    return false;
  }

  #noteCrowded(what: "evicted" | "refused"): void {
    this.#crowdLog.note(
      what === "evicted"
        ? "metrics listener is full: closing the oldest connection that has not sent a request"
        : "metrics listener is full: refusing a connection",
      { max_connections: this.#limits.maxConnections },
    );
  }

  async #serve(connection: Connection): Promise<void> {
    const limits = this.#limits;
    const { signal, logger } = this.#options;
    try {
      connection.conn.setNoDelay(true);
    } catch {
      // The peer may already be gone; the first read will say so.
    }
    // One buffer per connection, one byte longer than the longest head allowed: a head that
    // fills it is too long.
    const buffer = new Uint8Array(limits.maxHeadBytes + 1);
    let filled = 0;
    for (let served = 0; served < limits.maxRequestsPerConnection; served++) {
      connection.waiting = true;
      let end = headEnd(buffer.subarray(0, filled));
      if (served === 0 || filled > 0) {
        connection.arm(limits.headTimeoutMs);
      } else {
        connection.arm(limits.idleTimeoutMs);
      }
      while (end < 0) {
        if (filled === buffer.length) {
          connection.waiting = false;
          await this.#respond(connection, "GET", errorResponse(431), false);
          return;
        }
        const got = await readSome(connection.conn, buffer.subarray(filled));
        if (got === null) return;
        // The idle wait ends with the next request's first byte; its head has its own deadline.
        if (filled === 0 && served > 0) connection.arm(limits.headTimeoutMs);
        const scanned = Math.max(0, filled - 2);
        filled += got;
        end = headEnd(buffer.subarray(0, filled), scanned);
      }
      connection.waiting = false;
      connection.disarm();
      if (end > limits.maxHeadBytes) {
        await this.#respond(connection, "GET", errorResponse(431), false);
        return;
      }
      const parsed = parseRequestHead(buffer.subarray(0, end));
      buffer.copyWithin(0, end, filled);
      filled -= end;
      if (parsed.kind === "malformed") {
        logger.debug("refused a malformed request on the metrics listener", {
          reason: parsed.reason,
        });
        await this.#respond(connection, "GET", errorResponse(400), false);
        return;
      }
      const request = parsed.request;
      if (request.hasBody) {
        // Nothing here takes a body, and reading one would be one more thing to bound.
        await this.#respond(connection, request.method, errorResponse(413), false);
        return;
      }
      let response: HttpResponse;
      try {
        response = await this.#options.handler(request);
      } catch (error) {
        logger.error("probe request failed", { error: errorLine(error) });
        response = errorResponse(500);
      }
      const keepAlive = request.keepAlive && !signal.aborted &&
        served + 1 < limits.maxRequestsPerConnection;
      if (!await this.#respond(connection, request.method, response, keepAlive)) return;
      if (!keepAlive || signal.aborted) return;
    }
  }

  /** Writes a response within the write timeout; false when the connection is gone. */
  async #respond(
    connection: Connection,
    method: string,
    response: HttpResponse,
    keepAlive: boolean,
  ): Promise<boolean> {
    const body = ENCODER.encode(response.body);
    const lines = [`HTTP/1.1 ${response.status} ${REASONS[response.status] ?? "Unknown"}`];
    for (const [name, value] of Object.entries(response.headers)) lines.push(`${name}: ${value}`);
    lines.push(
      `content-length: ${body.length}`,
      `connection: ${keepAlive ? "keep-alive" : "close"}`,
    );
    const head = ENCODER.encode(`${lines.join("\r\n")}\r\n\r\n`);
    const bytes = new Uint8Array(head.length + (method === "HEAD" ? 0 : body.length));
    bytes.set(head);
    if (method !== "HEAD") bytes.set(body, head.length);
    connection.arm(this.#limits.writeTimeoutMs);
    try {
      for (let written = 0; written < bytes.length;) {
        written += await connection.conn.write(bytes.subarray(written));
      }
      return true;
    } catch {
      return false;
    } finally {
      connection.disarm();
    }
  }
}

/** One accepted connection, its deadline, and whether it waits for a request (evictable). */
class Connection {
  readonly conn: Deno.TcpConn;
  /** True while the connection waits for a request head: a slow or idle client. */
  waiting = true;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #onClose: (connection: Connection) => void;

  constructor(conn: Deno.TcpConn, onClose: (connection: Connection) => void) {
    this.conn = conn;
    this.#onClose = onClose;
  }

  /** Closes the connection after `ms` unless re-armed or disarmed first. */
  arm(ms: number): void {
    this.disarm();
    this.#timer = setTimeout(() => this.close(), ms);
  }

  disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Closes at once; a pending read or write then fails, which ends the connection's task. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.disarm();
    closeQuietly(this.conn);
    this.#onClose(this);
  }
}

/**
 * Logs the first occurrence at warn, then at most once per {@link LOG_INTERVAL_MS}, with how
 * many occurrences went unlogged since: a flood of connections gives a line a minute, not a line
 * per connection.
 */
class BurstLog {
  readonly #logger: Logger;
  readonly #clock: Clock;
  #loggedAt = -Infinity;
  #unlogged = 0;

  constructor(logger: Logger, clock: Clock) {
    this.#logger = logger;
    this.#clock = clock;
  }

  note(message: string, properties: LogProperties): void {
    const now = this.#clock.monotonic();
    if (now - this.#loggedAt < LOG_INTERVAL_MS) {
      this.#unlogged++;
      return;
    }
    this.#logger.warn(message, {
      ...properties,
      ...(this.#unlogged > 0 ? { unlogged_since_last_line: this.#unlogged } : {}),
    });
    this.#loggedAt = now;
    this.#unlogged = 0;
  }
}

/** The bytes read, or null on end of stream, reset or a close by a deadline or eviction. */
async function readSome(conn: Deno.Conn, into: Uint8Array): Promise<number | null> {
  try {
    return await conn.read(into);
  } catch {
    return null;
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function errorResponse(status: number): HttpResponse {
  return {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
    body: `${(REASONS[status] ?? "error").toLowerCase()}\n`,
  };
}

const ENCODER = new TextEncoder();

const REASONS: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};
