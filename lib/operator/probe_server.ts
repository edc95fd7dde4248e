/**
 * The HTTP listener for Prometheus and the kubelet: `GET /metrics`, `GET /healthz` (liveness)
 * and `GET /readyz` (readiness), over the bounded server of `http_server.ts`.
 *
 * @module
 */
import type { Clock } from "../seams/clock.ts";
import { systemClock } from "../seams/clock.ts";
import type { Health } from "./health.ts";
import type { HttpRequestHead } from "../seams/http_request.ts";
import { serveBounded } from "../seams/http_server.ts";
import type { HttpLimits, HttpResponse } from "../seams/http_server.ts";
import type { Logger } from "../seams/logger.ts";
import { errorLine } from "../seams/message_line.ts";
import { hostPort } from "../core/address.ts";
import type { Metrics } from "./metrics.ts";

/** Options for {@link serveProbes}. */
export interface ServeProbesOptions {
  /** Address to listen on, e.g. `0.0.0.0`, `::` or `127.0.0.1`. */
  readonly hostname: string;
  /** TCP port; 0 picks a free one (tests). */
  readonly port: number;
  /** Rendered on `/metrics`. */
  readonly metrics: Metrics;
  /** Answers `/healthz` and `/readyz`. */
  readonly health: Health;
  /** Where the listener logs its address and failures while serving. */
  readonly logger: Logger;
  /** Aborting stops the listener gracefully. */
  readonly signal: AbortSignal;
  /**
   * Connection, size and time limits (see {@link HttpLimits} for each default).
   * @default {DEFAULT_HTTP_LIMITS}
   */
  readonly limits?: HttpLimits;
  /**
   * Paces the listener's warnings (at most one a minute per kind).
   * @default {systemClock}
   */
  readonly clock?: Clock;
}

/** A listener that is accepting connections. */
export interface ProbeServer {
  /** The address actually bound (with the real port when 0 was asked for). */
  readonly addr: { readonly hostname: string; readonly port: number };
  /** Resolves once the listener has shut down after the signal aborted. */
  readonly finished: Promise<void>;
}

/**
 * The listener could not be started. The message is one line naming the setting to fix, for
 * the caller to print before exiting with status 2.
 */
export class ListenError extends Error {
  /** Builds the error from the address and the reason it could not be bound. */
  constructor(address: string, why: string, options?: ErrorOptions) {
    super(
      `Cannot listen on METRICS_ADDRESS (--metrics-address) as ${why}: current value is "${address}"`,
      options,
    );
    this.name = "ListenError";
  }
}

/**
 * Starts the HTTP listener and resolves once it accepts connections.
 *
 * Routes (GET and HEAD; other methods get 405):
 * - `/metrics`: 200 with the exposition text.
 * - `/healthz`: 200 `ok` while the loop is alive, else 503 with a one-line reason.
 * - `/readyz`: 200 `ok` while the last successful dump is recent, else 503 with a one-line reason.
 * - anything else: 404.
 *
 * The listener is our own bounded HTTP/1.1 server (`http_server.ts`): a capped number of
 * connections, a deadline for each request head and idle wait, no request bodies, and 400 for
 * anything malformed, so that no client can hold the agent's descriptors or fill its log.
 *
 * @example Serve on a free port until aborted
 * ```ts ignore
 * const controller = new AbortController();
 * const server = await serveProbes({
 *   hostname: "127.0.0.1", port: 0, metrics, health, logger, signal: controller.signal,
 * });
 * await fetch(`http://127.0.0.1:${server.addr.port}/readyz`);
 * controller.abort();
 * await server.finished;
 * ```
 *
 * @throws {ListenError} When the address is in use, not on this host, cannot be resolved, or not
 * granted by `--allow-net`.
 */
export function serveProbes(options: ServeProbesOptions): Promise<ProbeServer> {
  const { hostname, port, logger, signal } = options;
  const address = hostPort(hostname, port);
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname, port, transport: "tcp" });
  } catch (error) {
    return Promise.reject(new ListenError(address, listenFailure(error), { cause: error }));
  }
  const addr = { hostname: listener.addr.hostname, port: listener.addr.port };
  logger.info("serving /metrics, /healthz and /readyz", {
    address: hostPort(addr.hostname, addr.port),
  });
  const finished = serveBounded({
    listener,
    handler: (request) => handle(request, options),
    logger,
    signal,
    clock: options.clock ?? systemClock,
    ...(options.limits ? { limits: options.limits } : {}),
  });
  return Promise.resolve({ addr, finished });
}

async function handle(
  request: HttpRequestHead,
  options: ServeProbesOptions,
): Promise<HttpResponse> {
  const route = ROUTES.get(request.path);
  if (route === undefined) return textResponse(404, "not found\n");
  if (request.method !== "GET" && request.method !== "HEAD") {
    return textResponse(405, "method not allowed\n", { allow: "GET, HEAD" });
  }
  switch (route) {
    case "metrics": {
      let body: string;
      try {
        body = await options.metrics.render();
      } catch (error) {
        options.logger.error("cannot render metrics", { error: errorLine(error) });
        return textResponse(500, "cannot render metrics\n");
      }
      return {
        status: 200,
        headers: { "content-type": options.metrics.contentType, "cache-control": "no-store" },
        body,
      };
    }
    case "healthz":
    case "readyz": {
      const state = route === "healthz" ? options.health.liveness() : options.health.readiness();
      return state.ok ? textResponse(200, "ok\n") : textResponse(503, `${state.reason}\n`);
    }
  }
}

type Route = "metrics" | "healthz" | "readyz";
const ROUTES: ReadonlyMap<string, Route> = new Map([
  ["/metrics", "metrics"],
  ["/healthz", "healthz"],
  ["/readyz", "readyz"],
]);

function textResponse(
  status: number,
  body: string,
  headers: Readonly<Record<string, string>> = {},
): HttpResponse {
  return {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
      ...headers,
    },
    body,
  };
}

function listenFailure(error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) return "the address is already in use";
  if (error instanceof Deno.errors.AddrNotAvailable) return "the address is not on this host";
  if (error instanceof Deno.errors.NotCapable) return "--allow-net does not grant it";
  if (error instanceof Deno.errors.PermissionDenied) {
    return "the system denies it (a port below 1024 needs CAP_NET_BIND_SERVICE)";
  }
  return errorLine(error);
}
