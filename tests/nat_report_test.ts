import assert from "node:assert/strict";
import { SpawnError } from "../lib/seams/spawn.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { silentLogger } from "../lib/seams/logger.ts";
import { createNatReader } from "../lib/nat/nat_reader.ts";
import type { NatSourceRead } from "../lib/nat/nat_report.ts";

const IPT_V4 = Deno.readTextFileSync(
  new URL("./fixtures/nat-iptables-save-v4.txt", import.meta.url),
);

/** iptables-save works, ip6tables-save fails, nft is not installed. */
const spawn: SpawnCommand = (program) => {
  if (program === "nft") throw new SpawnError(program, "not-found", "not found");
  const ok = program === "iptables-save";
  return {
    stdout: ReadableStream.from([new TextEncoder().encode(ok ? IPT_V4 : "")]),
    status: Promise.resolve({
      code: ok ? 0 : 1,
      stderr: ok ? "" : "ip6tables-save: Permission denied\n",
    }),
  };
};

function observed() {
  const reads: NatSourceRead[] = [];
  return { reads, observer: { natSourceRead: (read: NatSourceRead) => void reads.push(read) } };
}

Deno.test("createNatReader() tells its observer how each source's read went, every read", async () => {
  const { reads, observer } = observed();
  const nat = createNatReader({ source: "auto", spawn, logger: silentLogger, observer });
  await nat.read();
  await nat.read();
  const once: readonly NatSourceRead[] = [
    { source: "iptables", family: "ipv4", outcome: "ok" },
    { source: "iptables", family: "ipv6", outcome: "failed" },
    { source: "nftables", family: "ipv4", outcome: "absent" },
    { source: "nftables", family: "ipv6", outcome: "absent" },
  ];
  // Every read, not only changes: an alert must see a source that keeps failing.
  assert.deepEqual(reads, [...once, ...once]);
});

Deno.test("createNatReader() tells its observer nothing about a read cut short by shutdown", async () => {
  const { reads, observer } = observed();
  const nat = createNatReader({ source: "iptables", spawn, logger: silentLogger, observer });
  const controller = new AbortController();
  controller.abort();
  assert.equal(await nat.read(controller.signal), undefined);
  assert.deepEqual(reads, []);
});
