import assert from "node:assert/strict";
import type { Clock } from "../lib/clock.ts";
import { systemClock } from "../lib/clock.ts";
import { createHealth } from "../lib/health.ts";
import type { Health } from "../lib/health.ts";
import type { Logger, LogProperties } from "../lib/log.ts";
import { silentLogger } from "../lib/log.ts";
import { createMetrics } from "../lib/metrics.ts";
import type { Metrics } from "../lib/metrics.ts";
import { denoSpawn } from "../lib/process.ts";
import { runToEnd } from "../lib/command.ts";
import type { CycleReport } from "../lib/report.ts";
import { ListenError, serveProbes } from "../lib/server.ts";
import type { ProbeServer } from "../lib/server.ts";
import { parseExposition, sampleValue } from "./exposition.ts";

const OK_CYCLE: CycleReport = {
  wallStart: Date.now(),
  dumpSeconds: 0.01,
  dump: { kind: "ok", lines: 20, candidates: 1, unparsable: 0 },
  tracked: 1,
  deletions: [{ rule: "age", family: "ipv6" }],
  dryRun: false,
  deleteFailures: 0,
  overran: false,
  pauseSeconds: 1,
};

interface Running extends AsyncDisposable {
  readonly server: ProbeServer;
  readonly metrics: Metrics;
  readonly health: Health;
  readonly url: (path: string) => string;
  readonly controller: AbortController;
}

async function start(
  overrides: { metrics?: Metrics; health?: Health; logger?: Logger; port?: number } = {},
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
  assert.match(stuck.body, /^loop has not completed a cycle for 360\.0s[^\n]*\n$/);
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
