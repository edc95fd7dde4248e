/**
 * Test hosts for the end-to-end suite and `deno task demo`: three network namespaces (client,
 * node, backend) joined by veth pairs, with addresses from the documentation ranges only, so no
 * packet ever leaves them.
 *
 * ```
 *  client 198.51.100.2 ── 198.51.100.1 node 203.0.113.1 ── 203.0.113.2 backend
 *         2001:db8:1::2 ── 2001:db8:1::1      2001:db8:2::1 ── 2001:db8:2::2
 *  VIP 192.0.2.10 / 2001:db8:100::10 is routed client → node → backend, where it is dropped
 *  until the node DNATs VIP:80 to backend:8080.
 * ```
 *
 * The node forwards, tracks connections and has a kube-proxy-like nat chain (iptables
 * `KUBE-SERVICES` jumped from `PREROUTING`, or an nftables `kube-proxy` table); the Service's DNAT
 * rule arrives later through {@link Testbed.addServiceDnat}. Everything runs through the
 * project's {@link SpawnCommand} seam, and everything is torn down by `await using`.
 *
 * @module
 */
import type { Clock } from "../../lib/seams/clock.ts";
import { systemClock } from "../../lib/seams/clock.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import type {
  CommandOutput,
  ExitStatus,
  SpawnCommand,
  SpawnedProcess,
} from "../../lib/seams/spawn.ts";
import type { Family } from "../../lib/core/flow.ts";
import {
  ADDRESSES,
  BACKEND_BANNER,
  BACKEND_PORT,
  FAMILIES,
  type FamilyAddresses,
  type Host,
  HOSTS,
  SERVICE_PORT,
} from "./testbed/topology.ts";
import {
  backendRules,
  type DnatStyle,
  iptablesService,
  iptablesSkeleton,
  nftService,
  nftSkeleton,
  type ProxyMode,
  restoreCommand,
} from "./testbed/proxy_rules.ts";
import { type ConntrackEntry, parseConntrackLine } from "./testbed/conntrack_entries.ts";
import { type ClientOptions, type RetryingClient, watchClient } from "./testbed/retrying_client.ts";
import {
  type AgentCommand,
  type AgentProcess,
  type AgentRunOptions,
  watchAgent,
} from "./testbed/agent_process.ts";
import { drain, readLines } from "./testbed/stdout_lines.ts";
import { killNamespace, namespaceTag, sweepOrphans } from "./testbed/namespaces.ts";
import { builtOrDisposed, hostNames, wireVethChain } from "./testbed/veth_chain.ts";
import { stderrReason, TestbedError } from "./testbed/testbed_error.ts";

// The pieces live in tests/e2e/testbed/, one concern each; this module stays the one entry
// point the tests import.
export {
  ADDRESSES,
  BACKEND_BANNER,
  BACKEND_PORT,
  type FamilyAddresses,
  type Host,
  HOSTS,
  NAMESPACE_PREFIX,
  SERVICE_PORT,
} from "./testbed/topology.ts";
export { type DnatStyle, type ProxyMode } from "./testbed/proxy_rules.ts";
export { type ConntrackEntry, parseConntrackLine } from "./testbed/conntrack_entries.ts";
export {
  type ClientEvent,
  type ClientOptions,
  type RetryingClient,
} from "./testbed/retrying_client.ts";
export {
  type AgentCommand,
  type AgentLogRecord,
  type AgentProcess,
  type AgentRunOptions,
  parseAgentLogLine,
  prepareAgentCommand,
  startTaskArgv,
} from "./testbed/agent_process.ts";
export { missingPrerequisites } from "./testbed/prerequisites.ts";
export { TestbedError } from "./testbed/testbed_error.ts";

/** Options of {@link Testbed.create}. */
export interface TestbedOptions {
  /** Starts programs; `denoSpawn` for real runs. */
  readonly spawn: SpawnCommand;
  /**
   * Time and sleeping, for the polling helpers.
   * @default {systemClock}
   */
  readonly clock?: Clock;
  /**
   * Which kube-proxy skeleton the node gets.
   * @default {"iptables"}
   */
  readonly proxy?: ProxyMode;
  /**
   * The project root, where `deno.json`, `main.ts` and `tests/e2e/` live.
   * @default {two levels above this file}
   */
  readonly root?: string;
  /**
   * The deno binary that runs the agent, the client and the backend.
   * @default {Deno.execPath()}
   */
  readonly deno?: string;
}

/** Options of {@link Testbed.addServiceDnat}. */
export interface DnatOptions {
  /**
   * Rule shape.
   * @default {"plain"}
   */
  readonly style?: DnatStyle;
  /**
   * Port on the VIP.
   * @default {SERVICE_PORT}
   */
  readonly servicePort?: number;
}

/** Options for one command run in a host. */
export interface ExecOptions {
  /** Text written to standard input. */
  readonly stdin?: string;
  /** Aborting kills the command. */
  readonly signal?: AbortSignal;
}

/**
 * The three hosts. Create with {@link Testbed.create} and dispose with `await using`: disposal
 * stops every process the testbed started, kills anything left in its namespaces and deletes
 * them, even after a failed assertion.
 *
 * @example Stuck client, then the Service appears
 * ```ts ignore
 * import { Testbed } from "./testbed.ts";
 * import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
 * await using bed = await Testbed.create({ spawn: denoSpawn });
 * await using client = await bed.startClient("ipv4", { sport: 40000 });
 * await bed.waitForEntry((e) => e.flow.original.sport === 40000, 5000, "the client's SYN");
 * await bed.addServiceDnat("ipv4", { style: "kube" });
 * ```
 */
export class Testbed implements AsyncDisposable {
  /** Namespace name of each host. */
  readonly names: Readonly<Record<Host, string>>;
  /** The proxy skeleton the node has. */
  readonly proxy: ProxyMode;
  /** The project root. */
  readonly root: string;
  readonly #spawn: SpawnCommand;
  readonly #clock: Clock;
  readonly #deno: string;
  readonly #stopAll = new AbortController();
  readonly #children: Promise<ExitStatus>[] = [];
  #disposed = false;

  private constructor(
    names: Readonly<Record<Host, string>>,
    options: TestbedOptions,
  ) {
    this.names = names;
    this.proxy = options.proxy ?? "iptables";
    this.root = options.root ?? new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
    this.#spawn = options.spawn;
    this.#clock = options.clock ?? systemClock;
    this.#deno = options.deno ?? Deno.execPath();
  }

  /**
   * Creates the namespaces, links, addresses, routes, the node's proxy skeleton, the backend's
   * drop rule and server. Namespaces left by runs whose process is gone are deleted first. On
   * failure everything created so far is removed before the error propagates.
   */
  static async create(options: TestbedOptions): Promise<Testbed> {
    await sweepOrphans(options.spawn);
    const bed = new Testbed(hostNames(namespaceTag()), options);
    return await builtOrDisposed(bed, () => bed.#build());
  }

  async #build(): Promise<void> {
    await wireVethChain(this.#spawn, this.names);
    const links: readonly [Host, string, keyof FamilyAddresses][] = [
      ["client", "c0", "client"],
      ["node", "n0", "nodeClientSide"],
      ["node", "n1", "nodeBackendSide"],
      ["backend", "b0", "backend"],
    ];
    for (const [host, dev, role] of links) {
      for (const family of FAMILIES) {
        const a = ADDRESSES[family];
        // No DAD: IPv6 addresses are usable at once instead of after a second or two.
        const extra = family === "ipv6" ? ["nodad"] : [];
        await this.run(host, ["ip", "addr", "add", `${a[role]}/${a.prefix}`, "dev", dev, ...extra]);
      }
    }
    for (const family of FAMILIES) {
      const a = ADDRESSES[family];
      const ip = family === "ipv4" ? "-4" : "-6";
      const host = family === "ipv4" ? "/32" : "/128";
      await this.run("client", ["ip", ip, "route", "add", "default", "via", a.nodeClientSide]);
      await this.run("backend", ["ip", ip, "route", "add", "default", "via", a.nodeBackendSide]);
      // The VIP is routed on to the backend, as a cloud load balancer routes it to a node: the SYN
      // has to leave the node, or its conntrack entry is never confirmed.
      await this.run("node", ["ip", ip, "route", "add", `${a.vip}${host}`, "via", a.backend]);
    }
    await this.run("backend", ["nft", "-f", "-"], { stdin: backendRules() });
    await this.#installProxySkeleton();
    await this.#startBackend();
  }

  async #installProxySkeleton(): Promise<void> {
    if (this.proxy === "nftables") {
      await this.run("node", ["nft", "-f", "-"], { stdin: nftSkeleton() });
      return;
    }
    for (const family of FAMILIES) {
      await this.run("node", [restoreCommand(family, this.proxy), "--noflush"], {
        stdin: iptablesSkeleton(),
      });
    }
  }

  async #startBackend(): Promise<void> {
    const script = `${this.root}/tests/e2e/backend.ts`;
    const child = this.spawn("backend", [
      this.#deno,
      "run",
      "--no-config",
      "--allow-net",
      script,
      String(BACKEND_PORT),
      BACKEND_BANNER,
    ]);
    const lines = readLines(child.stdout);
    const first = await lines.next();
    if (first.done || !first.value.startsWith("listening")) {
      const status = await child.status;
      throw new TestbedError(
        `Cannot start the backend server as ${script}: it exited ${status.code}: ` +
          stderrReason(status.stderr),
      );
    }
    drain(lines);
  }

  /**
   * Starts a program inside a host's namespace; it is killed at disposal at the latest.
   * Throws `SpawnError` when `ip` cannot be started.
   */
  spawn(host: Host, argv: readonly string[], options: ExecOptions = {}): SpawnedProcess {
    const signal = options.signal
      ? AbortSignal.any([options.signal, this.#stopAll.signal])
      : this.#stopAll.signal;
    const child = this.#spawn("ip", ["netns", "exec", this.names[host], ...argv], {
      signal,
      ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
    });
    this.#children.push(child.status);
    return child;
  }

  /** Runs a program in a host to its end and returns its output, whatever its exit code. */
  exec(host: Host, argv: readonly string[], options: ExecOptions = {}): Promise<CommandOutput> {
    return runToEnd(this.#spawn, "ip", ["netns", "exec", this.names[host], ...argv], {
      ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** Runs a program in a host; throws {@link TestbedError} when it exits non-zero. */
  async run(host: Host, argv: readonly string[], options: ExecOptions = {}): Promise<string> {
    const out = await this.exec(host, argv, options);
    if (out.code !== 0) {
      throw new TestbedError(
        `Cannot run ${argv.join(" ")} in ${this.names[host]}: exit ${out.code}: ` +
          stderrReason(out.stderr),
      );
    }
    return out.stdout;
  }

  /** Runs `conntrack` with `args` in the node namespace, whatever its exit code. */
  conntrack(args: readonly string[], options: ExecOptions = {}): Promise<CommandOutput> {
    return this.exec("node", ["conntrack", ...args], options);
  }

  /** Every TCP entry of the node's table, with ids. */
  async entries(): Promise<readonly ConntrackEntry[]> {
    const out = await this.conntrack(["-L", "-p", "tcp", "-o", "id"]);
    if (out.code !== 0) {
      throw new TestbedError(`Cannot list the node's conntrack table: ${stderrReason(out.stderr)}`);
    }
    return out.stdout.split("\n").flatMap((line) => {
      const entry = parseConntrackLine(line);
      return entry ? [entry] : [];
    });
  }

  /**
   * Polls {@link Testbed.entries} every 200 ms until one matches; throws {@link TestbedError}
   * naming `what` after `timeoutMs`.
   */
  async waitForEntry(
    predicate: (entry: ConntrackEntry) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<ConntrackEntry> {
    const deadline = this.#clock.monotonic() + timeoutMs;
    for (;;) {
      const found = (await this.entries()).find(predicate);
      if (found) return found;
      if (this.#clock.monotonic() > deadline) {
        throw new TestbedError(
          `Cannot find ${what} in the node's conntrack table after ${timeoutMs} ms`,
        );
      }
      await this.#clock.sleep(200);
    }
  }

  /**
   * Installs the Service: DNAT from `VIP:servicePort` to `backend:8080` in the node's proxy
   * rules, for one family, in the given {@link DnatStyle}.
   */
  async addServiceDnat(family: Family, options: DnatOptions = {}): Promise<void> {
    const style = options.style ?? "plain";
    const port = options.servicePort ?? SERVICE_PORT;
    if (this.proxy === "nftables") {
      await this.run("node", ["nft", "-f", "-"], { stdin: nftService(family, port, style) });
    } else {
      await this.run("node", [restoreCommand(family, this.proxy), "--noflush"], {
        stdin: iptablesService(family, port, style),
      });
    }
  }

  /**
   * Starts tests/e2e/client.ts in the client namespace and resolves once it has begun its first
   * attempt.
   */
  startClient(family: Family, options: ClientOptions): Promise<RetryingClient> {
    const argv = [
      this.#deno,
      "run",
      "--no-config",
      "--allow-net",
      `${this.root}/tests/e2e/client.ts`,
      "--host",
      ADDRESSES[family].vip,
      "--port",
      String(options.dport ?? SERVICE_PORT),
      "--sport",
      String(options.sport),
      "--timeout-ms",
      String(options.timeoutMs ?? 1000),
      "--mode",
      options.mode ?? "retry",
    ];
    const stop = new AbortController();
    const child = this.spawn("client", argv, { signal: stop.signal });
    return Promise.resolve(watchClient(child, stop));
  }

  /**
   * Emulates a pre-6.x kernel, which renews a `SYN_SENT` entry's timer on every retried SYN:
   * runs `conntrack -U … -t 120` on the client's flow to the VIP every `intervalMs` until
   * disposed.
   */
  startRenewer(
    family: Family,
    sport: number,
    intervalMs = 500,
    dport = SERVICE_PORT,
  ): AsyncDisposable {
    const a = ADDRESSES[family];
    const stop = new AbortController();
    const signal = AbortSignal.any([stop.signal, this.#stopAll.signal]);
    const args = [
      "-U",
      "-p",
      "tcp",
      "-s",
      a.client,
      "-d",
      a.vip,
      "--sport",
      String(sport),
      "--dport",
      String(dport),
      "-t",
      "120",
    ];
    const loop = (async () => {
      while (!signal.aborted) {
        // Exit 1 ("0 flow entries updated") once the entry is gone is expected.
        await this.conntrack(args, { signal });
        await this.#clock.sleep(intervalMs, signal);
      }
    })();
    return {
      [Symbol.asyncDispose]: async () => {
        stop.abort();
        await loop;
      },
    };
  }

  /**
   * Starts the agent as users do: `ip netns exec <node> deno run <start task flags> main.ts
   * <flags>`, with its stderr (JSON logs) read line by line.
   */
  async startAgent(
    command: AgentCommand,
    flags: readonly string[],
    options: AgentRunOptions = {},
  ): Promise<AgentProcess> {
    const env = {
      ...options.env,
      ...(options.pathPrefix
        ? { PATH: [...options.pathPrefix, Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin"].join(":") }
        : {}),
    };
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    // env(1) sets the environment; the shell only merges stderr into stdout so logs stream, then
    // execs, so the agent itself is the process that gets our SIGTERM.
    const argv = [
      "env",
      ...envArgs,
      "sh",
      "-c",
      'exec "$@" 2>&1',
      "sh",
      ...command.argv,
      ...flags,
    ];
    const stop = new AbortController();
    const child = this.spawn("node", argv, { signal: stop.signal });
    const agent = watchAgent(child, stop, [...command.argv, ...flags], this.#clock);
    if (options.waitStarted ?? true) {
      await agent.waitFor(
        (r) => r.message === "conntrack-cleaner started",
        20_000,
        "the agent's start line",
      );
    }
    return agent;
  }

  /** Process ids still inside a host's namespace (`ip netns pids`). */
  async pids(host: Host): Promise<readonly number[]> {
    const out = await runToEnd(this.#spawn, "ip", ["netns", "pids", this.names[host]]);
    return out.stdout.split("\n").filter((l) => l.trim() !== "").map(Number);
  }

  /**
   * Processes still inside a host's namespace with their command lines, from `ps` (Deno will not
   * read `/proc/<pid>` without `--allow-all`).
   */
  async processes(host: Host): Promise<readonly { pid: number; args: string }[]> {
    const pids = await this.pids(host);
    if (pids.length === 0) return [];
    const out = await runToEnd(this.#spawn, "ps", ["-o", "pid=,args=", "-p", pids.join(",")]);
    return out.stdout.split("\n").flatMap((line) => {
      const match = line.trim().match(/^(\d+)\s+(.*)$/);
      return match ? [{ pid: Number(match[1]), args: match[2] ?? "" }] : [];
    });
  }

  /** Stops every process, kills stragglers, deletes the namespaces. Safe to call twice. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#stopAll.abort();
    await Promise.race([Promise.allSettled(this.#children), this.#clock.sleep(3000)]);
    for (const host of HOSTS) {
      await killNamespace(this.#spawn, this.names[host]);
    }
  }
}
