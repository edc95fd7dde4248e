/**
 * The three namespaces of the nftables differential test: a client with addresses inside and
 * outside the fixtures' `loadBalancerSourceRanges` and one in the pod CIDR, a node that loads a
 * kube-proxy nftables fixture and forwards, and a backend that owns every endpoint address and
 * silently drops the SYNs it gets (so translated SYNs are routed and their conntrack entries
 * confirmed, and nothing answers). Every address is a documentation address (see
 * tests/fixtures/kube-proxy/nftables/README.md); no packet leaves the namespaces.
 *
 * ```
 *  client 203.0.113.2, 203.0.113.130, 198.51.100.100 ── c0 │ n0 198.51.100.130 (node IP)
 *         2001:db8:cb::2, 2001:db8:cc::130, 2001:db8:a::100│    2001:db8:c0::2
 *  node   n1 198.51.100.131 / 2001:db8:c0::3 ── b0 backend: endpoints 198.51.100.1-7,
 *         2001:db8:a::1-7, router 203.0.113.250 / 2001:db8:fe::250 (the node's default route)
 * ```
 *
 * @module
 */
import type { Family } from "../../lib/core/flow.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import { runChecked } from "../support/run_checked.ts";
import type { SpawnCommand } from "../../lib/seams/spawn.ts";
import type { Host } from "./testbed/topology.ts";
import { killNamespace, namespaceTag } from "./testbed/namespaces.ts";
import { builtOrDisposed, hostNames, wireVethChain } from "./testbed/veth_chain.ts";

/** The client addresses of one family. */
export interface Clients {
  /** Inside `loadBalancerSourceRanges`. */
  readonly inside: string;
  /** Outside every source range and outside the pod CIDR. */
  readonly outside: string;
  /** Inside the pod CIDR (kube-proxy's "short-circuit pod traffic"), not an endpoint. */
  readonly pod: string;
}

/** The client addresses per family. */
export const CLIENTS: Readonly<Record<Family, Clients>> = {
  ipv4: { inside: "203.0.113.2", outside: "203.0.113.130", pod: "198.51.100.100" },
  ipv6: { inside: "2001:db8:cb::2", outside: "2001:db8:cc::130", pod: "2001:db8:a::100" },
};

/** The node's addresses per family: the node IP (on the client link) first. */
export const NODE_ADDRESSES: Readonly<Record<Family, readonly string[]>> = {
  ipv4: ["198.51.100.130", "198.51.100.131"],
  ipv6: ["2001:db8:c0::2", "2001:db8:c0::3"],
};

const ENDPOINTS: Readonly<Record<Family, readonly string[]>> = {
  ipv4: [1, 2, 3, 4, 5, 6, 7].map((n) => `198.51.100.${n}`),
  ipv6: [1, 2, 3, 4, 5, 6, 7].map((n) => `2001:db8:a::${n}`),
};

const ROUTER: Readonly<Record<Family, string>> = {
  ipv4: "203.0.113.250",
  ipv6: "2001:db8:fe::250",
};

/** The backend drops SYNs instead of resetting them: the node's entries stay `SYN_SENT`. */
const BACKEND_RULES = `table inet sink {
  chain input { type filter hook input priority 0; policy accept; tcp flags syn drop; }
}
`;

/** One node conntrack entry, original and reply tuples. */
export interface NodeEntry {
  /** Original source. */
  readonly src: string;
  /** Original source port. */
  readonly sport: number;
  /** Original destination. */
  readonly dst: string;
  /** Original destination port. */
  readonly dport: number;
  /** Reply source: differs from `dst` when the node DNATed. */
  readonly replySrc: string;
  /** Reply source port. */
  readonly replySport: number;
}

/** The namespaces; `await using` deletes them, also when the test fails. */
export class NftablesBed implements AsyncDisposable {
  readonly #spawn: SpawnCommand;
  readonly #names: Readonly<Record<Host, string>>;

  private constructor(spawn: SpawnCommand, names: Readonly<Record<Host, string>>) {
    this.#spawn = spawn;
    this.#names = names;
  }

  /**
   * Builds the namespaces. The names follow tests/e2e/testbed.ts (`cct-<pid>-<hex>-<host>`), whose
   * sweep removes them if this process dies before disposal.
   */
  static async create(spawn: SpawnCommand): Promise<NftablesBed> {
    const bed = new NftablesBed(spawn, hostNames(namespaceTag()));
    return await builtOrDisposed(bed, () => bed.#build());
  }

  async #build(): Promise<void> {
    await wireVethChain(this.#spawn, this.#names, [
      "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0",
    ]);
    for (const family of ["ipv4", "ipv6"] as const) {
      const v = family === "ipv4" ? "-4" : "-6";
      const one = family === "ipv4" ? "/32" : "/128";
      // No DAD: IPv6 addresses are usable at once.
      const extra = family === "ipv6" ? ["nodad"] : [];
      const add = (host: Host, address: string, dev: string) =>
        this.run(host, ["ip", v, "addr", "add", `${address}${one}`, "dev", dev, ...extra]);
      const route = (host: Host, ...words: string[]) =>
        this.run(host, ["ip", v, "route", "add", ...words]);
      const [nodeIp = "", nodeBackendSide = ""] = NODE_ADDRESSES[family];
      for (const address of Object.values(CLIENTS[family])) {
        await add("client", address, "c0");
        await route("node", `${address}${one}`, "dev", "n0");
      }
      await add("node", nodeIp, "n0");
      await add("node", nodeBackendSide, "n1");
      await route("client", `${nodeIp}${one}`, "dev", "c0");
      await route("client", "default", "via", nodeIp, "dev", "c0");
      for (const address of [...ENDPOINTS[family], ROUTER[family]]) {
        await add("backend", address, "b0");
        await route("node", `${address}${one}`, "dev", "n1");
      }
      await route("node", "default", "via", ROUTER[family], "dev", "n1");
      await route("backend", `${nodeBackendSide}${one}`, "dev", "b0");
      await route("backend", "default", "via", nodeBackendSide, "dev", "b0");
    }
    await this.run("backend", ["nft", "-f", "-"], { stdin: BACKEND_RULES });
  }

  /** Runs a program in a namespace; throws with its stderr when it fails. */
  run(
    host: Host,
    argv: readonly string[],
    options: { readonly stdin?: string } = {},
  ): Promise<string> {
    return runChecked(this.#spawn, "ip", ["netns", "exec", this.#names[host], ...argv], {
      ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
    });
  }

  /** Replaces the node's whole ruleset with these `nft -f` files and forgets every flow. */
  async load(files: readonly string[]): Promise<void> {
    await this.run("node", ["nft", "flush", "ruleset"]);
    for (const file of files) await this.run("node", ["nft", "-f", file]);
    await runToEnd(this.#spawn, "ip", ["netns", "exec", this.#names.node, "conntrack", "-F"]);
  }

  /** `nft -j list table <ip|ip6> kube-proxy` on the node. */
  listTable(family: Family): Promise<string> {
    return this.run("node", [
      "nft",
      "-j",
      "list",
      "table",
      family === "ipv4" ? "ip" : "ip6",
      "kube-proxy",
    ]);
  }

  /** The node's addresses, both families, loopback included (what NodeFacts holds). */
  async localAddresses(): Promise<ReadonlySet<string>> {
    const links = JSON.parse(await this.run("node", ["ip", "-j", "addr", "show"])) as {
      addr_info?: { local?: string }[];
    }[];
    return new Set(
      links.flatMap((l) => (l.addr_info ?? []).map((a) => a.local ?? "")).filter((a) => a !== ""),
    );
  }

  /** Sends one SYN per `src sport dst dport` line from the client namespace. */
  async sendSyns(lines: readonly string[], script: string): Promise<void> {
    await this.run("client", [Deno.execPath(), "run", "--no-config", "--allow-net", script], {
      stdin: lines.join("\n") + "\n",
    });
  }

  /** The node's TCP conntrack entries, both families. */
  async entries(): Promise<NodeEntry[]> {
    const out: NodeEntry[] = [];
    for (const family of ["ipv4", "ipv6"]) {
      const text = await this.run("node", ["conntrack", "-L", "-p", "tcp", "-f", family]);
      for (const line of text.split("\n")) {
        const pairs = [...line.matchAll(/(src|dst|sport|dport)=(\S+)/g)].map((m) => m[2]);
        if (pairs.length < 8) continue;
        const [src = "", dst = "", sport, dport, replySrc = "", , replySport] = pairs;
        out.push({
          src,
          dst,
          sport: Number(sport),
          dport: Number(dport),
          replySrc,
          replySport: Number(replySport),
        });
      }
    }
    return out;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const name of Object.values(this.#names)) await killNamespace(this.#spawn, name);
  }
}

/**
 * Every TCP destination a kube-proxy nftables table (its `nft -j list table` JSON) names: each
 * Service IP and port, each NodePort on each node address, and, given `unservedPort`, each
 * ClusterIP on that port, which it does not serve.
 */
export function tableDestinations(
  json: string,
  family: Family,
  unservedPort?: number,
): [string, number][] {
  const found = new Map<string, [string, number]>();
  const add = (address: string, port: number) => found.set(`${address} ${port}`, [address, port]);
  const doc = JSON.parse(json) as { nftables: Record<string, Record<string, unknown>>[] };
  for (const object of doc.nftables) {
    const body = object.map ?? object.set;
    if (!body || !Array.isArray(body.elem)) continue;
    for (const element of body.elem as unknown[]) {
      const raw = object.map ? (element as unknown[])[0] : element;
      const key = (raw as { elem?: { val: unknown } }).elem?.val ?? raw;
      const parts = (key as { concat?: unknown[] }).concat ?? [key];
      if (["service-ips", "no-endpoint-services", "firewall-ips"].includes(String(body.name))) {
        if (parts[1] === "tcp") add(String(parts[0]), Number(parts[2]));
      } else if (["service-nodeports", "no-endpoint-nodeports"].includes(String(body.name))) {
        if (parts[0] === "tcp") {
          for (const node of NODE_ADDRESSES[family]) add(node, Number(parts[1]));
        }
      } else if (
        unservedPort !== undefined && body.name === "cluster-ips" && typeof key === "string"
      ) {
        add(key, unservedPort);
      }
    }
  }
  return [...found.values()];
}
