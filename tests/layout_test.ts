/**
 * The floor plan of `lib/`, held by tests: folders that follow the data, dependencies that point
 * one way, no file too long to read, and nothing in `lib/` that the agent does not run.
 *
 * @module
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Each folder of `lib/` and its layer. A file may import from its own folder and from folders of
 * a lower layer only: the seams know nothing of the agent, the core knows only the seams' types,
 * the table and the NAT view know the core, the loop knows both, and the operator's surface wraps
 * the loop. The table and the NAT view share a layer and never import each other.
 */
const LAYERS: Readonly<Record<string, number>> = {
  "lib": 0, // version.ts only
  "lib/seams": 0,
  "lib/core": 1,
  "lib/table": 2,
  "lib/table/text": 2,
  "lib/table/netlink": 2,
  "lib/nat": 2,
  "lib/loop": 3,
  "lib/operator": 4,
};

/** Folders of one layer that may import each other (a room and the room it opens into). */
const SAME_WING: readonly (readonly [string, string])[] = [
  ["lib/table", "lib/table/text"],
  ["lib/table", "lib/table/netlink"],
];

function libFiles(dir = `${ROOT}/lib`): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...libFiles(path));
    else if (entry.name.endsWith(".ts")) out.push(path.slice(ROOT.length + 1));
  }
  return out.sort();
}

/** The relative modules a file imports, resolved to repository paths; comments are ignored. */
function importsOf(file: string): string[] {
  const text = Deno.readTextFileSync(`${ROOT}/${file}`)
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/^\s*\/\/.*$/gm, "");
  const base = new URL(file, "file:///");
  const found: string[] = [];
  for (const match of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+\.ts)"/g)) {
    found.push(new URL(match[1] ?? "", base).pathname.slice(1));
  }
  return found;
}

function folderOf(file: string): string {
  return file.slice(0, file.lastIndexOf("/"));
}

Deno.test("lib/ keeps at most six files at its top level", () => {
  const top = [...Deno.readDirSync(`${ROOT}/lib`)].filter((e) => e.isFile).map((e) => e.name);
  assert.ok(top.length <= 6, `top-level files: ${top.join(", ")}`);
});

Deno.test("lib/ has a layer for every folder it holds", () => {
  const folders = new Set(libFiles().map(folderOf));
  assert.deepEqual([...folders].filter((f) => LAYERS[f] === undefined), []);
});

Deno.test("no file in lib/ is over 700 lines", () => {
  const long = libFiles()
    .map((file) => [file, Deno.readTextFileSync(`${ROOT}/${file}`).split("\n").length] as const)
    .filter(([, lines]) => lines > 700);
  assert.deepEqual(long, []);
});

Deno.test("every import in lib/ points to the same folder or a lower layer", () => {
  const wrong: string[] = [];
  for (const file of libFiles()) {
    const from = folderOf(file);
    for (const target of importsOf(file)) {
      if (!target.startsWith("lib/")) {
        wrong.push(`${file} -> ${target} (outside lib/)`);
        continue;
      }
      const to = folderOf(target);
      if (to === from) continue;
      const wing = SAME_WING.some(([a, b]) => (a === from && b === to) || (a === to && b === from));
      const [fromLayer, toLayer] = [LAYERS[from] ?? -1, LAYERS[to] ?? -1];
      if (toLayer < fromLayer || (wing && toLayer === fromLayer)) continue;
      wrong.push(`${file} -> ${target}`);
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test("lib/ has no import cycle", () => {
  const graph = new Map(libFiles().map((file) => [file, importsOf(file)]));
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      cycles.push([...path.slice(path.indexOf(file)), file].join(" -> "));
      return;
    }
    state.set(file, "open");
    for (const next of graph.get(file) ?? []) visit(next, [...path, file]);
    state.set(file, "done");
  };
  for (const file of graph.keys()) visit(file, []);
  assert.deepEqual(cycles, []);
});

Deno.test("every file in lib/ is reachable from main.ts", () => {
  const seen = new Set<string>();
  const queue = importsOf("main.ts");
  while (queue.length > 0) {
    const file = queue.pop() ?? "";
    if (seen.has(file) || !file.startsWith("lib/")) continue;
    seen.add(file);
    queue.push(...importsOf(file));
  }
  assert.deepEqual(libFiles().filter((file) => !seen.has(file)), []);
});

Deno.test("Deno.Command appears in one adapter file only", () => {
  const users = libFiles().filter((file) =>
    Deno.readTextFileSync(`${ROOT}/${file}`).includes("new Deno.Command(")
  );
  assert.deepEqual(users, ["lib/seams/spawn_deno.ts"]);
});
