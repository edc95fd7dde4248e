/**
 * The monitoring kit under `deploy/monitoring/`: the PodMonitor and the PrometheusRule pass
 * prometheus-operator's published CRD schemas (fixtures in `tests/fixtures/crd/`) and scrape and
 * alert on what the DaemonSet and the agent really have; the plain rule file is the
 * PrometheusRule's rules; every alert has its README runbook entry; and `promtool` accepts the
 * rules and passes their unit tests, which cover every alert both firing and quiet.
 *
 * The promtool tests are ignored, saying why, where promtool is missing, and fail instead under
 * `CI=true`, so a CI that lost promtool never passes silently.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parse, parseAllDocuments } from "yaml";
import { at, type Json, loadYaml } from "./support/manifest.ts";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { createMetrics } from "../lib/operator/metrics.ts";
import {
  PROMETHEUS_RULE_PATH,
  RULE_FILE_PATH,
  ruleFileFrom,
} from "../deploy/monitoring/generate_rules.ts";
import { type OpenApiSchema, validateAgainstSchema } from "./openapi.ts";
import { promtool, promtoolMissing } from "./promtool.ts";

const ROOT = new URL("..", import.meta.url);
const PODMONITOR = new URL("deploy/monitoring/podmonitor.yaml", ROOT);
const RULES_TEST = new URL("deploy/monitoring/prometheus/conntrack-cleaner.rules_test.yml", ROOT);
const DAEMONSET = new URL("conntrack-cleaner-agent.yaml", ROOT);

async function loadSchema(kind: "podmonitor" | "prometheusrule"): Promise<OpenApiSchema> {
  return await loadYaml(new URL(`fixtures/crd/${kind}.v1.schema.yaml`, import.meta.url));
}

/**
 * What the API server would refuse in a custom resource: its CRD schema's complaints, and its
 * metadata checked as an ObjectMeta (through a ConfigMap, whose model validates just that).
 */
function crdErrors(schema: OpenApiSchema, object: Json): readonly string[] {
  const errors = [...validateAgainstSchema(schema, object)];
  try {
    new ConfigMap({ metadata: object["metadata"] } as never).validate();
  } catch (error) {
    errors.push(`metadata: ${error instanceof Error ? error.message : String(error)}`);
  }
  return errors;
}

interface AlertRule {
  readonly alert: string;
  readonly expr: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
}

async function alertRules(): Promise<readonly AlertRule[]> {
  const groups = at(await loadYaml(PROMETHEUS_RULE_PATH), "spec", "groups");
  assert.ok(Array.isArray(groups));
  return groups.flatMap((g: Json) => at(g, "rules") as AlertRule[]);
}

const ALERTS = [
  "ConntrackCleanerDown",
  "ConntrackCleanerMissing",
  "ConntrackCleanerNoSuccessfulDump",
  "ConntrackCleanerDeletionsFailing",
  "ConntrackCleanerFallingBehind",
  "ConntrackCleanerNatSourceFailing",
  "ConntrackCleanerDeletionBurst",
];

Deno.test("podmonitor.yaml passes the PodMonitor CRD's published schema", async () => {
  const podMonitor = await loadYaml(PODMONITOR);
  assert.equal(podMonitor["apiVersion"], "monitoring.coreos.com/v1");
  assert.equal(podMonitor["kind"], "PodMonitor");
  assert.deepEqual(crdErrors(await loadSchema("podmonitor"), podMonitor), []);
});

Deno.test("prometheusrule.yaml passes the PrometheusRule CRD's published schema", async () => {
  const rule = await loadYaml(PROMETHEUS_RULE_PATH);
  assert.equal(rule["apiVersion"], "monitoring.coreos.com/v1");
  assert.equal(rule["kind"], "PrometheusRule");
  assert.deepEqual(crdErrors(await loadSchema("prometheusrule"), rule), []);
});

Deno.test("the CRD schema check rejects mistyped, unknown, missing and malformed fields", async () => {
  // Guards the two tests above: a validator that accepted anything would pass them too.
  const podMonitor = structuredClone(await loadYaml(PODMONITOR));
  (at(podMonitor, "spec", "podMetricsEndpoints", 0) as Json)["port"] = 9469;
  (at(podMonitor, "spec") as Json)["podMetricEndpoints"] = [];
  (at(podMonitor, "spec", "podMetricsEndpoints", 0) as Json)["interval"] = "30 seconds";
  (at(podMonitor, "metadata") as Json)["labels"] = { "app.kubernetes.io/name": 1 };
  assert.deepEqual(crdErrors(await loadSchema("podmonitor"), podMonitor).map(firstWords), [
    "spec.podMetricsEndpoints[0].port: must be string, is number",
    'spec.podMetricsEndpoints[0].interval: "30 seconds" does not match',
    "spec.podMetricEndpoints: unknown field",
    "metadata:",
  ]);

  const rule = structuredClone(await loadYaml(PROMETHEUS_RULE_PATH));
  const firstRule = at(rule, "spec", "groups", 0, "rules", 0) as Json;
  delete firstRule["expr"];
  firstRule["for"] = "five minutes";
  (at(rule, "spec", "groups", 0) as Json)["name"] = "";
  assert.deepEqual(crdErrors(await loadSchema("prometheusrule"), rule).map(firstWords), [
    "spec.groups[0].name: must be at least 1 characters long",
    "spec.groups[0].rules[0].expr: required field is missing",
    'spec.groups[0].rules[0].for: "five minutes" does not match',
  ]);
});

Deno.test("validateAgainstSchema() refuses a schema keyword it does not check", () => {
  assert.throws(
    () => validateAgainstSchema({ "x-kubernetes-validations": [] } as OpenApiSchema, {}),
    (error) => error instanceof TypeError && /unsupported keyword/.test(error.message),
  );
});

Deno.test("validateAgainstSchema() finds duplicate list-map keys and int-or-string mistakes", () => {
  const schema: OpenApiSchema = {
    type: "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
    items: {
      type: "object",
      properties: { name: { type: "string" }, port: { "x-kubernetes-int-or-string": true } },
    },
  };
  assert.deepEqual(validateAgainstSchema(schema, [{ name: "a", port: 1 }, { name: "b" }]), []);
  assert.deepEqual(validateAgainstSchema(schema, [{ name: "a" }, { name: "a", port: true }]), [
    '(root): duplicate map entry ["a"]',
    "[1].port: must be an integer or a string, is boolean",
  ]);
});

/** An error up to and including the pattern's "does not match", or its first line. */
function firstWords(error: string): string {
  return error.replace(/ does not match .*/, " does not match").replace(
    /^metadata: .*/,
    "metadata:",
  );
}

Deno.test("podmonitor.yaml scrapes the DaemonSet's pods on their metrics port, as job conntrack-cleaner", async () => {
  const objects = parseAllDocuments(await Deno.readTextFile(DAEMONSET));
  assert.ok(Array.isArray(objects));
  const daemonSet = objects.map((d) => d.toJS() as Json).find((o) => o["kind"] === "DaemonSet");
  const pod = at(daemonSet, "spec", "template");
  const podLabels = at(pod, "metadata", "labels") as Json;
  const containerPorts = (at(pod, "spec", "containers") as Json[]).flatMap((c) =>
    (c["ports"] ?? []) as Json[]
  );
  const podMonitor = await loadYaml(PODMONITOR);

  assert.equal(at(podMonitor, "metadata", "namespace"), at(daemonSet, "metadata", "namespace"));
  const matchLabels = at(podMonitor, "spec", "selector", "matchLabels") as Json;
  for (const [name, value] of Object.entries(matchLabels)) {
    assert.equal(podLabels[name], value, `the pods carry the selected label ${name}`);
  }
  const endpoints = at(podMonitor, "spec", "podMetricsEndpoints") as Json[];
  assert.equal(endpoints.length, 1);
  const port = containerPorts.find((p) => p["name"] === endpoints[0]?.["port"]);
  assert.ok(port, `the container has a port named ${endpoints[0]?.["port"]}`);
  const annotations = at(pod, "metadata", "annotations") as Json;
  assert.equal(String(port["containerPort"]), annotations["prometheus.io/port"]);
  assert.equal(endpoints[0]?.["path"], annotations["prometheus.io/path"]);

  // The job the alerts select on is the value of the pod label the PodMonitor takes it from.
  const job = podLabels[String(at(podMonitor, "spec", "jobLabel"))];
  assert.equal(job, "conntrack-cleaner");
  for (const rule of await alertRules()) {
    for (const selected of rule.expr.matchAll(/\bjob="([^"]*)"/g)) {
      assert.equal(selected[1], job, `${rule.alert} selects job ${selected[1]}`);
    }
  }
});

Deno.test("the plain rule file is the one generated from prometheusrule.yaml", async () => {
  const generated = ruleFileFrom(await Deno.readTextFile(PROMETHEUS_RULE_PATH));
  assert.equal(
    await Deno.readTextFile(RULE_FILE_PATH),
    generated,
    "run: deno run --allow-read --allow-write --allow-env deploy/monitoring/generate_rules.ts",
  );
  const plain = parse(generated) as Json;
  assert.deepEqual(plain["groups"], at(await loadYaml(PROMETHEUS_RULE_PATH), "spec", "groups"));
});

Deno.test("ruleFileFrom() refuses a document that is not a PrometheusRule", () => {
  assert.throws(
    () => ruleFileFrom("kind: PodMonitor\nspec: {}\n"),
    (error) => error instanceof TypeError && /Cannot generate a rule file/.test(error.message),
  );
});

Deno.test("the rules alert on every condition an operator must act on", async () => {
  assert.deepEqual((await alertRules()).map((r) => r.alert), ALERTS);
});

/** GitHub's anchor for a README heading. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^a-z0-9 _-]/g, "").replaceAll(" ", "-");
}

Deno.test("every alert has a severity, a summary, a description and its README runbook entry", async () => {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const runbook = readme.split("\n## Runbook\n")[1]?.split("\n## ")[0];
  assert.ok(runbook, "README has a Runbook section");
  const entries = [...runbook.matchAll(/^### (.+)$/gm)].map((m) => m[1]!);
  const rules = await alertRules();
  assert.deepEqual(entries, rules.map((r) => r.alert), "one runbook entry per alert, in order");

  // Links point at the repository the image's OCI source label names.
  const dockerfile = await Deno.readTextFile(new URL("Dockerfile", ROOT));
  const source = dockerfile.match(/^ARG SOURCE=(\S+)$/m)?.[1];
  assert.ok(source);
  for (const rule of rules) {
    assert.equal(rule.labels?.["severity"], "warning", rule.alert);
    const { summary = "", description = "", runbook_url } = rule.annotations ?? {};
    assert.ok(summary.length > 20, `${rule.alert} has a summary`);
    assert.match(description, /Check first /, `${rule.alert} says what to check first`);
    assert.equal(runbook_url, `${source}/blob/main/README.md#${anchorOf(rule.alert)}`);
  }
});

Deno.test("every metric the rules use is one the agent exposes", async () => {
  const exposed = new Set(
    [...(await createMetrics({ version: "0.0.0", denoVersion: "0" }).render())
      .matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!),
  );
  const used = new Set<string>();
  for (const rule of await alertRules()) {
    for (const m of rule.expr.matchAll(/\b(conntrack_cleaner_[a-z_]+)\b/g)) used.add(m[1]!);
  }
  assert.ok(used.size >= 8, `${[...used]}`);
  for (const name of used) assert.ok(exposed.has(name), `the agent does not expose ${name}`);
});

Deno.test("every alert has promtool test cases where it fires and where it stays quiet", async () => {
  const tests = at(await loadYaml(RULES_TEST), "tests") as Json[];
  const fires = new Set<string>();
  const quiet = new Set<string>();
  for (const group of tests) {
    for (const c of (group["alert_rule_test"] ?? []) as Json[]) {
      const expected = c["exp_alerts"] as unknown[];
      (expected.length > 0 ? fires : quiet).add(String(c["alertname"]));
    }
  }
  assert.deepEqual([...fires].sort(), [...ALERTS].sort(), "alerts with a firing case");
  assert.deepEqual([...quiet].sort(), [...ALERTS].sort(), "alerts with a quiet case");
});

// --- promtool -----------------------------------------------------------------------------------

const inCi = Deno.env.get("CI") === "true";

const missing = promtoolMissing;

/**
 * Registers a test that runs promtool: ignored with the reason when it is missing, except under
 * `CI=true`, where it runs and fails.
 */
function promtoolTest(name: string, fn: () => Promise<void>): void {
  const ignore = missing !== undefined && !inCi;
  Deno.test({
    name: `${name}${ignore ? ` (ignored: ${missing}; apt-get install prometheus)` : ""}`,
    ignore,
    fn: async () => {
      if (missing !== undefined) throw new Error(`Cannot run promtool under CI: ${missing}`);
      await fn();
    },
  });
}

async function run(...args: readonly string[]) {
  const out = await promtool(args);
  return { code: out.code, output: `${out.stdout}${out.stderr}` };
}

promtoolTest("promtool check rules accepts the rule file", async () => {
  const { code, output } = await run("check", "rules", RULE_FILE_PATH.pathname);
  assert.equal(code, 0, output);
  assert.match(output, new RegExp(`SUCCESS: ${ALERTS.length} rules found`));
});

promtoolTest("promtool test rules passes every alert's unit tests", async () => {
  const { code, output } = await run("test", "rules", RULES_TEST.pathname);
  assert.equal(code, 0, output);
  assert.match(output, /SUCCESS/);
});

promtoolTest("promtool test rules fails for alerts that never fire or always fire", async () => {
  // Guards the test above: the unit tests must catch a rule that is silent or one that is noisy,
  // for every alert.
  const dir = await Deno.makeTempDir({ prefix: "cc-rules-" });
  try {
    const source = await Deno.readTextFile(RULE_FILE_PATH);
    await Deno.copyFile(RULES_TEST, `${dir}/test.yml`);
    for (const [expr, what] of [["vector(1) < 0", "never"], ["vector(1)", "always"]] as const) {
      const groups = (parse(source) as { groups: { rules: AlertRule[] }[] }).groups;
      for (const group of groups) group.rules = group.rules.map((r) => ({ ...r, expr }));
      await Deno.writeTextFile(
        `${dir}/conntrack-cleaner.rules.yml`,
        JSON.stringify({ groups }),
      );
      const { code, output } = await run("test", "rules", `${dir}/test.yml`);
      assert.notEqual(code, 0, `alerts that ${what} fire passed the unit tests`);
      const failed = new Set([...output.matchAll(/alertname: (\w+), time:/g)].map((m) => m[1]));
      assert.deepEqual([...failed].sort(), [...ALERTS].sort(), `alerts that ${what} fire`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
