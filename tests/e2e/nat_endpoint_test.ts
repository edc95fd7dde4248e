/**
 * The nat rule's two halves on this kernel, with kube-proxy's own rule shapes and the agent run
 * as users run it (age rule off, so only the nat rule can delete):
 *
 * - stale endpoint: a client's SYN was translated to endpoint A, which stopped answering (its pod
 *   is gone); the Service's rules change to endpoint B only; the agent deletes the entry pinned to
 *   A (reason `endpoint-gone`, naming A and the Service) and the retrying client reaches B. While
 *   A was still the Service's endpoint, the entry was kept. For kube-proxy's iptables and nftables
 *   modes.
 * - no false deletion: stuck un-NATed clients of an `externalTrafficPolicy: Local` Service with
 *   no endpoint on this node, and of a LoadBalancer whose `loadBalancerSourceRanges` leave the
 *   client out, keep their entries when those Services appear (the node would not translate their
 *   SYNs), while a stuck client of an ordinary Service appearing at the same time is unstuck.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Family } from "../../lib/core/flow.ts";
import type { NatSource } from "../../lib/nat/nat_source.ts";
import type { ConntrackEntry, ProxyMode, Testbed } from "./testbed.ts";
import { ADDRESSES, BACKEND_PORT, SERVICE_PORT } from "./testbed.ts";
import {
  agentCommand,
  CLIENT_PORT,
  createBed,
  deletionRecord,
  e2eTest,
  RETRY_MS,
  scenarioFlags,
  SLACK_MS,
  sleep,
  timeToConnect,
} from "./harness.ts";

const PERIOD_MS = 1000;

/** Endpoint A: a second backend address whose pod is gone (its SYNs are dropped). */
const GONE: Readonly<Record<Family, string>> = { ipv4: "203.0.113.3", ipv6: "2001:db8:2::3" };

function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The backend gets endpoint A's address, and drops what is sent to it. */
async function addGoneEndpoint(bed: Testbed, family: Family): Promise<void> {
  const a = ADDRESSES[family];
  const extra = family === "ipv6" ? ["nodad"] : [];
  await bed.run("backend", [
    "ip",
    "addr",
    "add",
    `${GONE[family]}/${a.prefix}`,
    "dev",
    "b0",
    ...extra,
  ]);
  const ip = family === "ipv4" ? "ip" : "ip6";
  await bed.run("backend", ["nft", "-f", "-"], {
    stdin: `table inet gone {\n  chain prerouting {\n` +
      `    type filter hook prerouting priority raw; policy accept;\n` +
      `    ${ip} daddr ${GONE[family]} tcp dport ${BACKEND_PORT} drop\n  }\n}\n`,
  });
}

/** kube-proxy's iptables rules for `e2e/pinned:http` with one endpoint, as restore input. */
function iptablesPinned(family: Family, endpoint: string, first: boolean): string {
  const vip = `${ADDRESSES[family].vip}/${family === "ipv4" ? 32 : 128}`;
  const name = "e2e/pinned:http";
  const sep = (e: string) => `KUBE-SEP-E2EPINNED${e === GONE[family] ? "A" : "B"}`;
  const target = hostPort(endpoint, BACKEND_PORT);
  const lines = ["*nat", ":KUBE-SVC-E2EPINNED - [0:0]", `:${sep(endpoint)} - [0:0]`];
  if (first) {
    lines.push(
      ":KUBE-EXT-E2EPINNED - [0:0]",
      `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "${name} loadbalancer IP" ` +
        `-m tcp --dport ${SERVICE_PORT} -j KUBE-EXT-E2EPINNED`,
      `-A KUBE-EXT-E2EPINNED -m comment --comment "${name} external destinations" ` +
        "-j KUBE-SVC-E2EPINNED",
    );
  } else {
    // As kube-proxy does when the endpoint leaves: its chain is flushed and deleted.
    lines.push(`:${sep(GONE[family])} - [0:0]`, `-X ${sep(GONE[family])}`);
  }
  lines.push(
    `-A KUBE-SVC-E2EPINNED -m comment --comment "${name} -> ${target}" -j ${sep(endpoint)}`,
    `-A ${sep(endpoint)} -p tcp -m comment --comment ${name} -m tcp -j DNAT ` +
      `--to-destination ${target}`,
    "COMMIT",
    "",
  );
  return lines.join("\n");
}

/** kube-proxy's nftables rules for `e2e/pinned/tcp/http` with one endpoint, as `nft -f` input. */
function nftPinned(family: Family, endpoint: string, first: boolean): string {
  const t = `${family === "ipv4" ? "ip" : "ip6"} kube-proxy`;
  const base = "PINNED00-e2e/pinned/tcp/http";
  const ep = (e: string) => `endpoint-${base}__${e.replaceAll(":", ".")}/${BACKEND_PORT}`;
  const lines = [
    `add chain ${t} ${ep(endpoint)}`,
    `add rule ${t} ${ep(endpoint)} meta l4proto tcp dnat to ${hostPort(endpoint, BACKEND_PORT)}`,
    `add chain ${t} service-${base}`,
    `flush chain ${t} service-${base}`,
    `add rule ${t} service-${base} numgen random mod 1 vmap { 0 : goto ${ep(endpoint)} }`,
  ];
  if (first) {
    lines.push(
      `add chain ${t} external-${base}`,
      `add rule ${t} external-${base} goto service-${base}`,
      `add element ${t} service-ips { ${ADDRESSES[family].vip} . tcp . ${SERVICE_PORT} : ` +
        `goto external-${base} }`,
    );
  } else {
    lines.push(`flush chain ${t} ${ep(GONE[family])}`, `delete chain ${t} ${ep(GONE[family])}`);
  }
  return lines.join("\n") + "\n";
}

async function pinTo(
  bed: Testbed,
  proxy: ProxyMode,
  family: Family,
  endpoint: string,
  first: boolean,
) {
  if (proxy === "nftables") {
    await bed.run("node", ["nft", "-f", "-"], { stdin: nftPinned(family, endpoint, first) });
  } else {
    const restore = family === "ipv4" ? "iptables-restore" : "ip6tables-restore";
    await bed.run("node", [restore, "--noflush"], {
      stdin: iptablesPinned(family, endpoint, first),
    });
  }
}

function isPinned(e: ConntrackEntry, family: Family): boolean {
  return e.flow.family === family && e.flow.original.sport === CLIENT_PORT &&
    e.flow.original.dst === ADDRESSES[family].vip && e.state === "SYN_SENT" && e.unreplied &&
    e.flow.reply.src === GONE[family];
}

async function unpinsFromGoneEndpoint(proxy: ProxyMode, source: NatSource, family: Family) {
  const command = await agentCommand();
  await using bed = await createBed({ proxy });
  await addGoneEndpoint(bed, family);
  await pinTo(bed, proxy, family, GONE[family], true);
  await using client = await bed.startClient(family, { sport: CLIENT_PORT, timeoutMs: RETRY_MS });
  const pinned = await bed.waitForEntry(
    (e) => isPinned(e, family),
    5000,
    `the client's SYN_SENT entry translated to ${GONE[family]}`,
  );
  await using agent = await bed.startAgent(
    command,
    scenarioFlags({ periodMs: PERIOD_MS, maxAge: "0", natSource: source }, "--log-level", "debug"),
  );
  // While A is the Service's endpoint, the entry is what the rules would do: it stays.
  await sleep(2.5 * PERIOD_MS);
  const still = (await bed.entries()).find((e) => isPinned(e, family));
  assert.equal(still?.id, pinned.id, "the entry was deleted while its endpoint was current");
  assert.equal(client.events.some((e) => e.event === "connected"), false);

  await pinTo(bed, proxy, family, ADDRESSES[family].backend, false);
  const since = performance.now();
  const took = await timeToConnect(client, since, PERIOD_MS + RETRY_MS + SLACK_MS, agent);
  const deletion = await deletionRecord(agent, (r) => r.properties["sport"] === CLIENT_PORT);
  assert.equal(deletion.properties["rule"], "nat");
  assert.equal(deletion.properties["reason"], "endpoint-gone");
  const why = String(deletion.properties["why"]);
  assert.ok(why.includes(hostPort(GONE[family], BACKEND_PORT)), why);
  assert.ok(why.includes(hostPort(ADDRESSES[family].vip, SERVICE_PORT)), why);
  const connected = await client.connected;
  assert.match(connected.banner, /hello from the backend/);
  console.log(
    `${proxy} ${family}: client reached endpoint B ${Math.round(took)} ms after the change`,
  );
}

for (const [proxy, source] of [["iptables", "iptables"], ["nftables", "nftables"]] as const) {
  e2eTest(
    `nat rule unpins a client from an endpoint that left the Service (${proxy}, IPv4)`,
    () => unpinsFromGoneEndpoint(proxy, source, "ipv4"),
  );
}
e2eTest(
  "nat rule unpins a client from an endpoint that left the Service (iptables, IPv6)",
  () => unpinsFromGoneEndpoint("iptables", "auto", "ipv6"),
);

/** Three Services appearing at once (iptables, IPv4): Local without local endpoint, source ranges, ordinary. */
function iptablesThreeServices(): string {
  const vip = `${ADDRESSES.ipv4.vip}/32`;
  const b = hostPort(ADDRESSES.ipv4.backend, BACKEND_PORT);
  return [
    "*nat",
    ":KUBE-MARK-MASQ - [0:0]",
    ":KUBE-EXT-E2ELOCAL - [0:0]",
    ":KUBE-SVC-E2ELOCAL - [0:0]",
    ":KUBE-SVL-E2ELOCAL - [0:0]",
    ":KUBE-SEP-E2ELOCAL - [0:0]",
    ":KUBE-FW-E2ERANGE - [0:0]",
    ":KUBE-EXT-E2ERANGE - [0:0]",
    ":KUBE-SVC-E2ERANGE - [0:0]",
    ":KUBE-SEP-E2ERANGE - [0:0]",
    ":KUBE-EXT-E2EPLAIN - [0:0]",
    ":KUBE-SVC-E2EPLAIN - [0:0]",
    ":KUBE-SEP-E2EPLAIN - [0:0]",
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    // externalTrafficPolicy: Local, its only endpoint on another node (kube-proxy 1.2x).
    `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "e2e/local:http loadbalancer IP" ` +
    `-m tcp --dport ${SERVICE_PORT} -j KUBE-EXT-E2ELOCAL`,
    '-A KUBE-EXT-E2ELOCAL -m comment --comment "pod traffic for e2e/local:http external ' +
    'destinations" -s 10.244.0.0/16 -j KUBE-SVC-E2ELOCAL',
    '-A KUBE-EXT-E2ELOCAL -m comment --comment "masquerade LOCAL traffic for e2e/local:http ' +
    'external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
    '-A KUBE-EXT-E2ELOCAL -m comment --comment "route LOCAL traffic for e2e/local:http external ' +
    'destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-E2ELOCAL',
    "-A KUBE-EXT-E2ELOCAL -j KUBE-SVL-E2ELOCAL",
    `-A KUBE-SVC-E2ELOCAL -m comment --comment "e2e/local:http -> ${b}" -j KUBE-SEP-E2ELOCAL`,
    `-A KUBE-SEP-E2ELOCAL -p tcp -m tcp -j DNAT --to-destination ${b}`,
    // loadBalancerSourceRanges: 203.0.113.128/25, which the client (198.51.100.2) is not in.
    `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "e2e/range:http loadbalancer IP" ` +
    `-m tcp --dport 81 -j KUBE-FW-E2ERANGE`,
    '-A KUBE-FW-E2ERANGE -m comment --comment "e2e/range:http loadbalancer IP" ' +
    "-s 203.0.113.128/25 -j KUBE-EXT-E2ERANGE",
    '-A KUBE-FW-E2ERANGE -m comment --comment "other traffic to e2e/range:http loadbalancer IP ' +
    'will be dropped by KUBE-PROXY-FIREWALL"',
    "-A KUBE-EXT-E2ERANGE -j KUBE-MARK-MASQ",
    "-A KUBE-EXT-E2ERANGE -j KUBE-SVC-E2ERANGE",
    `-A KUBE-SVC-E2ERANGE -m comment --comment "e2e/range:http -> ${b}" -j KUBE-SEP-E2ERANGE`,
    `-A KUBE-SEP-E2ERANGE -p tcp -m tcp -j DNAT --to-destination ${b}`,
    // An ordinary Service: its stuck client must be unstuck, or the test proves nothing.
    `-A KUBE-SERVICES -d ${vip} -p tcp -m comment --comment "e2e/plain:http loadbalancer IP" ` +
    `-m tcp --dport 82 -j KUBE-EXT-E2EPLAIN`,
    "-A KUBE-EXT-E2EPLAIN -j KUBE-MARK-MASQ",
    "-A KUBE-EXT-E2EPLAIN -j KUBE-SVC-E2EPLAIN",
    `-A KUBE-SVC-E2EPLAIN -m comment --comment "e2e/plain:http -> ${b}" -j KUBE-SEP-E2EPLAIN`,
    `-A KUBE-SEP-E2EPLAIN -p tcp -m tcp -j DNAT --to-destination ${b}`,
    "COMMIT",
    "",
  ].join("\n");
}

e2eTest(
  "nat rule leaves stuck clients the node would not translate (Local without local endpoint, source ranges)",
  async () => {
    const command = await agentCommand();
    await using bed = await createBed({ proxy: "iptables" });
    const ports = { local: SERVICE_PORT, range: 81, plain: 82 } as const;
    const sports = { local: CLIENT_PORT, range: CLIENT_PORT + 1, plain: CLIENT_PORT + 2 } as const;
    await using local = await bed.startClient("ipv4", { sport: sports.local, dport: ports.local });
    await using range = await bed.startClient("ipv4", { sport: sports.range, dport: ports.range });
    await using plain = await bed.startClient("ipv4", { sport: sports.plain, dport: ports.plain });
    const entryOf = async (sport: number) => {
      const found = await bed.waitForEntry(
        (e) => e.flow.original.sport === sport && e.state === "SYN_SENT" && e.unreplied,
        5000,
        `the stuck client's entry from port ${sport}`,
      );
      return found;
    };
    const before = { local: await entryOf(sports.local), range: await entryOf(sports.range) };
    await using agent = await bed.startAgent(
      command,
      scenarioFlags({ periodMs: PERIOD_MS, maxAge: "0", natSource: "iptables" }),
    );
    await bed.run("node", ["iptables-restore", "--noflush"], { stdin: iptablesThreeServices() });
    const since = performance.now();
    await timeToConnect(plain, since, PERIOD_MS + RETRY_MS + SLACK_MS, agent);
    // Two more periods: a wrong deletion would have happened by now.
    await sleep(2 * PERIOD_MS + 500);
    const now = await bed.entries();
    for (const what of ["local", "range"] as const) {
      const entry = now.find((e) => e.flow.original.sport === sports[what]);
      assert.equal(entry?.id, before[what].id, `the ${what} Service's stuck entry was deleted`);
    }
    assert.equal(local.events.some((e) => e.event === "connected"), false);
    assert.equal(range.events.some((e) => e.event === "connected"), false);
    const deleted = agent.records.filter((r) => r.message === "deleted stale flow");
    assert.deepEqual(deleted.map((r) => r.properties["sport"]), [sports.plain]);
    assert.equal(deleted[0]?.properties["reason"], "no-dnat");
  },
);
