/**
 * The agent's netlink listing (`lib/table/netlink/netlink_lister.ts`: a ctnetlink dump through libmnl, read into
 * candidates) against `conntrack -L -p tcp -u UNREPLIED -o id > /dev/null`, on the same filled
 * namespace table: CPU per listing of each, and the candidates each found.
 *
 * CLI: `deno run -A bench/netlink_listing.ts [--rounds N] ENTRIES` (default 10 rounds, 1000000
 * entries). Prints one JSON line. Needs root and libmnl.so.0.
 *
 * @module
 */
import { runToEnd } from "../lib/seams/spawn.ts";
import { openNetlinkLister } from "../lib/table/netlink/netlink_lister.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { option } from "./cycle.ts";
import { createNetns, fillTable, inNetns, raiseConntrackCapacity } from "./fill_table.ts";

function cpuSeconds(): number {
  const text = Deno.readTextFileSync("/proc/self/stat");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Inside the namespace: `rounds` netlink listings, then as many conntrack listings. */
async function child(rounds: number): Promise<void> {
  const opened = openNetlinkLister();
  if (opened.kind !== "ok") throw new Error(opened.reason);
  let found = 0;
  const listOnce = async () => {
    found = 0;
    const dump = await opened.lister.list({ onBatch: (batch) => void (found += batch.length) });
    if (dump.kind !== "ok") throw new Error(dump.reason);
  };
  await listOnce(); // warm-up (JIT)
  const before = cpuSeconds();
  for (let i = 0; i < rounds; i++) await listOnce();
  const netlink = (cpuSeconds() - before) / rounds;
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
}

if (import.meta.main && Deno.args[0] === "--child") {
  await child(Number(Deno.args[1]));
} else if (import.meta.main) {
  const args = [...Deno.args];
  const rounds = option(args, "--rounds", 10);
  const entries = Number(args[0] ?? 1_000_000);
  await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
  await using ns = await createNetns(denoSpawn, "bench-nl");
  const fill = await fillTable(denoSpawn, ns.name, { entries });
  const self = new URL(import.meta.url).pathname;
  const out = await inNetns(denoSpawn, ns.name, [
    Deno.execPath(),
    "run",
    "-A",
    self,
    "--child",
    String(rounds),
  ]);
  console.log(JSON.stringify({ entries: fill.count, rounds, ...JSON.parse(out) }));
}
