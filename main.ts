/**
 * conntrack-cleaner: deletes the stale conntrack entries that keep retrying clients away from a
 * freshly created Kubernetes LoadBalancer Service. This file only wires the pieces in `lib/`.
 *
 * @module
 */
// First: evaluating it ignores SIGUSR1 before the other modules load (see the module).
import { startupSignals } from "./lib/seams/startup_signals.ts";
import { createAgent } from "./lib/loop/agent.ts";
import {
  type BackendOptions,
  BackendUnavailableError,
  selectDeleter,
  selectLister,
} from "./lib/table/backend.ts";
import type { Lister } from "./lib/table/lister.ts";
import type { Logger } from "./lib/seams/logger.ts";
import { openNetlinkLister } from "./lib/table/netlink/netlink_lister.ts";
import { ConfigError, parseInvocation } from "./lib/operator/command_line.ts";
import { systemClock } from "./lib/seams/clock.ts";
import type { Backend, Config } from "./lib/operator/config.ts";
import {
  ConntrackUnusableError,
  conntrackVersion,
  probeConntrack,
} from "./lib/table/conntrack_cli.ts";
import { makeTargetFilter } from "./lib/core/target_filter.ts";
import { createHealth } from "./lib/operator/health.ts";
import { createLogger } from "./lib/seams/logger_logtape.ts";
import { createMetrics } from "./lib/operator/metrics.ts";
import { createNatReader } from "./lib/nat/nat_reader.ts";
import { followGeneration } from "./lib/nat/nft_generation.ts";
import { openNetlinkDeleter } from "./lib/table/netlink/netlink_deleter.ts";
import { denoSpawn } from "./lib/seams/spawn_deno.ts";
import { runScan } from "./lib/operator/scan.ts";
import { serveProbes } from "./lib/operator/probe_server.ts";
import { HANGUP_MESSAGE, type SignalGuard } from "./lib/seams/signals.ts";
import { VERSION } from "./lib/version.ts";
import {
  openEventTracking,
  selectTracking,
  type Tracking,
  TrackingUnavailableError,
} from "./lib/table/tracking.ts";

const NAME = "conntrack-cleaner";

/** When to check again that SIGUSR1 is ignored: past Deno's ~500 ms grace for its own handler. */
const REASSERT_AFTER_MS = 1000;

async function main(): Promise<number> {
  // Since the first module was evaluated, SIGUSR1 neither ends the agent nor opens a debugger.
  const signals = startupSignals;
  let invocation;
  try {
    invocation = parseInvocation(Deno.args, (name) => Deno.env.get(name), Deno.stdout.isTerminal());
  } catch (error) {
    if (error instanceof ConfigError) return fail(error.message, 2);
    throw error;
  }
  switch (invocation.kind) {
    case "help":
      console.log(invocation.text.trimEnd());
      return 0;
    case "version":
      return await printVersions(invocation.conntrackBin);
    case "scan":
    case "run":
      break;
  }
  // Fail closed: an agent with CAP_NET_ADMIN and --allow-ffi must not run with a debugger a
  // signal away.
  if (signals.kind === "unprotected") return fail(signals.message, 2);
  const { guard } = signals;
  const { config } = invocation;
  let conntrackVersion: string;
  try {
    conntrackVersion = await probeConntrack(denoSpawn, config.conntrackBin);
  } catch (error) {
    if (error instanceof ConntrackUnusableError) return fail(error.message, 2);
    throw error;
  }
  await using logger = await createLogger({ format: config.logFormat, level: config.logLevel });
  const controller = new AbortController();
  const stop = () => controller.abort();
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  guard.onHangup(() => logger.info(HANGUP_MESSAGE));
  const reassert = () => reassertIgnored(guard, logger);
  Deno.unrefTimer(setTimeout(reassert, REASSERT_AFTER_MS));
  const { signal } = controller;
  let tracking: Tracking | undefined;
  const metrics = createMetrics({ version: VERSION, denoVersion: Deno.version.deno }, {
    tracking: () => trackingStatus(tracking),
  });
  // The nftables generation tells when the rules changed; its socket opens on the first read.
  using generation = followGeneration({ logger });
  const nat = config.natSource === "off" ? undefined : createNatReader({
    source: config.natSource,
    spawn: denoSpawn,
    logger,
    observer: metrics,
    generation: generation.read,
    clock: systemClock,
  });
  const options = agentOptions(config);
  const lister = chooseLister(config, logger);
  if (lister instanceof BackendUnavailableError) return fail(lister.message, 2);

  if (invocation.kind === "scan") {
    // Without a deleter the agent can only assess: scan deletes nothing by construction.
    const agent = createAgent({
      lister,
      clock: systemClock,
      logger,
      ...(nat ? { nat } : {}),
    }, options);
    return await runScan(agent, {
      json: invocation.json,
      watch: invocation.watch,
      periodMs: config.periodMs,
      clock: systemClock,
      write: (text) => Deno.stdout.writeSync(new TextEncoder().encode(text)),
      warn: (line) => console.error(line),
      signal,
    });
  }

  const deleter = orUnavailable(() =>
    selectDeleter(backendOptions(config.deleteBackend, config, logger), () => openNetlinkDeleter())
  );
  if (deleter instanceof BackendUnavailableError) return fail(deleter.message, 2);
  try {
    tracking = selectTracking({
      choice: config.tracking,
      dump: lister,
      destinations: config.destinations,
      resyncPeriodMs: config.resyncPeriodMs,
      eventBufferBytes: config.eventBufferBytes,
      monotonicMs: () => systemClock.monotonic(),
      logger,
    }, openEventTracking);
  } catch (error) {
    if (error instanceof TrackingUnavailableError) return fail(error.message, 2);
    throw error;
  }
  // Closed on every way out from here: the subscription reads on a helper thread until then.
  await using _tracking = tracking;
  const health = createHealth({ periodMs: config.periodMs, clock: systemClock });
  let server;
  if (config.metricsAddress) {
    try {
      server = await serveProbes({ ...config.metricsAddress, metrics, health, logger, signal });
    } catch (error) {
      return fail(error instanceof Error ? error.message : String(error), 2);
    }
  }
  const observer = {
    cycleCompleted: (report: Parameters<typeof metrics.cycleCompleted>[0]) => {
      metrics.cycleCompleted(report);
      health.cycleCompleted(report);
      reassert();
    },
    cycleProgressed: () => health.markLoopAlive(),
  };
  logger.info("conntrack-cleaner started", {
    version: VERSION,
    conntrack: conntrackVersion,
    backend: deleter.name,
    list_backend: lister.name,
    tracking: tracking.mode,
    dump_frequency_ms: config.periodMs,
    busy_limit: config.busyLimit,
    renewal_threshold: config.renewalThreshold,
    unreplied_max_age_ms: config.unrepliedMaxAgeMs,
    nat_source: config.natSource,
    dry_run: config.dryRun,
    ...(server ? { metrics_address: `${server.addr.hostname}:${server.addr.port}` } : {}),
  });
  const agent = createAgent(
    {
      lister: tracking.lister,
      clock: systemClock,
      logger,
      deleter,
      observer,
      ...(nat ? { nat } : {}),
    },
    options,
  );
  await agent.run(signal);
  await server?.finished;
  if (Symbol.dispose in deleter) (deleter as Disposable)[Symbol.dispose]();
  if (Symbol.dispose in lister) (lister as Disposable)[Symbol.dispose]();
  logger.info("conntrack-cleaner stopped");
  return 0;
}

/** The lister the configuration asks for, or the error saying why it cannot be had. */
function chooseLister(config: Config, logger: Logger): Lister | BackendUnavailableError {
  return orUnavailable(() =>
    selectLister(backendOptions(config.listBackend, config, logger), () => openNetlinkLister())
  );
}

/** What the tracking metrics show; dump mode before the tracking is chosen (and in `scan`). */
function trackingStatus(tracking: Tracking | undefined) {
  const counts = tracking?.counts();
  return {
    mode: tracking?.mode ?? "dump",
    eventsReceived: counts?.received.new ?? 0,
    eventsLost: counts?.lost ?? 0,
    resyncs: counts?.resyncs ?? 0,
  } as const;
}

function backendOptions(backend: Backend, config: Config, logger: Logger): BackendOptions {
  return { backend, conntrack: config.conntrackBin, spawn: denoSpawn, logger };
}

/** The backend `select` returns, or the error saying why one named by the operator is missing. */
function orUnavailable<T>(select: () => T): T | BackendUnavailableError {
  try {
    return select();
  } catch (error) {
    if (error instanceof BackendUnavailableError) return error;
    throw error;
  }
}

function agentOptions(config: Config) {
  return {
    periodMs: config.periodMs,
    busyLimit: config.busyLimit,
    renewalThreshold: config.renewalThreshold,
    unrepliedMaxAgeMs: config.unrepliedMaxAgeMs,
    dryRun: config.dryRun,
    accept: makeTargetFilter(config),
  };
}

/** Ignores SIGUSR1 again if the runtime took it back, and says so. */
function reassertIgnored(guard: SignalGuard, logger: Logger): void {
  if (guard.reassert()) {
    logger.warn("SIGUSR1 was being handled again; ignoring it again so it cannot open a debugger");
  }
}

async function printVersions(bin: string): Promise<number> {
  let conntrack: string;
  try {
    conntrack = await conntrackVersion(denoSpawn, bin);
  } catch (error) {
    conntrack = `unavailable (${error instanceof Error ? error.message : String(error)})`;
  }
  console.log(`${NAME} ${VERSION}\ndeno ${Deno.version.deno}\nconntrack ${conntrack}`);
  return 0;
}

function fail(message: string, code: number): number {
  console.error(`${NAME}: ${message}`);
  return code;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main();
  } catch (error) {
    // Anything here is a bug, not an operator's mistake: one line, plus the stack for the report.
    console.error(`${NAME}: unexpected error: ${error instanceof Error ? error.stack : error}`);
    code = 1;
  }
  Deno.exit(code);
}
