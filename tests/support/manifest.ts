/**
 * Reading the project's YAML manifests (the DaemonSet, the monitoring kit) as plain JSON values,
 * and walking them by path with an error that names the missing step.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parse, parseAllDocuments } from "yaml";

/** A YAML mapping as plain data. */
export type Json = Record<string, unknown>;

/** Whether a value is a mapping (not null, not an array). */
export function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Follows a path of keys and indexes; throws with the path when a step is missing.
 *
 * @example
 * ```ts
 * import { at } from "./manifest.ts";
 * at({ spec: { ports: [8080] } }, "spec", "ports", 0); // 8080
 * ```
 */
export function at(value: unknown, ...path: readonly (string | number)[]): unknown {
  let here = value;
  for (const [i, key] of path.entries()) {
    const next = typeof key === "number"
      ? (Array.isArray(here) ? here[key] : undefined)
      : (isObject(here) ? here[key] : undefined);
    if (next === undefined) {
      throw new TypeError(`Cannot read ${path.slice(0, i + 1).join(".")}: it is missing`);
    }
    here = next;
  }
  return here;
}

/** Reads a one-document YAML file that must be a mapping. */
export async function loadYaml(file: string | URL): Promise<Json> {
  const value: unknown = parse(await Deno.readTextFile(file));
  assert.ok(isObject(value), `${file instanceof URL ? file.pathname : file} is not a mapping`);
  return value;
}

/** Reads every document of a multi-document YAML file; each must parse and be a mapping. */
export async function loadYamlDocuments(file: string | URL): Promise<readonly Json[]> {
  const docs = parseAllDocuments(await Deno.readTextFile(file));
  if (!Array.isArray(docs)) throw new SyntaxError(`Cannot parse ${file}: empty stream`);
  return docs.map((doc, i) => {
    assert.deepEqual(doc.errors, [], `YAML document ${i + 1} has errors`);
    const value: unknown = doc.toJS();
    assert.ok(isObject(value), `YAML document ${i + 1} is not a mapping`);
    return value;
  });
}
