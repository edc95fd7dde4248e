/**
 * Bench helper, run inside a namespace: subscribes to the conntrack event groups of argument 1
 * (comma-separated: new, update, destroy), with the kernel filter keeping TCP towards the block of
 * argument 3 ("-" for no filter), reads events for argument 2 seconds and prints, as JSON, what it
 * read and the CPU seconds it used: `{ counts, cpuSeconds }`. `BATCH_DELAY_MS` sets the reader's
 * batch delay (default 100 ms).
 *
 * @module
 */
import process from "node:process";
import { parseCidr } from "../lib/core/cidr.ts";
import { ConntrackEvents, type EventGroup } from "../lib/table/netlink/ct_events.ts";
import { openNetlinkLibraries } from "../lib/seams/netlink_socket.ts";

const [groupsText = "new", secondsText = "10", block = "-"] = Deno.args;
const groups = groupsText.split(",") as EventGroup[];
const opened = openNetlinkLibraries();
if (opened.kind !== "ok") throw new Error(opened.reason);
using libs = opened.libraries;
const events = ConntrackEvents.open(libs, {
  groups,
  destinations: block === "-" ? undefined : [parseCidr(block)],
  batchDelayMs: Number(Deno.env.get("BATCH_DELAY_MS") ?? "100"),
});
if (typeof events === "string") throw new Error(events);
let candidates = 0;
const before = process.cpuUsage();
const running = events.run({
  onNew: (c) => void (candidates += c.length),
  onLost: () => {},
});
console.error("subscribed");
await new Promise((resolve) => setTimeout(resolve, Number(secondsText) * 1000));
await events[Symbol.asyncDispose]();
await running;
const cpu = process.cpuUsage(before);
console.log(JSON.stringify({
  counts: events.counts,
  candidates,
  cpuSeconds: (cpu.user + cpu.system) / 1e6,
}));
