import assert from "node:assert/strict";
import { type Candidate, type Flow, flowKey } from "../lib/core/flow.ts";
import { formatScanJson, formatScanTable } from "../lib/operator/scan_format.ts";
import type { Assessment, Verdict } from "../lib/core/verdict.ts";

function candidateOf(
  flow: Flow,
  timeout: number,
  extra: { readonly deltaTime?: number; readonly id?: number } = {},
): Candidate {
  return { flow, key: flowKey(flow), timeout, ...extra };
}

const V4: Flow = {
  family: "ipv4",
  original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
  reply: { src: "192.0.2.10", dst: "198.51.100.2", sport: 80, dport: 40000 },
  zone: 0,
};
const V6: Flow = {
  family: "ipv6",
  original: { src: "2001:db8::2", dst: "2001:db8:100::10", sport: 40200, dport: 443 },
  reply: { src: "2001:db8:100::10", dst: "2001:db8::2", sport: 443, dport: 40200 },
  zone: 7,
  origZone: 3,
};
const NATED: Flow = {
  family: "ipv4",
  original: { src: "198.51.100.8", dst: "192.0.2.14", sport: 40100, dport: 80 },
  reply: { src: "10.244.1.5", dst: "198.51.100.8", sport: 8080, dport: 40100 },
  zone: 0,
};

const KEEP: Verdict = {
  kind: "keep",
  why: "counting down (1 renewal, threshold 3)",
  renewals: 1,
  ageMs: 4200,
  ageSource: "observed",
};
const DELETE: Verdict = {
  kind: "delete",
  rule: "renewal",
  why: "timer renewed 4 times (threshold 3)",
  renewals: 4,
  ageMs: 12_000,
  ageSource: "kernel",
};

const ASSESSMENTS: readonly Assessment[] = [
  { candidate: candidateOf(V4, 117), verdict: KEEP },
  { candidate: candidateOf(V6, 119, { deltaTime: 13, id: 2499451965 }), verdict: DELETE },
  { candidate: candidateOf(NATED, 99), verdict: { ...KEEP, why: "new: first seen" } },
];

Deno.test("formatScanTable() shows each entry's tuple, timer, age, renewals and verdict", () => {
  const lines = formatScanTable(ASSESSMENTS).split("\n");
  assert.equal(lines.length, 4);
  const [header, v4, v6, nated] = lines;
  assert.match(header ?? "", /^FAMILY\s+ZONE\s+FLOW\s+TIMER\s+AGE\s+RENEWALS\s+VERDICT\s+WHY$/);
  assert.match(
    v4 ?? "",
    /^ipv4 +0 +198\.51\.100\.2:40000 → 192\.0\.2\.10:80 +117s +4s \(observed\)/,
  );
  assert.match(v4 ?? "", / 1 +keep +counting down \(1 renewal, threshold 3\)$/);
  assert.match(
    v6 ?? "",
    /^ipv6 +7\/3\/- +\[2001:db8::2\]:40200 → \[2001:db8:100::10\]:443 +119s +12s \(kernel\)/,
  );
  assert.match(v6 ?? "", / 4 +delete \(renewal\) +timer renewed 4 times \(threshold 3\)$/);
  // A NATed entry says where replies come from, so it is not mistaken for a stale one.
  assert.match(
    nated ?? "",
    /198\.51\.100\.8:40100 → 192\.0\.2\.14:80 \(reply 10\.244\.1\.5:8080 → /,
  );
});

Deno.test("formatScanTable() aligns every column, IPv6 rows included", () => {
  const lines = formatScanTable(ASSESSMENTS).split("\n");
  const header = lines[0] ?? "";
  // Each column starts where its header does (numeric columns end where theirs do).
  for (
    const [title, text] of [["FLOW", "198.51.100.2"], ["VERDICT", "keep"], ["WHY", "counting"]]
  ) {
    assert.equal(lines[1]?.indexOf(text ?? ""), header.indexOf(title ?? ""), title);
  }
  const verdictAt = header.indexOf("VERDICT");
  assert.equal(lines[2]?.slice(verdictAt, verdictAt + 16), "delete (renewal)");
  const renewalsEnd = header.indexOf("RENEWALS") + "RENEWALS".length;
  for (const line of lines.slice(1)) assert.match(line.slice(renewalsEnd - 1, renewalsEnd), /\d/);
  const whyAt = header.indexOf("WHY");
  assert.deepEqual(
    lines.slice(1).map((line) => line.slice(whyAt)),
    ASSESSMENTS.map((a) => a.verdict.why),
  );
});

Deno.test("formatScanTable() says so when there is nothing to show", () => {
  const lines = formatScanTable([]).split("\n");
  assert.equal(lines.length, 2);
  assert.match(lines[0] ?? "", /^FAMILY/);
  assert.equal(lines[1], "(no TCP SYN_SENT [UNREPLIED] entries)");
});

Deno.test("formatScanJson() writes one line with stable snake_case fields", () => {
  const line = formatScanJson(ASSESSMENTS[0] as Assessment, { time: "2025-05-01T12:00:00.000Z" });
  assert.ok(!line.includes("\n"));
  const parsed = JSON.parse(line);
  assert.deepEqual(Object.keys(parsed), [
    "time",
    "family",
    "zone",
    "src",
    "sport",
    "dst",
    "dport",
    "reply_src",
    "reply_sport",
    "reply_dst",
    "reply_dport",
    "timeout_s",
    "age_s",
    "age_source",
    "renewals",
    "verdict",
    "rule",
    "reason",
    "why",
  ]);
  assert.deepEqual(parsed, {
    time: "2025-05-01T12:00:00.000Z",
    family: "ipv4",
    zone: 0,
    src: "198.51.100.2",
    sport: 40000,
    dst: "192.0.2.10",
    dport: 80,
    reply_src: "192.0.2.10",
    reply_sport: 80,
    reply_dst: "198.51.100.2",
    reply_dport: 40000,
    timeout_s: 117,
    age_s: 4.2,
    age_source: "observed",
    renewals: 1,
    verdict: "keep",
    rule: null,
    reason: null,
    why: "counting down (1 renewal, threshold 3)",
  });
});

Deno.test("formatScanJson() adds the rule on delete and the zones, delta-time and id when known", () => {
  const parsed = JSON.parse(
    formatScanJson(ASSESSMENTS[1] as Assessment, { time: "2025-05-01T12:00:01.000Z" }),
  );
  assert.equal(parsed.verdict, "delete");
  assert.equal(parsed.rule, "renewal");
  assert.equal(parsed.src, "2001:db8::2");
  assert.equal(parsed.reply_src, "2001:db8:100::10");
  assert.equal(parsed.zone, 7);
  assert.equal(parsed.orig_zone, 3);
  assert.equal("reply_zone" in parsed, false);
  assert.equal(parsed.delta_time_s, 13);
  assert.equal(parsed.age_s, 12);
  assert.equal(parsed.age_source, "kernel");
  assert.equal(parsed.id, 2499451965);
  assert.equal(parsed.reason, null);
});

Deno.test("formatScanJson() names which half of the nat rule fired", () => {
  const base = ASSESSMENTS[0] as Assessment;
  const parsed = JSON.parse(formatScanJson({
    ...base,
    verdict: {
      ...base.verdict,
      kind: "delete",
      rule: "nat",
      reason: "endpoint-gone",
      why:
        "translated to 10.0.0.7:8080, no longer an endpoint of 192.0.2.10:80 (now 10.0.0.8:8080)",
    },
  }, { time: "2025-05-01T12:00:02.000Z" }));
  assert.equal(parsed.rule, "nat");
  assert.equal(parsed.reason, "endpoint-gone");
});
