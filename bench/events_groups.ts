/**
 * Which conntrack event groups to join: real TCP connection churn on loopback in a namespace
 * (`events_churn.ts`), with a subscriber (`events_subscriber.ts`) joining each candidate set of
 * groups in turn, its kernel filter keeping TCP towards the churn's destination (the worst case:
 * every connection is to the pool). Reports, per set, the events read per connection, the
 * subscriber's CPU, and the churning process's CPU (which carries the kernel's cost of building
 * and queueing the events) against a run with no subscriber.
 *
 * CLI: `deno run -A bench/events_groups.ts [RATE] [SECONDS]` (default 1000 connections/s, 5 s).
 * Needs root.
 *
 * @module
 */
import { denoSpawn } from "../lib/seams/spawn_deno.ts";
import { createNetns, enableConntrack, inNetns, runScriptInNetns } from "./fill_table.ts";

const SUBSCRIBER = new URL("./events_subscriber.ts", import.meta.url).pathname;
const CHURN = new URL("./events_churn.ts", import.meta.url).pathname;

const [rateText = "1000", secondsText = "5"] = Deno.args;
const seconds = Number(secondsText);

await using ns = await createNetns(denoSpawn, "groups");
await enableConntrack(denoSpawn, ns.name);

interface Row {
  readonly subscriber: string;
  readonly connections: number;
  readonly rate: number;
  readonly churnCpu: number;
  readonly events: { readonly new: number; readonly update: number; readonly destroy: number };
  readonly perConnection: number;
  readonly subscriberCpu: number;
}

const rows: Row[] = [];
const configs: readonly (readonly [string, string, string])[] = [
  ["none", "", ""],
  ["new, pool filter", "new", "127.0.0.1/32"],
  ["new, other block (all dropped in kernel)", "new", "192.0.2.0/24"],
  ["new+update, pool filter", "new,update", "127.0.0.1/32"],
  ["new+update+destroy, pool filter", "new,update,destroy", "127.0.0.1/32"],
];
let port = 18080;
for (const [label, groups, block] of configs) {
  await inNetns(denoSpawn, ns.name, ["conntrack", "-F"]).catch(() => "");
  const sub = groups === ""
    ? undefined
    : runScriptInNetns(denoSpawn, ns.name, SUBSCRIBER, [groups, String(seconds + 3), block]);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const churn = await runScriptInNetns(denoSpawn, ns.name, CHURN, [
    rateText,
    secondsText,
    String(port++),
  ]);
  const c = JSON.parse(churn) as {
    connections: number;
    rate: number;
    cpuSeconds: number;
  };
  let events = { new: 0, update: 0, destroy: 0 };
  let subscriberCpu = 0;
  if (sub) {
    const s = JSON.parse(await sub) as {
      counts: { received: typeof events };
      cpuSeconds: number;
    };
    events = s.counts.received;
    subscriberCpu = s.cpuSeconds;
  }
  const total = events.new + events.update + events.destroy;
  rows.push({
    subscriber: label,
    connections: c.connections,
    rate: c.rate,
    churnCpu: c.cpuSeconds,
    events,
    perConnection: Math.round(total / Math.max(1, c.connections) * 100) / 100,
    subscriberCpu,
  });
  console.error(JSON.stringify(rows.at(-1)));
}
console.log(
  "| subscriber | conn/s | churn CPU s | events new/update/destroy | events per conn | subscriber CPU s |",
);
console.log("|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(
    `| ${r.subscriber} | ${r.rate} | ${
      r.churnCpu.toFixed(2)
    } | ${r.events.new}/${r.events.update}/${r.events.destroy} | ${r.perConnection} | ${
      r.subscriberCpu.toFixed(3)
    } |`,
  );
}
