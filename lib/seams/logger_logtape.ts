/**
 * The production {@link Logger}: LogTape writing JSON lines (for log collectors) or readable
 * text (for people at a terminal), one record per line, to stderr.
 *
 * @module
 */
import {
  configure,
  getConfig,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";
import type { LogFormat, LogLevel } from "./logger.ts";
import type { Logger } from "./logger.ts";

/** The LogTape category the agent logs under. */
const CATEGORY = "conntrack-cleaner";

/** Keys the JSON formatter writes itself; a property with one of these names is renamed. */
const RESERVED_KEYS: ReadonlySet<string> = new Set(["@timestamp", "level", "message", "logger"]);

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** `json`: one JSON object per line; `text`: `<time> <LEVEL> <message> key=value …`. */
  readonly format: LogFormat;
  /** Records below this level are dropped. */
  readonly level: LogLevel;
  /**
   * Receives each formatted record, without the trailing newline.
   * By default each line and a newline are written to stderr, synchronously.
   */
  readonly sink?: (line: string) => void;
}

const encoder = new TextEncoder();

/** Writes synchronously so that lines logged just before exit are not lost or interleaved. */
function writeToStderr(line: string): void {
  const bytes = encoder.encode(`${line}\n`);
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

/** Moves properties named like a JSON field (`level`, `message`, …) to `property_<name>`. */
function withSafeKeys(record: LogRecord): LogRecord {
  const keys = Object.keys(record.properties);
  if (!keys.some((key) => RESERVED_KEYS.has(key))) return record;
  const properties: Record<string, unknown> = {};
  for (const key of keys) {
    properties[RESERVED_KEYS.has(key) ? `property_${key}` : key] = record.properties[key];
  }
  return { ...record, properties };
}

/** Renders one property value for the text format: bare when unambiguous, else JSON-quoted. */
function textValue(value: unknown): string {
  if (typeof value === "string") {
    return /^[^\s"=\\\p{Cc}]+$/u.test(value) ? value : JSON.stringify(value);
  }
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (value instanceof Error) return JSON.stringify(value.message);
  try {
    return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? String(v) : v)) ??
      String(value);
  } catch {
    return JSON.stringify(String(value));
  }
}

function makeFormatter(format: LogFormat): (record: LogRecord) => string {
  if (format === "json") {
    const json = getJsonLinesFormatter({ properties: "flatten", message: "rendered" });
    return (record) => json(withSafeKeys(record)).trimEnd();
  }
  const text = getTextFormatter({
    timestamp: "rfc3339",
    // Same level names as the JSON format, so one grep works on both.
    level: (level) => (level === "warning" ? "WARN" : level.toUpperCase()),
    format: ({ timestamp, level, message, record }) => {
      let line = `${timestamp} ${level} ${message}`;
      for (const [key, value] of Object.entries(record.properties)) {
        line += ` ${key}=${textValue(value)}`;
      }
      return line;
    },
  });
  return (record) => text(record).trimEnd();
}

/**
 * Configures LogTape and returns the agent's logger.
 *
 * In `json` format each record is one line such as
 * `{"@timestamp":"2026-11-25T00:00:00.000Z","level":"INFO","message":"deleted stale flow","logger":"conntrack-cleaner","rule":"renewal"}`
 * with the properties flattened into the object (a property named like one of the fixed fields
 * is written as `property_<name>`). In `text` format it is
 * `2026-11-25T00:00:00.000Z INFO deleted stale flow rule=renewal flow="tcp 198.51.100.2:40000 -> 192.0.2.10:80"`.
 *
 * LogTape's configuration is process-wide: create one logger per process and dispose of it (with
 * `await using`) before creating another. Disposing resets LogTape only if this logger's
 * configuration is still the current one.
 *
 * @param options Format, lowest level and, for tests, where lines go.
 * @returns The logger; `[Symbol.asyncDispose]` flushes and removes the configuration.
 *
 * @example Collect lines in a test
 * ```ts
 * import { createLogger } from "./logger_logtape.ts";
 * const lines: string[] = [];
 * await using log = await createLogger({ format: "json", level: "info", sink: (l) => lines.push(l) });
 * log.info("deleted stale flow", { rule: "renewal" });
 * JSON.parse(lines[0]!).rule; // "renewal"
 * ```
 */
export async function createLogger(options: LoggerOptions): Promise<Logger & AsyncDisposable> {
  const write = options.sink ?? writeToStderr;
  const format = makeFormatter(options.format);
  const sink: Sink = (record) => write(format(record));
  await configure({
    reset: true,
    sinks: { out: sink },
    loggers: [
      { category: [CATEGORY], sinks: ["out"], lowestLevel: options.level },
      // LogTape reports its own trouble (a failing sink) here; its chatter below warning is noise.
      { category: ["logtape", "meta"], sinks: ["out"], lowestLevel: "warning" },
    ],
  });
  const logger = getLogger([CATEGORY]);
  return {
    debug: (message, properties) => logger.debug(message, { ...properties }),
    info: (message, properties) => logger.info(message, { ...properties }),
    warn: (message, properties) => logger.warn(message, { ...properties }),
    error: (message, properties) => logger.error(message, { ...properties }),
    [Symbol.asyncDispose]: async () => {
      if (getConfig()?.sinks["out"] === sink) await reset();
    },
  };
}
