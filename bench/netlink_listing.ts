/**
 * What a listing of the agent's own would cost, before anyone builds one: a ctnetlink dump
 * through libmnl with the kernel's status filter (`CTA_STATUS` 0 under `CTA_STATUS_MASK`
 * `IPS_SEEN_REPLY`, what `conntrack -u UNREPLIED` sends), each entry's attributes read in
 * JavaScript and turned into the flow fields and key the agent needs, against
 * `conntrack -L -p tcp -u UNREPLIED -o id > /dev/null`, on the same filled namespace table.
 *
 * A measurement, not a backend: no fallback, no error handling beyond failing loudly. The
 * receive runs through non-blocking FFI (`nonblocking: true`), so the kernel's table walk happens
 * on a helper thread and the event loop stays free, as a real backend would need.
 *
 * CLI: `deno run -A bench/netlink_listing.ts [--rounds N] ENTRIES` (default 10 rounds, 1000000
 * entries). Prints one JSON line: CPU seconds per listing of each, candidates found by each.
 * Needs root and libmnl.so.0.
 *
 * @module
 */
import { runToEnd } from "../lib/command.ts";
import { denoSpawn } from "../lib/process.ts";
import { option } from "./cycle.ts";
import { createNetns, fillTable } from "./fill_table.ts";

const NETLINK_NETFILTER = 12;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const CT_GET = (1 << 8) | 1; // NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET
const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_REPLY = 2;
const CTA_STATUS = 3;
const CTA_PROTOINFO = 4;
const CTA_TIMEOUT = 7;
const CTA_ID = 12;
const CTA_ZONE = 18;
const CTA_STATUS_MASK = 26;
const IPS_SEEN_REPLY = 1 << 1;
const TCP_SYN_SENT = 1;

/** One listing through libmnl; returns the number of TCP `SYN_SENT` unreplied entries. */
async function netlinkListing(): Promise<number> {
  const lib = Deno.dlopen("libmnl.so.0", {
    mnl_socket_open: { parameters: ["i32"], result: "pointer" },
    mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
    mnl_socket_sendto: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
    mnl_socket_recvfrom: {
      parameters: ["pointer", "buffer", "usize"],
      result: "isize",
      nonblocking: true,
    },
    mnl_socket_close: { parameters: ["pointer"], result: "i32" },
  });
  const nl = lib.symbols.mnl_socket_open(NETLINK_NETFILTER);
  if (nl === null || lib.symbols.mnl_socket_bind(nl, 0, 0) < 0) throw new Error("mnl socket");
  const request = new Uint8Array(36);
  const rv = new DataView(request.buffer);
  rv.setUint32(0, 36, true);
  rv.setUint16(4, CT_GET, true);
  rv.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  rv.setUint32(8, 1, true);
  // nfgenmsg: AF_UNSPEC, version 0, res_id 0 (bytes 16-19 stay 0).
  rv.setUint16(20, 8, true);
  rv.setUint16(22, CTA_STATUS, true);
  rv.setUint32(24, 0, false);
  rv.setUint16(28, 8, true);
  rv.setUint16(30, CTA_STATUS_MASK, true);
  rv.setUint32(32, IPS_SEEN_REPLY, false);
  if (Number(lib.symbols.mnl_socket_sendto(nl, request, BigInt(36))) !== 36) {
    throw new Error("sendto");
  }
  const buffer = new Uint8Array(64 * 1024);
  const view = new DataView(buffer.buffer);
  let found = 0;
  let done = false;
  while (!done) {
    const got = Number(await lib.symbols.mnl_socket_recvfrom(nl, buffer, BigInt(buffer.length)));
    if (got <= 0) throw new Error(`recvfrom ${got}`);
    for (let at = 0; at + 16 <= got;) {
      const len = view.getUint32(at, true);
      const type = view.getUint16(at + 4, true);
      if (type === NLMSG_DONE) {
        done = true;
        break;
      }
      if (type === NLMSG_ERROR) throw new Error(`netlink error ${view.getInt32(at + 16, true)}`);
      if (readEntry(buffer, view, at + 20, at + len) !== undefined) found++;
      at += (len + 3) & ~3;
    }
  }
  lib.symbols.mnl_socket_close(nl);
  lib.close();
  return found;
}

/** What the agent would keep of an entry. */
interface Entry {
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly rsrc: string;
  readonly rdst: string;
  readonly timeout: number;
  readonly id: number;
  readonly zone: number;
  readonly key: string;
}

/** The entry's fields when it is a TCP `SYN_SENT` unreplied entry, else undefined. */
function readEntry(bytes: Uint8Array, view: DataView, from: number, to: number): Entry | undefined {
  let status = 0, timeout = 0, id = 0, zone = 0, state = -1;
  let orig: Tuple | undefined, reply: Tuple | undefined;
  for (let at = from; at + 4 <= to;) {
    const len = view.getUint16(at, true);
    const type = view.getUint16(at + 2, true) & 0x3fff;
    if (len < 4) break;
    const body = at + 4;
    if (type === CTA_STATUS) status = view.getUint32(body, false);
    else if (type === CTA_TIMEOUT) timeout = view.getUint32(body, false);
    else if (type === CTA_ID) id = view.getUint32(body, false);
    else if (type === CTA_ZONE) zone = view.getUint16(body, false);
    else if (type === CTA_TUPLE_ORIG) orig = readTuple(bytes, view, body, at + len);
    else if (type === CTA_TUPLE_REPLY) reply = readTuple(bytes, view, body, at + len);
    else if (type === CTA_PROTOINFO) state = readTcpState(view, body, at + len);
    at += (len + 3) & ~3;
  }
  if ((status & IPS_SEEN_REPLY) !== 0 || state !== TCP_SYN_SENT || !orig || !reply) return;
  if (orig.proto !== 6) return;
  const key = `${zone}/-/- src=${orig.src} dst=${orig.dst} sport=${orig.sport} dport=${orig.dport}`;
  return {
    src: orig.src,
    dst: orig.dst,
    sport: orig.sport,
    dport: orig.dport,
    rsrc: reply.src,
    rdst: reply.dst,
    timeout,
    id,
    zone,
    key,
  };
}

interface Tuple {
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly proto: number;
}

function readTuple(bytes: Uint8Array, view: DataView, from: number, to: number): Tuple {
  let src = "", dst = "", sport = 0, dport = 0, proto = 0;
  for (let at = from; at + 4 <= to;) {
    const len = view.getUint16(at, true);
    const type = view.getUint16(at + 2, true) & 0x3fff;
    if (len < 4) break;
    const end = at + len;
    for (let inner = at + 4; inner + 4 <= end;) {
      const ilen = view.getUint16(inner, true);
      const itype = view.getUint16(inner + 2, true) & 0x3fff;
      if (ilen < 4) break;
      const body = inner + 4;
      if (type === 1) {
        // CTA_TUPLE_IP: V4_SRC 1, V4_DST 2, V6_SRC 3, V6_DST 4
        const text = itype <= 2 ? ipv4(bytes, body) : ipv6(view, body);
        if (itype === 1 || itype === 3) src = text;
        else dst = text;
      } else if (type === 2) {
        // CTA_TUPLE_PROTO: NUM 1, SRC_PORT 2, DST_PORT 3
        if (itype === 1) proto = bytes[body]!;
        else if (itype === 2) sport = view.getUint16(body, false);
        else if (itype === 3) dport = view.getUint16(body, false);
      }
      inner += (ilen + 3) & ~3;
    }
    at += (len + 3) & ~3;
  }
  return { src, dst, sport, dport, proto };
}

function readTcpState(view: DataView, from: number, to: number): number {
  // CTA_PROTOINFO_TCP 1 { CTA_PROTOINFO_TCP_STATE 1 (u8) }
  for (let at = from; at + 4 <= to;) {
    const len = view.getUint16(at, true);
    if (len < 4) break;
    if ((view.getUint16(at + 2, true) & 0x3fff) === 1) {
      for (let inner = at + 4; inner + 4 <= at + len;) {
        const ilen = view.getUint16(inner, true);
        if (ilen < 4) break;
        if ((view.getUint16(inner + 2, true) & 0x3fff) === 1) return view.getUint8(inner + 4);
        inner += (ilen + 3) & ~3;
      }
    }
    at += (len + 3) & ~3;
  }
  return -1;
}

function ipv4(bytes: Uint8Array, at: number): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

/** Hex groups with the longest zero run compressed: close to inet_ntop, enough to time. */
function ipv6(view: DataView, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(view.getUint16(at + 2 * i, false));
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

function cpuSeconds(): number {
  const t = Deno.readTextFileSync("/proc/self/stat");
  const f = t.slice(t.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

if (import.meta.main && Deno.args[0] === "--child") {
  // Inside the namespace: time `rounds` listings of each kind.
  const rounds = Number(Deno.args[1]);
  await netlinkListing(); // warm-up (JIT)
  const c0 = cpuSeconds();
  let found = 0;
  for (let i = 0; i < rounds; i++) found = await netlinkListing();
  const netlink = (cpuSeconds() - c0) / rounds;
  const script = `TIMEFORMAT='%U %S'; time (for i in $(seq ${rounds}); do ` +
    `conntrack -L -p tcp -u UNREPLIED -o id >/dev/null 2>&1; done)`;
  const timed = await runToEnd(denoSpawn, "bash", ["-c", script]);
  const [user, sys] = timed.stderr.trim().split(/\s+/).slice(-2).map(Number);
  const cli = ((user ?? NaN) + (sys ?? NaN)) / rounds;
  const counted = await runToEnd(denoSpawn, "bash", [
    "-c",
    "conntrack -L -p tcp -u UNREPLIED -o id 2>/dev/null | grep -c SYN_SENT",
  ]);
  console.log(JSON.stringify({
    netlinkCpuPerListing: netlink,
    conntrackCpuPerListing: cli,
    ratio: netlink / cli,
    netlinkCandidates: found,
    conntrackCandidates: Number(counted.stdout.trim()),
  }));
} else if (import.meta.main) {
  const args = [...Deno.args];
  const rounds = option(args, "--rounds", 10);
  const entries = Number(args[0] ?? 1_000_000);
  await using ns = await createNetns(denoSpawn, "bench-nl");
  const fill = await fillTable(denoSpawn, ns.name, { entries });
  const self = new URL(import.meta.url).pathname;
  const out = await runToEnd(denoSpawn, "ip", [
    "netns",
    "exec",
    ns.name,
    Deno.execPath(),
    "run",
    "-A",
    self,
    "--child",
    String(rounds),
  ]);
  if (out.code !== 0) throw new Error(out.stderr);
  console.log(JSON.stringify({ entries: fill.count, rounds, ...JSON.parse(out.stdout) }));
}
