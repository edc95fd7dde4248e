import assert from "node:assert/strict";
import { createMetrics, DUMP_DURATION_BUCKETS } from "../lib/operator/metrics.ts";
import type { Metrics, ProcessSampler } from "../lib/operator/metrics.ts";
import type { Family } from "../lib/core/flow.ts";
import type { CycleReport, DeletionRecord } from "../lib/loop/cycle_report.ts";
import type { NatReason } from "../lib/core/nat_rule.ts";
import { RULES } from "../lib/core/verdict.ts";
import { findSample, parseExposition, sampleValue } from "./exposition.ts";
import type { MetricFamily } from "./exposition.ts";

const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];
const WALL_START = Date.UTC(2025, 0, 2, 3, 4, 5);

const fixedProcess: ProcessSampler = () => ({
  cpuSeconds: 1.5,
  residentBytes: 42_000_000,
  startTimeSeconds: 1_700_000_000,
});

function newMetrics(): Metrics {
  return createMetrics({ version: "0.1.0", denoVersion: "2.9.6" }, {
    processSampler: fixedProcess,
  });
}

function okCycle(overrides: Partial<CycleReport> = {}): CycleReport {
  return {
    wallStart: WALL_START,
    dumpMs: 20,
    dump: { kind: "ok", lines: 120, candidates: 3, unparsable: 0 },
    tracked: 3,
    deletions: [],
    dryRun: false,
    deleteFailures: 0,
    overran: false,
    pauseMs: 1000,
    ...overrides,
  };
}

function failedCycle(reason = "conntrack exited 1: Operation not permitted"): CycleReport {
  return okCycle({ dump: { kind: "failed", reason }, dumpMs: 5 });
}

async function scrape(metrics: Metrics): Promise<ReadonlyMap<string, MetricFamily>> {
  return parseExposition(await metrics.render());
}

/** Deletions by rule and family; the nat rule's carry the reason given, or `no-dnat`. */
const deletions = (
  ...pairs: readonly (readonly [DeletionRecord["rule"], Family, NatReason?])[]
): DeletionRecord[] =>
  pairs.map(([rule, family, reason]) =>
    rule === "nat" ? { rule, family, reason: reason ?? "no-dnat" } : { rule, family }
  );

Deno.test("createMetrics() exposes every rule and family at 0 before the first deletion", async () => {
  const families = await scrape(newMetrics());
  for (const rule of RULES) {
    for (const family of FAMILIES) {
      for (const name of ["deleted_total", "dry_run_would_delete_total"]) {
        const labels = { rule, family };
        assert.equal(sampleValue(families, `conntrack_cleaner_${name}`, labels), 0, name);
      }
    }
  }
});

Deno.test("createMetrics() shows no successful dump and no overrun before the first cycle", async () => {
  const families = await scrape(newMetrics());
  assert.equal(
    sampleValue(families, "conntrack_cleaner_last_successful_dump_timestamp_seconds"),
    0,
  );
  assert.equal(sampleValue(families, "conntrack_cleaner_dumps_total"), 0);
  assert.equal(sampleValue(families, "conntrack_cleaner_cycle_overrun"), 0);
});

Deno.test("cycleCompleted() counts each deletion under its rule and family", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({
    deletions: deletions(["age", "ipv4"], ["age", "ipv4"], ["nat", "ipv6"]),
  }));
  metrics.cycleCompleted(okCycle({ deletions: deletions(["renewal", "ipv4"]) }));
  const families = await scrape(metrics);
  const deleted = (rule: string, family: string) =>
    sampleValue(families, "conntrack_cleaner_deleted_total", { rule, family });
  assert.equal(deleted("age", "ipv4"), 2);
  assert.equal(deleted("nat", "ipv6"), 1);
  assert.equal(deleted("renewal", "ipv4"), 1);
  assert.equal(deleted("age", "ipv6"), 0);
  assert.equal(deleted("nat", "ipv4"), 0);
  const wouldDelete = findSample(families, "conntrack_cleaner_dry_run_would_delete_total", {
    rule: "age",
    family: "ipv4",
  });
  assert.equal(wouldDelete?.value, 0);
});

Deno.test("cycleCompleted() counts the nat rule's deletions by which half fired", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({
    deletions: deletions(["nat", "ipv4", "endpoint-gone"], ["nat", "ipv4"], ["age", "ipv4"]),
  }));
  metrics.cycleCompleted(okCycle({
    dryRun: true,
    deletions: deletions(["nat", "ipv6", "endpoint-gone"]),
  }));
  const text = await metrics.render();
  assert.match(
    text,
    /^conntrack_cleaner_nat_deleted_total\{reason="endpoint-gone",family="ipv4"\} 1$/m,
  );
  assert.match(text, /^conntrack_cleaner_nat_deleted_total\{reason="no-dnat",family="ipv4"\} 1$/m);
  assert.match(text, /^conntrack_cleaner_deleted_total\{rule="nat",family="ipv4"\} 2$/m);
  assert.match(
    text,
    /^conntrack_cleaner_dry_run_nat_would_delete_total\{reason="endpoint-gone",family="ipv6"\} 1$/m,
  );
  assert.match(
    text,
    /^conntrack_cleaner_nat_deleted_total\{reason="endpoint-gone",family="ipv6"\} 0$/m,
  );
});

Deno.test("cycleCompleted() in dry run counts would-be deletions, not deletions", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({
    dryRun: true,
    deletions: deletions(["age", "ipv6"], ["nat", "ipv4"]),
  }));
  const families = await scrape(metrics);
  const labels = { rule: "age", family: "ipv6" };
  assert.equal(
    sampleValue(families, "conntrack_cleaner_dry_run_would_delete_total", labels),
    1,
  );
  assert.equal(sampleValue(families, "conntrack_cleaner_deleted_total", labels), 0);
  assert.equal(
    sampleValue(families, "conntrack_cleaner_dry_run_would_delete_total", {
      rule: "nat",
      family: "ipv4",
    }),
    1,
  );
});

Deno.test("cycleCompleted() counts a failed dump and keeps the last successful figures", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({
    dump: { kind: "ok", lines: 500, candidates: 7, unparsable: 2 },
    tracked: 7,
  }));
  metrics.cycleCompleted({ ...failedCycle(), wallStart: WALL_START + 60_000, tracked: 6 });
  const families = await scrape(metrics);
  assert.equal(sampleValue(families, "conntrack_cleaner_dumps_total"), 2);
  assert.equal(sampleValue(families, "conntrack_cleaner_dump_failures_total"), 1);
  assert.equal(sampleValue(families, "conntrack_cleaner_entries_last_dump"), 500);
  assert.equal(sampleValue(families, "conntrack_cleaner_candidates_last_dump"), 7);
  assert.equal(sampleValue(families, "conntrack_cleaner_unparsable_lines_total"), 2);
  assert.equal(sampleValue(families, "conntrack_cleaner_tracked_flows"), 6);
  assert.equal(
    sampleValue(families, "conntrack_cleaner_last_successful_dump_timestamp_seconds"),
    WALL_START / 1000 + 0.02,
  );
});

Deno.test("cycleCompleted() adds up unparsable lines and delete failures across cycles", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({
    dump: { kind: "ok", lines: 10, candidates: 1, unparsable: 3 },
    deleteFailures: 2,
  }));
  metrics.cycleCompleted(okCycle({
    dump: { kind: "ok", lines: 10, candidates: 1, unparsable: 4 },
    deleteFailures: 1,
  }));
  const families = await scrape(metrics);
  assert.equal(sampleValue(families, "conntrack_cleaner_unparsable_lines_total"), 7);
  assert.equal(sampleValue(families, "conntrack_cleaner_delete_failures_total"), 3);
});

Deno.test("cycleCompleted() raises cycle_overrun for an overrun and lowers it after", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({ overran: true }));
  let families = await scrape(metrics);
  assert.equal(sampleValue(families, "conntrack_cleaner_cycle_overrun"), 1);
  assert.equal(sampleValue(families, "conntrack_cleaner_cycle_overruns_total"), 1);
  metrics.cycleCompleted(okCycle());
  families = await scrape(metrics);
  assert.equal(sampleValue(families, "conntrack_cleaner_cycle_overrun"), 0);
  assert.equal(sampleValue(families, "conntrack_cleaner_cycle_overruns_total"), 1);
});

Deno.test("cycleCompleted() puts dump durations in the histogram buckets", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({ dumpMs: 20 }));
  metrics.cycleCompleted(okCycle({ dumpMs: 3000 }));
  metrics.cycleCompleted({ ...failedCycle(), dumpMs: 30_000 });
  const families = await scrape(metrics);
  const name = "conntrack_cleaner_dump_duration_seconds";
  const bucket = (le: string) => sampleValue(families, `${name}_bucket`, { le });
  assert.equal(bucket("0.01"), 0);
  assert.equal(bucket("0.025"), 1);
  assert.equal(bucket("2.5"), 1);
  assert.equal(bucket("5"), 2);
  assert.equal(bucket("10"), 2);
  assert.equal(bucket("+Inf"), 3);
  assert.equal(sampleValue(families, `${name}_count`), 3);
  assert.ok(Math.abs(sampleValue(families, `${name}_sum`) - 33.02) < 1e-9);
  const les = families.get(name)?.samples.filter((s) => s.name === `${name}_bucket`)
    .map((s) => s.labels.le);
  assert.deepEqual(les, [...DUMP_DURATION_BUCKETS.map(String), "+Inf"]);
});

Deno.test("cycleCompleted() does not throw on a report with nonsense figures", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({
    dumpMs: NaN,
    dump: { kind: "ok", lines: -1, candidates: Infinity, unparsable: -5 },
    deleteFailures: -2,
  }));
  const families = await scrape(metrics);
  assert.equal(sampleValue(families, "conntrack_cleaner_dumps_total"), 1);
  assert.equal(sampleValue(families, "conntrack_cleaner_unparsable_lines_total"), 0);
});

Deno.test("createMetrics() exposes every NAT source's failure counter at 0 before the first read", async () => {
  const families = await scrape(newMetrics());
  for (const source of ["iptables", "nftables"]) {
    for (const family of FAMILIES) {
      const labels = { source, family };
      assert.equal(sampleValue(families, "conntrack_cleaner_nat_source_failures_total", labels), 0);
    }
  }
  assert.equal(families.get("conntrack_cleaner_nat_source_up")?.samples.length ?? 0, 0);
});

Deno.test("natSourceRead() shows whether each source's last read worked and counts failures", async () => {
  const metrics = newMetrics();
  metrics.natSourceRead({ source: "iptables", family: "ipv4", outcome: "failed" });
  metrics.natSourceRead({ source: "iptables", family: "ipv4", outcome: "failed" });
  metrics.natSourceRead({ source: "nftables", family: "ipv6", outcome: "ok" });
  let families = await scrape(metrics);
  const up = (source: string, family: string) =>
    findSample(families, "conntrack_cleaner_nat_source_up", { source, family })?.value;
  const failures = (source: string, family: string) =>
    sampleValue(families, "conntrack_cleaner_nat_source_failures_total", { source, family });
  assert.equal(up("iptables", "ipv4"), 0);
  assert.equal(failures("iptables", "ipv4"), 2);
  assert.equal(up("nftables", "ipv6"), 1);
  assert.equal(failures("nftables", "ipv6"), 0);
  assert.equal(up("iptables", "ipv6"), undefined, "a source never read has no series");

  metrics.natSourceRead({ source: "iptables", family: "ipv4", outcome: "ok" });
  families = await scrape(metrics);
  assert.equal(up("iptables", "ipv4"), 1, "recovered");
  assert.equal(failures("iptables", "ipv4"), 2, "failures are history");
});

Deno.test("natSourceRead() drops the series of a source the node no longer has", async () => {
  // A failed source that then goes absent (kube-proxy switched mode) must not look down forever.
  const metrics = newMetrics();
  metrics.natSourceRead({ source: "nftables", family: "ipv4", outcome: "failed" });
  metrics.natSourceRead({ source: "nftables", family: "ipv4", outcome: "absent" });
  const families = await scrape(metrics);
  const labels = { source: "nftables", family: "ipv4" };
  assert.equal(findSample(families, "conntrack_cleaner_nat_source_up", labels), undefined);
  assert.equal(sampleValue(families, "conntrack_cleaner_nat_source_failures_total", labels), 1);
});

Deno.test("render() shows build info, with label values escaped", async () => {
  const version = 'v1 "quoted" back\\slash\nnewline';
  const metrics = createMetrics({ version, denoVersion: "2.9.6" }, {
    processSampler: fixedProcess,
  });
  const families = await scrape(metrics);
  const sample = families.get("conntrack_cleaner_build_info")?.samples[0];
  assert.deepEqual(sample?.labels, { version, deno_version: "2.9.6" });
  assert.equal(sample?.value, 1);
});

Deno.test("render() reports process CPU, memory and start time from the sampler", async () => {
  const families = await scrape(newMetrics());
  assert.equal(families.get("process_cpu_seconds_total")?.type, "counter");
  assert.equal(sampleValue(families, "process_cpu_seconds_total"), 1.5);
  assert.equal(sampleValue(families, "process_resident_memory_bytes"), 42_000_000);
  assert.equal(sampleValue(families, "process_start_time_seconds"), 1_700_000_000);
});

Deno.test("render() reports this process's real memory and start time by default", async () => {
  const metrics = createMetrics({ version: "0.1.0", denoVersion: Deno.version.deno });
  const families = await scrape(metrics);
  assert.ok(sampleValue(families, "process_resident_memory_bytes") > 1_000_000);
  const started = sampleValue(families, "process_start_time_seconds");
  assert.ok(started <= Date.now() / 1000 && started > Date.now() / 1000 - 3600);
  assert.ok(sampleValue(families, "process_cpu_seconds_total") > 0);
});

Deno.test("render() output is valid exposition text with HELP on every family", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({ deletions: deletions(["age", "ipv4"]), overran: true }));
  metrics.cycleCompleted(failedCycle());
  metrics.cycleCompleted(okCycle({ dryRun: true, deletions: deletions(["nat", "ipv6"]) }));
  const families = await scrape(metrics);
  for (const family of families.values()) {
    assert.ok(family.help.length > 10, `${family.name} has a HELP text`);
    assert.ok(
      family.name.startsWith("conntrack_cleaner_") || family.name.startsWith("process_"),
      `${family.name} is prefixed`,
    );
  }
  assert.equal(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8");
});

Deno.test("render() matches the golden /metrics text after a fixed series of cycles", async () => {
  const metrics = newMetrics();
  metrics.cycleCompleted(okCycle({ deletions: deletions(["age", "ipv4"], ["nat", "ipv6"]) }));
  metrics.cycleCompleted({ ...failedCycle(), overran: true, deleteFailures: 1 });
  metrics.cycleCompleted(okCycle({
    dumpMs: 1200,
    dump: { kind: "ok", lines: 4000, candidates: 12, unparsable: 1 },
    tracked: 12,
    deletions: deletions(["renewal", "ipv6"]),
    pauseMs: 3600,
  }));
  metrics.natSourceRead({ source: "iptables", family: "ipv4", outcome: "ok" });
  metrics.natSourceRead({ source: "iptables", family: "ipv6", outcome: "failed" });
  metrics.natSourceRead({ source: "nftables", family: "ipv4", outcome: "absent" });
  metrics.natRulesRead("first");
  metrics.natRulesRead("changed");
  metrics.natRulesRead("changed");
  const golden = await Deno.readTextFile(
    new URL("./fixtures/metrics-golden.prom", import.meta.url),
  );
  assert.equal(await metrics.render(), golden);
});

// The validator itself: it must reject what Prometheus or an operator would trip over.

const VALID = [
  "# HELP a_total A counter with \\\\ and \\n in help.",
  "# TYPE a_total counter",
  'a_total{x="1",y="q\\"uote"} 3 1700000000000',
  'a_total{x="2",} 0',
  "# a plain comment",
  "",
  "# HELP g A gauge.",
  "# TYPE g gauge",
  "g NaN",
  'g{k="v"} -Inf',
  'g{k="w"} -1.5e-3',
  "# HELP h A histogram.",
  "# TYPE h histogram",
  'h_bucket{le="0.5"} 1',
  'h_bucket{le="1"} 2',
  'h_bucket{le="+Inf"} 2',
  "h_sum 1.2",
  "h_count 2",
  "# HELP s A summary.",
  "# TYPE s summary",
  's{quantile="0.5"} -4',
  "s_sum 9",
  "s_count 3",
  "",
].join("\n");

Deno.test("parseExposition() reads a valid text with every type, escapes and special values", () => {
  const families = parseExposition(VALID);
  assert.deepEqual([...families.keys()], ["a_total", "g", "h", "s"]);
  assert.equal(families.get("a_total")?.help, "A counter with \\ and \n in help.");
  const quoted = findSample(families, "a_total", { x: "1", y: 'q"uote' });
  assert.equal(quoted?.timestamp, 1_700_000_000_000);
  assert.ok(Number.isNaN(sampleValue(families, "g")));
  assert.equal(sampleValue(families, "g", { k: "v" }), -Infinity);
  assert.equal(sampleValue(families, "g", { k: "w" }), -0.0015);
  assert.equal(sampleValue(families, "h_bucket", { le: "+Inf" }), 2);
  assert.equal(sampleValue(families, "s", { quantile: "0.5" }), -4);
});

const INVALID: readonly (readonly [what: string, text: string, why: string])[] = [
  ["no final line feed", "# HELP g G.\n# TYPE g gauge\ng 1", "does not end with a line feed"],
  ["prom-client's 'Nan' spelling", "# HELP g G.\n# TYPE g gauge\ng Nan\n", 'invalid value "Nan"'],
  ["a sample before its TYPE", "g 1\n# HELP g G.\n# TYPE g gauge\n", "no TYPE line"],
  ["a family without HELP", "# TYPE g gauge\ng 1\n", "no HELP line"],
  ["an unknown type", "# HELP g G.\n# TYPE g gauges\ng 1\n", "unknown type"],
  ["a second TYPE", "# HELP g G.\n# TYPE g gauge\n# TYPE g gauge\ng 1\n", "second TYPE"],
  [
    "a duplicate series",
    '# HELP g G.\n# TYPE g gauge\ng{a="1"} 1\ng{a="1"} 2\n',
    "duplicate series",
  ],
  [
    "the same series with labels reordered",
    '# HELP g G.\n# TYPE g gauge\ng{a="1",b="2"} 1\ng{b="2",a="1"} 2\n',
    "duplicate series",
  ],
  ["a bad metric name", "# HELP g G.\n# TYPE g gauge\n1g 1\n", "invalid metric name"],
  ["a bad label name", '# HELP g G.\n# TYPE g gauge\ng{1a="x"} 1\n', "invalid label name"],
  [
    "a reserved label name",
    '# HELP g G.\n# TYPE g gauge\ng{__name__="x"} 1\n',
    "reserved label name",
  ],
  ["a repeated label", '# HELP g G.\n# TYPE g gauge\ng{a="x",a="y"} 1\n', "given twice"],
  ["an unquoted label value", "# HELP g G.\n# TYPE g gauge\ng{a=x} 1\n", "not quoted"],
  [
    "a bad escape in a label value",
    '# HELP g G.\n# TYPE g gauge\ng{a="\\t"} 1\n',
    "invalid escape",
  ],
  ["an unterminated label value", '# HELP g G.\n# TYPE g gauge\ng{a="x} 1\n', "unterminated"],
  ["a bad escape in HELP", "# HELP g G\\t.\n# TYPE g gauge\ng 1\n", "HELP line: invalid escape"],
  ["a missing value", "# HELP g G.\n# TYPE g gauge\ng\n", "no blank before the value"],
  ["a non-numeric value", "# HELP g G.\n# TYPE g gauge\ng one\n", 'invalid value "one"'],
  ["a fractional timestamp", "# HELP g G.\n# TYPE g gauge\ng 1 1.5\n", "invalid timestamp"],
  [
    "text after the timestamp",
    "# HELP g G.\n# TYPE g gauge\ng 1 2 3\n",
    "text after the timestamp",
  ],
  ["a negative counter", "# HELP c C.\n# TYPE c counter\nc -1\n", "negative"],
  ["an le label on a gauge", '# HELP g G.\n# TYPE g gauge\ng{le="1"} 1\n', "le label on a gauge"],
  [
    "interleaved families",
    '# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x="y"} 2\n',
    "outside its family's block",
  ],
  [
    "histogram buckets out of order",
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="0.5"} 1\n' +
    'h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    "not increasing",
  ],
  [
    "histogram counts that are not cumulative",
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="0.5"} 2\nh_bucket{le="1"} 1\n' +
    'h_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n',
    "below the previous bucket",
  ],
  [
    "a histogram without a +Inf bucket",
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    'le="+Inf"',
  ],
  [
    "a histogram whose _count differs from +Inf",
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\n' +
    "h_count 3\n",
    "_count 3",
  ],
  [
    "a histogram without _sum",
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 2\n',
    "no _sum",
  ],
  [
    "a histogram sample without suffix",
    "# HELP h H.\n# TYPE h histogram\nh 2\n",
    "without _bucket",
  ],
  [
    "a summary without _count",
    '# HELP s S.\n# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 1\n',
    "no _count",
  ],
];

for (const [what, text, why] of INVALID) {
  Deno.test(`parseExposition() rejects ${what}`, () => {
    assert.throws(
      () => parseExposition(text),
      (error) => error instanceof SyntaxError && error.message.includes(why),
    );
  });
}
