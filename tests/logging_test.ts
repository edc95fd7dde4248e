import assert from "node:assert/strict";
import type { LogFormat, LogLevel } from "../lib/operator/config.ts";
import { createLogger } from "../lib/seams/logger_logtape.ts";

async function collect(
  format: LogFormat,
  level: LogLevel,
  use: (log: Awaited<ReturnType<typeof createLogger>>) => void,
): Promise<string[]> {
  const lines: string[] = [];
  await using log = await createLogger({ format, level, sink: (line) => lines.push(line) });
  use(log);
  return lines;
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

Deno.test("createLogger() writes a record with properties as one valid JSON line", async () => {
  const lines = await collect("json", "info", (log) => {
    log.info("deleted stale flow", {
      rule: "renewal",
      flow: "tcp 198.51.100.2:40000 -> 192.0.2.10:80",
      renewals: 4,
      note: "two\nlines",
    });
  });
  assert.equal(lines.length, 1);
  const line = lines[0] ?? "";
  assert.ok(!line.includes("\n"), "one physical line");
  const record = JSON.parse(line);
  assert.equal(record.message, "deleted stale flow");
  assert.equal(record.level, "INFO");
  assert.match(record["@timestamp"], ISO_TIME);
  assert.equal(record.rule, "renewal");
  assert.equal(record.flow, "tcp 198.51.100.2:40000 -> 192.0.2.10:80");
  assert.equal(record.renewals, 4);
  assert.equal(record.note, "two\nlines");
});

Deno.test("createLogger() keeps a property named like a JSON field from replacing it", async () => {
  const lines = await collect("json", "info", (log) => {
    log.warn("dump failed", { level: "x", message: "conntrack said no" });
  });
  const record = JSON.parse(lines[0] ?? "");
  assert.equal(record.level, "WARN");
  assert.equal(record.message, "dump failed");
  assert.equal(record.property_level, "x");
  assert.equal(record.property_message, "conntrack said no");
});

Deno.test("createLogger() writes JSON for values JSON cannot hold by itself", async () => {
  const lines = await collect("json", "info", (log) => {
    log.error("cycle failed", { big: 2n ** 70n, error: new RangeError("bad") });
  });
  const record = JSON.parse(lines[0] ?? "");
  assert.equal(record.big, (2n ** 70n).toString());
  assert.equal(record.error.message, "bad");
});

Deno.test("createLogger() drops records below the configured level", async () => {
  const emit = (log: Awaited<ReturnType<typeof createLogger>>) => {
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
  };
  const messages = async (level: LogLevel) =>
    (await collect("json", level, emit)).map((line) => JSON.parse(line).message);
  assert.deepEqual(await messages("debug"), ["d", "i", "w", "e"]);
  assert.deepEqual(await messages("info"), ["i", "w", "e"]);
  assert.deepEqual(await messages("warning"), ["w", "e"]);
  assert.deepEqual(await messages("error"), ["e"]);
});

Deno.test("createLogger() writes readable text with key=value properties", async () => {
  const lines = await collect("text", "info", (log) => {
    log.info("deleted stale flow", {
      rule: "renewal",
      flow: "tcp 198.51.100.2:40000 -> 192.0.2.10:80",
      renewals: 4,
    });
    log.warn("dump failed");
  });
  assert.equal(lines.length, 2);
  const [info = "", warn = ""] = lines;
  const [time, ...rest] = info.split(" ");
  assert.match(time ?? "", ISO_TIME);
  assert.equal(
    rest.join(" "),
    'INFO deleted stale flow rule=renewal flow="tcp 198.51.100.2:40000 -> 192.0.2.10:80" ' +
      "renewals=4",
  );
  assert.match(warn, /^\S+ WARN dump failed$/);
});

Deno.test("createLogger() keeps a text record on one line", async () => {
  const lines = await collect("text", "info", (log) => {
    log.info("conntrack wrote", { stderr: "line one\nline two" });
  });
  assert.equal(lines.length, 1);
  assert.ok(lines[0]?.endsWith('stderr="line one\\nline two"'));
});

Deno.test("createLogger() stops writing once disposed", async () => {
  const lines: string[] = [];
  const log = await createLogger({ format: "json", level: "info", sink: (l) => lines.push(l) });
  log.info("before");
  await log[Symbol.asyncDispose]();
  log.info("after");
  assert.deepEqual(lines.map((line) => JSON.parse(line).message), ["before"]);
});

Deno.test("createLogger() leaves a newer logger alone when an older one is disposed", async () => {
  const first: string[] = [];
  const second: string[] = [];
  const older = await createLogger({ format: "json", level: "info", sink: (l) => first.push(l) });
  await using newer = await createLogger({
    format: "json",
    level: "info",
    sink: (l) => second.push(l),
  });
  await older[Symbol.asyncDispose]();
  newer.info("still here");
  assert.equal(first.length, 0);
  assert.equal(second.length, 1);
});
