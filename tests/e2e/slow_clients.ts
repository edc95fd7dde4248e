/**
 * A slowloris attack on the agent's metrics listener, with the measurements a test needs: opens
 * COUNT connections that send a request line and then one header byte a second for SECONDS,
 * probes `/healthz` on fresh connections meanwhile, and reads `/metrics` before and after. Prints
 * one JSON object ({@link Report}). Run by tests/e2e/hostile_http_test.ts inside the agent's
 * network namespace.
 *
 * Usage: `slow_clients.ts PORT COUNT SECONDS`
 *
 * @module
 */

/** What the attack saw. */
export interface Report {
  /** Slow connections opened. */
  readonly opened: number;
  /** Slow connections that could not be opened at all. */
  readonly connectFailures: number;
  /** Milliseconds from opening to the server closing it, per slow connection it closed. */
  readonly closedAfterMs: readonly number[];
  /** Slow connections the server still held when the attack ended. */
  readonly stillOpen: number;
  /** `/healthz` probes made during the attack: status (0 when none came) and milliseconds. */
  readonly probes: readonly { readonly status: number; readonly ms: number }[];
  /** `/metrics` text before the attack. */
  readonly metricsBefore: string;
  /** `/metrics` text after the attack. */
  readonly metricsAfter: string;
  /** Milliseconds between the two `/metrics` reads. */
  readonly betweenMs: number;
}

const [portText = "", countText = "500", secondsText = "15"] = Deno.args;
const port = Number(portText);
const count = Number(countText);
const seconds = Number(secondsText);
const encoder = new TextEncoder();

/** One GET on a fresh connection, as the kubelet probes: status and body, or status 0. */
async function get(path: string, timeoutMs = 3000): Promise<{ status: number; body: string }> {
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => conn?.close(), timeoutMs);
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      encoder.encode(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    const text = await new Response(conn.readable).text();
    conn = undefined; // The stream closed it.
    const status = Number(/^HTTP\/1\.[01] (\d{3}) /.exec(text)?.[1] ?? "0");
    return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } catch {
    return { status: 0, body: "" };
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  }
}

interface Slow {
  readonly conn: Deno.TcpConn;
  readonly openedAt: number;
  closedAt?: number;
  closedByUs: boolean;
}

const metricsBefore = (await get("/metrics")).body;
const before = performance.now();
const attackEnds = before + seconds * 1000;
const slow: Slow[] = [];
let connectFailures = 0;

function watch(entry: Slow): void {
  // The server closing the connection shows as end of stream or a reset.
  const buffer = new Uint8Array(1024);
  const read = (): Promise<void> =>
    entry.conn.read(buffer).then((got) => got === null ? undefined : read());
  read().catch(() => {}).finally(() => {
    if (!entry.closedByUs) entry.closedAt ??= performance.now();
  });
}

for (let i = 0; i < count; i++) {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const entry: Slow = { conn, openedAt: performance.now(), closedByUs: false };
    slow.push(entry);
    watch(entry);
    conn.write(encoder.encode("GET /healthz HTTP/1.1\r\n")).catch(() => {});
  } catch {
    connectFailures++;
  }
}

const probes: { status: number; ms: number }[] = [];
const prober = (async () => {
  while (performance.now() < attackEnds) {
    const started = performance.now();
    const { status } = await get("/healthz");
    probes.push({ status, ms: Math.round(performance.now() - started) });
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
})();

// One header byte a second on every connection the server has not closed.
while (performance.now() < attackEnds) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  for (const entry of slow) {
    if (entry.closedAt === undefined) entry.conn.write(encoder.encode("X")).catch(() => {});
  }
}
await prober;

const stillOpen = slow.filter((entry) => entry.closedAt === undefined).length;
for (const entry of slow) {
  if (entry.closedAt !== undefined) continue;
  entry.closedByUs = true;
  try {
    entry.conn.close();
  } catch {
    // Closed already.
  }
}
const metricsAfter = (await get("/metrics")).body;
const report: Report = {
  opened: slow.length,
  connectFailures,
  closedAfterMs: slow.flatMap((entry) =>
    entry.closedAt === undefined ? [] : [Math.round(entry.closedAt - entry.openedAt)]
  ),
  stillOpen,
  probes,
  metricsBefore,
  metricsAfter,
  betweenMs: Math.round(performance.now() - before),
};
console.log(JSON.stringify(report));
Deno.exit(0);
