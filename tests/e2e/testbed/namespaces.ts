/**
 * The testbed's network namespaces as the host sees them: names, and their removal, including
 * those an interrupted run left behind.
 *
 * @module
 */
import { runToEnd, type SpawnCommand } from "../../../lib/seams/spawn.ts";
import { NAMESPACE_PREFIX } from "./topology.ts";

/** A fresh tag for one testbed's namespaces: the prefix, this process's id and a random part. */
export function namespaceTag(): string {
  return `${NAMESPACE_PREFIX}${Deno.pid}-${randomHex(4)}`;
}

/** Kills every process left in a namespace, then deletes it. */
export async function killNamespace(spawn: SpawnCommand, name: string): Promise<void> {
  const pids = await runToEnd(spawn, "ip", ["netns", "pids", name]);
  const list = pids.stdout.split("\n").filter((l) => /^\d+$/.test(l.trim()));
  if (list.length > 0) await runToEnd(spawn, "kill", ["-KILL", ...list]);
  await runToEnd(spawn, "ip", ["netns", "del", name]);
}

/**
 * Deletes testbed namespaces whose creating process no longer runs (an interrupted run), so
 * they never pile up; namespaces of live processes are left alone.
 */
export async function sweepOrphans(spawn: SpawnCommand): Promise<void> {
  const out = await runToEnd(spawn, "ip", ["netns", "list"]);
  for (const line of out.stdout.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const match = name.match(/^cct-(\d+)-[0-9a-f]+-(client|node|backend)$/);
    if (!match || await processExists(spawn, Number(match[1]))) continue;
    await killNamespace(spawn, name);
  }
}

/**
 * Whether a process runs, by `kill -0` (Deno refuses to stat `/proc/<pid>` without
 * `--allow-all`). When unsure, says yes: a namespace is only swept when its owner is surely gone.
 */
async function processExists(spawn: SpawnCommand, pid: number): Promise<boolean> {
  if (pid === Deno.pid) return true;
  try {
    const out = await runToEnd(spawn, "kill", ["-0", String(pid)]);
    return out.code === 0 || !/no such process/i.test(out.stderr);
  } catch {
    return true;
  }
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}
