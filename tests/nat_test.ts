import assert from "node:assert/strict";
import { SpawnError } from "../lib/seams/spawn.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import type { NatSource } from "../lib/nat/nat_source.ts";
import type { Family } from "../lib/core/flow.ts";
import type { Logger, LogProperties } from "../lib/seams/logger.ts";
import { createNatReader } from "../lib/nat/nat_reader.ts";
import { createNatView } from "../lib/nat/nat_view.ts";
import type { NatPathVerdict, NatRuleset } from "../lib/nat/nat_path.ts";
import { hangingSpawn } from "./fakes.ts";

const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`./fixtures/${name}`, import.meta.url));
const IPT_V4 = fixture("nat-iptables-save-v4.txt");
const IPT_V6 = fixture("nat-iptables-save-v6.txt");
const NFT_IP = fixture("nat-nft-kube-proxy-ip.json");
const NFT_IP6 = fixture("nat-nft-kube-proxy-ip6.json");
const NFT_MISSING = fixture("nat-nft-missing-table-stderr.txt");

function flow(family: Family, dst: string, dport: number) {
  const src = family === "ipv4" ? "198.51.100.2" : "2001:db8::2";
  return {
    family,
    original: { src, dst, sport: 40000, dport },
    reply: { src: dst, dst: src, sport: dport, dport: 40000 },
    zone: 0,
  };
}

// Destinations that only one source knows, so a test can tell which sources were read.
const ONLY_IPTABLES_V4 = flow("ipv4", "198.51.100.20", 8080);
const ONLY_IPTABLES_V6 = flow("ipv6", "2001:db8:51::20", 8080);
const ONLY_NFT_V4 = flow("ipv4", "192.0.2.12", 9443);
const ONLY_NFT_V6 = flow("ipv6", "2001:db8:100::12", 9443);

/** What a fake program does when started. */
type Behaviour =
  | { readonly stdout: string; readonly code?: number; readonly stderr?: string }
  | { readonly missing: true };

/** A fake SpawnCommand whose programs can be changed between cycles; records every command. */
function fakeSpawn(programs: Record<string, Behaviour>) {
  const calls: string[] = [];
  const spawn: SpawnCommand = (program, args) => {
    const line = [program, ...args].join(" ");
    calls.push(line);
    const behaviour = programs[line] ?? { missing: true };
    if ("missing" in behaviour) throw new SpawnError(program, "not-found", "not found");
    // Split the output across chunks, as a pipe would.
    const bytes = new TextEncoder().encode(behaviour.stdout);
    const half = Math.floor(bytes.length / 2);
    return {
      stdout: ReadableStream.from([bytes.slice(0, half), bytes.slice(half)]),
      status: Promise.resolve({ code: behaviour.code ?? 0, stderr: behaviour.stderr ?? "" }),
    };
  };
  return { spawn, calls, programs };
}

const IPTABLES = "iptables-save -t nat";
const IP6TABLES = "ip6tables-save -t nat";
const NFT = "nft -j list table ip kube-proxy";
const NFT6 = "nft -j list table ip6 kube-proxy";

const everything = (): Record<string, Behaviour> => ({
  [IPTABLES]: { stdout: IPT_V4 },
  [IP6TABLES]: { stdout: IPT_V6 },
  [NFT]: { stdout: NFT_IP },
  [NFT6]: { stdout: NFT_IP6 },
});

interface Record_ {
  readonly level: "debug" | "info" | "warn" | "error";
  readonly message: string;
  readonly properties: LogProperties | undefined;
}

function recordingLogger() {
  const records: Record_[] = [];
  const at = (level: Record_["level"]) => (message: string, properties?: LogProperties) => {
    records.push({ level, message, properties });
  };
  const logger: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  };
  const count = (level: Record_["level"]) => records.filter((r) => r.level === level).length;
  return { logger, records, count };
}

function reader(
  source: NatSource,
  programs: Record<string, Behaviour>,
  nodeAddresses: () => ReadonlySet<string> = () => new Set(),
) {
  const fake = fakeSpawn(programs);
  const log = recordingLogger();
  const nat = createNatReader({ source, spawn: fake.spawn, logger: log.logger, nodeAddresses });
  return { nat, fake, log };
}

/** Whether a view (or no view) translates the flow's first packet. */
function translates(
  view: { answer: (f: ReturnType<typeof flow>) => NatPathVerdict } | undefined,
  f: ReturnType<typeof flow>,
): boolean {
  return view?.answer(f).kind === "dnat";
}

/** A ruleset that gives one answer to every packet, and counts the questions. */
function fixed(verdict: NatPathVerdict): NatRuleset & { asked: number } {
  const ruleset = {
    asked: 0,
    evaluate: () => {
      ruleset.asked++;
      return verdict;
    },
  };
  return ruleset;
}

const DNAT_A: NatPathVerdict = { kind: "dnat", endpoints: [{ address: "203.0.113.5", port: 80 }] };
const DNAT_B: NatPathVerdict = { kind: "dnat", endpoints: [{ address: "203.0.113.6", port: 80 }] };
const NODE = { localAddresses: new Set<string>() };

Deno.test("createNatView() asks only the rulesets of the flow's family", () => {
  const v4 = fixed(DNAT_A);
  const v6 = fixed({ kind: "none" });
  const view = createNatView([
    { name: "a", family: "ipv4", ruleset: v4 },
    { name: "b", family: "ipv6", ruleset: v6 },
  ], NODE);
  assert.deepEqual(view.answer(flow("ipv4", "192.0.2.10", 80)), DNAT_A);
  assert.deepEqual(view.answer(flow("ipv6", "2001:db8::a", 80)), { kind: "none" });
  assert.equal(v4.asked, 1);
  assert.equal(v6.asked, 1);
});

Deno.test("createNatView() unites the endpoints of every source that translates", () => {
  const view = createNatView([
    { name: "iptables-save", family: "ipv4", ruleset: fixed(DNAT_A) },
    { name: "nft", family: "ipv4", ruleset: fixed({ kind: "none" }) },
    { name: "iptables-legacy-save", family: "ipv4", ruleset: fixed(DNAT_B) },
  ], NODE);
  const answer = view.answer(flow("ipv4", "192.0.2.10", 80));
  assert.equal(answer.kind, "dnat");
  assert.deepEqual(
    answer.kind === "dnat" ? answer.endpoints.map((e) => e.address) : [],
    ["203.0.113.5", "203.0.113.6"],
  );
});

Deno.test("createNatView() answers unknown when any source cannot tell, and says which", () => {
  const told: string[] = [];
  const view = createNatView(
    [
      { name: "iptables-save", family: "ipv4", ruleset: fixed(DNAT_A) },
      {
        name: "nft",
        family: "ipv4",
        ruleset: fixed({ kind: "unknown", rule: "-A X -i eth0 -j Y" }),
      },
    ],
    NODE,
    (rule, source) => told.push(`${source}: ${rule}`),
  );
  assert.deepEqual(view.answer(flow("ipv4", "192.0.2.10", 80)), {
    kind: "unknown",
    rule: "-A X -i eth0 -j Y",
  });
  assert.deepEqual(told, ["nft: -A X -i eth0 -j Y"]);
});

Deno.test("createNatView() evaluates each flow once per view, however often it is asked", () => {
  const ruleset = fixed(DNAT_A);
  const view = createNatView([{ name: "a", family: "ipv4", ruleset }], NODE);
  for (let i = 0; i < 3; i++) view.answer(flow("ipv4", "192.0.2.10", 80));
  view.answer(flow("ipv4", "192.0.2.10", 81));
  assert.equal(ruleset.asked, 2);
});

Deno.test("createNatView() answers none for a family without rules", () => {
  const view = createNatView([{ name: "a", family: "ipv4", ruleset: fixed(DNAT_A) }], NODE);
  assert.deepEqual(view.answer(flow("ipv6", "2001:db8::a", 80)), { kind: "none" });
});

Deno.test("createNatReader() with source off reads nothing and gives no view", async () => {
  const { nat, fake, log } = reader("off", everything());
  assert.equal(await nat.read(), undefined);
  assert.deepEqual(fake.calls, []);
  assert.equal(log.count("warn"), 0);
});

Deno.test("createNatReader() with source iptables runs iptables-save and ip6tables-save", async () => {
  const { nat, fake } = reader("iptables", everything());
  const view = await nat.read();
  assert.deepEqual(fake.calls.toSorted(), [IP6TABLES, IPTABLES]);
  assert.equal(translates(view, ONLY_IPTABLES_V4), true);
  assert.equal(translates(view, ONLY_IPTABLES_V6), true);
  assert.equal(translates(view, ONLY_NFT_V4), false);
});

Deno.test("createNatReader() with source nftables reads both kube-proxy tables whole", async () => {
  const { nat, fake } = reader("nftables", everything());
  const view = await nat.read();
  assert.deepEqual(fake.calls.toSorted(), [NFT, NFT6]);
  assert.equal(translates(view, ONLY_NFT_V4), true);
  assert.equal(translates(view, ONLY_NFT_V6), true);
  assert.equal(translates(view, ONLY_IPTABLES_V4), false);
});

Deno.test("createNatReader() with source auto unites every source the node has", async () => {
  const { nat, log } = reader("auto", everything());
  const view = await nat.read();
  for (const f of [ONLY_IPTABLES_V4, ONLY_IPTABLES_V6, ONLY_NFT_V4, ONLY_NFT_V6]) {
    assert.equal(translates(view, f), true, f.original.dst);
  }
  assert.equal(log.count("warn"), 0);
});

Deno.test("createNatReader() in auto quietly skips tools the node lacks", async () => {
  const programs = everything();
  delete programs[IPTABLES];
  delete programs[IP6TABLES];
  const { nat, log } = reader("auto", programs);
  const view = await nat.read();
  assert.equal(translates(view, ONLY_NFT_V4), true);
  assert.equal(log.count("warn"), 0);
});

Deno.test("createNatReader() takes a missing ip6 kube-proxy table as no rules, not a failure", async () => {
  const programs = everything();
  programs[NFT6] = { stdout: "", code: 1, stderr: NFT_MISSING };
  const { nat, log } = reader("nftables", programs);
  const view = await nat.read();
  assert.equal(translates(view, ONLY_NFT_V4), true);
  assert.equal(log.count("warn"), 0);
});

Deno.test("createNatReader() gives no view when no kube-proxy table exists, warning once", async () => {
  const programs = everything();
  programs[NFT] = { stdout: "", code: 1, stderr: NFT_MISSING.replace("ip6", "ip") };
  programs[NFT6] = { stdout: "", code: 1, stderr: NFT_MISSING };
  const { nat, log } = reader("nftables", programs);
  assert.equal(await nat.read(), undefined);
  assert.equal(await nat.read(), undefined);
  assert.equal(log.count("warn"), 1);
});

Deno.test("createNatReader() logs a failing tool once, retries it, and logs its recovery", async () => {
  const programs = everything();
  programs[IPTABLES] = { stdout: "", code: 1, stderr: "iptables-save: Permission denied\n" };
  programs[IP6TABLES] = { missing: true };
  const { nat, fake, log } = reader("iptables", programs);

  assert.equal(await nat.read(), undefined);
  const warnings = log.records.filter((r) => r.level === "warn");
  assert.ok(warnings.length > 0);
  assert.ok(
    warnings.some((w) => JSON.stringify(w.properties).includes("Permission denied")),
    "the warning says why",
  );
  assert.equal(await nat.read(), undefined);
  assert.equal(await nat.read(), undefined);
  assert.equal(log.count("warn"), warnings.length, "no new warning while it keeps failing");
  assert.equal(fake.calls.filter((c) => c === IPTABLES).length, 3, "retried every cycle");

  programs[IPTABLES] = { stdout: IPT_V4 };
  programs[IP6TABLES] = { stdout: IPT_V6 };
  const view = await nat.read();
  assert.equal(translates(view, ONLY_IPTABLES_V4), true);
  assert.equal(translates(view, ONLY_IPTABLES_V6), true);
  const infos = log.count("info");
  assert.ok(infos > 0, "recovery is logged");
  await nat.read();
  assert.equal(log.count("info"), infos, "recovery is logged once");
  assert.equal(log.count("warn"), warnings.length);
});

Deno.test("createNatReader() keeps the sources that work when one fails", async () => {
  const programs = everything();
  programs[IP6TABLES] = { stdout: "", code: 1, stderr: "can't initialize ip6tables table `nat'\n" };
  const { nat, log } = reader("iptables", programs);
  const view = await nat.read();
  assert.equal(translates(view, ONLY_IPTABLES_V4), true);
  assert.equal(translates(view, ONLY_IPTABLES_V6), false);
  assert.equal(log.count("warn"), 1);
  await nat.read();
  assert.equal(log.count("warn"), 1);
});

Deno.test("createNatReader() in nftables mode fails on a missing nft and on garbled JSON", async () => {
  for (const broken of [{ missing: true } as const, { stdout: "not json" }]) {
    const programs = everything();
    programs[NFT] = broken;
    programs[NFT6] = broken;
    const { nat, log } = reader("nftables", programs);
    assert.equal(await nat.read(), undefined);
    assert.ok(log.count("warn") > 0);
  }
});

Deno.test("createNatReader() in auto gives no view, with one warning, when the node has nothing", async () => {
  const { nat, log } = reader("auto", {});
  assert.equal(await nat.read(), undefined);
  assert.equal(await nat.read(), undefined);
  assert.equal(log.count("warn"), 1);
});

Deno.test("createNatReader() gives no view and logs nothing once aborted", async () => {
  const programs = everything();
  programs[IPTABLES] = { stdout: "", code: 143 };
  const { nat, log } = reader("iptables", programs);
  const controller = new AbortController();
  controller.abort();
  assert.equal(await nat.read(controller.signal), undefined);
  assert.equal(log.count("warn"), 0);
});

const LEGACY_WARNING =
  "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n";
const IPTABLES_LEGACY = "iptables-legacy-save -t nat";
const IP6TABLES_LEGACY = "ip6tables-legacy-save -t nat";
/** The nf_tables flavour's own table when kube-proxy writes legacy rules: empty. */
const EMPTY_NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

Deno.test("createNatReader() also reads legacy iptables rules when iptables-nft reports them (1.8.9: on stderr)", async () => {
  const { nat, fake, log } = reader("auto", {
    [IPTABLES]: { stdout: EMPTY_NAT, stderr: LEGACY_WARNING },
    [IPTABLES_LEGACY]: { stdout: IPT_V4 },
    [IP6TABLES]: { stdout: IPT_V6 },
  });
  const first = await nat.read();
  await nat.read();
  assert.equal(translates(first, ONLY_IPTABLES_V4), true);
  assert.equal(translates(first, ONLY_IPTABLES_V6), true);
  // Only the family that reported legacy tables: reading another would make the kernel load
  // legacy iptables for it.
  assert.equal(fake.calls.filter((c) => c === IPTABLES_LEGACY).length, 2);
  assert.ok(!fake.calls.includes(IP6TABLES_LEGACY));
  assert.equal(log.count("warn"), 0);
  const notes = log.records.filter((r) => r.level === "info");
  assert.equal(notes.length, 1);
  assert.match(notes[0]!.message, /legacy iptables rules; reading them with iptables-legacy-save/);
});

Deno.test("createNatReader() reads legacy ip6tables rules on ip6tables-nft's own wording", async () => {
  const { nat, fake } = reader("iptables", {
    [IPTABLES]: { stdout: IPT_V4 },
    [IP6TABLES]: {
      stdout: EMPTY_NAT,
      stderr: "# Warning: ip6tables-legacy tables present, use ip6tables-legacy-save to see them\n",
    },
    [IP6TABLES_LEGACY]: { stdout: IPT_V6 },
  });
  const view = await nat.read();
  assert.equal(translates(view, ONLY_IPTABLES_V6), true);
  assert.ok(!fake.calls.includes(IPTABLES_LEGACY));
});

Deno.test("createNatReader() never runs the legacy programs on a node without legacy tables", async () => {
  const { nat, fake } = reader("iptables", everything());
  await nat.read();
  assert.deepEqual(fake.calls.filter((c) => c.includes("legacy")), []);
});

Deno.test("createNatReader() warns once when legacy rules exist but cannot be read (warning on stdout, as before 1.8.9)", async () => {
  const { nat, log } = reader("iptables", {
    [IPTABLES]: { stdout: LEGACY_WARNING + IPT_V4 },
    [IP6TABLES]: { stdout: IPT_V6 },
  });
  const first = await nat.read();
  await nat.read();
  // The rules iptables-nft did print still count.
  assert.equal(translates(first, ONLY_IPTABLES_V4), true);
  const warnings = log.records.filter((r) => r.level === "warn");
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0]!.message,
    /legacy iptables rules, which the nat rule cannot read; .* \(iptables-legacy-save: .*not found/,
  );
  assert.equal(warnings[0]!.properties?.command, IPTABLES);
});

Deno.test("createNatReader() kills a source that hangs and counts it as failed", async () => {
  const log = recordingLogger();
  const nat = createNatReader({
    source: "iptables",
    spawn: hangingSpawn,
    logger: log.logger,
    timeoutMs: 50,
  });
  assert.equal(await nat.read(), undefined);
  const failure = log.records.find((r) => r.message.startsWith("Cannot read NAT rules"));
  assert.match(String(failure?.properties?.reason), /did not finish within 0.05 s; killed/);
});

/** A dump whose one DNAT is for the node's own addresses (a NodePort). */
const NODEPORT_ONLY = [
  "*nat",
  ":PREROUTING ACCEPT [0:0]",
  "-A PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DNAT --to-destination 203.0.113.5:8080",
  "COMMIT",
  "",
].join("\n");

Deno.test("createNatReader() reads the node's addresses on every read, as what LOCAL means", async () => {
  let addresses = new Set<string>();
  let reads = 0;
  const { nat } = reader("iptables", { [IPTABLES]: { stdout: NODEPORT_ONLY } }, () => {
    reads++;
    return addresses;
  });
  const toNode = flow("ipv4", "192.0.2.1", 30080);
  assert.equal(translates(await nat.read(), toNode), false);
  addresses = new Set(["192.0.2.1", "2001:db8::1"]);
  assert.equal(translates(await nat.read(), toNode), true);
  assert.equal(reads, 2);
});

Deno.test("createNatReader() warns once when the node's addresses cannot be read, and goes on", async () => {
  let failing = true;
  const { nat, log } = reader("iptables", {
    [IPTABLES]: { stdout: IPT_V4 },
    [IP6TABLES]: { stdout: IPT_V6 },
  }, () => {
    if (failing) throw new Error('Requires sys access to "networkInterfaces"');
    return new Set();
  });
  assert.equal(translates(await nat.read(), ONLY_IPTABLES_V4), true);
  await nat.read();
  const warnings = log.records.filter((r) => r.level === "warn");
  assert.equal(warnings.length, 1);
  assert.match(String(warnings[0]?.properties?.reason), /networkInterfaces/);
  failing = false;
  await nat.read();
  assert.equal(log.records.filter((r) => r.level === "warn").length, 1);
});

Deno.test("createNatReader() logs each rule it cannot evaluate once, at debug, with its text", async () => {
  const rule = "-A PREROUTING -i eth7 -d 192.0.2.10/32 -p tcp -m tcp --dport 80 " +
    "-j DNAT --to-destination 203.0.113.5:8080";
  const { nat, log } = reader("iptables", {
    [IPTABLES]: { stdout: `*nat\n:PREROUTING ACCEPT [0:0]\n${rule}\nCOMMIT\n` },
  });
  const vip = flow("ipv4", "192.0.2.10", 80);
  for (let i = 0; i < 2; i++) {
    const view = await nat.read();
    assert.equal(view?.answer(vip).kind, "unknown");
    view?.answer({ ...vip, original: { ...vip.original, sport: 40001 } });
  }
  const logged = log.records.filter((r) => r.message.includes("cannot evaluate"));
  assert.equal(logged.length, 1);
  assert.equal(logged[0]?.level, "debug");
  assert.match(String(logged[0]?.properties?.rule), /-i eth7/);
  assert.equal(logged[0]?.properties?.command, IPTABLES);
});
