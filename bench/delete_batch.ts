/**
 * Times one batch of deletions on a filled table: the netlink backend (300 stale flows: a GET and
 * a DELETE each, 128 of each kind to a datagram) against the conntrack CLI (`conntrack -R -` with `-D` lines, which
 * dumps the whole table per line, so only a few flows are timed), and checks that nothing else
 * was deleted.
 *
 * CLI: `deno run -A bench/delete_batch.ts [ENTRIES] [NETLINK_FLOWS] [CLI_FLOWS]`
 * (default `1000000 300 5`). Needs root.
 *
 * @module
 */
import { runToEnd } from "../lib/seams/spawn.ts";
import type { DeleteOutcome } from "../lib/table/deleter.ts";
import type { Flow } from "../lib/core/flow.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import {
  createNetns,
  entryAt,
  fillTable,
  inNetns,
  raiseConntrackCapacity,
  tableCount,
} from "./fill_table.ts";
import type { FillOptions } from "./fill_table.ts";

const HELPER = new URL("../tests/fixtures/scale_netlink_delete.ts", import.meta.url).pathname;

/** The `conntrack -R` line that deletes exactly one flow while it is SYN_SENT. */
export function cliDeleteLine(flow: Flow): string {
  const o = flow.original;
  const r = flow.reply;
  const zone = flow.zone === 0 ? "" : ` -w ${flow.zone}`;
  return `-D${zone} -p tcp -s ${o.src} -d ${o.dst} -r ${r.src} -q ${r.dst} ` +
    `--sport ${o.sport} --dport ${o.dport} --reply-port-src ${r.sport} ` +
    `--reply-port-dst ${r.dport} --state SYN_SENT`;
}

if (import.meta.main) {
  const [entries = 1_000_000, netlinkFlows = 300, cliFlows = 5] = Deno.args.map(Number);
  await using _capacity = await raiseConntrackCapacity(denoSpawn, entries);
  await using ns = await createNetns(denoSpawn, "bench-delete");
  const options: FillOptions = { entries };
  const fill = await fillTable(denoSpawn, ns.name, options);
  const stale: Flow[] = [];
  for (let i = 0; i < entries && stale.length < netlinkFlows + cliFlows; i++) {
    const entry = entryAt(i, options);
    if (entry.kind === "stale") stale.push(entry.flow);
  }
  const viaNetlink = stale.slice(0, netlinkFlows);
  const viaCli = stale.slice(netlinkFlows);

  const start = performance.now();
  const out = await runToEnd(
    denoSpawn,
    "ip",
    ["netns", "exec", ns.name, Deno.execPath(), "run", "--allow-ffi", HELPER],
    { stdin: JSON.stringify({ flows: viaNetlink }) },
  );
  const netlinkWall = (performance.now() - start) / 1000;
  const result = JSON.parse(out.stdout) as {
    readonly outcome: DeleteOutcome;
    readonly seconds: number;
  };

  const cliStart = performance.now();
  await inNetns(denoSpawn, ns.name, ["conntrack", "-R", "-"], viaCli.map(cliDeleteLine).join("\n"));
  const cliSeconds = (performance.now() - cliStart) / 1000;

  const after = await tableCount(denoSpawn, ns.name);
  const expected = fill.count - viaNetlink.length - viaCli.length;
  console.log(JSON.stringify(
    {
      entries: fill.count,
      netlink: {
        flows: viaNetlink.length,
        deleted: result.outcome.deleted.length,
        gone: result.outcome.gone.length,
        failed: result.outcome.failed.length,
        deleteSeconds: result.seconds,
        wallSecondsWithProcessStart: netlinkWall,
      },
      cli: { flows: viaCli.length, seconds: cliSeconds, perFlow: cliSeconds / viaCli.length },
      tableAfter: after,
      collateral: expected - after,
    },
    null,
    2,
  ));
}
