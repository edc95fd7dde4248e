/**
 * The retrying client (tests/e2e/client.ts) as a test sees it: its events, read from its stdout.
 *
 * @module
 */
import type { ExitStatus, SpawnedProcess } from "../../../lib/seams/spawn.ts";
import { readLines } from "./stdout_lines.ts";
import { stderrReason, TestbedError } from "./testbed_error.ts";

/** One event of the retrying client (tests/e2e/client.ts), read from its stdout. */
export type ClientEvent =
  | {
    /** An attempt failed. */
    readonly event: "attempt";
    /** Attempt number, from 1. */
    readonly attempt: number;
    /** `timeout`, or the error code (e.g. `ECONNREFUSED`). */
    readonly result: string;
    /** Milliseconds since the client started. */
    readonly ms: number;
  }
  | {
    /** The attempt connected and the backend's banner arrived. */
    readonly event: "connected";
    /** Attempt number, from 1. */
    readonly attempt: number;
    /** Milliseconds since the client started. */
    readonly ms: number;
    /** The first line the server sent. */
    readonly banner: string;
  };

/** Options of {@link Testbed.startClient}. */
export interface ClientOptions {
  /** The one source port every attempt uses. */
  readonly sport: number;
  /**
   * Destination port on the VIP.
   * @default {SERVICE_PORT}
   */
  readonly dport?: number;
  /**
   * Connect timeout per attempt, in ms.
   * @default {1000}
   */
  readonly timeoutMs?: number;
  /**
   * `retry`: exit once connected; `hold`: keep the connection open until stopped.
   * @default {"retry"}
   */
  readonly mode?: "retry" | "hold";
}

/** A retrying client running in the client namespace. */
export interface RetryingClient extends AsyncDisposable {
  /** Events so far, oldest first. */
  readonly events: readonly ClientEvent[];
  /** Resolves with the `connected` event; rejects when the client exits without one. */
  readonly connected: Promise<ClientEvent & { readonly event: "connected" }>;
  /** Whether the client has connected. */
  isConnected(): boolean;
  /** Stops the client (SIGTERM) and waits for it. */
  stop(): Promise<ExitStatus>;
}

/** Follows a started client: collects its events and resolves `connected` when it gets through. */
export function watchClient(child: SpawnedProcess, stop: AbortController): RetryingClient {
  const events: ClientEvent[] = [];
  let connectedEvent: (ClientEvent & { event: "connected" }) | undefined;
  const connected = (async () => {
    for await (const line of readLines(child.stdout)) {
      let event: ClientEvent;
      try {
        event = JSON.parse(line) as ClientEvent;
      } catch {
        continue;
      }
      events.push(event);
      if (event.event === "connected") {
        connectedEvent = event;
        return event;
      }
    }
    const status = await child.status;
    throw new TestbedError(
      `Cannot connect the client: it exited ${status.code} after ${events.length} attempts: ` +
        stderrReason(status.stderr),
    );
  })();
  // A test that never awaits `connected` (the control case) must not see an unhandled rejection.
  connected.catch(() => {});
  const finish = async () => {
    stop.abort();
    return await child.status;
  };
  return {
    events,
    connected,
    isConnected: () => connectedEvent !== undefined,
    stop: finish,
    [Symbol.asyncDispose]: async () => {
      await finish();
    },
  };
}
