/**
 * The event lister against a real kernel table, in a namespace: a resync dump first, then only
 * the entries new-entry events announced (towards the pool, zones and IPv4-mapped IPv6 included),
 * each read by a GET that shows its current timer, and dropped once deleted or replied.
 *
 * Needs root; ignored otherwise, and failing instead when CI=true.
 */
import assert from "node:assert/strict";
import { rootTest } from "../root.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { createNetns } from "../../bench/fill_table.ts";
import { fixtureInNetns } from "./harness.ts";

const PROBE = new URL("../fixtures/event_lister_probe.ts", import.meta.url).pathname;

interface Listing {
  readonly kind: string;
  readonly keys: readonly string[];
  readonly timeouts: readonly number[];
}

rootTest("EventLister follows the real table through events and GETs (root, netns)", async () => {
  await using ns = await createNetns(denoSpawn, "evlist");
  const { listings, counts } = await fixtureInNetns<{
    listings: Listing[];
    counts: { gets: number; resyncs: number; tracked: number; received: { new: number } };
  }>(ns.name, PROBE, {
    permissions: ["--allow-ffi", "--allow-read=/proc/sys/net/netfilter", "--allow-run=conntrack"],
    args: ["192.0.2.0/24"],
  });
  const a = "0/-/- src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80";
  const b = "0/-/- src=198.51.100.3 dst=192.0.2.11 sport=40001 dport=80";
  const zoned = "7/-/- src=198.51.100.4 dst=192.0.2.12 sport=40002 dport=80";
  const origZoned = "0/3/- src=198.51.100.5 dst=192.0.2.13 sport=40003 dport=80";
  const mapped = "0/-/- src=2001:db8:1::2 dst=::ffff:192.0.2.14 sport=40004 dport=80";
  assert.deepEqual(listings.map((l) => l.kind), ["dump", "get", "get"]);
  assert.deepEqual(listings[0]!.keys, [a]);
  assert.deepEqual(listings[1]!.keys, [a, b, zoned, origZoned, mapped].sort());
  // Deleted and replied entries are gone; the GET read the timer as it is now.
  assert.deepEqual(listings[2]!.keys, [a, zoned, origZoned].sort());
  const at = listings[2]!.keys.indexOf(a);
  assert.ok(listings[2]!.timeouts[at]! <= 50, `timer ${listings[2]!.timeouts[at]}`);
  assert.equal(counts.received.new, 4);
  assert.equal(counts.resyncs, 1);
  assert.equal(counts.tracked, 3);
});
