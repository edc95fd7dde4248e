/**
 * The netlink listing backend against a real kernel table: it must find exactly the candidates
 * `conntrack -L` finds, field for field, on a table of both families, DNATed and plain entries,
 * zones, directional zones, IPv4-mapped IPv6 addresses and kernel timestamps.
 *
 * Needs root; ignored otherwise, and failing instead when CI=true.
 */
import assert from "node:assert/strict";
import { rootTest } from "../root.ts";
import type { Candidate } from "../../lib/core/flow.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { createNetns, fillTable, inNetns } from "../../bench/fill_table.ts";
import { fixtureInNetns } from "./harness.ts";

const HELPER = new URL("../fixtures/list_both.ts", import.meta.url).pathname;

/** Entries the generated fill does not make: odd addresses and directional zones. */
const SPECIAL = [
  "-A -t 3600 -u UNSET -p tcp -s ::ffff:198.51.100.9 -d 2001:db8:100::1:0:0:1 " +
  "-r 2001:db8:100::1:0:0:1 -q ::ffff:198.51.100.9 --sport 5000 --dport 80 " +
  "--reply-port-src 80 --reply-port-dst 5000 --state SYN_SENT",
  "-A -t 3600 -u UNSET -p tcp -s ::2 -d 2001:db8:0:1:1:1:1:1 -r 2001:db8:0:1:1:1:1:1 -q ::2 " +
  "--sport 5002 --dport 443 --reply-port-src 443 --reply-port-dst 5002 --state SYN_SENT",
  "-A -t 3600 -u UNSET --orig-zone 3 -p tcp -s 198.51.100.77 -d 192.0.2.77 -r 192.0.2.77 " +
  "-q 198.51.100.77 --sport 5001 --dport 80 --reply-port-src 80 --reply-port-dst 5001 " +
  "--state SYN_SENT",
  "-A -t 3600 -u UNSET --reply-zone 4 -p tcp -s 198.51.100.78 -d 192.0.2.78 -r 10.0.0.78 " +
  "-q 198.51.100.78 --sport 5003 --dport 80 --reply-port-src 8080 --reply-port-dst 5003 " +
  "--state SYN_SENT",
  // Not candidates: another state, and UDP, both unreplied.
  "-A -t 3600 -u UNSET -p tcp -s 198.51.100.79 -d 192.0.2.79 -r 192.0.2.79 -q 198.51.100.79 " +
  "--sport 5004 --dport 80 --reply-port-src 80 --reply-port-dst 5004 --state SYN_RECV",
  "-A -t 3600 -u UNSET -p udp -s 198.51.100.80 -d 192.0.2.80 -r 192.0.2.80 -q 198.51.100.80 " +
  "--sport 5005 --dport 53 --reply-port-src 53 --reply-port-dst 5005",
];

rootTest("the netlink lister finds exactly what conntrack -L finds (root, netns)", async () => {
  await using ns = await createNetns(denoSpawn, "nlist");
  await inNetns(denoSpawn, ns.name, ["sysctl", "-qw", "net.netfilter.nf_conntrack_timestamp=1"]);
  await fillTable(denoSpawn, ns.name, {
    entries: 3000,
    synSentShare: 0.5,
    dnatShare: 0.3,
    ipv6Share: 0.3,
    zonedShare: 0.1,
  });
  await inNetns(denoSpawn, ns.name, ["conntrack", "-R", "-"], SPECIAL.join("\n") + "\n");
  const { cli, netlink } = await fixtureInNetns<{
    readonly cli: readonly Candidate[];
    readonly netlink: readonly Candidate[];
  }>(ns.name, HELPER, { permissions: ["--allow-ffi", "--allow-run=conntrack"] });
  assert.ok(cli.length >= 1500, `only ${cli.length} candidates listed`);
  assert.deepEqual(netlink.map((c) => c.key), cli.map((c) => c.key));
  for (let i = 0; i < cli.length; i++) {
    const [a, b] = [cli[i]!, netlink[i]!];
    assert.deepEqual(b.flow, a.flow, a.key);
    assert.equal(b.id, a.id, a.key);
    assert.ok(Math.abs(b.timeout - a.timeout) <= 1, `${a.key}: timeout ${a.timeout}/${b.timeout}`);
    assert.ok(a.deltaTime !== undefined && b.deltaTime !== undefined, `${a.key}: delta-time`);
    assert.ok(Math.abs(b.deltaTime - a.deltaTime) <= 1, `${a.key}: delta-time`);
  }
  // The special entries are among them, as conntrack prints them.
  const keys = new Set(cli.map((c) => c.key));
  assert.ok(
    keys.has("0/-/- src=::ffff:198.51.100.9 dst=2001:db8:100:0:1::1 sport=5000 dport=80"),
  );
  assert.ok(keys.has("0/-/- src=::2 dst=2001:db8:0:1:1:1:1:1 sport=5002 dport=443"));
  assert.ok(keys.has("0/3/- src=198.51.100.77 dst=192.0.2.77 sport=5001 dport=80"));
  assert.ok(keys.has("0/-/4 src=198.51.100.78 dst=192.0.2.78 sport=5003 dport=80"));
});
