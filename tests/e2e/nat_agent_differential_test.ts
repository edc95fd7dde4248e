/**
 * The agent's own verdicts against the kernel, on kube-proxy rulesets of both modes: the rules
 * are loaded into a node namespace, one real SYN per (client address, destination) crosses it,
 * and the node's conntrack entry says whether it was translated. The agent reads the node's rules
 * as it does in production (`createNatReader()` running `iptables-save` / `nft -j list table`
 * inside the node, with the node's addresses) and its tracker judges, for each pair:
 *
 * - an un-NATed `SYN_SENT [UNREPLIED]` entry of the same flow (the stuck client): the `nat` rule
 *   must delete it (reason `no-dnat`) exactly when the kernel translated the SYN, except where the
 *   view cannot tell (`unknown` keeps the entry, and must stay rare);
 * - for each SYN the kernel translated, the entry as the kernel made it, translated to the
 *   kernel's endpoint: the `nat` rule must keep it (that endpoint is current).
 *
 * The evaluators' own differential tests compare their verdicts; this compares what the agent
 * would do to the entries.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Flow } from "../../lib/core/flow.ts";
import { flowKey } from "../../lib/core/flow.ts";
import { Tracker } from "../../lib/core/tracker.ts";
import { createNatReader } from "../../lib/nat/nat_reader.ts";
import type { NatView } from "../../lib/nat/nat_view.ts";
import type { NatSource } from "../../lib/nat/nat_source.ts";
import { silentLogger } from "../../lib/seams/logger.ts";
import type { CommandOutput, SpawnCommand } from "../../lib/seams/spawn.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { e2eTest, ROOT } from "./harness.ts";
import {
  CLIENTS as IPTABLES_CLIENTS,
  destinationsOf,
  DifferentialBed,
  type Probe,
  readFixturePair,
} from "./nat_differential.ts";
import { CLIENTS as NFT_CLIENTS, NftablesBed, tableDestinations } from "./nftables_bed.ts";

/** One SYN and what the kernel did with it. */
interface Pair extends Probe {
  /** The endpoint the kernel translated it to, or undefined when it did not. */
  readonly endpoint?: { readonly address: string; readonly port: number };
}

/** A SpawnCommand that runs programs in the node namespace through `exec`. */
function nodeSpawn(exec: (argv: readonly string[]) => Promise<CommandOutput>): SpawnCommand {
  return (program, args) => {
    const out = exec([program, ...args]);
    return {
      stdout: ReadableStream.from(
        (async function* () {
          yield new TextEncoder().encode((await out).stdout);
        })(),
      ),
      status: out.then(({ code, stderr }) => ({ code, stderr })),
    };
  };
}

async function agentView(
  source: NatSource,
  spawn: SpawnCommand,
  local: ReadonlySet<string>,
): Promise<NatView> {
  const reader = createNatReader({
    source,
    spawn,
    logger: silentLogger,
    nodeAddresses: () => local,
  });
  const view = await reader.read();
  assert.ok(view, `the agent could not read the node's ${source} rules`);
  return view;
}

function unNATed(p: Pair): Flow {
  return {
    family: p.family,
    original: { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport },
    reply: { src: p.dst, dst: p.src, sport: p.dport, dport: p.sport },
    zone: 0,
  };
}

function asTranslated(p: Pair, endpoint: NonNullable<Pair["endpoint"]>): Flow {
  return {
    ...unNATed(p),
    reply: { src: endpoint.address, dst: p.src, sport: endpoint.port, dport: p.sport },
  };
}

/** Disagreements and unknowns of the agent's verdicts with the kernel, over `pairs`. */
function compare(label: string, view: NatView, pairs: readonly Pair[]) {
  const tracker = new Tracker({ renewalThreshold: 1000, unrepliedMaxAgeMs: 0 });
  const rules = { answer: (f: Flow) => view.answer(f), readStartedAt: 0 };
  const candidate = (flow: Flow) => ({ flow, key: flowKey(flow), timeout: 119 });
  const disagreements: string[] = [];
  const unknowns: string[] = [];
  const stuck = tracker.assess(
    pairs.map((p) => candidate(unNATed(p))),
    { start: 0, end: 0 },
    rules,
  );
  pairs.forEach((p, i) => {
    const verdict = stuck[i]?.verdict;
    const deleted = verdict?.kind === "delete" && verdict.rule === "nat";
    const what = `${label} ${p.src} -> ${p.dst}:${p.dport}: kernel ${
      p.endpoint ? `dnat to ${p.endpoint.address}:${p.endpoint.port}` : "none"
    }, agent ${verdict?.kind} (${verdict?.why})`;
    if (deleted && (!p.endpoint || (verdict.kind === "delete" && verdict.reason !== "no-dnat"))) {
      disagreements.push(`false deletion: ${what}`);
    } else if (!deleted && p.endpoint) {
      if (view.answer(unNATed(p)).kind === "unknown") unknowns.push(what);
      else disagreements.push(`miss: ${what}`);
    }
  });
  // Entries as the kernel translated them: seen once, then judged by rules read after that.
  const translated = pairs.flatMap((p) =>
    p.endpoint ? [candidate(asTranslated(p, p.endpoint))] : []
  );
  const pinned = new Tracker({ renewalThreshold: 1000, unrepliedMaxAgeMs: 0 });
  pinned.assess(translated, { start: 0, end: 0 });
  const later = pinned.assess(translated, { start: 1000, end: 1000 }, {
    ...rules,
    readStartedAt: 500,
  });
  for (const a of later) {
    if (a.verdict.kind === "delete") {
      disagreements.push(`false endpoint-gone: ${label} ${a.candidate.key}: ${a.verdict.why}`);
    }
  }
  return { disagreements, unknowns, translated: translated.length };
}

function report(results: readonly ReturnType<typeof compare>[], pairs: number) {
  const disagreements = results.flatMap((r) => r.disagreements);
  const unknowns = results.flatMap((r) => r.unknowns);
  const translated = results.reduce((n, r) => n + r.translated, 0);
  console.log(
    `agent vs kernel: ${pairs} SYNs, ${translated} translated, ${disagreements.length} ` +
      `disagreements, ${unknowns.length} kept as unknown`,
  );
  assert.deepEqual(disagreements, [], disagreements.join("\n"));
  assert.ok(unknowns.length * 10 <= pairs, `too many unknown:\n${unknowns.join("\n")}`);
  assert.ok(translated > 0 && translated < pairs, "the corpus must hold both outcomes");
}

const IPTABLES_FIXTURES = [
  "v1.3x-overall-iptables-rules",
  "v1.2x-external-traffic-policy-local",
  "v1.12-aks-node-without-local-endpoints",
  "v1.12-aks-node-with-local-endpoints",
];

e2eTest(
  "the agent's nat verdicts agree with the kernel on kube-proxy's iptables rules",
  async () => {
    await using bed = await DifferentialBed.create(denoSpawn);
    const spawn = nodeSpawn((argv) => bed.exec("node", argv));
    const results = [];
    let total = 0;
    let sport = 20000;
    for (const base of IPTABLES_FIXTURES) {
      const fixtures = await readFixturePair(base);
      await bed.load(fixtures);
      const probes = fixtures.flatMap((f) =>
        destinationsOf(f).flatMap(([dst, dport]) =>
          IPTABLES_CLIENTS[f.family].map((src) => ({
            family: f.family,
            src,
            sport: sport++,
            dst,
            dport,
          }))
        )
      );
      const truths = await bed.judge(probes);
      const pairs: Pair[] = probes.map((p, i) => {
        const t = truths[i];
        return t?.kind === "dnat" ? { ...p, endpoint: { address: t.address, port: t.port } } : p;
      });
      const view = await agentView("iptables", spawn, bed.localAddresses());
      results.push(compare(base, view, pairs));
      total += pairs.length;
    }
    report(results, total);
  },
);

const NFT_FIXTURES = ["overall-v1.29", "overall-v1.31", "overall-v1.36", "local-endpoints-v1.31"];

e2eTest(
  "the agent's nat verdicts agree with the kernel on kube-proxy's nftables rules",
  async () => {
    await using bed = await NftablesBed.create(denoSpawn);
    const spawn = nodeSpawn(async (argv) => {
      try {
        return { code: 0, stderr: "", stdout: await bed.run("node", argv) };
      } catch (error) {
        // nft's "no such table" is what the reader reads as an absent source.
        return {
          code: 1,
          stderr: error instanceof Error ? error.message : String(error),
          stdout: "",
        };
      }
    });
    const dir = `${ROOT}/tests/fixtures/kube-proxy/nftables`;
    const results = [];
    let total = 0;
    for (const label of NFT_FIXTURES) {
      await bed.load([`${dir}/${label}-ip.nft`, `${dir}/${label}-ip6.nft`]);
      const pairs: Pair[] = [];
      for (const family of ["ipv4", "ipv6"] as const) {
        const json = await bed.listTable(family);
        for (const [dst, dport] of tableDestinations(json, family)) {
          for (const src of Object.values(NFT_CLIENTS[family])) {
            pairs.push({ family, src, sport: 20000 + pairs.length, dst, dport });
          }
        }
      }
      await bed.sendSyns(
        pairs.map((p) => `${p.src} ${p.sport} ${p.dst} ${p.dport}`),
        `${ROOT}/tests/e2e/syn_batch.ts`,
      );
      const entries = await bed.entries();
      const judged = pairs.map((p): Pair => {
        const e = entries.find((x) => x.src === p.src && x.sport === p.sport);
        const translated = e && (e.replySrc !== p.dst || e.replySport !== p.dport);
        return translated ? { ...p, endpoint: { address: e.replySrc, port: e.replySport } } : p;
      });
      const view = await agentView("nftables", spawn, await bed.localAddresses());
      results.push(compare(label, view, judged));
      total += judged.length;
    }
    report(results, total);
  },
);
