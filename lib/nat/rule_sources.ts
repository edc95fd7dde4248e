/**
 * The commands the `nat` rule reads the node's rules with, one per source and family, each
 * turning its output into rulesets (`iptables_ruleset.ts`, `nftables_ruleset.ts`):
 *
 * - `iptables-save -t nat` / `ip6tables-save -t nat` (either flavour), and the legacy flavour's
 *   `iptables-legacy-save -t nat` / `ip6tables-legacy-save -t nat` only when the nf_tables
 *   flavour says legacy tables exist beside its own;
 * - `nft -j list table ip kube-proxy` / `nft -j list table ip6 kube-proxy`: the whole table, as
 *   the nftables evaluator follows the Service's chains, firewall and no-endpoint checks.
 *
 * @module
 */
import type { Family } from "../core/flow.ts";
import { splitLines } from "../seams/output_lines.ts";
import type { SpawnCommand } from "../seams/spawn.ts";
import { runToEnd, SpawnError } from "../seams/spawn.ts";
import { parseIptablesRuleset } from "./iptables_ruleset.ts";
import type { NatSource } from "./nat_source.ts";
import type { NatMechanism } from "./nat_report.ts";
import type { SourcedRuleset } from "./nat_view.ts";
import { parseNftablesRuleset } from "./nftables_ruleset.ts";

/** What reading one source gave this time. */
export type PartOutcome =
  | {
    /** Read and parsed. */
    readonly kind: "ok";
    /** One ruleset, or two when legacy tables were read too. */
    readonly rulesets: readonly SourcedRuleset[];
    /**
     * Whether these rules live in nftables (kube-proxy's nftables table, or iptables-nft's
     * tables with no legacy tables read beside them): then they change only with the nftables
     * generation id, and need not be read again while it stays the same.
     */
    readonly followsGeneration: boolean;
    /**
     * Something to tell the operator once about this source: at `warn`, what it could not see;
     * at `info`, what else it read.
     */
    readonly remark?: { readonly level: "warn" | "info"; readonly text: string };
  }
  | {
    /** Not on this node (program not installed in `auto`, or no kube-proxy table): no rules. */
    readonly kind: "absent";
    readonly reason: string;
    /** Whether it can only appear with an nftables commit (a missing nftables table). */
    readonly followsGeneration: boolean;
  }
  | {
    /** There, but reading it failed. */
    readonly kind: "failed";
    readonly reason: string;
  };

/** One command whose output gives one family's rules from one source. */
export interface Part {
  /** The command line, for logs. */
  readonly name: string;
  /** What it reads, for metrics. */
  readonly source: NatMechanism;
  /** The family it reads. */
  readonly family: Family;
  /** Runs the command (killed when `signal` aborts) and parses its output. Never throws. */
  readonly read: (signal: AbortSignal | undefined) => Promise<PartOutcome>;
}

/** Program names, for nodes where they live elsewhere (see `NatReaderOptions.programs`). */
export interface NatPrograms {
  readonly iptablesSave?: string;
  readonly ip6tablesSave?: string;
  readonly iptablesLegacySave?: string;
  readonly ip6tablesLegacySave?: string;
  readonly nft?: string;
}

/**
 * The commands a `--nat-source` reads: none for `off`, the two `iptables-save` families, the two
 * nft families, or all four for `auto` (where a missing program only means the node does not use
 * that mechanism).
 *
 * @example
 * ```ts
 * import { partsFor } from "./rule_sources.ts";
 * import { denoSpawn } from "../seams/spawn_deno.ts";
 * partsFor("nftables", denoSpawn, {}).map((p) => p.name);
 * // ["nft -j list table ip kube-proxy", "nft -j list table ip6 kube-proxy"]
 * ```
 */
export function partsFor(
  source: NatSource,
  spawn: SpawnCommand,
  programs: NatPrograms,
): readonly Part[] {
  const optional = source === "auto";
  const iptables = [
    iptablesPart(spawn, {
      program: programs.iptablesSave ?? "iptables-save",
      legacyProgram: programs.iptablesLegacySave ?? "iptables-legacy-save",
      family: "ipv4",
      optional,
    }),
    iptablesPart(spawn, {
      program: programs.ip6tablesSave ?? "ip6tables-save",
      legacyProgram: programs.ip6tablesLegacySave ?? "ip6tables-legacy-save",
      family: "ipv6",
      optional,
    }),
  ];
  const nft = [
    nftPart(spawn, programs.nft ?? "nft", "ipv4", optional),
    nftPart(spawn, programs.nft ?? "nft", "ipv6", optional),
  ];
  switch (source) {
    case "off":
      return [];
    case "iptables":
      return iptables;
    case "nftables":
      return nft;
    case "auto":
      return [...iptables, ...nft];
  }
}

/** What {@link iptablesPart} runs for one family. */
interface IptablesPrograms {
  /** The node's `iptables-save` (either flavour). */
  readonly program: string;
  /** The legacy flavour, run when the nf_tables flavour reports legacy tables beside its own. */
  readonly legacyProgram: string;
  readonly family: Family;
  /** Whether a missing `program` means the node simply does not use it (`auto`). */
  readonly optional: boolean;
}

function iptablesPart(spawn: SpawnCommand, programs: IptablesPrograms): Part {
  const { program, legacyProgram, family, optional } = programs;
  const name = `${program} ${SAVE_ARGS.join(" ")}`;
  return {
    name,
    source: "iptables",
    family,
    read: async (signal) => {
      let own: IptablesRead;
      try {
        own = await readIptablesSave(spawn, program, family, signal);
      } catch (error) {
        return spawnFailure(error, optional);
      }
      if (own.kind === "failed") return own;
      const ownRuleset: SourcedRuleset = { name, family, ruleset: own.ruleset };
      if (!own.legacyTablesBeside) {
        return { kind: "ok", rulesets: [ownRuleset], followsGeneration: own.nfTables };
      }
      // kube-proxy in legacy mode on a node whose iptables is the nf_tables flavour. Only now is
      // the legacy program run: on a node without legacy tables, reading one would make the
      // kernel load legacy iptables and create them.
      let legacy: IptablesRead;
      try {
        legacy = await readIptablesSave(spawn, legacyProgram, family, signal);
      } catch (error) {
        legacy = { kind: "failed", reason: messageOf(error) };
      }
      if (legacy.kind === "failed") {
        return {
          kind: "ok",
          rulesets: [ownRuleset],
          // Legacy tables are there, unread: polling at least finds them readable again.
          followsGeneration: false,
          remark: { level: "warn", text: `${LEGACY_CAVEAT} (${legacyProgram}: ${legacy.reason})` },
        };
      }
      const legacyName = `${legacyProgram} ${SAVE_ARGS.join(" ")}`;
      return {
        kind: "ok",
        rulesets: [ownRuleset, { name: legacyName, family, ruleset: legacy.ruleset }],
        // Legacy tables keep no generation: this family is polled.
        followsGeneration: false,
        remark: {
          level: "info",
          text: `The node also has legacy iptables rules; reading them with ${legacyProgram} too`,
        },
      };
    },
  };
}

/** What one run of an `iptables-save` gave. */
type IptablesRead =
  | {
    readonly kind: "ok";
    readonly ruleset: SourcedRuleset["ruleset"];
    /** The nf_tables flavour said that legacy tables exist beside its own. */
    readonly legacyTablesBeside: boolean;
    /** The output came from the nf_tables flavour (its header says so). */
    readonly nfTables: boolean;
  }
  | { readonly kind: "failed"; readonly reason: string };

/** What every `iptables-save` is run with: the nat table only. */
const SAVE_ARGS: readonly string[] = ["-t", "nat"];

/** Runs `program -t nat` and parses it; throws a {@link SpawnError} when it cannot start. */
async function readIptablesSave(
  spawn: SpawnCommand,
  program: string,
  family: Family,
  signal: AbortSignal | undefined,
): Promise<IptablesRead> {
  const child = spawn(program, SAVE_ARGS, signal ? { signal } : {});
  let legacyWarned = false;
  let nfTables = false;
  const lines: string[] = [];
  const read = await (async () => {
    for await (const line of splitLines(child.stdout)) {
      if (line.startsWith("# Warning:") && LEGACY_WARNING.test(line)) legacyWarned = true;
      if (line.startsWith("# Generated by") && NF_TABLES_HEADER.test(line)) nfTables = true;
      lines.push(line);
    }
  })().then(() => undefined, (error: unknown) => error);
  const status = await child.status;
  if (status.code !== 0) return { kind: "failed", reason: exitReason(status) };
  if (read !== undefined) return { kind: "failed", reason: messageOf(read) };
  return {
    kind: "ok",
    ruleset: parseIptablesRuleset(lines, family),
    legacyTablesBeside: legacyWarned || LEGACY_WARNING.test(status.stderr),
    nfTables,
  };
}

/**
 * What iptables-nft says when legacy tables exist, `iptables-legacy` or `ip6tables-legacy` by
 * family: on stderr (1.8.9), on stdout (earlier releases).
 */
const LEGACY_WARNING = /ip6?tables-legacy tables present/;

/**
 * The nf_tables flavour's header: `# Generated by iptables-save v1.8.9 (nf_tables) on …` from
 * 1.8.8 on, `# Generated by iptables-nft-save v1.8.7 on …` before. The legacy flavour's names
 * neither; output without a header (nothing to save) counts as legacy, which is only polled.
 */
const NF_TABLES_HEADER = /\(nf_tables\)|ip6?tables-nft-save/;

const LEGACY_CAVEAT = "The node also has legacy iptables rules, which the nat rule cannot read; " +
  "Services whose DNAT lives there are left to the renewal and age rules";

function nftPart(spawn: SpawnCommand, program: string, family: Family, optional: boolean): Part {
  const table = family === "ipv4" ? "ip" : "ip6";
  // The whole table: the evaluator follows each Service's chains and the firewall and
  // no-endpoint checks, which the service-ips map alone does not show (bench/RESULTS.md has
  // the cost at 5,000 Services).
  const args = ["-j", "list", "table", table, "kube-proxy"];
  const name = `${program} ${args.join(" ")}`;
  return {
    name,
    source: "nftables",
    family,
    read: async (signal) => {
      try {
        const out = await runToEnd(spawn, program, args, signal ? { signal } : {});
        // nft's only way of saying "no such table" is ENOENT's text on stderr.
        if (out.code !== 0 && /No such file or directory/.test(out.stderr)) {
          // Creating it is an nftables commit: the generation says when to look again.
          return {
            kind: "absent",
            reason: `no table ${table} kube-proxy`,
            followsGeneration: true,
          };
        }
        if (out.code !== 0) return { kind: "failed", reason: exitReason(out) };
        return {
          kind: "ok",
          rulesets: [{ name, family, ruleset: parseNftablesRuleset(out.stdout) }],
          followsGeneration: true,
        };
      } catch (error) {
        return spawnFailure(error, optional);
      }
    },
  };
}

function spawnFailure(error: unknown, optional: boolean): PartOutcome {
  if (optional && error instanceof SpawnError && error.reason === "not-found") {
    // Installing a program is no nftables commit: looked for again by polling.
    return { kind: "absent", reason: error.message, followsGeneration: false };
  }
  return { kind: "failed", reason: messageOf(error) };
}

function exitReason(status: { readonly code: number; readonly stderr: string }): string {
  const line = status.stderr.split("\n").find((l) => l.trim() !== "")?.trim();
  return `exit code ${status.code}${line ? `: ${line}` : ""}`;
}

/** The first line of an error's message. */
export function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "";
}
