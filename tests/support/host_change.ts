/**
 * The host change the host-restore fixtures make and report (tests/fixtures/host_change_then_*.ts):
 * conntrack capacity raised for `CCT_FIXTURE_ENTRIES` entries and one namespace created, as the
 * scale tests and benchmarks do, with a `seen <json>` line saying what was in force.
 *
 * @module
 */
import { createNetns, raiseConntrackCapacity } from "../../bench/fill_table.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { readSysctl } from "./sysctl.ts";

/**
 * Raises the capacity, creates the namespace and prints `seen <json>` (the limits in force and
 * the namespace's name). Disposing deletes the namespace, then restores the capacity; a failed
 * step undoes what was done before it.
 */
export async function changeHostAndReport(): Promise<AsyncDisposable> {
  await using stack = new AsyncDisposableStack();
  const entries = Number(Deno.env.get("CCT_FIXTURE_ENTRIES"));
  stack.use(await raiseConntrackCapacity(denoSpawn, entries));
  const ns = stack.use(await createNetns(denoSpawn, "fixture"));
  const seen = {
    max: await readSysctl(denoSpawn, "net.netfilter.nf_conntrack_max"),
    buckets: await readSysctl(denoSpawn, "net.netfilter.nf_conntrack_buckets"),
    namespaces: [ns.name],
  };
  console.log(`seen ${JSON.stringify(seen)}`);
  // Handed to the caller: disposed there, not here.
  return stack.move();
}
