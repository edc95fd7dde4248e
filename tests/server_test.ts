import assert from "node:assert/strict";
import type { Clock } from "../lib/seams/clock.ts";
import { systemClock } from "../lib/seams/clock.ts";
import { createHealth } from "../lib/operator/health.ts";
import type { Health } from "../lib/operator/health.ts";
import type { Logger, LogProperties } from "../lib/seams/logger.ts";
import { silentLogger } from "../lib/seams/logger.ts";
import { createMetrics } from "../lib/operator/metrics.ts";
import type { Metrics } from "../lib/operator/metrics.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import type { CycleReport } from "../lib/loop/cycle_report.ts";
import { ListenError, serveProbes } from "../lib/operator/probe_server.ts";
import type { ProbeServer } from "../lib/operator/probe_server.ts";
import type { HttpLimits } from "../lib/seams/http_server.ts";
import { parseExposition, sampleValue } from "./exposition.ts";

const OK_CYCLE: CycleReport = {
  wallStart: Date.now(),
  dumpMs: 10,
  dump: { kind: "ok", lines: 20, candidates: 1, unparsable: 0 },
  tracked: 1,
  deletions: [{ rule: "age", family: "ipv6" }],
  dryRun: false,
  deleteFailures: 0,
  overran: false,
  pauseMs: 1000,
};

interface Running extends AsyncDisposable {
  readonly server: ProbeServer;
  readonly metrics: Metrics;
  readonly health: Health;
  readonly url: (path: string) => string;
  readonly controller: AbortController;
}

async function start(
  overrides: {
    metrics?: Metrics;
    health?: Health;
    logger?: Logger;
    port?: number;
    limits?: HttpLimits;
  } = {},
): Promise<Running> {
  const controller = new AbortController();
  const metrics = overrides.metrics ?? createMetrics({ version: "0.1.0", denoVersion: "2.9.6" });
  const health = overrides.health ?? createHealth({ periodMs: 1000, clock: systemClock });
  const server = await serveProbes({
    hostname: "127.0.0.1",
    port: overrides.port ?? 0,
    metrics,
    health,
    logger: overrides.logger ?? silentLogger,
    signal: controller.signal,
    ...(overrides.limits ? { limits: overrides.limits } : {}),
  });
  return {
    server,
    metrics,
    health,
    controller,
    url: (path) => `http://127.0.0.1:${server.addr.port}${path}`,
    async [Symbol.asyncDispose]() {
      controller.abort();
      await server.finished;
    },
  };
}

async function request(
  url: string,
  method = "GET",
): Promise<{ status: number; headers: Headers; body: string }> {
  const response = await fetch(url, { method });
  return { status: response.status, headers: response.headers, body: await response.text() };
}

Deno.test("serveProbes() serves /metrics as valid exposition text with the deletions", async () => {
  await using running = await start();
  running.metrics.cycleCompleted(OK_CYCLE);
  const { status, headers, body } = await request(running.url("/metrics"));
  assert.equal(status, 200);
  assert.equal(headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const families = parseExposition(body);
  const labels = { rule: "age", family: "ipv6" };
  assert.equal(sampleValue(families, "conntrack_cleaner_deleted_total", labels), 1);
});

Deno.test("serveProbes() answers /readyz 503 with the reason until a dump succeeds", async () => {
  await using running = await start();
  const before = await request(running.url("/readyz"));
  assert.equal(before.status, 503);
  assert.equal(before.body, "no successful dump yet\n");
  assert.equal(before.headers.get("content-type"), "text/plain; charset=utf-8");
  running.health.cycleCompleted(OK_CYCLE);
  const after = await request(running.url("/readyz"));
  assert.equal(after.status, 200);
  assert.equal(after.body, "ok\n");
});

Deno.test("serveProbes() answers /healthz 200 while alive and 503 once the loop is stuck", async () => {
  let now = 0;
  const clock: Clock = { monotonic: () => now, wall: () => now, sleep: () => Promise.resolve() };
  await using running = await start({ health: createHealth({ periodMs: 1000, clock }) });
  const alive = await request(running.url("/healthz"));
  assert.equal(alive.status, 200);
  assert.equal(alive.body, "ok\n");
  now += 6 * 60_000;
  const stuck = await request(running.url("/healthz"));
  assert.equal(stuck.status, 503);
  assert.match(stuck.body, /^loop has not completed a cycle for 360s[^\n]*\n$/);
});

Deno.test("serveProbes() answers 404 for other paths", async () => {
  await using running = await start();
  for (const path of ["/", "/metrics/", "/healthz/x", "/nope"]) {
    const { status, body } = await request(running.url(path));
    assert.equal(status, 404, path);
    assert.equal(body, "not found\n");
  }
});

Deno.test("serveProbes() ignores the query string when routing", async () => {
  await using running = await start();
  const { status } = await request(running.url("/metrics?name[]=x"));
  assert.equal(status, 200);
});

Deno.test("serveProbes() answers 405 with Allow for methods other than GET and HEAD", async () => {
  await using running = await start();
  for (const method of ["POST", "PUT", "DELETE"]) {
    const { status, headers } = await request(running.url("/metrics"), method);
    assert.equal(status, 405, method);
    assert.equal(headers.get("allow"), "GET, HEAD");
  }
});

Deno.test("serveProbes() answers HEAD with the status and no body", async () => {
  await using running = await start();
  const metrics = await request(running.url("/metrics"), "HEAD");
  assert.equal(metrics.status, 200);
  assert.equal(metrics.body, "");
  const ready = await request(running.url("/readyz"), "HEAD");
  assert.equal(ready.status, 503);
  assert.equal(ready.body, "");
});

Deno.test("serveProbes() answers 500 and logs when the metrics cannot be rendered", async () => {
  const errors: string[] = [];
  const logger: Logger = {
    ...silentLogger,
    error: (message: string, properties?: LogProperties) =>
      errors.push(`${message}: ${String(properties?.error)}`),
  };
  const broken: Metrics = {
    contentType: "text/plain",
    render: () => Promise.reject(new Error("registry exploded")),
    cycleCompleted: () => {},
    natSourceRead: () => {},
    natRulesRead: () => {},
  };
  await using running = await start({ metrics: broken, logger });
  const { status } = await request(running.url("/metrics"));
  assert.equal(status, 500);
  assert.deepEqual(errors, ["cannot render metrics: registry exploded"]);
});

Deno.test("serveProbes() logs the address it listens on", async () => {
  const infos: LogProperties[] = [];
  const logger: Logger = {
    ...silentLogger,
    info: (_message, properties = {}) => infos.push(properties),
  };
  await using running = await start({ logger });
  assert.deepEqual(infos, [{ address: `127.0.0.1:${running.server.addr.port}` }]);
});

Deno.test("serveProbes() stops listening when the signal aborts", async () => {
  const running = await start();
  const url = running.url("/healthz");
  assert.equal((await request(url)).status, 200);
  running.controller.abort();
  await running.server.finished;
  await assert.rejects(() => fetch(url), TypeError);
});

Deno.test("serveProbes() rejects a port already in use, naming METRICS_ADDRESS", async () => {
  await using first = await start();
  const port = first.server.addr.port;
  await assert.rejects(
    () => start({ port }),
    (error) =>
      error instanceof ListenError &&
      error.message ===
        `Cannot listen on METRICS_ADDRESS (--metrics-address) as the address is already in use: ` +
          `current value is "127.0.0.1:${port}"`,
  );
});

Deno.test("serveProbes() rejects an address that is not on this host", async () => {
  const controller = new AbortController();
  await assert.rejects(
    () =>
      serveProbes({
        hostname: "192.0.2.1",
        port: 0,
        metrics: createMetrics({ version: "0.1.0", denoVersion: "2.9.6" }),
        health: createHealth({ periodMs: 1000, clock: systemClock }),
        logger: silentLogger,
        signal: controller.signal,
      }),
    (error) =>
      error instanceof ListenError && error.message.includes("the address is not on this host") &&
      error.message.includes('"192.0.2.1:0"'),
  );
});

Deno.test("serveProbes() without --allow-net fails with one line naming METRICS_ADDRESS", async () => {
  const script = new URL("./fixtures/metrics-listen.ts", import.meta.url).pathname;
  const config = new URL("../deno.json", import.meta.url).pathname;
  const denied = await runToEnd(denoSpawn, Deno.execPath(), [
    "run",
    "--no-prompt",
    `--config=${config}`,
    "--allow-net=127.0.0.1:1",
    script,
    "127.0.0.1",
    "9469",
  ]);
  assert.equal(denied.code, 2);
  assert.equal(
    denied.stderr,
    "Cannot listen on METRICS_ADDRESS (--metrics-address) as --allow-net does not grant it: " +
      'current value is "127.0.0.1:9469"\n',
  );
  // The same script listens when the address is granted, so the denial above is the flag's.
  const granted = await runToEnd(denoSpawn, Deno.execPath(), [
    "run",
    "--no-prompt",
    `--config=${config}`,
    "--allow-net=127.0.0.1",
    script,
    "127.0.0.1",
    "0",
  ]);
  assert.equal(granted.code, 0, granted.stderr);
  assert.match(granted.stdout, /^listening on port \d+\n$/);
});

// The listener's limits, over raw sockets: what a slow, crowding or malformed client sees.

/** Small limits, so a test waits a fraction of a second instead of the defaults' seconds. */
const QUICK: HttpLimits = { headTimeoutMs: 300, idleTimeoutMs: 300 };
/** How long a test waits for the server to close a connection before calling it still open. */
const GUARD_MS = 5000;

async function connect(running: Running): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port: running.server.addr.port });
}

async function send(conn: Deno.Conn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/**
 * Reads until the server closes the connection, or until GUARD_MS pass (then closes it itself):
 * what was received and whether the server was the one to close.
 */
async function readToClose(conn: Deno.Conn): Promise<{ text: string; closedByServer: boolean }> {
  const chunks: Uint8Array[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<"guard">((resolve) =>
    timer = setTimeout(() => resolve("guard"), GUARD_MS)
  );
  let closedByServer = false;
  try {
    for (;;) {
      const buffer = new Uint8Array(16 * 1024);
      const got = await Promise.race([conn.read(buffer).catch(() => null), guard]);
      if (got === "guard") break;
      if (got === null) {
        closedByServer = true;
        break;
      }
      chunks.push(buffer.slice(0, got));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
  const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  return { text, closedByServer };
}

/** Reads `count` complete responses (head and Content-Length body) from a kept-alive connection. */
async function readResponses(conn: Deno.Conn, count: number, head = false): Promise<string[]> {
  let text = "";
  const responses: string[] = [];
  const buffer = new Uint8Array(16 * 1024);
  while (responses.length < count) {
    const end = text.indexOf("\r\n\r\n");
    const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? "0");
    const size = end + 4 + (head ? 0 : length);
    if (end >= 0 && text.length >= size) {
      responses.push(text.slice(0, size));
      text = text.slice(size);
      continue;
    }
    const got = await conn.read(buffer);
    if (got === null) throw new Error(`connection closed after ${responses.length} responses`);
    text += new TextDecoder().decode(buffer.subarray(0, got));
  }
  assert.equal(text, "", "nothing after the last response");
  return responses;
}

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const record = (level: string) => (message: string, properties?: LogProperties) =>
    lines.push(`${level} ${message} ${JSON.stringify(properties ?? {})}`);
  return {
    lines,
    logger: {
      debug: record("debug"),
      info: record("info"),
      warn: record("warn"),
      error: record("error"),
    },
  };
}

Deno.test("serveProbes() closes a connection whose request head does not arrive in time", async () => {
  await using running = await start({ limits: QUICK });
  const slow = await connect(running);
  await send(slow, "GET /healthz HTTP/1.1\r\nHo");
  const { text, closedByServer } = await readToClose(slow);
  assert.ok(closedByServer, "the server still holds the slow connection");
  assert.equal(text, "");
});

Deno.test("serveProbes() closes a kept-alive connection that stays idle", async () => {
  await using running = await start({ limits: QUICK });
  const conn = await connect(running);
  await send(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const [response] = await readResponses(conn, 1);
  assert.match(response ?? "", /^HTTP\/1\.1 200 OK\r\n[\s\S]*connection: keep-alive\r\n\r\nok\n$/i);
  const { closedByServer } = await readToClose(conn);
  assert.ok(closedByServer, "the server still holds the idle connection");
});

Deno.test("serveProbes() serves two requests on one kept-alive connection, also pipelined", async () => {
  await using running = await start();
  const conn = await connect(running);
  try {
    await send(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    await readResponses(conn, 1);
    await send(
      conn,
      "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    const [ready, missing] = await readResponses(conn, 2);
    assert.match(ready ?? "", /^HTTP\/1\.1 503 [\s\S]*\r\n\r\nno successful dump yet\n$/);
    assert.match(missing ?? "", /^HTTP\/1\.1 404 [\s\S]*\r\n\r\nnot found\n$/);
  } finally {
    conn.close();
  }
});

Deno.test("serveProbes() answers HEAD with the body's length and no body bytes", async () => {
  await using running = await start();
  const conn = await connect(running);
  try {
    // Were a body sent after the HEAD response, it would come before the GET's response.
    await send(conn, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    const [head] = await readResponses(conn, 1, true);
    assert.match(
      head ?? "",
      /^HTTP\/1\.1 200 OK\r\n[\s\S]*content-length: 3\r\n[\s\S]*\r\n\r\n$/i,
    );
    await send(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    const [get] = await readResponses(conn, 1);
    assert.match(get ?? "", /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok\n$/);
  } finally {
    conn.close();
  }
});

Deno.test("serveProbes() answers 400 to a malformed Host and logs nothing above debug", async () => {
  const { logger, lines } = recordingLogger();
  await using running = await start({ logger });
  lines.length = 0; // the startup line
  for (let i = 0; i < 20; i++) {
    const conn = await connect(running);
    await send(conn, "GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n");
    const { text, closedByServer } = await readToClose(conn);
    assert.match(text, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.ok(closedByServer);
  }
  assert.deepEqual(lines.filter((line) => !line.startsWith("debug ")), []);
});

Deno.test("serveProbes() answers 400 and closes on each kind of malformed request", async () => {
  await using running = await start();
  const cases = [
    "GET /healthz\r\n\r\n",
    "GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
    "GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET http://[::1/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Name: caf\u00e9\r\n\r\n",
    "GET /healthz HTTP/1.1\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "\u0000\u0001\u0002\r\n\r\n",
  ];
  for (const request of cases) {
    const conn = await connect(running);
    await send(conn, request);
    const { text, closedByServer } = await readToClose(conn);
    assert.match(text, /^HTTP\/1\.1 400 /, JSON.stringify(request));
    assert.ok(closedByServer, JSON.stringify(request));
  }
  // The absolute form is valid HTTP/1.1, and HTTP/1.0 needs no Host.
  for (
    const request of [
      "GET http://x:9469/healthz HTTP/1.1\r\nHost: x:9469\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.0\r\n\r\n",
    ]
  ) {
    const conn = await connect(running);
    await send(conn, request);
    const { text } = await readToClose(conn);
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok\n$/, JSON.stringify(request));
  }
});

Deno.test("serveProbes() refuses an oversized request head with 431", async () => {
  await using running = await start({ limits: { maxHeadBytes: 1024 } });
  const conn = await connect(running);
  await send(conn, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ${"a".repeat(2000)}\r\n\r\n`);
  const { text, closedByServer } = await readToClose(conn);
  assert.match(text, /^HTTP\/1\.1 431 /);
  assert.ok(closedByServer);
});

Deno.test("serveProbes() refuses a request with a body with 413", async () => {
  await using running = await start();
  const conn = await connect(running);
  await send(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  const { text, closedByServer } = await readToClose(conn);
  assert.match(text, /^HTTP\/1\.1 413 /);
  assert.ok(closedByServer);
});

Deno.test("serveProbes() at its connection cap evicts the oldest slow client and serves /healthz", async () => {
  const { logger, lines } = recordingLogger();
  // A head timeout far beyond the test: only eviction can free a slot.
  await using running = await start({
    logger,
    limits: { maxConnections: 4, headTimeoutMs: 60_000 },
  });
  const slow: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 12; i++) {
      const conn = await connect(running);
      await send(conn, "GET /healthz HTTP/1.1\r\nHo");
      slow.push(conn);
    }
    const { status, body } = await request(running.url("/healthz"));
    assert.deepEqual({ status, body }, { status: 200, body: "ok\n" });
    // The first slow clients lost their slots; the server closed them.
    const oldest = await readToClose(slow.shift()!);
    assert.ok(oldest.closedByServer, "the oldest slow connection is still held");
    // One warning for the whole burst, not one per connection.
    const warnings = lines.filter((line) => line.startsWith("warn "));
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(warnings[0] ?? "", /closing the oldest connection that has not sent a request/);
  } finally {
    for (const conn of slow) conn.close();
  }
});

Deno.test("serveProbes() stops at once on abort while a slow client holds a connection", async () => {
  const running = await start();
  const slow = await connect(running);
  await send(slow, "GET /healthz HTTP/1.1\r\nHo");
  running.controller.abort();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    running.server.finished.then(() => "finished"),
    new Promise((resolve) => timer = setTimeout(() => resolve("still running"), GUARD_MS)),
  ]);
  clearTimeout(timer);
  const { closedByServer } = await readToClose(slow);
  assert.equal(outcome, "finished");
  assert.ok(closedByServer);
});

Deno.test("serveProbes() survives running out of descriptors and still answers /healthz", async () => {
  const script = new URL("./fixtures/probes-serve.ts", import.meta.url).pathname;
  const config = new URL("../deno.json", import.meta.url).pathname;
  const stop = new AbortController();
  // 40 descriptors, about 20 of them Deno's own: the slow clients below exhaust the rest.
  const child = denoSpawn("prlimit", [
    "--nofile=40:40",
    ...[Deno.execPath(), "run", "--no-prompt", `--config=${config}`, "--allow-net=127.0.0.1"],
    script,
  ], { signal: stop.signal });
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const slow: Deno.TcpConn[] = [];
  try {
    let printed = "";
    while (!printed.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) break;
      printed += value;
    }
    const port = Number(/^port (\d+)\n/.exec(printed)?.[1]);
    assert.ok(port > 0, `the server printed ${JSON.stringify(printed)}`);
    for (let i = 0; i < 60; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await send(conn, "GET /healthz HTTP/1.1\r\nHo");
      slow.push(conn);
    }
    const { status, body } = await request(`http://127.0.0.1:${port}/healthz`).catch(async (e) => {
      // The server died: say how.
      stop.abort();
      throw new Error(`${e}; the server wrote: ${(await child.status).stderr}`);
    });
    assert.deepEqual({ status, body }, { status: 200, body: "ok\n" });
  } finally {
    for (const conn of slow) conn.close();
    stop.abort();
    await lines.cancel();
  }
  const { stderr } = await child.status;
  // One warning for the whole episode; nothing uncaught.
  assert.match(
    stderr,
    /^warn cannot accept a connection on the metrics listener; retrying .*Too many open files/,
  );
  assert.equal(stderr.trim().split("\n").length, 1, stderr);
});
