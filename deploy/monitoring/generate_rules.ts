/**
 * Writes the plain Prometheus rule file from the PrometheusRule, so that both kinds of user get
 * the same alerts from one source:
 *
 *     deno run --allow-read --allow-write --allow-env deploy/monitoring/generate_rules.ts
 *
 * `tests/monitoring_test.ts` fails when the committed rule file differs from what this writes.
 *
 * @module
 */
import { parse, stringify } from "yaml";

/** The PrometheusRule, the one source of the alerts. */
export const PROMETHEUS_RULE_PATH: URL = new URL("./prometheusrule.yaml", import.meta.url);

/** The rule file generated from it, for Prometheus without the operator. */
export const RULE_FILE_PATH: URL = new URL(
  "./prometheus/conntrack-cleaner.rules.yml",
  import.meta.url,
);

const HEADER = [
  "# Generated from deploy/monitoring/prometheusrule.yaml by",
  "#   deno run --allow-read --allow-write --allow-env deploy/monitoring/generate_rules.ts",
  "# Edit that file, not this one. For Prometheus without prometheus-operator: list this file under",
  "# rule_files and name the agents' scrape job conntrack-cleaner (the down and missing alerts",
  "# select on it).",
  "",
].join("\n");

/**
 * The rule file for a PrometheusRule's text: its `spec`, which is a rule file's content.
 *
 * @example
 * ```ts
 * import { ruleFileFrom } from "./generate_rules.ts";
 * const text = ruleFileFrom(
 *   "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n" +
 *     "spec:\n  groups:\n    - name: g\n      rules:\n        - alert: A\n          expr: up == 0\n",
 * );
 * console.log(text.includes("- alert: A")); // true
 * ```
 */
export function ruleFileFrom(prometheusRule: string): string {
  const object: unknown = parse(prometheusRule);
  const spec = isObject(object) && object["kind"] === "PrometheusRule" ? object["spec"] : undefined;
  if (!isObject(spec) || !Array.isArray(spec["groups"])) {
    throw new TypeError(
      "Cannot generate a rule file from a document that is not a PrometheusRule with " +
        `spec.groups: current value is ${JSON.stringify(prometheusRule.slice(0, 60))}`,
    );
  }
  // lineWidth 0: no folding, so each expression reads as written in its source.
  return HEADER + stringify({ groups: spec["groups"] }, { lineWidth: 0 });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

if (import.meta.main) {
  await Deno.writeTextFile(
    RULE_FILE_PATH,
    ruleFileFrom(await Deno.readTextFile(PROMETHEUS_RULE_PATH)),
  );
  console.log(`wrote ${RULE_FILE_PATH.pathname}`);
}
