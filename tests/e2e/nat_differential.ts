/**
 * The kernel as the judge of the iptables nat evaluator: three namespaces (client, node,
 * backend), a kube-proxy ruleset loaded into the node, one real SYN per (client address,
 * destination), and the node's conntrack table read back to learn what the node did with it.
 *
 * ```
 *  client 203.0.113.10 (inside the source range 203.0.113.0/25), 203.0.113.200 (outside),
 *         198.51.100.200 (a pod source, inside the cluster CIDR 198.51.100.0/24)
 *     c0 ── n0 203.0.113.1   node   n1 192.0.2.249 ── b0 192.0.2.250 backend
 *  The node owns the fixture's node addresses (on lo) and routes every other 192.0.2.0/24 and
 *  198.51.100.0/24 address (Service IPs, endpoints) to the backend, which forwards nothing: a
 *  SYN leaves the node (so conntrack confirms its entry) and dies there. IPv6 is the same with
 *  2001:db8:113::/120, 2001:db8:2::/120 and 2001:db8:100::/120 (see remap.ts).
 * ```
 *
 * The truth for one SYN: its entry's reply source differs from its original destination (DNAT,
 * to that endpoint), or the entry is un-NATed, or there is no entry because the filter table
 * dropped or rejected the SYN before confirmation (not translated either).
 *
 * @module
 */
import type { Family } from "../../lib/core/flow.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import type { CommandOutput, SpawnCommand } from "../../lib/seams/spawn.ts";
import { type Host, parseConntrackLine } from "./testbed.ts";
import { killNamespace, namespaceTag } from "./testbed/namespaces.ts";
import { builtOrDisposed, hostNames, wireVethChain } from "./testbed/veth_chain.ts";

/** The project root. */
const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** Client addresses per family: inside the fixtures' source range, outside it, a pod source. */
export const CLIENTS: Readonly<Record<Family, readonly string[]>> = {
  ipv4: ["203.0.113.10", "203.0.113.200", "198.51.100.200"],
  ipv6: ["2001:db8:113::a", "2001:db8:113::c8", "2001:db8:100::c8"],
};

interface FamilyPlan {
  readonly nodeClientSide: string;
  readonly nodeBackendSide: string;
  readonly backend: string;
  readonly clientPrefix: number;
  readonly backendPrefix: number;
  readonly routedToBackend: readonly string[];
  readonly podClient: string;
  readonly host: number;
}

const PLAN: Readonly<Record<Family, FamilyPlan>> = {
  ipv4: {
    nodeClientSide: "203.0.113.1",
    nodeBackendSide: "192.0.2.249",
    backend: "192.0.2.250",
    clientPrefix: 24,
    backendPrefix: 29,
    routedToBackend: ["192.0.2.0/24", "198.51.100.0/24"],
    podClient: "198.51.100.200",
    host: 32,
  },
  ipv6: {
    nodeClientSide: "2001:db8:113::1",
    nodeBackendSide: "2001:db8:2::f9",
    backend: "2001:db8:2::fa",
    clientPrefix: 120,
    backendPrefix: 125,
    routedToBackend: ["2001:db8:2::/120", "2001:db8:100::/120"],
    podClient: "2001:db8:100::c8",
    host: 128,
  },
};

const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

/** One SYN: from a client address and port to a destination of the ruleset. */
export interface Probe {
  /** Address family. */
  readonly family: Family;
  /** Client address. */
  readonly src: string;
  /** Client port, unique per probe within a run. */
  readonly sport: number;
  /** Destination address. */
  readonly dst: string;
  /** Destination port. */
  readonly dport: number;
}

/** What the node did with one SYN. */
export type KernelTruth =
  | {
    /** Translated. */
    readonly kind: "dnat";
    /** The endpoint, from the entry's reply tuple. */
    readonly address: string;
    /** The endpoint's port. */
    readonly port: number;
  }
  | {
    /** Not translated: un-NATed entry, or none (dropped or rejected by the filter table). */
    readonly kind: "none";
    /** Whether the node kept an entry for it. */
    readonly entry: boolean;
  };

/** A fixture file as the test reads it. */
export interface RulesetFixture {
  /** File name without directory. */
  readonly name: string;
  /** Family of its rules. */
  readonly family: Family;
  /** The whole text. */
  readonly text: string;
  /** The node's own addresses, from the `# node-addresses:` header. */
  readonly nodeAddresses: readonly string[];
}

/** Reads `tests/fixtures/kube-proxy/iptables/<base>.v4.txt` and `.v6.txt`. */
export async function readFixturePair(base: string): Promise<readonly RulesetFixture[]> {
  const dir = `${ROOT}/tests/fixtures/kube-proxy/iptables`;
  return await Promise.all(FAMILIES.map(async (family) => {
    const name = `${base}.${family === "ipv4" ? "v4" : "v6"}.txt`;
    const text = await Deno.readTextFile(`${dir}/${name}`);
    const header = /^# node-addresses: (.*)$/m.exec(text);
    return { name, family, text, nodeAddresses: (header?.[1] ?? "").split(" ").filter(Boolean) };
  }));
}

/**
 * Every destination the ruleset names: each exact `-d` address with a `--dport` (any table, so
 * the filter table's no-endpoint REJECTs count too), and each `KUBE-NODEPORTS` port on each node
 * address. Loopback destinations are left out: a client cannot send to them.
 */
export function destinationsOf(fixture: RulesetFixture): readonly (readonly [string, number])[] {
  const found = new Map<string, readonly [string, number]>();
  const add = (address: string, port: number) => found.set(`${address}|${port}`, [address, port]);
  for (const line of fixture.text.split("\n")) {
    if (!line.startsWith("-A ")) continue;
    const port = /--dport (\d+)/.exec(line)?.[1];
    if (port === undefined) continue;
    const dst = /(?:^|\s)-d ([0-9a-f.:]+?)(?:\/(?:32|128))?\s/.exec(line)?.[1];
    if (dst !== undefined && !/(^|\s)! -d /.test(line)) {
      if (!dst.startsWith("127.") && dst !== "::1") add(dst, Number(port));
    } else if (line.startsWith("-A KUBE-NODEPORTS ") && !line.includes(" -d ")) {
      for (const address of fixture.nodeAddresses) add(address, Number(port));
    }
  }
  return [...found.values()];
}

/** The three namespaces, wired for both families; dispose to delete them. */
export class DifferentialBed implements AsyncDisposable {
  readonly #spawn: SpawnCommand;
  readonly #names: Readonly<Record<Host, string>>;
  #nodeAddresses: readonly { readonly family: Family; readonly address: string }[] = [];

  private constructor(spawn: SpawnCommand, names: Readonly<Record<Host, string>>) {
    this.#spawn = spawn;
    this.#names = names;
  }

  /**
   * Creates and wires the namespaces. Named like the testbed's (`cct-<pid>-<hex>-<host>`), so an
   * interrupted run's namespaces are swept by the next testbed. Removes what it made on failure.
   */
  static async create(spawn: SpawnCommand): Promise<DifferentialBed> {
    const bed = new DifferentialBed(spawn, hostNames(namespaceTag()));
    return await builtOrDisposed(bed, () => bed.#build());
  }

  async #build(): Promise<void> {
    await wireVethChain(this.#spawn, this.#names, [
      "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0",
    ]);
    for (const family of FAMILIES) {
      const plan = PLAN[family];
      const ip = family === "ipv4" ? "-4" : "-6";
      // No DAD: IPv6 addresses are usable at once.
      const nodad = family === "ipv6" ? ["nodad"] : [];
      const add = (host: Host, address: string, prefix: number, dev: string) =>
        this.run(host, ["ip", "addr", "add", `${address}/${prefix}`, "dev", dev, ...nodad]);
      for (const address of CLIENTS[family]) {
        await add(
          "client",
          address,
          address === plan.podClient ? plan.host : plan.clientPrefix,
          "c0",
        );
      }
      await add("node", plan.nodeClientSide, plan.clientPrefix, "n0");
      await add("node", plan.nodeBackendSide, plan.backendPrefix, "n1");
      await add("backend", plan.backend, plan.backendPrefix, "b0");
      await this.run("client", ["ip", ip, "route", "add", "default", "via", plan.nodeClientSide]);
      for (const block of plan.routedToBackend) {
        await this.run("node", ["ip", ip, "route", "add", block, "via", plan.backend]);
      }
      await this.run("node", [
        "ip",
        ip,
        "route",
        "add",
        `${plan.podClient}/${plan.host}`,
        "dev",
        "n0",
      ]);
    }
  }

  /** Every address the node owns now, both families: what the agent would read as local. */
  localAddresses(): ReadonlySet<string> {
    return new Set([
      "127.0.0.1",
      "::1",
      ...FAMILIES.flatMap((f) => [PLAN[f].nodeClientSide, PLAN[f].nodeBackendSide]),
      ...this.#nodeAddresses.map((a) => a.address),
    ]);
  }

  /**
   * Replaces the node's rules with a fixture pair (both families), gives the node the addresses
   * the fixtures name, and empties its conntrack table. `-m nfacct` is left out when loading: it
   * only counts, and needs accounting objects created outside iptables.
   */
  async load(fixtures: readonly RulesetFixture[]): Promise<void> {
    for (const { family, address } of this.#nodeAddresses) {
      await this.run("node", ["ip", "addr", "del", `${address}/${PLAN[family].host}`, "dev", "lo"]);
    }
    this.#nodeAddresses = [];
    for (const fixture of fixtures) {
      const restore = fixture.family === "ipv4" ? "iptables-restore" : "ip6tables-restore";
      const stdin = fixture.text.replace(/ -m nfacct --nfacct-name \S+/g, "");
      await this.run("node", [restore], { stdin });
      for (const address of fixture.nodeAddresses) {
        const extra = fixture.family === "ipv6" ? ["nodad"] : [];
        await this.run("node", [
          "ip",
          "addr",
          "add",
          `${address}/${PLAN[fixture.family].host}`,
          "dev",
          "lo",
          ...extra,
        ]);
        this.#nodeAddresses = [...this.#nodeAddresses, { family: fixture.family, address }];
      }
    }
    for (const family of FAMILIES) {
      // Exit 1 with "0 flow entries" when empty is fine.
      await this.exec("node", ["conntrack", "-F", "-f", family]);
    }
  }

  /** Sends every probe's SYN at once from the client and returns the node's truth for each. */
  async judge(probes: readonly Probe[], timeoutMs = 400): Promise<readonly KernelTruth[]> {
    const argv = [
      Deno.execPath(),
      "run",
      "--no-config",
      "--allow-net",
      `${ROOT}/tests/e2e/syn_burst.ts`,
      String(timeoutMs),
    ];
    await this.run("client", argv, { stdin: JSON.stringify(probes) });
    const entries = new Map<string, { replySrc: string; replySport: number; origDst: string }>();
    for (const family of FAMILIES) {
      const out = await this.exec("node", [
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "-f",
        family,
        "-o",
        "id",
      ]);
      for (const line of out.stdout.split("\n")) {
        const entry = parseConntrackLine(line);
        if (!entry) continue;
        const o = entry.flow.original;
        entries.set(`${o.src}|${o.sport}`, {
          replySrc: entry.flow.reply.src,
          replySport: entry.flow.reply.sport,
          origDst: o.dst,
        });
      }
    }
    return probes.map((p): KernelTruth => {
      const entry = entries.get(`${p.src}|${p.sport}`);
      if (!entry) return { kind: "none", entry: false };
      if (entry.replySrc !== entry.origDst) {
        return { kind: "dnat", address: entry.replySrc, port: entry.replySport };
      }
      return { kind: "none", entry: true };
    });
  }

  /** Runs a program in a namespace, whatever its exit code. */
  exec(
    host: Host,
    argv: readonly string[],
    stdin?: string,
  ): Promise<CommandOutput> {
    return runToEnd(
      this.#spawn,
      "ip",
      ["netns", "exec", this.#names[host], ...argv],
      stdin === undefined ? {} : { stdin },
    );
  }

  /** Runs a program in a namespace; throws with its last stderr line when it fails. */
  async run(
    host: Host,
    argv: readonly string[],
    options: { readonly stdin?: string } = {},
  ): Promise<string> {
    const out = await this.exec(host, argv, options.stdin);
    if (out.code !== 0) {
      const last = out.stderr.trim().split("\n").pop() ?? "";
      throw new Error(
        `Cannot run ${argv.join(" ")} in ${this.#names[host]}: exit ${out.code}: ${last}`,
      );
    }
    return out.stdout;
  }

  /** Kills anything left in the namespaces and deletes them. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const name of Object.values(this.#names)) await killNamespace(this.#spawn, name);
  }
}
