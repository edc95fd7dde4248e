/**
 * The retrying client of the end-to-end suite, run in the client namespace: like a firewalled
 * client in the field, it retries from ONE fixed source port, each attempt with a connect
 * timeout. Prints one JSON line per attempt on stdout (see `ClientEvent` in tests/e2e/testbed.ts).
 *
 * Usage: `deno run --no-config --allow-net tests/e2e/client.ts --host 192.0.2.10 --port 80
 * --sport 40000 [--timeout-ms 1000] [--mode retry|hold]`
 *
 * - `retry`: exits 0 once an attempt connects and the server's first line arrives.
 * - `hold`: keeps that connection open until killed (a long-lived ESTABLISHED flow).
 *
 * @module
 */
import net from "node:net";
import { parseArgs } from "node:util";

/** What one attempt came to. */
type Attempt =
  | { readonly kind: "connected"; readonly socket: net.Socket; readonly banner: string }
  | { readonly kind: "failed"; readonly result: string };

function attempt(host: string, port: number, sport: number, timeoutMs: number): Promise<Attempt> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localPort: sport });
    let buffered = "";
    const fail = (result: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ kind: "failed", result });
    };
    // The timeout covers the handshake and the banner: a connection that reached something other
    // than the backend does not count.
    const timer = setTimeout(() => fail("timeout"), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      clearTimeout(timer);
      socket.removeAllListeners("data");
      resolve({ kind: "connected", socket, banner: buffered.slice(0, newline) });
    });
    socket.on("error", (error: NodeJS.ErrnoException) => fail(error.code ?? error.message));
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      host: { type: "string" },
      port: { type: "string", default: "80" },
      sport: { type: "string" },
      "timeout-ms": { type: "string", default: "1000" },
      mode: { type: "string", default: "retry" },
    },
  });
  const host = values.host;
  const port = Number(values.port);
  const sport = Number(values.sport);
  const timeoutMs = Number(values["timeout-ms"]);
  if (!host || !Number.isInteger(sport) || !Number.isInteger(port) || !(timeoutMs > 0)) {
    console.error("client: Cannot start as --host, --port, --sport and --timeout-ms are required");
    return 2;
  }
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  const emit = (event: Record<string, unknown>) => console.log(JSON.stringify(event));
  for (let n = 1;; n++) {
    const begun = performance.now();
    const result = await attempt(host, port, sport, timeoutMs);
    if (result.kind === "connected") {
      emit({ event: "connected", attempt: n, ms: ms(), banner: result.banner });
      if (values.mode !== "hold") {
        result.socket.destroy();
        return 0;
      }
      // Held open until killed; the socket keeps the event loop alive.
      await new Promise<void>((resolve) => result.socket.on("close", () => resolve()));
      return 1;
    }
    emit({ event: "attempt", attempt: n, result: result.result, ms: ms() });
    // Keep one attempt per timeout even when an error comes back at once.
    const left = timeoutMs - (performance.now() - begun);
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
  }
}

Deno.exit(await main());
