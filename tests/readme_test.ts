import assert from "node:assert/strict";
import { OPTIONS } from "../lib/operator/command_line.ts";
import { createMetrics } from "../lib/operator/metrics.ts";

const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));

/** The rows of the README's configuration table, keyed by flag. */
function configurationRows(): Map<string, string[]> {
  const section = readme.split("\n## Configuration")[1]?.split("\n## ")[0] ?? "";
  const rows = new Map<string, string[]>();
  for (const line of section.split("\n")) {
    const cells = line.split("|").slice(1, -1).map((c) => c.trim());
    const flag = cells[0]?.replaceAll("`", "");
    if (flag && /^--[a-z]/.test(flag)) rows.set(flag, cells);
  }
  return rows;
}

Deno.test("README's configuration table lists every option with its variable and default", () => {
  const rows = configurationRows();
  assert.deepEqual([...rows.keys()].sort(), OPTIONS.map((o) => o.flag).sort());
  for (const option of OPTIONS) {
    const [, env, fallback] = rows.get(option.flag)!;
    assert.equal(env, `\`${option.env}\``, option.flag);
    if (option.default !== "" && option.flag !== "--log-format") {
      assert.equal(fallback, `\`${option.default}\``, option.flag);
    }
  }
});

Deno.test("README documents every metric the agent exposes", async () => {
  const metrics = createMetrics({ version: "0.0.0", denoVersion: Deno.version.deno }, {
    tracking: () => ({ mode: "events", eventsReceived: 0, eventsLost: 0, resyncs: 0 }),
  });
  const text = await metrics.render();
  const names = new Set(
    [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!),
  );
  assert.ok(names.size > 10);
  for (const name of names) assert.ok(readme.includes(`\`${name}\``), `README lacks ${name}`);
});

Deno.test("README gives the quick start commands CI and newcomers use", () => {
  assert.match(readme, /deno task demo/);
  assert.match(readme, /deno task test/);
});

Deno.test("README's tree of lib/ names every file and folder of lib/, and nothing else", () => {
  const section = readme.slice(readme.indexOf("## Development"));
  const start = section.indexOf("```\nlib/");
  const tree = section.slice(start, section.indexOf("```", start + 3));
  // A tree line starts with a folder (`name/`) or one or more files (`a.ts, b.ts`).
  const named = new Set(
    tree.split("\n").flatMap((line) => {
      const head = /^\s*(\w+\/|[\w.]+\.ts(?:, [\w.]+\.ts)*)/.exec(line)?.[1];
      return head === undefined ? [] : head.split(", ");
    }),
  );
  const actual = new Set<string>();
  const walk = (dir: URL) => {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.isDirectory) {
        actual.add(`${entry.name}/`);
        walk(new URL(`${entry.name}/`, dir));
      } else if (entry.name.endsWith(".ts")) actual.add(entry.name);
    }
  };
  walk(new URL("../lib/", import.meta.url));
  actual.add("lib/");
  assert.deepEqual([...actual].filter((name) => !named.has(name)).sort(), [], "missing in README");
  assert.deepEqual([...named].filter((name) => !actual.has(name)).sort(), [], "gone from lib/");
});
