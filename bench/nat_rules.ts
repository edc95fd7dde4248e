/**
 * What the per-flow `nat` rule costs through the agent's real reader, as root, in a throwaway
 * network namespace: kube-proxy rulesets of 5,000 Services (the evaluator benches' generators,
 * in kube-proxy's iptables and nftables 1.31 forms) are loaded into the kernel, then
 * `createNatReader()` runs `iptables-save -t nat` / `nft -j list table ip kube-proxy` (both
 * families, as the agent does) and parses them into rulesets, and the view judges candidates.
 *
 *     deno run --allow-run=ip --allow-read --allow-sys=networkInterfaces bench/nat_rules.ts \
 *       [services=5000] [runs=5]
 *
 * Reported: the size of each dump and how long the command alone takes, the median whole
 * `read()` (both families: spawn, read, parse, node addresses), and the evaluation cost per
 * candidate on a fresh view over a mix of shapes (LoadBalancer IPs from
 * inside and outside source ranges, cluster IPs, NodePorts on the node's address, unserved ports,
 * and translated entries checked for a gone endpoint).
 *
 * @module
 */
import type { Flow } from "../lib/core/flow.ts";
import { silentLogger } from "../lib/seams/logger.ts";
import { createNatReader } from "../lib/nat/nat_reader.ts";
import type { NatView } from "../lib/nat/nat_view.ts";
import type { NatSource } from "../lib/nat/nat_source.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { kubeProxyRuleset } from "./nat_ruleset_bench.ts";
import { kubeProxyNftJson } from "./nat_nftables_ruleset_bench.ts";

const services = Number(Deno.args[0] ?? 5000);
const runs = Number(Deno.args[1] ?? 5);
/** The generators' node address (what `LOCAL` is to NodePorts). */
const NODE = "192.0.2.254";

/** The generators' Service `i` (both place Services the same way). */
function service(i: number) {
  const host = 1 + (i % 250);
  const port = 1024 + Math.floor(i / 250);
  return { cluster: `198.51.100.${host}`, lb: `192.0.2.${host}`, port, nodePort: 30000 + i };
}

function flow(src: string, dst: string, dport: number, sport: number, endpoint?: string): Flow {
  const [rsrc, rport] = endpoint ? [endpoint, 8080] : [dst, dport];
  return {
    family: "ipv4",
    original: { src, dst, sport, dport },
    reply: { src: rsrc, dst: src, sport: rport, dport: sport },
    zone: 0,
  };
}

/** Candidates of every shape, spread over the Services. */
function candidates(): Flow[] {
  const out: Flow[] = [];
  let sport = 20000;
  for (let i = 0; i < services; i += 7) {
    const { cluster, lb, port, nodePort } = service(i);
    out.push(
      flow("203.0.113.200", lb, port, sport++),
      flow("203.0.113.10", lb, port, sport++),
      flow("203.0.113.200", cluster, port, sport++),
      flow("203.0.113.200", NODE, nodePort, sport++),
      flow("203.0.113.200", lb, 9, sport++),
      // Translated entries: the endpoint half asks the same question.
      flow("203.0.113.200", lb, port, sport++, "203.0.113.249"),
    );
  }
  return out;
}

/**
 * The generator's `nft -j list` document made loadable by `nft -j -f`: listing order puts map
 * elements and rules before the chains they name, which loading refuses, so chains come first,
 * then sets and maps, then rules; handles are the kernel's to give.
 */
function loadable(listing: string): string {
  const doc = JSON.parse(listing) as { nftables: Record<string, Record<string, unknown>>[] };
  const rank = (o: Record<string, unknown>) =>
    "metainfo" in o ? 0 : "table" in o ? 1 : "chain" in o ? 2 : "set" in o || "map" in o ? 3 : 4;
  doc.nftables.sort((a, b) => rank(a) - rank(b));
  for (const object of doc.nftables) {
    for (const body of Object.values(object)) delete body["handle"];
  }
  return JSON.stringify(doc);
}

async function must(spawn: SpawnCommand, program: string, args: string[], stdin?: string) {
  const out = await runToEnd(spawn, program, args, stdin === undefined ? {} : { stdin });
  if (out.code !== 0) {
    throw new Error(`Cannot run ${program} ${args.join(" ")}: ${out.stderr.split("\n")[0]}`);
  }
  return out;
}

/** Runs `work` `runs` times; the median duration in ms and the last result. */
async function median<T>(work: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const times: number[] = [];
  let result: T | undefined;
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    result = await work();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)] ?? NaN, result: result as T };
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

const ns = `natbench-${crypto.randomUUID().slice(0, 8)}`;
const inNs: SpawnCommand = (program, args, options) =>
  denoSpawn("ip", ["netns", "exec", ns, program, ...args], options);

async function measure(source: NatSource, dump: string[]): Promise<string> {
  const listing = await median(() => must(inNs, dump[0]!, dump.slice(1)));
  const size = listing.result.stdout.length;
  const reader = createNatReader({
    source,
    spawn: inNs,
    logger: silentLogger,
    nodeAddresses: () => new Set([NODE]),
  });
  const read = await median(() => reader.read());
  const view = read.result as NatView;
  const flows = candidates();
  const kinds = { dnat: 0, none: 0, unknown: 0 };
  for (const f of flows) kinds[view.answer(f).kind]++;
  // Every read builds a fresh view, so evaluation is measured on fresh views too.
  const judge = await median(async () => {
    const fresh = (await reader.read()) as NatView;
    const start = performance.now();
    for (const f of flows) fresh.answer(f);
    return performance.now() - start;
  });
  const evalMs = judge.result;
  return `| ${source} | ${dump.join(" ")} | ${mib(size)} | ${listing.ms.toFixed(0)} ms | ${
    read.ms.toFixed(0)
  } ms | ${(evalMs * 1000 / flows.length).toFixed(1)} µs | ${
    evalMs.toFixed(1)
  } ms for ${flows.length} (${kinds.dnat} dnat, ${kinds.none} none, ${kinds.unknown} unknown) |`;
}

await must(denoSpawn, "ip", ["netns", "add", ns]);
try {
  await must(inNs, "ip", ["link", "set", "lo", "up"]);
  await must(inNs, "iptables-restore", [], kubeProxyRuleset(services));
  await must(inNs, "nft", ["-j", "-f", "-"], loadable(kubeProxyNftJson(services)));
  const rows = [
    await measure("iptables", ["iptables-save", "-t", "nat"]),
    await measure("nftables", ["nft", "-j", "list", "table", "ip", "kube-proxy"]),
  ];
  console.log(`nat rule at ${services} Services (median of ${runs} runs)\n`);
  console.log("| source | dump | size | dump alone | whole read() | per candidate | candidates |");
  console.log("|---|---|---|---|---|---|---|");
  for (const row of rows) console.log(row);
} finally {
  await must(denoSpawn, "ip", ["netns", "del", ns]);
}
