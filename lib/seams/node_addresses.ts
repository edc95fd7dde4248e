/**
 * The node's own addresses, read from the kernel through `Deno.networkInterfaces()` (needs
 * `--allow-sys=networkInterfaces`): what the `nat` rule's evaluation counts as `LOCAL`
 * (iptables' `-m addrtype`, nftables' `fib … type local`).
 *
 * @module
 */

/** Reads the node's addresses now; throws when they cannot be read. */
export type ReadNodeAddresses = () => ReadonlySet<string>;

/**
 * Every address of every interface of this network namespace, both families, IPv6 without a
 * zone suffix. Cheap (one netlink dump inside the runtime), so it is called on every read of the
 * NAT rules and an address added to the node is seen at the next read.
 *
 * @throws {Deno.errors.NotCapable} without `--allow-sys=networkInterfaces`.
 *
 * @example
 * ```ts ignore
 * import { readNodeAddresses } from "./node_addresses.ts";
 * readNodeAddresses().has("127.0.0.1"); // true
 * ```
 */
export const readNodeAddresses: ReadNodeAddresses = () => {
  const addresses = new Set<string>();
  for (const nic of Deno.networkInterfaces()) {
    // Link-local IPv6 addresses come as `fe80::1%eth0` on some runtimes.
    addresses.add(nic.address.replace(/%.*$/, ""));
  }
  return addresses;
};
