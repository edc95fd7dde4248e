/**
 * The testbed's three hosts and their addresses, all from documentation ranges, so no packet ever
 * leaves the namespaces.
 *
 * @module
 */
import type { Family } from "../../../lib/core/flow.ts";

/** The three test hosts. */
export type Host = "client" | "node" | "backend";

/** Every host, in the order they are created. */
export const HOSTS: readonly Host[] = ["client", "node", "backend"];

/** The addresses of one family. */
export interface FamilyAddresses {
  /** The client's address. */
  readonly client: string;
  /** The node's address on the client link (the client's gateway). */
  readonly nodeClientSide: string;
  /** The node's address on the backend link (the backend's gateway). */
  readonly nodeBackendSide: string;
  /** The backend's address: the DNAT target. */
  readonly backend: string;
  /** The Service's LoadBalancer VIP, routed to the node. */
  readonly vip: string;
  /** Prefix length of both links. */
  readonly prefix: number;
}

/** The addresses the testbed uses, all from documentation ranges. */
export const ADDRESSES: Readonly<Record<Family, FamilyAddresses>> = {
  ipv4: {
    client: "198.51.100.2",
    nodeClientSide: "198.51.100.1",
    nodeBackendSide: "203.0.113.1",
    backend: "203.0.113.2",
    vip: "192.0.2.10",
    prefix: 24,
  },
  ipv6: {
    client: "2001:db8:1::2",
    nodeClientSide: "2001:db8:1::1",
    nodeBackendSide: "2001:db8:2::1",
    backend: "2001:db8:2::2",
    vip: "2001:db8:100::10",
    prefix: 64,
  },
};

/** The Service port on the VIP. */
export const SERVICE_PORT = 80;
/** The port the backend serves, the DNAT target. */
export const BACKEND_PORT = 8080;
/** The first line the backend sends on every connection. */
export const BACKEND_BANNER = "hello from the backend";
/** Prefix of every namespace the testbed creates. */
export const NAMESPACE_PREFIX = "cct-";

/** Both families, in the order the testbed configures them. */
export const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];
