/**
 * `deno task test` runs the suite through this guard: `deno run ... tests/host_guard.ts ARGS`
 * reads the host-wide state the suite could change (conntrack limits, parameters the tests set
 * in their own namespaces, network namespaces), runs `deno ARGS` with this terminal, reads the
 * state again and fails the run when anything differs, naming each difference. A parameter left
 * changed is also written back, so one broken test cannot leave a node's conntrack hash resized.
 *
 * Why a wrapper and not a last test: Deno gives no order between test files, nor a hook after the
 * last one, and a wrapper also sees what a crashed or killed `deno test` left behind. It assumes
 * it runs alone: another suite running on the same host at the same time shows as a difference.
 *
 * Exit status: `deno test`'s when that failed, otherwise 1 if the host changed, otherwise 0.
 *
 * @module
 */
import { diffHostState, readHostState, restoreHostSysctls } from "./support/host_state.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";

const before = await readHostState(denoSpawn).catch((error: Error) => {
  // Without sysctl or ip there is nothing to compare; CI must have them, so it stops there.
  if (Deno.env.get("CI") === "true") {
    console.error(`host check: Cannot read the host's state: ${error.message}`);
    Deno.exit(1);
  }
  console.error(`host check: skipped: ${error.message}`);
  return undefined;
});

// Deno.Command here, not lib/seams/spawn_deno.ts: `deno test` gets this terminal (colours, and output
// that is never cut), which the piped seam cannot give.
const child = new Deno.Command(Deno.execPath(), {
  args: Deno.args,
  stdin: "inherit",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
// Ctrl-C reaches the whole process group; a signal sent to this process alone is passed on.
// Either way the guard waits for the suite to finish its cleanups, then checks.
const forward = (signal: Deno.Signal) => () => {
  try {
    child.kill(signal);
  } catch {
    // Already exited.
  }
};
const onInt = forward("SIGINT");
const onTerm = forward("SIGTERM");
Deno.addSignalListener("SIGINT", onInt);
Deno.addSignalListener("SIGTERM", onTerm);
const status = await child.status;
Deno.removeSignalListener("SIGINT", onInt);
Deno.removeSignalListener("SIGTERM", onTerm);

// Deno reports a child killed by a signal as 128 + its number, as a shell would.
const code = status.code;
if (before === undefined) Deno.exit(code);
const after = await readHostState(denoSpawn);
const changes = diffHostState(before, after);
if (changes.length === 0) {
  console.log("host check: conntrack limits, watched sysctls and namespaces are as found");
  Deno.exit(code);
}
console.error("host check: FAILED: the run left the host changed:");
for (const line of changes) console.error(`  - ${line}`);
const restored = await restoreHostSysctls(denoSpawn, before, after);
if (restored.length > 0) console.error(`host check: wrote back ${restored.join(", ")}`);
Deno.exit(code === 0 ? 1 : code);
