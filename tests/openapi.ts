/**
 * A validator for custom resources against their CRD's OpenAPI v3 schema, for tests: it checks
 * what the API server checks with `kubectl apply` (server-side strict field validation) for the
 * schema keywords prometheus-operator's CRDs use, and throws on any other keyword, so that a
 * newer fixture can never be half-checked in silence.
 *
 * Checked: `type` (with `nullable`), `properties` and unknown fields (an error, as with
 * `--validate=strict`), `additionalProperties`, `required`, `items`, `enum`, `pattern` (Go's
 * leading `(?i)` included), `format` `int32`/`int64`/`date-time`, `minimum`, `maximum`,
 * `minLength`, `maxLength`, `minItems`, `maxItems`, `anyOf`, `x-kubernetes-int-or-string`,
 * `x-kubernetes-preserve-unknown-fields`, and `x-kubernetes-list-type` `set`/`map` uniqueness.
 * The root's `metadata` is left to the caller: the API server checks it as an ObjectMeta, not
 * against the CRD's schema.
 *
 * @module
 */

/** The part of an OpenAPI v3 schema this validator reads. */
export interface OpenApiSchema {
  readonly type?: string;
  readonly nullable?: boolean;
  readonly properties?: Readonly<Record<string, OpenApiSchema>>;
  readonly additionalProperties?: boolean | OpenApiSchema;
  readonly required?: readonly string[];
  readonly items?: OpenApiSchema;
  readonly enum?: readonly unknown[];
  readonly pattern?: string;
  readonly format?: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly anyOf?: readonly OpenApiSchema[];
  readonly "x-kubernetes-int-or-string"?: boolean;
  readonly "x-kubernetes-preserve-unknown-fields"?: boolean;
  readonly "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  readonly "x-kubernetes-list-map-keys"?: readonly string[];
}

/** Keywords that say nothing about validity here (documentation, defaults, merge strategy). */
const IGNORED: ReadonlySet<string> = new Set([
  "description",
  "default",
  "x-kubernetes-map-type",
]);

const CHECKED: ReadonlySet<string> = new Set([
  "type",
  "nullable",
  "properties",
  "additionalProperties",
  "required",
  "items",
  "enum",
  "pattern",
  "format",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "anyOf",
  "x-kubernetes-int-or-string",
  "x-kubernetes-preserve-unknown-fields",
  "x-kubernetes-list-type",
  "x-kubernetes-list-map-keys",
]);

/**
 * Every way `value` breaks `schema`, one line each (`path: what is wrong`); empty when it is
 * valid. Throws a {@link TypeError} when the schema uses a keyword this validator cannot check.
 */
export function validateAgainstSchema(schema: OpenApiSchema, value: unknown): readonly string[] {
  const errors: string[] = [];
  check(schema, value, "", errors);
  return errors;
}

function check(schema: OpenApiSchema, value: unknown, path: string, errors: string[]): void {
  for (const keyword of Object.keys(schema)) {
    if (!CHECKED.has(keyword) && !IGNORED.has(keyword)) {
      throw new TypeError(
        `Cannot validate ${path || "the root"} as its schema uses an unsupported keyword: ` +
          `current value is ${JSON.stringify(keyword)}`,
      );
    }
  }
  const at = path || "(root)";
  if (value === null && schema.nullable) return;
  if (schema["x-kubernetes-int-or-string"]) {
    if (!Number.isInteger(value) && typeof value !== "string") {
      errors.push(`${at}: must be an integer or a string, is ${kindOf(value)}`);
    }
    return;
  }
  if (schema.type !== undefined && !hasType(value, schema.type)) {
    errors.push(`${at}: must be ${schema.type}, is ${kindOf(value)}`);
    return;
  }
  if (schema.anyOf && !schema.anyOf.some((s) => validateAgainstSchema(s, value).length === 0)) {
    errors.push(`${at}: matches none of anyOf`);
  }
  if (schema.enum && !schema.enum.includes(value)) {
    errors.push(
      `${at}: must be one of ${JSON.stringify(schema.enum)}, is ${JSON.stringify(value)}`,
    );
  }
  if (typeof value === "string") checkString(schema, value, at, errors);
  if (typeof value === "number") checkNumber(schema, value, at, errors);
  if (Array.isArray(value)) checkArray(schema, value, path, errors);
  else if (isObject(value)) checkObject(schema, value, path, errors);
}

function checkString(schema: OpenApiSchema, value: string, at: string, errors: string[]): void {
  if (schema.minLength !== undefined && value.length < schema.minLength) {
    errors.push(`${at}: must be at least ${schema.minLength} characters long`);
  }
  if (schema.maxLength !== undefined && value.length > schema.maxLength) {
    errors.push(`${at}: must be at most ${schema.maxLength} characters long`);
  }
  if (schema.pattern !== undefined && !goPattern(schema.pattern).test(value)) {
    errors.push(`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (schema.format === "date-time" && Number.isNaN(Date.parse(value))) {
    errors.push(`${at}: ${JSON.stringify(value)} is not a date-time`);
  }
}

function checkNumber(schema: OpenApiSchema, value: number, at: string, errors: string[]): void {
  if (schema.minimum !== undefined && value < schema.minimum) {
    errors.push(`${at}: must be at least ${schema.minimum}, is ${value}`);
  }
  if (schema.maximum !== undefined && value > schema.maximum) {
    errors.push(`${at}: must be at most ${schema.maximum}, is ${value}`);
  }
  const int32 = schema.format === "int32" && (value < -(2 ** 31) || value >= 2 ** 31);
  if (int32 || (schema.format === "int64" && !Number.isSafeInteger(value))) {
    errors.push(`${at}: ${value} is out of range for ${schema.format}`);
  }
}

function checkArray(
  schema: OpenApiSchema,
  value: readonly unknown[],
  path: string,
  errors: string[],
): void {
  const at = path || "(root)";
  if (schema.minItems !== undefined && value.length < schema.minItems) {
    errors.push(`${at}: must have at least ${schema.minItems} items`);
  }
  if (schema.maxItems !== undefined && value.length > schema.maxItems) {
    errors.push(`${at}: must have at most ${schema.maxItems} items`);
  }
  const listType = schema["x-kubernetes-list-type"];
  if (listType === "set" || listType === "map") {
    const keys = schema["x-kubernetes-list-map-keys"] ?? [];
    const seen = new Set<string>();
    for (const item of value) {
      const key = listType === "set" || !isObject(item)
        ? JSON.stringify(item)
        : JSON.stringify(keys.map((k) => item[k]));
      if (seen.has(key)) errors.push(`${at}: duplicate ${listType} entry ${key}`);
      seen.add(key);
    }
  }
  if (schema.items) {
    value.forEach((item, i) => check(schema.items!, item, `${path}[${i}]`, errors));
  }
}

function checkObject(
  schema: OpenApiSchema,
  value: Readonly<Record<string, unknown>>,
  path: string,
  errors: string[],
): void {
  for (const name of schema.required ?? []) {
    if (!(name in value)) errors.push(`${join(path, name)}: required field is missing`);
  }
  const properties = schema.properties ?? {};
  for (const [name, field] of Object.entries(value)) {
    const where = join(path, name);
    // The API server checks the root's metadata as an ObjectMeta, whatever the CRD says.
    if (path === "" && name === "metadata") continue;
    const known = properties[name];
    if (known) check(known, field, where, errors);
    else if (isObject(schema.additionalProperties)) {
      check(schema.additionalProperties, field, where, errors);
    } else if (
      schema.additionalProperties !== true && !schema["x-kubernetes-preserve-unknown-fields"]
    ) {
      errors.push(`${where}: unknown field`);
    }
  }
}

/** Go's regexp syntax as far as these schemas use it: a leading `(?i)` is a flag in JS. */
function goPattern(pattern: string): RegExp {
  return pattern.startsWith("(?i)") ? new RegExp(pattern.slice(4), "iu") : new RegExp(pattern, "u");
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case "object":
      return isObject(value);
    case "array":
      return Array.isArray(value);
    case "string":
      return typeof value === "string";
    case "integer":
      return Number.isInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "boolean":
      return typeof value === "boolean";
    default:
      throw new TypeError(`Cannot validate against type ${JSON.stringify(type)}: unsupported`);
  }
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function join(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}
