/**
 * Measures reading the node's NAT rules at 10,000 Services, as root, in a throwaway network
 * namespace: how long `iptables-save -t nat` and `nft -j list map ip kube-proxy service-ips` (and,
 * for comparison, the whole table) take, how big their output is, and how long the agent's
 * parsers take on it.
 *
 *     deno run --allow-run=ip --allow-read bench/nat_rules.ts [services=10000] [runs=5]
 *
 * Rules are in kube-proxy's shapes: iptables mode has per Service a cluster-IP and a
 * LoadBalancer-IP rule in KUBE-SERVICES, KUBE-SVC-/KUBE-EXT-/KUBE-SEP- chains and a DNAT (7 rules
 * per Service); nftables mode has two `service-ips` elements per Service and its service-,
 * external- and endpoint- chains.
 *
 * @module
 */
import { runToEnd } from "../lib/seams/spawn.ts";
import { splitLines } from "../lib/seams/output_lines.ts";
import { silentLogger } from "../lib/seams/logger.ts";
import { createNatReader, createNatView } from "../lib/nat/nat_reader.ts";
import { parseIptablesSave } from "../lib/nat/iptables_save.ts";
import { parseNftKubeProxy } from "../lib/nat/nftables_json.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";

const services = Number(Deno.args[0] ?? 10_000);
const runs = Number(Deno.args[1] ?? 5);

/** Destination i of 2n: address in a documentation range, port keeps them unique. */
function serviceAddresses(i: number) {
  const host = 1 + (i % 250);
  const port = 1024 + Math.floor(i / 250);
  return {
    cluster: `198.51.100.${host}`,
    lb: `192.0.2.${host}`,
    endpoint: `203.0.113.${host}`,
    port,
  };
}

function iptablesRestoreInput(n: number): string {
  const chains: string[] = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]"];
  const rules: string[] = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
  ];
  for (let i = 0; i < n; i++) {
    const { cluster, lb, endpoint, port } = serviceAddresses(i);
    const id = i.toString(36).toUpperCase().padStart(16, "0");
    const name = `ns${i % 100}/svc${i}:http`;
    chains.push(`:KUBE-SVC-${id} - [0:0]`, `:KUBE-EXT-${id} - [0:0]`, `:KUBE-SEP-${id} - [0:0]`);
    rules.push(
      `-A KUBE-SERVICES -d ${cluster}/32 -p tcp -m comment --comment "${name} cluster IP" -m tcp --dport ${port} -j KUBE-SVC-${id}`,
      `-A KUBE-SERVICES -d ${lb}/32 -p tcp -m comment --comment "${name} loadbalancer IP" -m tcp --dport ${port} -j KUBE-EXT-${id}`,
      `-A KUBE-EXT-${id} -m comment --comment "masquerade traffic for ${name} external destinations" -j KUBE-MARK-MASQ`,
      `-A KUBE-EXT-${id} -j KUBE-SVC-${id}`,
      `-A KUBE-SVC-${id} -m comment --comment "${name} -> ${endpoint}:8080" -j KUBE-SEP-${id}`,
      `-A KUBE-SEP-${id} -s ${endpoint}/32 -m comment --comment "${name}" -j KUBE-MARK-MASQ`,
      `-A KUBE-SEP-${id} -p tcp -m comment --comment "${name}" -m tcp -j DNAT --to-destination ${endpoint}:8080`,
    );
  }
  return ["*nat", ...chains, ...rules, "COMMIT", ""].join("\n");
}

function nftInput(n: number): string {
  const k = "ip kube-proxy";
  const out = [
    `add table ${k} { comment "rules for kube-proxy" ; }`,
    `add chain ${k} nat-prerouting { type nat hook prerouting priority -100 ; }`,
    `add chain ${k} services`,
    `add chain ${k} mark-for-masquerade`,
    `add rule ${k} nat-prerouting jump services`,
    `add rule ${k} mark-for-masquerade mark set mark or 0x4000`,
    `add map ${k} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }`,
    `add rule ${k} services ip daddr . meta l4proto . th dport vmap @service-ips`,
  ];
  for (let i = 0; i < n; i++) {
    const { cluster, lb, endpoint, port } = serviceAddresses(i);
    const base = `${i.toString(36).toUpperCase().padStart(8, "0")}-ns${i % 100}/svc${i}/tcp/http`;
    const ep = `endpoint-${base}__${endpoint}/8080`;
    out.push(
      `add chain ${k} ${ep}`,
      `add rule ${k} ${ep} meta l4proto tcp dnat to ${endpoint}:8080`,
      `add chain ${k} service-${base}`,
      `add rule ${k} service-${base} numgen random mod 1 vmap { 0 : goto ${ep} }`,
      `add chain ${k} external-${base}`,
      `add rule ${k} external-${base} jump mark-for-masquerade`,
      `add rule ${k} external-${base} goto service-${base}`,
      `add element ${k} service-ips { ${cluster} . tcp . ${port} : goto service-${base} }`,
      `add element ${k} service-ips { ${lb} . tcp . ${port} : goto external-${base} }`,
    );
  }
  return out.join("\n") + "\n";
}

async function must(spawn: SpawnCommand, program: string, args: string[], stdin?: string) {
  const out = await runToEnd(spawn, program, args, stdin === undefined ? {} : { stdin });
  if (out.code !== 0) {
    throw new Error(`Cannot run ${program} ${args.join(" ")}: ${out.stderr.split("\n")[0]}`);
  }
  return out;
}

/** Runs `work` `runs` times; returns the median duration in ms and the last result. */
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

const fmt = (ms: number) => `${ms.toFixed(1)} ms`;
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(2)} MiB`;

const ns = `natbench-${crypto.randomUUID().slice(0, 8)}`;
// Every program the agent would run, run inside the namespace.
const inNs: SpawnCommand = (program, args, options) =>
  denoSpawn("ip", ["netns", "exec", ns, program, ...args], options);

await must(denoSpawn, "ip", ["netns", "add", ns]);
try {
  let start = performance.now();
  await must(inNs, "iptables-restore", [], iptablesRestoreInput(services));
  const iptLoadMs = performance.now() - start;
  start = performance.now();
  await must(inNs, "nft", ["-f", "-"], nftInput(services));
  const nftLoadMs = performance.now() - start;

  const dump = await median(() => must(inNs, "iptables-save", ["-t", "nat"]));
  const dumpText = dump.result.stdout;
  const dumpBytes = new TextEncoder().encode(dumpText);
  const parse = await median(() =>
    parseIptablesSave(splitLines(ReadableStream.from([dumpBytes])), "ipv4")
  );
  const iptReader = createNatReader({ source: "iptables", spawn: inNs, logger: silentLogger });
  const iptRead = await median(() => iptReader.read());

  const list = await median(() => must(inNs, "nft", ["-j", "list", "table", "ip", "kube-proxy"]));
  const json = list.result.stdout;
  const nftParse = await median(() => Promise.resolve(parseNftKubeProxy(json)));
  const mapList = await median(() =>
    must(inNs, "nft", ["-j", "list", "map", "ip", "kube-proxy", "service-ips"])
  );
  const mapJson = mapList.result.stdout;
  const mapParse = await median(() => Promise.resolve(parseNftKubeProxy(mapJson)));
  const nftReader = createNatReader({ source: "nftables", spawn: inNs, logger: silentLogger });
  const nftRead = await median(() => nftReader.read());

  const view = createNatView(parse.result);
  console.log(`NAT rules at ${services} Services (median of ${runs} runs)\n`);
  console.log("| source | load | dump | dump size | parse | whole read() | destinations |");
  console.log("|---|---|---|---|---|---|---|");
  console.log(
    `| iptables-save -t nat (${dumpText.split("\n").length} lines) | ${fmt(iptLoadMs)} | ${
      fmt(dump.ms)
    } | ${mib(dumpBytes.length)} | ${fmt(parse.ms)} | ${fmt(iptRead.ms)} | ${view.size} (read: ${
      iptRead.result?.size ?? "none"
    }) |`,
  );
  const nftSize = (text: string) => mib(new TextEncoder().encode(text).length);
  console.log(
    `| nft -j list table ip kube-proxy (not used) | ${fmt(nftLoadMs)} | ${fmt(list.ms)} | ${
      nftSize(json)
    } | ${fmt(nftParse.ms)} | - | ${createNatView(nftParse.result).size} |`,
  );
  console.log(
    `| nft -j list map ip kube-proxy service-ips | ${fmt(nftLoadMs)} | ${fmt(mapList.ms)} | ${
      nftSize(mapJson)
    } | ${fmt(mapParse.ms)} | ${fmt(nftRead.ms)} | ${createNatView(mapParse.result).size} (read: ${
      nftRead.result?.size ?? "none"
    }) |`,
  );
  console.log(
    "\nload = iptables-restore / nft -f of the whole set, once; dump = running the command and " +
      "reading its output; parse = the agent's parser on the saved output; whole read() = " +
      "NatReader.read() (both families; the IPv6 side is empty).",
  );
} finally {
  await must(denoSpawn, "ip", ["netns", "del", ns]);
}
