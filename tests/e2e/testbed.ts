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
import type { Candidate, Family, Flow, Tuple } from "../../lib/core/flow.ts";
import { tokenizeLine } from "../../lib/table/text/tokenizer.ts";

/** The three test hosts. */
export type Host = "client" | "node" | "backend";

/** Every host, in the order they are created. */
export const HOSTS: readonly Host[] = ["client", "node", "backend"];

/** The addresses of one family. */
export interface FamilyAddresses {
  /** The client's address. */
  readonly client: string;
  /** The node's address on the client link (the client's gateway). */
  readonly nodeClientSide: string;
  /** The node's address on the backend link (the backend's gateway). */
  readonly nodeBackendSide: string;
  /** The backend's address: the DNAT target. */
  readonly backend: string;
  /** The Service's LoadBalancer VIP, routed to the node. */
  readonly vip: string;
  /** Prefix length of both links. */
  readonly prefix: number;
}

/** The addresses the testbed uses, all from documentation ranges. */
export const ADDRESSES: Readonly<Record<Family, FamilyAddresses>> = {
  ipv4: {
    client: "198.51.100.2",
    nodeClientSide: "198.51.100.1",
    nodeBackendSide: "203.0.113.1",
    backend: "203.0.113.2",
    vip: "192.0.2.10",
    prefix: 24,
  },
  ipv6: {
    client: "2001:db8:1::2",
    nodeClientSide: "2001:db8:1::1",
    nodeBackendSide: "2001:db8:2::1",
    backend: "2001:db8:2::2",
    vip: "2001:db8:100::10",
    prefix: 64,
  },
};

/** The Service port on the VIP. */
export const SERVICE_PORT = 80;
/** The port the backend serves, the DNAT target. */
export const BACKEND_PORT = 8080;
/** The first line the backend sends on every connection. */
export const BACKEND_BANNER = "hello from the backend";
/** Prefix of every namespace the testbed creates. */
export const NAMESPACE_PREFIX = "cct-";

/**
 * Which kube-proxy the node imitates. `iptables-legacy` writes its rules with the legacy
 * flavour, on a node whose `iptables` is the nf_tables one (kube-proxy's image picks its flavour
 * by what the node already uses, so both can meet).
 */
export type ProxyMode = "iptables" | "iptables-legacy" | "nftables";

/**
 * The shape of a Service's DNAT rule.
 * - `plain`: one DNAT rule in the proxy's services chain.
 * - `kube`: the shape kube-proxy writes: iptables `KUBE-SERVICES → KUBE-EXT-… → KUBE-SVC-… →
 *   KUBE-SEP-… → DNAT`, or nftables `services` → `service-ips` verdict map → `external-…` →
 *   `service-…` → `endpoint-…` with `dnat`.
 */
export type DnatStyle = "plain" | "kube";

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
   * @default {the parent of this file's directory}
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

/** One TCP entry of the node's conntrack table, as `conntrack -L -p tcp -o id` prints it. */
export interface ConntrackEntry {
  /** The kernel's entry id: unchanged as long as the entry is the same entry. */
  readonly id: number;
  /** TCP state, e.g. `SYN_SENT`, `ESTABLISHED`. */
  readonly state: string;
  /** Seconds left on the entry's timer. */
  readonly timeout: number;
  /** Whether the entry is flagged `[UNREPLIED]`. */
  readonly unreplied: boolean;
  /** Both tuples and the zone. */
  readonly flow: Flow;
  /** The project's tokenizer's reading of the line, when it is a candidate. */
  readonly candidate?: Candidate;
  /** The line as printed. */
  readonly line: string;
}

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

/** One JSON log record of the agent. */
export interface AgentLogRecord {
  /** The constant message, e.g. `deleted stale flow`. */
  readonly message: string;
  /** Level as written, e.g. `INFO`. */
  readonly level: string;
  /** Structured properties (flattened from LogTape's `properties` when nested). */
  readonly properties: Readonly<Record<string, unknown>>;
  /** Milliseconds ({@link Clock.monotonic}) when the test read the line. */
  readonly readAt: number;
  /** The line as written. */
  readonly raw: string;
}

/** Options of {@link Testbed.startAgent}. */
export interface AgentRunOptions {
  /** Extra environment for the agent. */
  readonly env?: Readonly<Record<string, string>>;
  /** Directories put in front of `PATH` (e.g. a wrapper named `conntrack`). */
  readonly pathPrefix?: readonly string[];
  /**
   * Wait for the agent's `conntrack-cleaner started` line before resolving.
   * @default {true}
   */
  readonly waitStarted?: boolean;
}

/** The agent running as a real process in the node namespace. */
export interface AgentProcess extends AsyncDisposable {
  /** Its argv as started (after `ip netns exec <node>`). */
  readonly argv: readonly string[];
  /** JSON log records so far. */
  readonly records: readonly AgentLogRecord[];
  /** Lines that were not JSON (stack traces, deno errors). */
  readonly otherLines: readonly string[];
  /** Resolves when the agent has exited. */
  readonly status: Promise<ExitStatus>;
  /**
   * Resolves with the first record (past or future) that matches; rejects after `timeoutMs`, or
   * when the agent exits first, with the last lines it wrote.
   */
  waitFor(
    predicate: (record: AgentLogRecord) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<AgentLogRecord>;
  /** Sends SIGTERM and waits for the exit. */
  stop(): Promise<ExitStatus>;
}

/** How the agent is started, derived from `deno.json`'s `start` task. */
export interface AgentCommand {
  /** `deno run` and the start task's flags, `--config`, then the absolute entry point. */
  readonly argv: readonly string[];
}

/** A testbed step failed: a command exited non-zero or something did not happen in time. */
export class TestbedError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "TestbedError";
  }
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
    this.root = options.root ?? new URL("..", import.meta.url).pathname.replace(/\/$/, "");
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
    const tag = `${NAMESPACE_PREFIX}${Deno.pid}-${randomHex(4)}`;
    const bed = new Testbed(
      { client: `${tag}-client`, node: `${tag}-node`, backend: `${tag}-backend` },
      options,
    );
    try {
      await bed.#build();
    } catch (error) {
      await bed[Symbol.asyncDispose]();
      throw error;
    }
    return bed;
  }

  async #build(): Promise<void> {
    for (const host of HOSTS) await this.#host(["ip", "netns", "add", this.names[host]]);
    const { client, node, backend } = this.names;
    await this.#host([
      "ip",
      "-n",
      client,
      "link",
      "add",
      "c0",
      "type",
      "veth",
      "peer",
      "name",
      "n0",
      "netns",
      node,
    ]);
    await this.#host([
      "ip",
      "-n",
      node,
      "link",
      "add",
      "n1",
      "type",
      "veth",
      "peer",
      "name",
      "b0",
      "netns",
      backend,
    ]);
    // No DAD: IPv6 addresses are usable at once instead of after a second or two.
    await this.run("node", [
      "sysctl",
      "-qw",
      "net.ipv4.ip_forward=1",
      "net.ipv6.conf.all.forwarding=1",
    ]);
    const links: readonly [Host, string, keyof FamilyAddresses][] = [
      ["client", "c0", "client"],
      ["node", "n0", "nodeClientSide"],
      ["node", "n1", "nodeBackendSide"],
      ["backend", "b0", "backend"],
    ];
    for (const [host, dev, role] of links) {
      for (const family of FAMILIES) {
        const a = ADDRESSES[family];
        const extra = family === "ipv6" ? ["nodad"] : [];
        await this.run(host, ["ip", "addr", "add", `${a[role]}/${a.prefix}`, "dev", dev, ...extra]);
      }
      await this.run(host, ["ip", "link", "set", dev, "up"]);
    }
    for (const host of HOSTS) await this.run(host, ["ip", "link", "set", "lo", "up"]);
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
          lastLine(status.stderr),
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
          lastLine(out.stderr),
      );
    }
    return out.stdout;
  }

  async #host(argv: readonly string[]): Promise<void> {
    const [program = "", ...args] = argv;
    const out = await runToEnd(this.#spawn, program, args);
    if (out.code !== 0) {
      throw new TestbedError(
        `Cannot run ${argv.join(" ")}: exit ${out.code}: ${lastLine(out.stderr)}`,
      );
    }
  }

  /** Runs `conntrack` with `args` in the node namespace, whatever its exit code. */
  conntrack(args: readonly string[], options: ExecOptions = {}): Promise<CommandOutput> {
    return this.exec("node", ["conntrack", ...args], options);
  }

  /** Every TCP entry of the node's table, with ids. */
  async entries(): Promise<readonly ConntrackEntry[]> {
    const out = await this.conntrack(["-L", "-p", "tcp", "-o", "id"]);
    if (out.code !== 0) {
      throw new TestbedError(`Cannot list the node's conntrack table: ${lastLine(out.stderr)}`);
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

const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

/**
 * Reads the agent's start flags from `deno.json`'s `tasks.start`, so the tests run the agent with
 * the permissions users get, and caches its dependencies from the host namespace (the node
 * namespace has no route to the registry).
 */
export async function prepareAgentCommand(
  spawn: SpawnCommand,
  root: string,
  deno: string = Deno.execPath(),
): Promise<AgentCommand> {
  const config = JSON.parse(await Deno.readTextFile(`${root}/deno.json`)) as {
    tasks?: Record<string, unknown>;
  };
  const task = config.tasks?.["start"];
  if (typeof task !== "string") {
    throw new TestbedError(`Cannot start the agent as ${root}/deno.json has no "start" task`);
  }
  const argv = startTaskArgv(task, root, deno);
  const entry = argv[argv.length - 1] ?? "";
  const cached = await runToEnd(spawn, deno, ["cache", "--config", `${root}/deno.json`, entry]);
  if (cached.code !== 0) {
    throw new TestbedError(`Cannot cache the agent's dependencies: ${lastLine(cached.stderr)}`);
  }
  return { argv };
}

/**
 * Turns a `deno run <flags> <entry>` task into an argv with the same flags, an explicit
 * `--config` and an absolute entry point; anything after the entry point is dropped.
 *
 * @example
 * ```ts
 * import { startTaskArgv } from "./testbed.ts";
 * startTaskArgv("deno run --allow-ffi main.ts", "/repo", "/bin/deno");
 * // ["/bin/deno", "run", "--allow-ffi", "--config", "/repo/deno.json", "/repo/main.ts"]
 * ```
 */
export function startTaskArgv(task: string, root: string, deno: string): readonly string[] {
  const words = task.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run") {
    throw new TestbedError(
      `Cannot read the start task as "deno run …": current value is "${task}"`,
    );
  }
  const rest = words.slice(2);
  const entryAt = rest.findIndex((w) => !w.startsWith("-") && /\.(ts|js)$/.test(w));
  if (entryAt < 0) {
    throw new TestbedError(
      `Cannot find the entry point in the start task: current value is "${task}"`,
    );
  }
  const flags = rest.slice(0, entryAt);
  const entry = rest[entryAt] ?? "";
  const hasConfig = flags.some((f) => f === "--config" || f.startsWith("--config=") || f === "-c");
  return [
    deno,
    "run",
    ...flags,
    ...(hasConfig ? [] : ["--config", `${root}/deno.json`]),
    entry.startsWith("/") ? entry : `${root}/${entry}`,
  ];
}

/**
 * What this machine lacks for the namespace tests, one short phrase each; empty when ready.
 * Checks root and the programs on `PATH` without running anything.
 */
export function missingPrerequisites(): readonly string[] {
  const missing: string[] = [];
  const root = isRoot();
  if (root === "unknown") missing.push("the --allow-sys=uid permission (to check for root)");
  else if (!root) missing.push("root");
  const path = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  const programs = ["ip", "conntrack", "iptables-restore", "ip6tables-restore", "nft", "sysctl"];
  const absent = programs.filter((p) => !path.some((dir) => isExecutable(`${dir}/${p}`)));
  if (absent.length > 0) {
    missing.push(
      `programs ${absent.join(", ")} (apt-get install iproute2 conntrack iptables nftables procps)`,
    );
  }
  return missing;
}

/** Whether this process runs as root; `unknown` without the permission to ask. */
function isRoot(): boolean | "unknown" {
  try {
    return Deno.uid() === 0;
  } catch {
    // Deno forbids reading /proc/self without --allow-all, so the uid is all there is.
    return "unknown";
  }
}

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Parses one line of `conntrack -L -p tcp -o id`; `undefined` for anything that is not a TCP
 * entry with both tuples and an id (the stderr summary, blank lines, other protocols).
 *
 * @example
 * ```ts
 * import { parseConntrackLine } from "./testbed.ts";
 * const e = parseConntrackLine(
 *   "tcp 6 431999 ESTABLISHED src=198.51.100.2 dst=192.0.2.10 sport=30443 dport=443 " +
 *     "src=203.0.113.2 dst=198.51.100.2 sport=8080 dport=30443 [ASSURED] mark=0 use=1 id=42",
 * );
 * e?.id; // 42
 * ```
 */
export function parseConntrackLine(line: string): ConntrackEntry | undefined {
  const words = line.trim().split(/\s+/);
  if (words[0] !== "tcp") return undefined;
  const timeout = Number(words[2]);
  const state = words[3] ?? "";
  const tuples: Record<string, string>[] = [];
  let id: number | undefined;
  let zone = 0;
  for (const word of words.slice(4)) {
    const eq = word.indexOf("=");
    if (eq < 0) continue;
    const key = word.slice(0, eq);
    const value = word.slice(eq + 1);
    if (key === "src") tuples.push({});
    if (["src", "dst", "sport", "dport"].includes(key)) {
      const current = tuples[tuples.length - 1];
      if (current) current[key] = value;
    } else if (key === "id") {
      id = Number(value);
    } else if (key === "zone") {
      zone = Number(value);
    }
  }
  const original = toTuple(tuples[0]);
  const reply = toTuple(tuples[1]);
  if (!original || !reply || id === undefined || !Number.isFinite(timeout)) return undefined;
  const flow: Flow = {
    family: original.src.includes(":") ? "ipv6" : "ipv4",
    original,
    reply,
    zone,
  };
  const parsed = tokenizeLine(line);
  return {
    id,
    state,
    timeout,
    unreplied: words.includes("[UNREPLIED]"),
    flow,
    ...(parsed.kind === "candidate" ? { candidate: parsed.candidate } : {}),
    line,
  };
}

function toTuple(raw: Record<string, string> | undefined): Tuple | undefined {
  if (!raw || !raw["src"] || !raw["dst"] || !raw["sport"] || !raw["dport"]) return undefined;
  return {
    src: raw["src"],
    dst: raw["dst"],
    sport: Number(raw["sport"]),
    dport: Number(raw["dport"]),
  };
}

/**
 * Parses one line the agent wrote with `--log-format json`; `undefined` when it is not JSON.
 * LogTape's `properties` object is flattened into {@link AgentLogRecord.properties}.
 */
export function parseAgentLogLine(raw: string, readAt: number): AgentLogRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  const message = typeof record["message"] === "string"
    ? record["message"]
    : typeof record["msg"] === "string"
    ? record["msg"]
    : "";
  const nested = record["properties"];
  const properties = typeof nested === "object" && nested !== null && !Array.isArray(nested)
    ? { ...record, ...(nested as Record<string, unknown>) }
    : record;
  return { message, level: String(record["level"] ?? ""), properties, readAt, raw };
}

function watchClient(child: SpawnedProcess, stop: AbortController): RetryingClient {
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
        lastLine(status.stderr),
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

function watchAgent(
  child: SpawnedProcess,
  stop: AbortController,
  argv: readonly string[],
  clock: Clock,
): AgentProcess {
  const records: AgentLogRecord[] = [];
  const otherLines: string[] = [];
  const listeners = new Set<() => void>();
  const reading = (async () => {
    for await (const line of readLines(child.stdout)) {
      const record = parseAgentLogLine(line, clock.monotonic());
      if (record) records.push(record);
      else if (line.trim() !== "") otherLines.push(line);
      for (const listener of listeners) listener();
    }
  })();
  const status = (async () => {
    const result = await child.status;
    await reading;
    for (const listener of listeners) listener();
    return result;
  })();
  let exited = false;
  status.then(() => exited = true);
  const tail = () => [...records.map((r) => r.raw), ...otherLines].slice(-5).join("\n  ");

  function waitFor(
    predicate: (record: AgentLogRecord) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<AgentLogRecord> {
    return new Promise((resolve, reject) => {
      const timer = AbortSignal.timeout(timeoutMs);
      const done = () => {
        listeners.delete(check);
        timer.removeEventListener("abort", onTimeout);
      };
      const check = () => {
        const found = records.find(predicate);
        if (found) {
          done();
          resolve(found);
        } else if (exited) {
          done();
          reject(
            new TestbedError(`Cannot see ${what}: the agent exited first; it wrote:\n  ${tail()}`),
          );
        }
      };
      const onTimeout = () => {
        done();
        reject(
          new TestbedError(
            `Cannot see ${what} after ${timeoutMs} ms; the agent wrote:\n  ${tail()}`,
          ),
        );
      };
      timer.addEventListener("abort", onTimeout, { once: true });
      listeners.add(check);
      check();
    });
  }

  const finish = async () => {
    stop.abort();
    return await status;
  };
  return {
    argv,
    records,
    otherLines,
    status,
    waitFor,
    stop: finish,
    [Symbol.asyncDispose]: async () => {
      await finish();
    },
  };
}

async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    const lines = rest.split("\n");
    rest = lines.pop() ?? "";
    yield* lines;
  }
  if (rest !== "") yield rest;
}

function drain(lines: AsyncGenerator<string>): void {
  (async () => {
    for await (const _ of lines) {
      // Keep the pipe flowing so the server never blocks on a full stdout.
    }
  })();
}

async function killNamespace(spawn: SpawnCommand, name: string): Promise<void> {
  const pids = await runToEnd(spawn, "ip", ["netns", "pids", name]);
  const list = pids.stdout.split("\n").filter((l) => /^\d+$/.test(l.trim()));
  if (list.length > 0) await runToEnd(spawn, "kill", ["-KILL", ...list]);
  await runToEnd(spawn, "ip", ["netns", "del", name]);
}

/**
 * Deletes testbed namespaces whose creating process no longer runs (an interrupted run), so
 * they never pile up; namespaces of live processes are left alone.
 */
async function sweepOrphans(spawn: SpawnCommand): Promise<void> {
  const out = await runToEnd(spawn, "ip", ["netns", "list"]);
  for (const line of out.stdout.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const match = name.match(/^cct-(\d+)-[0-9a-f]+-(client|node|backend)$/);
    if (!match || await processExists(spawn, Number(match[1]))) continue;
    await killNamespace(spawn, name);
  }
}

/**
 * Whether a process runs, by `kill -0` (Deno refuses to stat `/proc/<pid>` without
 * `--allow-all`). When unsure, says yes: a namespace is only swept when its owner is surely gone.
 */
async function processExists(spawn: SpawnCommand, pid: number): Promise<boolean> {
  if (pid === Deno.pid) return true;
  try {
    const out = await runToEnd(spawn, "kill", ["-0", String(pid)]);
    return out.code === 0 || !/no such process/i.test(out.stderr);
  } catch {
    return true;
  }
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** The line of stderr that says what went wrong: the first error line, else the last. */
function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return lines.find((l) => /error/i.test(l))?.trim() ?? lines[lines.length - 1] ?? "";
}

function restoreCommand(family: Family, proxy: ProxyMode): string {
  const flavour = proxy === "iptables-legacy" ? "-legacy" : "";
  return family === "ipv4" ? `iptables${flavour}-restore` : `ip6tables${flavour}-restore`;
}

/** Drops traffic to the bare VIP on the backend, silently, so the entry stays `[UNREPLIED]`. */
function backendRules(): string {
  return [
    "table inet testbed {",
    "  chain prerouting {",
    "    type filter hook prerouting priority raw; policy accept;",
    `    ip daddr ${ADDRESSES.ipv4.vip} drop`,
    `    ip6 daddr ${ADDRESSES.ipv6.vip} drop`,
    "  }",
    "}",
    "",
  ].join("\n");
}

/**
 * kube-proxy's iptables skeleton: the nat entry chain, and the forward chain whose conntrack
 * match makes the kernel track connections in this namespace (the nat table alone does not on
 * 6.x kernels).
 */
function iptablesSkeleton(): string {
  return [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "COMMIT",
    "*filter",
    ":KUBE-FORWARD - [0:0]",
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "COMMIT",
    "",
  ].join("\n");
}

function chainCode(family: Family, port: number): string {
  return `E2E${family === "ipv4" ? "V4" : "V6"}WEB${port}`.padEnd(16, "X").slice(0, 16);
}

function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

function iptablesService(family: Family, port: number, style: DnatStyle): string {
  const a = ADDRESSES[family];
  const vip = `${a.vip}/${family === "ipv4" ? 32 : 128}`;
  const target = hostPort(a.backend, BACKEND_PORT);
  const name = `e2e/web:p${port}`;
  if (style === "plain") {
    return [
      "*nat",
      `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "${name} loadbalancer IP" ` +
      `-m tcp --dport ${port} -j DNAT --to-destination ${target}`,
      "COMMIT",
      "",
    ].join("\n");
  }
  const code = chainCode(family, port);
  const ext = `KUBE-EXT-${code}`;
  const svc = `KUBE-SVC-${code}`;
  const sep = `KUBE-SEP-${code}`;
  return [
    "*nat",
    `:${ext} - [0:0]`,
    `:${svc} - [0:0]`,
    `:${sep} - [0:0]`,
    `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "${name} loadbalancer IP" ` +
    `-m tcp --dport ${port} -j ${ext}`,
    `-A ${ext} -m comment --comment "${name} external destinations" -j ${svc}`,
    `-A ${svc} -m comment --comment "${name} -> ${target}" -j ${sep}`,
    `-A ${sep} -p tcp -m comment --comment "${name}" -m tcp -j DNAT --to-destination ${target}`,
    "COMMIT",
    "",
  ].join("\n");
}

/** kube-proxy's nftables skeleton, for both families, plus a conntrack-using forward chain. */
function nftSkeleton(): string {
  return (["ip", "ip6"] as const).map((table) => {
    const addr = table === "ip" ? "ipv4_addr" : "ipv6_addr";
    return [
      `table ${table} kube-proxy {`,
      `  map service-ips {`,
      `    type ${addr} . inet_proto . inet_service : verdict`,
      `  }`,
      `  chain nat-prerouting {`,
      `    type nat hook prerouting priority dstnat; policy accept;`,
      `    jump services`,
      `  }`,
      `  chain services {`,
      `    ${table} daddr . meta l4proto . th dport vmap @service-ips`,
      `  }`,
      `  chain filter-forward {`,
      `    type filter hook forward priority -110; policy accept;`,
      `    ct state related,established accept`,
      `  }`,
      `}`,
    ].join("\n");
  }).join("\n") + "\n";
}

function nftService(family: Family, port: number, style: DnatStyle): string {
  const a = ADDRESSES[family];
  const table = family === "ipv4" ? "ip" : "ip6";
  const target = hostPort(a.backend, BACKEND_PORT);
  if (style === "plain") {
    return `add rule ${table} kube-proxy services ${table} daddr ${a.vip} tcp dport ${port} ` +
      `dnat to ${target}\n`;
  }
  const code = chainCode(family, port).slice(0, 8);
  const name = `e2e/web/tcp/p${port}`;
  // Unquoted like kube-proxy's names, which spell IPv6 endpoints with dots for colons.
  const ext = `external-${code}-${name}`;
  const svc = `service-${code}-${name}`;
  const ep = `endpoint-${code}-${name}__${a.backend.replaceAll(":", ".")}/${BACKEND_PORT}`;
  return [
    `add chain ${table} kube-proxy ${ep}`,
    `add rule ${table} kube-proxy ${ep} meta l4proto tcp dnat to ${target}`,
    `add chain ${table} kube-proxy ${svc}`,
    `add rule ${table} kube-proxy ${svc} numgen random mod 1 vmap { 0 : goto ${ep} }`,
    `add chain ${table} kube-proxy ${ext}`,
    `add rule ${table} kube-proxy ${ext} goto ${svc}`,
    `add element ${table} kube-proxy service-ips { ${a.vip} . tcp . ${port} : goto ${ext} }`,
    "",
  ].join("\n");
}
