/**
 * A strict parser for the Prometheus text exposition format (version 0.0.4), for tests: it
 * turns a whole `/metrics` body into metric families and throws a {@link SyntaxError} naming
 * the line on anything Prometheus would reject or an operator would trip over.
 *
 * Checked: line syntax (HELP, TYPE, samples, comments), metric and label name syntax, label
 * value and HELP escapes, float values (`NaN`, `+Inf`, `-Inf` spelled exactly), optional
 * integer timestamps, a HELP and a TYPE line before the first sample of every family and at
 * most one of each, a family's samples in one block, no duplicate series, counters never
 * negative, `le` only on histogram buckets and `quantile` only on summary quantiles, and for
 * every histogram series strictly increasing `le` ending in `+Inf`, cumulative bucket counts,
 * and `_count` equal to the `+Inf` bucket with a `_sum` beside it.
 *
 * Stricter than Prometheus on purpose: HELP is required, and a family's samples must not be
 * interleaved with another's.
 *
 * @module
 */

/** The metric types of the text format. */
export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

/** One sample line. */
export interface Sample {
  /** The sample's own name, e.g. `x_bucket` for histogram `x`. */
  readonly name: string;
  /** Labels, values unescaped. */
  readonly labels: Readonly<Record<string, string>>;
  /** The value. */
  readonly value: number;
  /** Milliseconds since the epoch, when the line has one. */
  readonly timestamp?: number;
  /** 1-based line number in the text. */
  readonly line: number;
}

/** All the samples under one HELP/TYPE. */
export interface MetricFamily {
  /** The family name as in the TYPE line. */
  readonly name: string;
  /** The declared type. */
  readonly type: MetricType;
  /** The HELP text, unescaped. */
  readonly help: string;
  /** Samples in the order they appeared. */
  readonly samples: readonly Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const FLOAT = /^(?:NaN|[+-]Inf|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)$/;
const TIMESTAMP = /^-?\d+$/;
const TYPES: ReadonlySet<string> = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

interface Draft {
  readonly name: string;
  type?: MetricType;
  help?: string;
  readonly samples: Sample[];
  readonly line: number;
}

/**
 * Parses and validates a whole exposition text.
 *
 * @example
 * ```ts
 * import { parseExposition } from "./exposition.ts";
 * const families = parseExposition("# HELP up Up.\n# TYPE up gauge\nup 1\n");
 * families.get("up")?.samples[0]?.value; // 1
 * ```
 *
 * @throws {SyntaxError} On the first violation, naming the line.
 */
export function parseExposition(text: string): ReadonlyMap<string, MetricFamily> {
  if (text !== "" && !text.endsWith("\n")) {
    throw new SyntaxError("Cannot parse exposition as the text does not end with a line feed");
  }
  const lines = text.split("\n");
  lines.pop();
  const drafts = new Map<string, Draft>();
  const seriesSeen = new Set<string>();
  let current: Draft | undefined;

  lines.forEach((raw, index) => {
    const line = index + 1;
    const fail = (problem: string): never => {
      throw new SyntaxError(
        `Cannot parse exposition line ${line} as ${problem}: current value is ${
          JSON.stringify(raw)
        }`,
      );
    };
    if (raw === "") return;
    if (raw.startsWith("#")) {
      const meta = parseMeta(raw, fail);
      if (meta === undefined) return;
      let draft = drafts.get(meta.name);
      if (draft === undefined) {
        draft = { name: meta.name, samples: [], line };
        drafts.set(meta.name, draft);
      } else if (draft !== current || draft.samples.length > 0) {
        fail(`${meta.keyword} of ${meta.name} after its samples or another family`);
      }
      if (meta.keyword === "HELP") {
        if (draft.help !== undefined) fail(`a second HELP for ${meta.name}`);
        draft.help = meta.value;
      } else {
        if (draft.type !== undefined) fail(`a second TYPE for ${meta.name}`);
        draft.type = meta.value as MetricType;
      }
      current = draft;
      return;
    }
    const sample = parseSample(raw, line, fail);
    const draft = familyOf(sample.name, current, drafts);
    if (draft === undefined || draft.type === undefined) {
      fail(`a sample with no TYPE line before it`);
    } else if (draft !== current) {
      fail(`a sample of ${draft.name} outside its family's block`);
    } else {
      checkSampleInFamily(sample, draft.name, draft.type, fail);
      const key = seriesKey(sample.name, sample.labels);
      if (seriesSeen.has(key)) fail("a duplicate series");
      seriesSeen.add(key);
      draft.samples.push(sample);
    }
  });

  const families = new Map<string, MetricFamily>();
  for (const draft of drafts.values()) {
    const at = (problem: string): never => {
      throw new SyntaxError(`Cannot accept metric family ${draft.name} as ${problem}`);
    };
    if (draft.type === undefined) at(`it has no TYPE line (line ${draft.line})`);
    if (draft.help === undefined) at(`it has no HELP line (line ${draft.line})`);
    const family: MetricFamily = {
      name: draft.name,
      type: draft.type as MetricType,
      help: draft.help as string,
      samples: draft.samples,
    };
    if (family.type === "histogram") checkHistogram(family, at);
    if (family.type === "summary") checkSummary(family, at);
    families.set(family.name, family);
  }
  return families;
}

/**
 * The sample with exactly this name and label set, or `undefined`.
 *
 * @example
 * ```ts
 * import { findSample, parseExposition } from "./exposition.ts";
 * const families = parseExposition('# HELP x X.\n# TYPE x gauge\nx{a="1"} 2\n');
 * findSample(families, "x", { a: "1" })?.value; // 2
 * ```
 */
export function findSample(
  families: ReadonlyMap<string, MetricFamily>,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Sample | undefined {
  const key = seriesKey(name, labels);
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name === name && seriesKey(sample.name, sample.labels) === key) return sample;
    }
  }
  return undefined;
}

/**
 * The value of the sample with exactly this name and label set.
 *
 * @throws {RangeError} When there is no such sample.
 */
export function sampleValue(
  families: ReadonlyMap<string, MetricFamily>,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number {
  const sample = findSample(families, name, labels);
  if (sample === undefined) {
    throw new RangeError(
      `Cannot find sample as none has that name and labels: current value is ${
        seriesKey(name, labels)
      }`,
    );
  }
  return sample.value;
}

type Fail = (problem: string) => never;

interface Meta {
  readonly keyword: "HELP" | "TYPE";
  readonly name: string;
  readonly value: string;
}

/** A HELP or TYPE line, or `undefined` for any other comment. */
function parseMeta(raw: string, fail: Fail): Meta | undefined {
  let rest = skipBlanks(raw.slice(1));
  const keyword = rest.match(/^\S*/)?.[0] ?? "";
  if (keyword !== "HELP" && keyword !== "TYPE") return undefined;
  rest = rest.slice(keyword.length);
  if (!/^[ \t]/.test(rest)) fail(`a ${keyword} line with no metric name`);
  rest = skipBlanks(rest);
  const name = rest.match(METRIC_NAME)?.[0];
  if (name === undefined) fail(`a ${keyword} line with an invalid metric name`);
  rest = rest.slice((name as string).length);
  if (rest !== "" && !/^[ \t]/.test(rest)) fail(`a ${keyword} line with an invalid metric name`);
  if (keyword === "HELP") {
    const help = unescape(skipBlanks(rest), "HELP", fail);
    return { keyword, name: name as string, value: help };
  }
  const type = rest.trim();
  if (!TYPES.has(type)) fail(`a TYPE line with an unknown type`);
  return { keyword, name: name as string, value: type };
}

function parseSample(raw: string, line: number, fail: Fail): Sample {
  const name = raw.match(METRIC_NAME)?.[0];
  if (name === undefined) fail("a sample: invalid metric name");
  let rest = raw.slice((name as string).length);
  const labels: Record<string, string> = {};
  if (rest.startsWith("{")) {
    rest = rest.slice(1);
    for (;;) {
      rest = skipBlanks(rest);
      if (rest.startsWith("}")) break;
      const label = rest.match(LABEL_NAME)?.[0];
      if (label === undefined) fail("a sample: invalid label name");
      const labelName = label as string;
      if (labelName.startsWith("__")) fail(`a sample: reserved label name ${labelName}`);
      if (Object.hasOwn(labels, labelName)) fail(`a sample: label ${labelName} given twice`);
      rest = skipBlanks(rest.slice(labelName.length));
      if (!rest.startsWith("=")) fail(`a sample: no "=" after label ${labelName}`);
      rest = skipBlanks(rest.slice(1));
      if (!rest.startsWith('"')) fail(`a sample: label ${labelName}'s value is not quoted`);
      const { value, after } = readQuoted(rest.slice(1), fail);
      labels[labelName] = value;
      rest = skipBlanks(after);
      if (rest.startsWith(",")) rest = rest.slice(1);
      else if (!rest.startsWith("}")) fail(`a sample: no "," or "}" after label ${labelName}`);
    }
    rest = rest.slice(1);
  }
  if (!/^[ \t]/.test(rest)) fail("a sample: no blank before the value");
  const fields = rest.trim().split(/[ \t]+/);
  if (fields.length > 2) fail("a sample: text after the timestamp");
  const [valueText = "", timestampText] = fields;
  if (!FLOAT.test(valueText)) fail(`a sample: invalid value ${JSON.stringify(valueText)}`);
  const value = valueText === "NaN"
    ? NaN
    : valueText.endsWith("Inf")
    ? (valueText.startsWith("-") ? -Infinity : Infinity)
    : Number(valueText);
  if (timestampText === undefined) return { name: name as string, labels, value, line };
  if (!TIMESTAMP.test(timestampText)) fail("a sample: invalid timestamp");
  return { name: name as string, labels, value, timestamp: Number(timestampText), line };
}

/** Reads a label value after its opening quote; returns it unescaped and the text after it. */
function readQuoted(text: string, fail: Fail): { value: string; after: string } {
  let value = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') return { value, after: text.slice(i + 1) };
    if (c === "\\") {
      const next = text[i + 1];
      if (next === "\\") value += "\\";
      else if (next === '"') value += '"';
      else if (next === "n") value += "\n";
      else fail(`a sample: invalid escape "\\${next ?? ""}" in a label value`);
      i++;
    } else {
      value += c;
    }
  }
  return fail("a sample: unterminated label value");
}

function unescape(text: string, where: string, fail: Fail): string {
  return text.replace(/\\(.?)/g, (_match, next: string) => {
    if (next === "\\") return "\\";
    if (next === "n") return "\n";
    return fail(`a ${where} line: invalid escape "\\${next}"`);
  });
}

function skipBlanks(text: string): string {
  return text.replace(/^[ \t]+/, "");
}

/** The family a sample name belongs to, preferring the family being read. */
function familyOf(
  sampleName: string,
  current: Draft | undefined,
  drafts: ReadonlyMap<string, Draft>,
): Draft | undefined {
  const suffixed = /^(.*)_(bucket|sum|count)$/.exec(sampleName);
  const base = suffixed?.[1];
  const suffix = suffixed?.[2];
  const owns = (draft: Draft | undefined): boolean => {
    if (draft === undefined) return false;
    if (draft.name === sampleName) return true;
    if (draft.name !== base) return false;
    if (draft.type === "histogram") return true;
    return draft.type === "summary" && suffix !== "bucket";
  };
  if (owns(current)) return current;
  const exact = drafts.get(sampleName);
  if (exact !== undefined) return exact;
  const parent = base === undefined ? undefined : drafts.get(base);
  return owns(parent) ? parent : undefined;
}

function checkSampleInFamily(sample: Sample, family: string, type: MetricType, fail: Fail): void {
  const suffix = sample.name.slice(family.length);
  const hasLe = Object.hasOwn(sample.labels, "le");
  const hasQuantile = Object.hasOwn(sample.labels, "quantile");
  if (type === "histogram") {
    if (suffix === "") fail(`a histogram sample without _bucket, _sum or _count`);
    if (suffix === "_bucket" && !hasLe) fail("a histogram bucket without an le label");
    if (suffix !== "_bucket" && hasLe) fail("an le label outside a histogram bucket");
  } else if (hasLe) {
    fail(`an le label on a ${type}`);
  }
  if (type === "summary") {
    if (suffix === "" && !hasQuantile) fail("a summary quantile without a quantile label");
    if (suffix !== "" && hasQuantile) fail("a quantile label on a summary's _sum or _count");
  } else if (hasQuantile) {
    fail(`a quantile label on a ${type}`);
  }
  // Counts can only be whole, non-negative figures; a _sum or a quantile may be anything.
  const isCount = type === "counter" || suffix === "_count" ||
    (type === "histogram" && suffix === "_bucket");
  if (isCount && !(sample.value >= 0)) fail(`a count with a negative or NaN value`);
}

function checkHistogram(family: MetricFamily, at: (problem: string) => never): void {
  for (const [key, samples] of groupByLabelsWithout(family.samples, "le")) {
    const buckets = samples.filter((s) => s.name === `${family.name}_bucket`);
    const sum = samples.find((s) => s.name === `${family.name}_sum`);
    const count = samples.find((s) => s.name === `${family.name}_count`);
    const where = `series {${key}} (line ${samples[0]?.line})`;
    if (buckets.length === 0) at(`${where} has no buckets`);
    if (sum === undefined) at(`${where} has no _sum`);
    if (count === undefined) at(`${where} has no _count`);
    let previous: Sample | undefined;
    for (const bucket of buckets) {
      const leText = bucket.labels.le ?? "";
      if (!FLOAT.test(leText) || leText === "NaN") {
        at(`line ${bucket.line} has an invalid le "${leText}"`);
      }
      if (previous !== undefined) {
        if (!(leOf(bucket) > leOf(previous))) at(`line ${bucket.line}'s le is not increasing`);
        if (bucket.value < previous.value) {
          at(`line ${bucket.line}'s bucket count is below the previous bucket's`);
        }
      }
      previous = bucket;
    }
    if (previous === undefined || leOf(previous) !== Infinity) {
      at(`${where} does not end with an le="+Inf" bucket`);
    }
    if (count !== undefined && previous !== undefined && count.value !== previous.value) {
      at(`${where} has _count ${count.value} but its +Inf bucket holds ${previous.value}`);
    }
  }
}

function checkSummary(family: MetricFamily, at: (problem: string) => never): void {
  for (const [key, samples] of groupByLabelsWithout(family.samples, "quantile")) {
    const where = `series {${key}} (line ${samples[0]?.line})`;
    for (const sample of samples.filter((s) => s.name === family.name)) {
      const q = Number(sample.labels.quantile);
      if (!(q >= 0 && q <= 1)) at(`line ${sample.line}'s quantile is not within 0 and 1`);
    }
    if (!samples.some((s) => s.name === `${family.name}_sum`)) at(`${where} has no _sum`);
    if (!samples.some((s) => s.name === `${family.name}_count`)) at(`${where} has no _count`);
  }
}

function leOf(sample: Sample): number {
  const le = sample.labels.le ?? "";
  return le === "+Inf" ? Infinity : le === "-Inf" ? -Infinity : Number(le);
}

function groupByLabelsWithout(
  samples: readonly Sample[],
  drop: string,
): ReadonlyMap<string, readonly Sample[]> {
  const groups = new Map<string, Sample[]>();
  for (const sample of samples) {
    const rest = Object.entries(sample.labels).filter(([name]) => name !== drop);
    const key = labelsKey(Object.fromEntries(rest));
    const group = groups.get(key) ?? [];
    group.push(sample);
    groups.set(key, group);
  }
  return groups;
}

function labelsKey(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}=${JSON.stringify(value)}`)
    .join(",");
}

function seriesKey(name: string, labels: Readonly<Record<string, string>>): string {
  return `${name}{${labelsKey(labels)}}`;
}
