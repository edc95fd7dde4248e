/**
 * The churn grid of issue 16: the agent's CPU and the kernel's softirq and system time under real
 * TCP connection churn through a node namespace, with no agent, in event mode and in dump mode,
 * at each rate, to the pool and to addresses outside it.
 *
 * Three namespaces joined by veth pairs: a client (198.51.100.10-13) routes through a node
 * (forwarding, conntrack, a DNAT of the pool address 192.0.2.10:80 to the server) to a server
 * (203.0.113.2:8080). `churn_client.c`, compiled here into a temporary directory, opens RATE
 * connections a second and resets each one once established (so neither side keeps TIME_WAIT
 * sockets: every connection is a fresh conntrack entry, living 10 s in CLOSE); the server accepts
 * and resets. To the pool means to 192.0.2.10:80; outside it means straight to the server, which
 * the agent's kernel filter (`--destination 192.0.2.0/24`) drops before it reaches the agent.
 *
 * Pinning: the client and the server on CPU 1 (the kernel forwards a veth packet in the softirq
 * of the sending CPU, so the node's conntrack work and its event building land there too), the
 * agent on CPU 0. Each cell waits WARM_UP s (the agent's start, and the CLOSE entries reaching a
 * steady count) and then measures a window: the agent's user+system seconds from
 * `/proc/<pid>/stat`, and each CPU's system and softirq seconds from `/proc/stat`.
 *
 * CLI: `deno run -A bench/events_churn_grid.ts [--window S] [--modes none,events,dump]
 * [--to pool,outside] [--passes N] RATE...` (default window 20 s, one pass, rates 1000 10000).
 * Prints one JSON line per cell: shares of one core over the window (`client` over its whole run),
 * per CPU for `busy`, `softirq` and `system`. Needs root and gcc.
 *
 * @module
 */
import { runToEnd } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { option, start, startTaskFlags, usage } from "./cycle.ts";
import { createNetns, inNetns, raiseConntrackCapacity } from "./fill_table.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const SOURCE = new URL("./churn_client.c", import.meta.url).pathname;
const WARM_UP_S = 12;
const CLIENT_CPU = "1";
const AGENT_CPU = "0";
const SOURCES = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13"];
const SERVER = "203.0.113.2";
const TARGETS = {
  pool: { address: "192.0.2.10", port: 80 },
  outside: { address: SERVER, port: 8080 },
} as const;

/** System, softirq and busy (all but idle and iowait) seconds of each CPU, from `/proc/stat`. */
function cpuTimes(): { system: number; softirq: number; busy: number }[] {
  return Deno.readTextFileSync("/proc/stat").split("\n")
    .filter((l) => /^cpu\d+ /.test(l))
    .map((l) => {
      const f = l.split(/\s+/).slice(1, 9).map(Number);
      const all = f.reduce((a, b) => a + b, 0);
      return { system: f[2]! / 100, softirq: f[6]! / 100, busy: (all - f[3]! - f[4]!) / 100 };
    });
}

function agent(tracking: string): string[] {
  return [
    "taskset",
    "-c",
    AGENT_CPU,
    Deno.execPath(),
    "run",
    ...startTaskFlags(),
    MAIN,
    "--metrics-address",
    "",
    "--log-format",
    "json",
    "--dump-frequency",
    "1s",
    "--dry-run",
    "--unreplied-max-age",
    "0",
    "--nat-source",
    "off",
    "--destination",
    "192.0.2.0/24",
    "--tracking",
    tracking,
  ];
}

async function must(command: string, args: readonly string[]): Promise<string> {
  const out = await runToEnd(denoSpawn, command, args);
  if (out.code !== 0) {
    throw new Error(`Cannot run ${command} ${args.join(" ")}: exit ${out.code}: ${out.stderr}`);
  }
  return out.stdout;
}

const args = [...Deno.args];
const windowS = option(args, "--window", 20);
const passes = option(args, "--passes", 1);
const pick = (name: string, all: readonly string[]) => {
  const at = args.indexOf(name);
  return at < 0 ? [...all] : args.splice(at, 2)[1]!.split(",");
};
const modes = pick("--modes", ["none", "events", "dump"]);
const targets = pick("--to", ["pool", "outside"]) as (keyof typeof TARGETS)[];
const rates = args.length > 0 ? args.map(Number) : [1000, 10_000];

const dir = await Deno.makeTempDir({ prefix: "churn-" });
try {
  const binary = `${dir}/churn_client`;
  await must("gcc", ["-O2", "-o", binary, SOURCE]);
  // 10k connections a second, each 10 s in CLOSE: about 100k entries (the default limits of a
  // machine with 4 GiB or more already fit, and are then left alone).
  await using _capacity = await raiseConntrackCapacity(denoSpawn, 200_000);
  await using client = await createNetns(denoSpawn, "grid-cli");
  await using node = await createNetns(denoSpawn, "grid-node");
  await using server = await createNetns(denoSpawn, "grid-srv");
  const ip = (...a: string[]) => must("ip", a);
  const tag = node.name.slice(-6);
  await ip(
    "link",
    "add",
    `gc${tag}`,
    "netns",
    client.name,
    "type",
    "veth",
    "peer",
    "name",
    "n0",
    "netns",
    node.name,
  );
  await ip(
    "link",
    "add",
    `gs${tag}`,
    "netns",
    server.name,
    "type",
    "veth",
    "peer",
    "name",
    "n1",
    "netns",
    node.name,
  );
  for (const source of SOURCES) {
    await ip("-n", client.name, "addr", "add", `${source}/24`, "dev", `gc${tag}`);
  }
  await ip("-n", node.name, "addr", "add", "198.51.100.1/24", "dev", "n0");
  await ip("-n", node.name, "addr", "add", "203.0.113.1/24", "dev", "n1");
  await ip("-n", server.name, "addr", "add", `${SERVER}/24`, "dev", `gs${tag}`);
  await ip("-n", client.name, "link", "set", `gc${tag}`, "up");
  await ip("-n", server.name, "link", "set", `gs${tag}`, "up");
  await ip("-n", node.name, "link", "set", "n0", "up");
  await ip("-n", node.name, "link", "set", "n1", "up");
  await ip("-n", client.name, "route", "add", "default", "via", "198.51.100.1");
  await ip("-n", server.name, "route", "add", "default", "via", "203.0.113.1");
  await inNetns(denoSpawn, node.name, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  // Per-namespace: room for 10k a second without reusing a port within its 10 s in CLOSE.
  await inNetns(denoSpawn, client.name, [
    "sysctl",
    "-qw",
    "net.ipv4.ip_local_port_range=1024 65535",
  ]);
  await inNetns(
    denoSpawn,
    node.name,
    ["nft", "-f", "-"],
    [
      "table ip bench {",
      "  chain pre {",
      "    type nat hook prerouting priority -100;",
      `    ip daddr ${TARGETS.pool.address} tcp dport 80 dnat to ${SERVER}:8080;`,
      "  }",
      "}",
    ].join("\n"),
  );
  await using serving = await start(server.name, [
    "taskset",
    "-c",
    CLIENT_CPU,
    binary,
    "server",
    SERVER,
    "8080",
  ]);
  for (let pass = 1; pass <= passes; pass++) {
    for (const rate of rates) {
      for (const to of targets) {
        for (const tracking of modes) {
          const target = TARGETS[to];
          const churn = runToEnd(denoSpawn, "ip", [
            "netns",
            "exec",
            client.name,
            "taskset",
            "-c",
            CLIENT_CPU,
            binary,
            "client",
            String(rate),
            String(WARM_UP_S + windowS + 2),
            target.address,
            String(target.port),
            ...SOURCES,
          ]);
          const subject = tracking === "none" ? undefined : await start(node.name, agent(tracking));
          try {
            await new Promise((r) => setTimeout(r, WARM_UP_S * 1000));
            const cpuBefore = cpuTimes();
            const agentBefore = subject === undefined ? 0 : usage(subject.pid).cpuSeconds;
            const serverBefore = usage(serving.pid).cpuSeconds;
            await new Promise((r) => setTimeout(r, windowS * 1000));
            const cpuAfter = cpuTimes();
            const agentAfter = subject === undefined ? 0 : usage(subject.pid).cpuSeconds;
            const serverAfter = usage(serving.pid).cpuSeconds;
            const entries = Number(
              (await inNetns(denoSpawn, node.name, ["conntrack", "-C"])).trim(),
            );
            const out = await churn;
            if (out.code !== 0) throw new Error(out.stderr);
            const c = JSON.parse(out.stdout) as {
              rate: number;
              failed: number;
              seconds: number;
              cpuSeconds: number;
            };
            const share = (n: number) => Math.round(n / windowS * 10_000) / 10_000;
            console.log(JSON.stringify({
              pass,
              rate,
              to,
              tracking,
              achieved: c.rate,
              failed: c.failed,
              entries,
              agent: share(agentAfter - agentBefore),
              client: Math.round(c.cpuSeconds / c.seconds * 10_000) / 10_000,
              server: share(serverAfter - serverBefore),
              busy: cpuAfter.map((a, i) => share(a.busy - cpuBefore[i]!.busy)),
              softirq: cpuAfter.map((a, i) => share(a.softirq - cpuBefore[i]!.softirq)),
              system: cpuAfter.map((a, i) => share(a.system - cpuBefore[i]!.system)),
            }));
          } finally {
            await subject?.[Symbol.asyncDispose]();
            await churn;
          }
          // Let the CLOSE entries of this cell expire before the next one starts.
          await new Promise((r) => setTimeout(r, 11_000));
        }
      }
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
