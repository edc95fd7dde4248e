/**
 * The command line: flags, environment variables and subcommands, turned into a validated
 * {@link Config} or a request for help or the version.
 *
 * Every option is read from its flag, else its environment variable, else its default, and all of
 * them are validated before anything runs, so a bad value stops the agent at start-up with one
 * line that names both the flag and the variable.
 *
 * Commander parses the flags and writes the help; the environment is read here through the
 * injected `env` function rather than through commander's `.env()`, which reads the global
 * `process.env` (needing `--allow-env` even in tests) and treats any value of a boolean variable,
 * `DRY_RUN=false` included, as true.
 *
 * @module
 */
import { Command, CommanderError, Option } from "@commander-js/extra-typings";
import { type Cidr, parseAddress, parseCidr } from "../core/cidr.ts";
import type { Backend, Config, LogFormat, LogLevel, NatSource } from "./config.ts";
import type { TrackingChoice } from "../table/tracking.ts";
import { parseGoDuration } from "./duration.ts";

/** One agent option, as documented in the README, the help and the DaemonSet. */
export interface OptionSpec {
  /** The long flag, e.g. `--dump-frequency`. */
  readonly flag: string;
  /** The environment variable read when the flag is absent. */
  readonly env: string;
  /** The value used when neither is given, as text (`""` for "none"). */
  readonly default: string;
  /** What values are accepted, in words. */
  readonly accepts: string;
  /** One line saying what the option does. */
  readonly help: string;
}

/** An {@link OptionSpec} plus what commander needs to parse its flag. */
interface FlagSpec extends OptionSpec {
  /** The value placeholder for `--help`; absent for a boolean flag. */
  readonly value?: string;
  /** Whether the flag may be given more than once (values accumulate). */
  readonly repeatable?: boolean;
}

const DUMP_FREQUENCY: FlagSpec = {
  flag: "--dump-frequency",
  env: "CONNTRACK_TABLE_DUMP_FREQUENCY",
  default: "1s",
  accepts: "a Go duration of at least 100ms",
  help: "pause between the end of one table dump and the start of the next",
  value: "<duration>",
};
const RENEWAL_THRESHOLD: FlagSpec = {
  flag: "--renewal-threshold",
  env: "CONNECTION_RENEWAL_THRESHOLD",
  default: "3",
  accepts: "a non-negative integer",
  help: "timer renewals tolerated on an unreplied entry; one more deletes it",
  value: "<count>",
};
const UNREPLIED_MAX_AGE: FlagSpec = {
  flag: "--unreplied-max-age",
  env: "CONNTRACK_UNREPLIED_MAX_AGE",
  default: "10s",
  accepts: "0 (off) or a Go duration of at least 1s",
  help: "delete an unreplied entry once it is this old (for kernels that no longer renew timers)",
  value: "<duration>",
};
const BUSY_LIMIT: FlagSpec = {
  flag: "--busy-limit",
  env: "CONNTRACK_CLEANER_BUSY_LIMIT",
  default: "20%",
  accepts: "a percentage from 1% to 100%",
  help: "share of the time cycles may take; a slower cycle stretches the pause after it (100% " +
    "never stretches)",
  value: "<percent>",
};
const CONNTRACK_BIN: FlagSpec = {
  flag: "--conntrack",
  env: "CONNTRACK_BIN",
  default: "conntrack",
  accepts: "a program name or path",
  help: "the conntrack program to run",
  value: "<path>",
};
const DRY_RUN: FlagSpec = {
  flag: "--dry-run",
  env: "DRY_RUN",
  default: "false",
  accepts: "the flag alone, or true, false, 1 or 0 in the variable",
  help: "log what would be deleted and delete nothing",
};
const LOG_FORMAT: FlagSpec = {
  flag: "--log-format",
  env: "LOG_FORMAT",
  default: "json",
  accepts: "json or text",
  help: "log format; text by default when stdout is a terminal",
  value: "<format>",
};
const LOG_LEVEL: FlagSpec = {
  flag: "--log-level",
  env: "LOG_LEVEL",
  default: "info",
  accepts: "debug, info, warning or error",
  help: "lowest level logged",
  value: "<level>",
};
const METRICS_ADDRESS: FlagSpec = {
  flag: "--metrics-address",
  env: "METRICS_ADDRESS",
  default: ":9469",
  accepts: "host:port, [ipv6]:port, :port (all IPv4 interfaces), or empty for off",
  help: "where to serve /metrics, /healthz and /readyz",
  value: "<address>",
};
const DESTINATIONS: FlagSpec = {
  flag: "--destination",
  env: "CONNTRACK_CLEANER_DESTINATIONS",
  default: "",
  accepts: "comma-separated CIDR blocks, none empty (flag repeatable); an empty variable for all",
  help: "only touch entries whose original destination lies in one of these blocks",
  value: "<cidrs>",
  repeatable: true,
};
const EXCLUDE_DESTINATIONS: FlagSpec = {
  flag: "--exclude-destination",
  env: "CONNTRACK_CLEANER_EXCLUDE_DESTINATIONS",
  default: "",
  accepts: "comma-separated CIDR blocks, none empty (flag repeatable)",
  help: "never touch entries whose original destination lies in one of these blocks",
  value: "<cidrs>",
  repeatable: true,
};
const PORTS: FlagSpec = {
  flag: "--port",
  env: "CONNTRACK_CLEANER_PORTS",
  default: "",
  accepts: "comma-separated ports 1-65535, none empty (flag repeatable); an empty variable for all",
  help: "only touch entries to these original destination ports",
  value: "<ports>",
  repeatable: true,
};
const NAT_SOURCE: FlagSpec = {
  flag: "--nat-source",
  env: "CONNTRACK_CLEANER_NAT_SOURCE",
  default: "auto",
  accepts: "auto, iptables, nftables or off",
  help: "where to read the node's DNAT rules from for the nat rule",
  value: "<source>",
};
const DELETE_BACKEND: FlagSpec = {
  flag: "--delete-backend",
  env: "CONNTRACK_CLEANER_DELETE_BACKEND",
  default: "auto",
  accepts: "auto, netlink or cli",
  help: "how entries are deleted",
  value: "<backend>",
};

const LIST_BACKEND: FlagSpec = {
  flag: "--list-backend",
  env: "CONNTRACK_CLEANER_LIST_BACKEND",
  default: "auto",
  accepts: "auto, netlink or cli",
  help: "how the table is listed",
  value: "<backend>",
};

const TRACKING: FlagSpec = {
  flag: "--tracking",
  env: "CONNTRACK_CLEANER_TRACKING",
  default: "auto",
  accepts: "auto, events or dump",
  help: "how candidates are followed between dumps: conntrack events (auto: where they can be " +
    "had) or a dump every period",
  value: "<mode>",
};
const RESYNC_PERIOD: FlagSpec = {
  flag: "--resync-period",
  env: "CONNTRACK_CLEANER_RESYNC_PERIOD",
  default: "5m",
  accepts: "a Go duration of at least 10s",
  help: "with event tracking, how often a full dump checks what the events told",
  value: "<duration>",
};
const EVENT_BUFFER: FlagSpec = {
  flag: "--event-buffer",
  env: "CONNTRACK_CLEANER_EVENT_BUFFER",
  default: "8388608",
  accepts: "a number of bytes from 1 to 1073741824",
  help: "receive buffer of the conntrack event socket; an overflow loses events and forces a dump",
  value: "<bytes>",
};

const FLAG_SPECS: readonly FlagSpec[] = [
  DUMP_FREQUENCY,
  RENEWAL_THRESHOLD,
  UNREPLIED_MAX_AGE,
  BUSY_LIMIT,
  CONNTRACK_BIN,
  DRY_RUN,
  LOG_FORMAT,
  LOG_LEVEL,
  METRICS_ADDRESS,
  DESTINATIONS,
  EXCLUDE_DESTINATIONS,
  PORTS,
  NAT_SOURCE,
  LIST_BACKEND,
  DELETE_BACKEND,
  TRACKING,
  RESYNC_PERIOD,
  EVENT_BUFFER,
];

/**
 * Every agent option, in help order: the single source of truth for the README table, the
 * generated `--help` and the DaemonSet test. The `scan` subcommand's own `--json` and `--watch`
 * are not agent options and are not listed.
 *
 * @example List the environment variables
 * ```ts
 * import { OPTIONS } from "./command_line.ts";
 * OPTIONS.map((o) => o.env); // ["CONNTRACK_TABLE_DUMP_FREQUENCY", "CONNECTION_RENEWAL_THRESHOLD", ...]
 * ```
 */
export const OPTIONS: readonly OptionSpec[] = Object.freeze(
  FLAG_SPECS.map(({ flag, env, default: fallback, accepts, help }) =>
    Object.freeze({ flag, env, default: fallback, accepts, help })
  ),
);

/** What the command line asks for. */
export type Invocation =
  | {
    /** Run the agent. */
    readonly kind: "run";
    /** The validated configuration. */
    readonly config: Config;
  }
  | {
    /** List the candidates and the verdict on each, without deleting anything. */
    readonly kind: "scan";
    /** The validated configuration. */
    readonly config: Config;
    /** Print one JSON object per candidate instead of a table. */
    readonly json: boolean;
    /** Keep scanning every dump interval instead of once. */
    readonly watch: boolean;
  }
  | {
    /** Print the version and exit. */
    readonly kind: "version";
    /**
     * The conntrack program whose version to print: the one a run would use (`--conntrack`, else
     * `CONNTRACK_BIN`, else `conntrack`), not validated, since `--version` answers even when the
     * rest of the configuration is broken.
     */
    readonly conntrackBin: string;
  }
  | {
    /** Print `text` to stdout and exit 0. */
    readonly kind: "help";
    /** The generated help, ending in a newline. */
    readonly text: string;
  };

/**
 * A bad flag, variable or argument. The message is one line that names the flag and the
 * environment variable and says what is accepted; `main` prints it and exits 2.
 */
export class ConfigError extends Error {
  /** @param message One operator-actionable line. */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A raw option value and where it came from, for error messages. */
interface RawValue {
  readonly text: string;
  /** Names the source first and the other spelling in parentheses. */
  readonly name: string;
  /** Whether the value was given as a flag (rather than a variable, or the default). */
  readonly fromFlag: boolean;
  /** The flag, for messages that say to leave it out. */
  readonly flag: string;
}

function invalid(raw: RawValue, what: string, detail?: string): ConfigError {
  const tail = detail === undefined ? "" : ` (${detail})`;
  return new ConfigError(
    `Cannot parse ${raw.name} as ${what}: current value is ${JSON.stringify(raw.text)}${tail}`,
  );
}

function parseDuration(raw: RawValue, minimumMs: number, what: string): number {
  let ms: number;
  try {
    ms = parseGoDuration(raw.text);
  } catch {
    throw invalid(raw, what);
  }
  if (ms < minimumMs) throw invalid(raw, what);
  // Timers cannot wait longer (setTimeout fires at once past 2^31 - 1 ms): about 24 days.
  if (ms > MAX_DURATION_MS) throw invalid(raw, what, "at most 596h");
  return ms;
}

const MAX_DURATION_MS = 2 ** 31 - 1;

function parseCount(raw: RawValue): number {
  const n = /^[0-9]+$/.test(raw.text) ? Number(raw.text) : NaN;
  if (!Number.isSafeInteger(n)) throw invalid(raw, RENEWAL_THRESHOLD.accepts);
  return n;
}

function parseChoice<T extends string>(raw: RawValue, choices: readonly T[], what: string): T {
  const found = choices.find((choice) => choice === raw.text);
  if (found === undefined) throw invalid(raw, what);
  return found;
}

function parseBoolean(raw: RawValue): boolean {
  if (/^(true|1)$/i.test(raw.text)) return true;
  if (/^(false|0)$/i.test(raw.text)) return false;
  throw invalid(raw, "true, false, 1 or 0");
}

/**
 * Splits a comma-separated list. An empty entry (`a,,b`, `a,`, `,`) is refused rather than
 * skipped, because these lists narrow what the agent touches: a template such as
 * `"${V4},${V6}"` with both variables unset gives `,`, and reading that as "no entry", which
 * means "every destination", would widen the aim instead of stopping. Only an empty (or blank)
 * variable means "no entry", as documented; a flag given as `''` is refused, so that it cannot
 * silently override a variable that named a pool.
 */
function splitList(raw: RawValue, what: string, whole: string): string[] {
  if (raw.text.trim() === "") {
    if (!raw.fromFlag) return [];
    throw invalid(raw, what, `the list is empty; to ${whole}, leave out ${raw.flag}`);
  }
  const items = raw.text.split(",").map((item) => item.trim());
  const empty = items.indexOf("");
  if (empty >= 0) {
    throw invalid(raw, what, `entry ${empty + 1} of ${items.length} is empty`);
  }
  return items;
}

function parseCidrs(raw: RawValue, whole: string): Cidr[] {
  const items = splitList(raw, "comma-separated CIDR blocks", whole);
  return items.map((item) => {
    try {
      return parseCidr(item);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      // parseCidr's message repeats the value; keep only the reason after its first colon.
      const why = error.message.slice(error.message.indexOf(": ") + 2);
      const detail = items.length > 1 ? `${JSON.stringify(item)}: ${why}` : why;
      throw invalid(raw, "comma-separated CIDR blocks", detail);
    }
  });
}

function parsePorts(raw: RawValue): number[] {
  const items = splitList(raw, "comma-separated ports 1-65535", "touch every port");
  const ports = items.map((item) => {
    const port = /^[0-9]{1,5}$/.test(item) ? Number(item) : 0;
    if (port < 1 || port > 65535) {
      throw invalid(raw, "comma-separated ports 1-65535", `bad port ${JSON.stringify(item)}`);
    }
    return port;
  });
  return [...new Set(ports)];
}

function parseMetricsAddress(raw: RawValue): Config["metricsAddress"] {
  if (raw.text === "") return undefined;
  const what = "host:port, [ipv6]:port, :port or empty";
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(raw.text);
  let hostname: string;
  let portText: string;
  if (bracketed !== null) {
    hostname = bracketed[1] ?? "";
    portText = bracketed[2] ?? "";
    let isIpv6 = false;
    try {
      isIpv6 = parseAddress(hostname).family === "ipv6";
    } catch {
      // reported below
    }
    if (!isIpv6) throw invalid(raw, what, `${JSON.stringify(hostname)} is not an IPv6 address`);
  } else {
    const colon = raw.text.lastIndexOf(":");
    if (colon === -1) throw invalid(raw, what, "the port is missing");
    hostname = raw.text.slice(0, colon);
    portText = raw.text.slice(colon + 1);
    if (hostname.includes(":")) throw invalid(raw, what, "put an IPv6 address in brackets");
    if (hostname === "") hostname = "0.0.0.0";
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(hostname)) {
      throw invalid(raw, what, `${JSON.stringify(hostname)} is not a host name or IPv4 address`);
    }
  }
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : 0;
  if (port < 1 || port > 65535) throw invalid(raw, what, "the port must be 1-65535");
  return { hostname, port };
}

/** The commander attribute name of a long flag: `--dump-frequency` → `dumpFrequency`. */
function attributeName(flag: string): string {
  return flag.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function describe(spec: FlagSpec): string {
  // An empty include filter means every flow; an empty exclude filter means none.
  const fallback = spec.default !== ""
    ? spec.default
    : spec.flag.startsWith("--exclude")
    ? "none"
    : "all";
  return `${spec.help}; accepts ${spec.accepts} (default: ${fallback}; env: ${spec.env})`;
}

const HELP_FOOTER = "\nEvery option can also be set through the environment variable shown; " +
  "a flag wins over its variable.\n";

/** The outcome of running commander, before any option value is validated. */
type Parsed =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "version"; readonly program: Command }
  | { readonly kind: "run" | "scan"; readonly program: Command; readonly scan: Command };

function runCommander(args: readonly string[]): Parsed {
  let helpText = "";
  let invoked: "run" | "scan" = "run";
  const program = new Command("conntrack-cleaner")
    .description(
      "Delete stale TCP SYN_SENT [UNREPLIED] conntrack entries without DNAT so that clients " +
        "retrying to a new LoadBalancer VIP get through.",
    )
    .exitOverride()
    .configureOutput({
      writeOut: (text) => {
        helpText += text;
      },
      writeErr: () => {},
      outputError: () => {},
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
      // Commander would otherwise read NO_COLOR from the global process.env.
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    })
    .configureHelp({ showGlobalOptions: true })
    .addHelpText("after", HELP_FOOTER)
    .option("-V, --version", "print the version and exit");
  for (const spec of FLAG_SPECS) {
    const option = new Option(
      spec.value === undefined ? spec.flag : `${spec.flag} ${spec.value}`,
      describe(spec),
    );
    if (spec.repeatable) {
      option.argParser((value: string, previous: string[] | undefined) => [
        ...(previous ?? []),
        value,
      ]);
    }
    program.addOption(option);
  }
  program.action(() => {
    invoked = "run";
  });
  // Commander only adds `help [command]` by itself when the program has no action of its own.
  program.helpCommand(true);
  const scan = program.command("scan")
    .description("List unreplied entries and the verdict on each; delete nothing.")
    .option("--json", "print one JSON object per entry instead of a table")
    .option("--watch", "scan again after every dump interval until interrupted")
    .action(() => {
      invoked = "scan";
    });

  try {
    program.parse([...args], { from: "user" });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    if (error.code === "commander.helpDisplayed" || error.code === "commander.help") {
      return { kind: "help", text: helpText };
    }
    if (error.code === "commander.excessArguments") {
      // Commander ends this message with the surplus arguments: "... but got 1: foo."
      const extra = /got [0-9]+: (.*)\.$/.exec(error.message)?.[1] ?? "";
      throw new ConfigError(
        `Cannot parse the command line: unexpected argument(s) ${JSON.stringify(extra)} ` +
          `(the only commands are scan and help; see --help)`,
      );
    }
    const why = error.message.replace(/^error: /, "").replace(/\s*\n\s*/g, " ").trim();
    throw new ConfigError(`Cannot parse the command line: ${why} (see --help)`);
  }
  if (program.getOptionValue("version") === true) {
    return { kind: "version", program: program as unknown as Command };
  }
  return { kind: invoked, program, scan: scan as unknown as Command };
}

/** An option's value from its flag, else its environment variable; `undefined` when neither. */
function readRaw(
  program: Command,
  env: (name: string) => string | undefined,
  spec: FlagSpec,
): RawValue | undefined {
  const key = attributeName(spec.flag);
  if (program.getOptionValueSource(key) === "cli") {
    const value: unknown = program.getOptionValue(key);
    const text = Array.isArray(value) ? value.join(",") : value === true ? "true" : String(value);
    return { text, name: `${spec.flag} (${spec.env})`, fromFlag: true, flag: spec.flag };
  }
  const fromEnv = env(spec.env);
  if (fromEnv !== undefined) {
    return { text: fromEnv, name: `${spec.env} (${spec.flag})`, fromFlag: false, flag: spec.flag };
  }
  return undefined;
}

function buildConfig(
  program: Command,
  env: (name: string) => string | undefined,
  stdoutIsTerminal: boolean,
): Config {
  const read = (spec: FlagSpec): RawValue | undefined => readRaw(program, env, spec);
  const orDefault = (spec: FlagSpec): RawValue =>
    read(spec) ??
      { text: spec.default, name: `${spec.flag} (${spec.env})`, fromFlag: false, flag: spec.flag };

  const logFormat = read(LOG_FORMAT);
  return {
    periodMs: parseDuration(orDefault(DUMP_FREQUENCY), 100, DUMP_FREQUENCY.accepts),
    renewalThreshold: parseCount(orDefault(RENEWAL_THRESHOLD)),
    unrepliedMaxAgeMs: parseMaxAge(orDefault(UNREPLIED_MAX_AGE)),
    busyLimit: parsePercent(orDefault(BUSY_LIMIT)),
    conntrackBin: parseProgram(orDefault(CONNTRACK_BIN)),
    dryRun: parseBoolean(orDefault(DRY_RUN)),
    logFormat: logFormat === undefined
      ? (stdoutIsTerminal ? "text" : "json")
      : parseChoice<LogFormat>(logFormat, ["json", "text"], LOG_FORMAT.accepts),
    logLevel: parseChoice<LogLevel>(
      orDefault(LOG_LEVEL),
      ["debug", "info", "warning", "error"],
      LOG_LEVEL.accepts,
    ),
    metricsAddress: parseMetricsAddress(orDefault(METRICS_ADDRESS)),
    destinations: parseCidrs(orDefault(DESTINATIONS), "touch every destination"),
    excludeDestinations: parseCidrs(orDefault(EXCLUDE_DESTINATIONS), "exclude nothing"),
    ports: parsePorts(orDefault(PORTS)),
    natSource: parseChoice<NatSource>(
      orDefault(NAT_SOURCE),
      ["auto", "iptables", "nftables", "off"],
      NAT_SOURCE.accepts,
    ),
    deleteBackend: parseChoice<Backend>(
      orDefault(DELETE_BACKEND),
      ["auto", "netlink", "cli"],
      DELETE_BACKEND.accepts,
    ),
    listBackend: parseChoice<Backend>(
      orDefault(LIST_BACKEND),
      ["auto", "netlink", "cli"],
      LIST_BACKEND.accepts,
    ),
    tracking: parseChoice<TrackingChoice>(
      orDefault(TRACKING),
      ["auto", "events", "dump"],
      TRACKING.accepts,
    ),
    resyncPeriodMs: parseDuration(orDefault(RESYNC_PERIOD), 10_000, RESYNC_PERIOD.accepts),
    eventBufferBytes: parseBytes(orDefault(EVENT_BUFFER)),
  };
}

function parseBytes(raw: RawValue): number {
  const n = /^[0-9]{1,10}$/.test(raw.text) ? Number(raw.text) : NaN;
  if (!(n >= 1 && n <= 2 ** 30)) throw invalid(raw, EVENT_BUFFER.accepts);
  return n;
}

/**
 * `0` turns the age rule off; anything else must be at least 1s, because conntrack reports
 * ages and timers in whole seconds, so a shorter age cannot be measured.
 */
function parseMaxAge(raw: RawValue): number {
  let ms: number;
  try {
    ms = parseGoDuration(raw.text);
  } catch {
    throw invalid(raw, UNREPLIED_MAX_AGE.accepts);
  }
  if (ms !== 0 && ms < 1000) throw invalid(raw, UNREPLIED_MAX_AGE.accepts);
  return ms;
}

/** `25%` → 0.25; whole or decimal percentages from 1% to 100%, the `%` sign required. */
function parsePercent(raw: RawValue): number {
  const match = /^\s*(\d{1,3}(?:\.\d{1,2})?)%\s*$/.exec(raw.text);
  const percent = match ? Number(match[1]) : NaN;
  if (!(percent >= 1 && percent <= 100)) throw invalid(raw, BUSY_LIMIT.accepts);
  return percent / 100;
}

function parseProgram(raw: RawValue): string {
  if (raw.text.trim() === "") throw invalid(raw, CONNTRACK_BIN.accepts);
  return raw.text;
}

/**
 * Parses the command line and environment into what the user asked for.
 *
 * Precedence per option: flag, then environment variable (an empty variable counts as set), then
 * the default. Every value is validated here; `--version` and `--help` (or `-V`, `-h`, `help`)
 * skip validation. Commander never prints or exits: help comes back as text.
 *
 * @param args The arguments after the program name (`Deno.args`).
 * @param env Reads one environment variable (`Deno.env.get` in production).
 * @param stdoutIsTerminal Whether stdout is a terminal; picks the default log format.
 * @returns The invocation.
 * @throws {ConfigError} On an unknown flag, an extra argument or an invalid value.
 *
 * @example
 * ```ts
 * import { parseInvocation } from "./command_line.ts";
 * const env = new Map([["CONNTRACK_TABLE_DUMP_FREQUENCY", "2s"]]);
 * const invocation = parseInvocation(["--dry-run"], (name) => env.get(name), false);
 * if (invocation.kind === "run") {
 *   invocation.config.periodMs; // 2000
 *   invocation.config.dryRun; // true
 * }
 * ```
 */
export function parseInvocation(
  args: readonly string[],
  env: (name: string) => string | undefined,
  stdoutIsTerminal: boolean,
): Invocation {
  const parsed = runCommander(args);
  switch (parsed.kind) {
    case "help":
      return parsed;
    case "version":
      return {
        kind: "version",
        conntrackBin: readRaw(parsed.program, env, CONNTRACK_BIN)?.text ?? CONNTRACK_BIN.default,
      };
    case "run":
      return { kind: "run", config: buildConfig(parsed.program, env, stdoutIsTerminal) };
    case "scan":
      return {
        kind: "scan",
        config: buildConfig(parsed.program, env, stdoutIsTerminal),
        json: parsed.scan.getOptionValue("json") === true,
        watch: parsed.scan.getOptionValue("watch") === true,
      };
  }
}
