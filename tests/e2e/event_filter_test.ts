/**
 * The conntrack event subscription against a real kernel, in a namespace: the kernel filter lets
 * through exactly the new TCP entries towards the operator's blocks (both families, IPv4-mapped
 * IPv6 included), and a socket too small for a burst reports lost events instead of hiding them.
 *
 * Needs root; ignored otherwise, and failing instead when CI=true.
 */
import assert from "node:assert/strict";
import { rootTest } from "../root.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { createNetns } from "../../bench/fill_table.ts";
import { fixtureInNetns } from "./harness.ts";

const PROBE = new URL("../fixtures/event_probe.ts", import.meta.url).pathname;

interface ProbeResult {
  readonly keys: readonly string[];
  readonly counts: { readonly received: { readonly new: number }; readonly lost: number };
  readonly lost: number;
  readonly granted: number;
}

async function probe(blocks: string, receiveBuffer: number, lines: string[]): Promise<ProbeResult> {
  await using ns = await createNetns(denoSpawn, "events");
  return await fixtureInNetns<ProbeResult>(ns.name, PROBE, {
    permissions: ["--allow-ffi", "--allow-run=conntrack"],
    args: [blocks, String(receiveBuffer)],
    stdin: lines.join("\n") + "\n",
  });
}

function tcp(src: string, dst: string, sport: number, dport = 80): string {
  return `-I -t 3600 -u UNSET -p tcp -s ${src} -d ${dst} --sport ${sport} --dport ${dport} ` +
    `--state SYN_SENT`;
}

function udp(src: string, dst: string, sport: number): string {
  return `-I -t 3600 -u UNSET -p udp -s ${src} -d ${dst} --sport ${sport} --dport 53`;
}

rootTest(
  "ConntrackEvents delivers only new TCP entries towards the pool (root, netns)",
  async () => {
    const lines: string[] = [];
    for (let i = 0; i < 200; i++) lines.push(udp("198.51.100.2", "192.0.2.10", 20000 + i));
    for (let i = 0; i < 200; i++) lines.push(tcp("198.51.100.2", "203.0.113.10", 20000 + i));
    for (let i = 0; i < 100; i++) lines.push(udp("2001:db8:1::2", "2001:db8:2::10", 20000 + i));
    for (let i = 0; i < 100; i++) lines.push(tcp("2001:db8:1::2", "2001:db8:9::10", 20000 + i));
    // The only ones the agent may act on.
    lines.push(tcp("198.51.100.2", "192.0.2.10", 40000));
    lines.push(tcp("2001:db8:1::2", "2001:db8:2::10", 40001));
    lines.push(tcp("::ffff:198.51.100.3", "::ffff:192.0.2.11", 40002));
    const got = await probe("192.0.2.0/24,2001:db8:2::/64", 0, lines);
    assert.deepEqual(
      [...got.keys].sort(),
      [
        "0/-/- src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80",
        "0/-/- src=2001:db8:1::2 dst=2001:db8:2::10 sport=40001 dport=80",
        "0/-/- src=::ffff:198.51.100.3 dst=::ffff:192.0.2.11 sport=40002 dport=80",
      ].sort(),
    );
    // Dropped in the kernel, not read and thrown away.
    assert.equal(got.counts.received.new, 3);
    assert.equal(got.lost, 0);
  },
);

rootTest("ConntrackEvents without a filter reads every new entry (root, netns)", async () => {
  const lines: string[] = [];
  for (let i = 0; i < 50; i++) lines.push(udp("198.51.100.2", "192.0.2.10", 20000 + i));
  for (let i = 0; i < 50; i++) lines.push(tcp("198.51.100.2", "203.0.113.10", 20000 + i));
  const got = await probe("-", 0, lines);
  assert.equal(got.counts.received.new, 100);
  // Only the TCP SYN_SENT unreplied ones are candidates.
  assert.equal(got.keys.length, 50);
});

rootTest(
  "ConntrackEvents reports lost events when its socket overflows (root, netns)",
  async () => {
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) {
      lines.push(tcp(`198.51.${100 + (i >> 8)}.${i & 0xff}`, "192.0.2.10", 30000 + (i % 1000)));
    }
    const got = await probe("", 1, lines);
    assert.ok(got.granted < 10_000, `receive buffer ${got.granted} bytes`);
    assert.ok(got.lost > 0, `no overflow reported; ${got.keys.length} events read`);
    assert.ok(got.keys.length < 3000);
  },
);
