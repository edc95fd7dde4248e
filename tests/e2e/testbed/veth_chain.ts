/**
 * The wiring every namespace bed shares: three namespaces joined in a chain
 * `client c0 ── n0 node n1 ── b0 backend`, the node forwarding, every link up. Addresses and routes
 * differ per bed, so they stay with each bed.
 *
 * @module
 */
import type { SpawnCommand } from "../../../lib/seams/spawn.ts";
import { runChecked } from "../../support/run_checked.ts";
import { type Host, HOSTS } from "./topology.ts";

/** Each host's end of the two veth pairs. */
export const LINKS: readonly (readonly [Host, string])[] = [
  ["client", "c0"],
  ["node", "n0"],
  ["node", "n1"],
  ["backend", "b0"],
];

/**
 * Creates the three namespaces and the veth pairs between them, turns forwarding on in the node
 * with any `nodeSysctls` besides, and brings every link and loopback up. Throws
 * `CommandFailedError` when a step fails; the caller deletes the namespaces.
 *
 * @example
 * ```ts ignore
 * import { denoSpawn } from "../../../lib/seams/spawn_deno.ts";
 * const names = { client: "cct-1-a-client", node: "cct-1-a-node", backend: "cct-1-a-backend" };
 * await wireVethChain(denoSpawn, names, ["net.ipv4.conf.all.rp_filter=0"]);
 * ```
 */
export async function wireVethChain(
  spawn: SpawnCommand,
  names: Readonly<Record<Host, string>>,
  nodeSysctls: readonly string[] = [],
): Promise<void> {
  for (const host of HOSTS) await runChecked(spawn, "ip", ["netns", "add", names[host]]);
  await runChecked(spawn, "ip", [
    ...["-n", names.client, "link", "add", "c0", "type", "veth"],
    ...["peer", "name", "n0", "netns", names.node],
  ]);
  await runChecked(spawn, "ip", [
    ...["-n", names.node, "link", "add", "n1", "type", "veth"],
    ...["peer", "name", "b0", "netns", names.backend],
  ]);
  const inHost = (host: Host, argv: readonly string[]) =>
    runChecked(spawn, "ip", ["netns", "exec", names[host], ...argv]);
  await inHost("node", [
    ...["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
    ...nodeSysctls,
  ]);
  for (const [host, dev] of LINKS) await inHost(host, ["ip", "link", "set", dev, "up"]);
  for (const host of HOSTS) await inHost(host, ["ip", "link", "set", "lo", "up"]);
}

/** The namespace name of each host: `<tag>-client`, `<tag>-node`, `<tag>-backend`. */
export function hostNames(tag: string): Readonly<Record<Host, string>> {
  return { client: `${tag}-client`, node: `${tag}-node`, backend: `${tag}-backend` };
}

/**
 * Runs a bed's `build` and returns the bed; when the build fails, disposes the bed (removing what
 * was made so far) before the error propagates.
 *
 * @example
 * ```ts ignore
 * const bed = await builtOrDisposed(new SomeBed(), () => bed.build());
 * ```
 */
export async function builtOrDisposed<T extends AsyncDisposable>(
  bed: T,
  build: () => Promise<void>,
): Promise<T> {
  try {
    await build();
  } catch (error) {
    await bed[Symbol.asyncDispose]();
    throw error;
  }
  return bed;
}
