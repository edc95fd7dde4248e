import assert from "node:assert/strict";
import { runToEnd } from "../lib/seams/spawn.ts";
import { openNetlinkLister } from "../lib/table/netlink/netlink_lister.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";

// Needs libmnl and prlimit (util-linux); opening a netlink socket needs no privileges.
const available = (() => {
  const probe = openNetlinkLister();
  if (probe.kind === "ok") probe.lister[Symbol.dispose]();
  return probe.kind === "ok";
})();

Deno.test({
  name: "NetlinkLister.list() fails the listing, naming EMFILE, when no descriptor is left",
  ignore: !available,
  fn: async () => {
    const script = new URL("./fixtures/netlink-list-emfile.ts", import.meta.url).pathname;
    const config = new URL("../deno.json", import.meta.url).pathname;
    const out = await runToEnd(denoSpawn, "prlimit", [
      "--nofile=64:64",
      Deno.execPath(),
      ...["run", "--no-prompt", `--config=${config}`, "--allow-ffi", "--allow-read=/dev/null"],
      script,
    ]);
    assert.equal(out.code, 0, out.stderr);
    const result = JSON.parse(out.stdout) as { starved: unknown; recovered: string; held: number };
    assert.ok(result.held > 0, "the fixture took no descriptor");
    assert.deepEqual(result.starved, {
      kind: "failed",
      reason: "Cannot open a netlink socket: EMFILE (the agent has no file descriptor left)",
    });
    // The failure held nothing: once descriptors are free, the next listing's socket opens.
    assert.equal(result.recovered, "opened");
  },
});
