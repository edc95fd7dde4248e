import assert from "node:assert/strict";
import {
  ConfigError,
  type Invocation,
  OPTIONS,
  parseInvocation,
} from "../lib/operator/command_line.ts";
import { parseCidr } from "../lib/core/cidr.ts";
import { runToEnd } from "../lib/seams/spawn.ts";
import type { Config } from "../lib/operator/config.ts";
import { denoSpawn } from "../lib/seams/spawn_deno.ts";

type Env = Readonly<Record<string, string>>;

function parse(args: readonly string[], env: Env = {}, terminal = false): Invocation {
  return parseInvocation(args, (name) => env[name], terminal);
}

function config(args: readonly string[], env: Env = {}, terminal = false): Config {
  const invocation = parse(args, env, terminal);
  assert.equal(invocation.kind, "run");
  return (invocation as Extract<Invocation, { kind: "run" }>).config;
}

function spec(flag: string) {
  const found = OPTIONS.find((option) => option.flag === flag);
  assert.ok(found, `no option ${flag}`);
  return found;
}

/** Asserts a ConfigError of one line naming the source used first, then the other, and the value. */
function assertRejected(flag: string, value: string, via: "flag" | "env"): void {
  const { env } = spec(flag);
  const run = via === "flag" ? () => parse([flag, value]) : () => parse([], { [env]: value });
  const first = via === "flag" ? `${flag} (${env})` : `${env} (${flag})`;
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `${flag}=${value} via ${via}: ${error}`);
    assert.ok(
      error.message.startsWith(`Cannot parse ${first} as `),
      `message names ${first} first: ${error.message}`,
    );
    assert.ok(
      error.message.includes(`current value is ${JSON.stringify(value)}`),
      `message quotes the value: ${error.message}`,
    );
    assert.ok(!error.message.includes("\n"), "message is one line");
    return true;
  });
}

const BAD_VALUES: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["--dump-frequency", ["banana", "1us", "-1s", "", "1", "99ms"]],
  ["--renewal-threshold", ["abc", "2.5", "-1", "", "1e3", " 3"]],
  ["--unreplied-max-age", ["banana", "1us", "-1s", "", "500ms", "1"]],
  ["--busy-limit", ["25", "0%", "0.5%", "101%", "-5%", "", "banana", "0.25", "1e2%"]],
  ["--conntrack", [""]],
  ["--log-format", ["xml", "", "JSON"]],
  ["--log-level", ["trace", "", "verbose"]],
  ["--metrics-address", ["9469", "::1:9469", "[banana]:9469", ":0", ":70000", "host:", "a b:1"]],
  ["--destination", ["192.0.2.0/33", "banana", "192.0.2.0/24,2001:db8::/129"]],
  ["--exclude-destination", ["300.0.0.0/8", "2001:db8::g/64"]],
  ["--port", ["0", "65536", "http", "80,-1", "1.5"]],
  ["--nat-source", ["ipchains", ""]],
  ["--delete-backend", ["ebpf", ""]],
  ["--list-backend", ["ebpf", "", "NETLINK"]],
];

for (const [flag, values] of BAD_VALUES) {
  for (const value of values) {
    for (const via of ["flag", "env"] as const) {
      Deno.test(
        `parseInvocation() rejects ${flag} ${JSON.stringify(value)} given by ${via}`,
        () => assertRejected(flag, value, via),
      );
    }
  }
}

Deno.test("parseInvocation() reads the busy limit as a share of the time", () => {
  assert.equal(config(["--busy-limit", "100%"]).busyLimit, 1);
  assert.equal(config(["--busy-limit", "1%"]).busyLimit, 0.01);
  assert.equal(config([], { CONNTRACK_CLEANER_BUSY_LIMIT: "50%" }).busyLimit, 0.5);
});

Deno.test("parseInvocation() reads the example message for a too-short dump frequency", () => {
  assert.throws(() => parse([], { CONNTRACK_TABLE_DUMP_FREQUENCY: "1us" }), {
    name: "ConfigError",
    message: "Cannot parse CONNTRACK_TABLE_DUMP_FREQUENCY (--dump-frequency) as a Go duration " +
      'of at least 100ms: current value is "1us"',
  });
});

Deno.test("parseInvocation() rejects DRY_RUN values other than true, false, 1 and 0", () => {
  for (const value of ["yes", "", "2", "on"]) {
    assert.throws(() => parse([], { DRY_RUN: value }), {
      name: "ConfigError",
      message: `Cannot parse DRY_RUN (--dry-run) as true, false, 1 or 0: current value is ` +
        JSON.stringify(value),
    });
  }
});

Deno.test("parseInvocation() reads DRY_RUN true, false, 1 and 0", () => {
  assert.equal(config([], { DRY_RUN: "true" }).dryRun, true);
  assert.equal(config([], { DRY_RUN: "TRUE" }).dryRun, true);
  assert.equal(config([], { DRY_RUN: "1" }).dryRun, true);
  assert.equal(config([], { DRY_RUN: "false" }).dryRun, false);
  assert.equal(config([], { DRY_RUN: "0" }).dryRun, false);
  assert.equal(config(["--dry-run"]).dryRun, true);
  assert.equal(config(["--dry-run"], { DRY_RUN: "false" }).dryRun, true);
});

Deno.test("parseInvocation() uses the documented defaults", () => {
  assert.deepEqual(config([]), {
    periodMs: 1000,
    renewalThreshold: 3,
    unrepliedMaxAgeMs: 10000,
    busyLimit: 0.2,
    conntrackBin: "conntrack",
    dryRun: false,
    logFormat: "json",
    logLevel: "info",
    metricsAddress: { hostname: "0.0.0.0", port: 9469 },
    destinations: [],
    excludeDestinations: [],
    ports: [],
    natSource: "auto",
    deleteBackend: "auto",
    listBackend: "auto",
    tracking: "auto",
    resyncPeriodMs: 300_000,
    eventBufferBytes: 8_388_608,
  });
});

Deno.test("parseInvocation() gives the same config for OPTIONS defaults set explicitly", () => {
  const env = Object.fromEntries(OPTIONS.map((option) => [option.env, option.default]));
  assert.deepEqual(config([], env), config([]));
});

Deno.test("parseInvocation() defaults to text logs on a terminal and JSON elsewhere", () => {
  assert.equal(config([], {}, true).logFormat, "text");
  assert.equal(config([], {}, false).logFormat, "json");
  assert.equal(config([], { LOG_FORMAT: "json" }, true).logFormat, "json");
  assert.equal(config(["--log-format", "text"], {}, false).logFormat, "text");
});

Deno.test("parseInvocation() reads every option from the environment", () => {
  assert.deepEqual(
    config([], {
      CONNTRACK_TABLE_DUMP_FREQUENCY: "1m30s",
      CONNECTION_RENEWAL_THRESHOLD: "0",
      CONNTRACK_UNREPLIED_MAX_AGE: "0",
      CONNTRACK_CLEANER_BUSY_LIMIT: "12.5%",
      CONNTRACK_BIN: "/usr/sbin/conntrack",
      DRY_RUN: "1",
      LOG_FORMAT: "text",
      LOG_LEVEL: "debug",
      METRICS_ADDRESS: "127.0.0.1:8080",
      CONNTRACK_CLEANER_DESTINATIONS: "192.0.2.0/24, 2001:db8::/32",
      CONNTRACK_CLEANER_EXCLUDE_DESTINATIONS: "192.0.2.53",
      CONNTRACK_CLEANER_PORTS: "80,443",
      CONNTRACK_CLEANER_NAT_SOURCE: "nftables",
      CONNTRACK_CLEANER_DELETE_BACKEND: "cli",
      CONNTRACK_CLEANER_LIST_BACKEND: "netlink",
      CONNTRACK_CLEANER_TRACKING: "dump",
      CONNTRACK_CLEANER_RESYNC_PERIOD: "1m",
      CONNTRACK_CLEANER_EVENT_BUFFER: "65536",
    }),
    {
      periodMs: 90_000,
      renewalThreshold: 0,
      unrepliedMaxAgeMs: 0,
      busyLimit: 0.125,
      conntrackBin: "/usr/sbin/conntrack",
      dryRun: true,
      logFormat: "text",
      logLevel: "debug",
      metricsAddress: { hostname: "127.0.0.1", port: 8080 },
      destinations: [parseCidr("192.0.2.0/24"), parseCidr("2001:db8::/32")],
      excludeDestinations: [parseCidr("192.0.2.53")],
      ports: [80, 443],
      natSource: "nftables",
      deleteBackend: "cli",
      listBackend: "netlink",
      tracking: "dump",
      resyncPeriodMs: 60_000,
      eventBufferBytes: 65_536,
    },
  );
});

Deno.test("parseInvocation() refuses a tracking mode, resync period or event buffer it cannot use", () => {
  for (
    const [env, value] of [
      ["CONNTRACK_CLEANER_TRACKING", "netlink"],
      ["CONNTRACK_CLEANER_RESYNC_PERIOD", "5s"],
      ["CONNTRACK_CLEANER_EVENT_BUFFER", "0"],
      ["CONNTRACK_CLEANER_EVENT_BUFFER", "2GiB"],
    ] as const
  ) {
    assert.throws(
      () => config([], { [env]: value }),
      (error: Error) =>
        error instanceof ConfigError &&
        error.message.startsWith(`Cannot parse ${env} (`) &&
        error.message.endsWith(`current value is ${JSON.stringify(value)}`),
      `${env}=${value}`,
    );
  }
});

Deno.test("parseInvocation() lets a flag beat its environment variable", () => {
  const env = {
    CONNTRACK_TABLE_DUMP_FREQUENCY: "banana",
    CONNECTION_RENEWAL_THRESHOLD: "7",
    LOG_LEVEL: "error",
    METRICS_ADDRESS: "",
    CONNTRACK_CLEANER_PORTS: "22",
  };
  const c = config(
    [
      "--dump-frequency",
      "250ms",
      "--renewal-threshold=5",
      "--log-level",
      "warning",
      "--metrics-address",
      ":9100",
      "--port",
      "8080",
    ],
    env,
  );
  assert.equal(c.periodMs, 250);
  assert.equal(c.renewalThreshold, 5);
  assert.equal(c.logLevel, "warning");
  assert.deepEqual(c.metricsAddress, { hostname: "0.0.0.0", port: 9100 });
  assert.deepEqual(c.ports, [8080]);
});

Deno.test("parseInvocation() lets an environment variable beat the default", () => {
  assert.equal(config([], { CONNECTION_RENEWAL_THRESHOLD: "7" }).renewalThreshold, 7);
  assert.equal(config([], { CONNTRACK_UNREPLIED_MAX_AGE: "1s" }).unrepliedMaxAgeMs, 1000);
});

Deno.test("parseInvocation() turns the metrics listener off with an empty address", () => {
  assert.equal(config([], { METRICS_ADDRESS: "" }).metricsAddress, undefined);
  assert.equal(config(["--metrics-address", ""]).metricsAddress, undefined);
});

Deno.test("parseInvocation() reads host:port, [ipv6]:port and :port metrics addresses", () => {
  const address = (value: string) => config(["--metrics-address", value]).metricsAddress;
  assert.deepEqual(address("127.0.0.1:9469"), { hostname: "127.0.0.1", port: 9469 });
  assert.deepEqual(address("localhost:1"), { hostname: "localhost", port: 1 });
  assert.deepEqual(address("[::1]:9469"), { hostname: "::1", port: 9469 });
  assert.deepEqual(address("[::]:65535"), { hostname: "::", port: 65535 });
  assert.deepEqual(address(":9469"), { hostname: "0.0.0.0", port: 9469 });
});

Deno.test("parseInvocation() collects repeated and comma-separated destinations", () => {
  const c = config([
    "--destination",
    "192.0.2.0/24",
    "--destination",
    "2001:db8::/32,::ffff:198.51.100.0/120",
    "--exclude-destination",
    "0.0.0.0/0",
    "--exclude-destination=::/0",
  ]);
  assert.deepEqual(c.destinations, [
    parseCidr("192.0.2.0/24"),
    parseCidr("2001:db8::/32"),
    parseCidr("::ffff:198.51.100.0/120"),
  ]);
  assert.deepEqual(c.excludeDestinations, [parseCidr("0.0.0.0/0"), parseCidr("::/0")]);
});

Deno.test("parseInvocation() collects repeated and comma-separated ports", () => {
  assert.deepEqual(config(["--port", "80", "--port", "443,8443"]).ports, [80, 443, 8443]);
  assert.deepEqual(config([], { CONNTRACK_CLEANER_PORTS: "1, 65535" }).ports, [1, 65535]);
});

Deno.test("parseInvocation() names the bad entry in a list", () => {
  assert.throws(
    () => parse([], { CONNTRACK_CLEANER_DESTINATIONS: "192.0.2.0/24,192.0.2.0/33" }),
    { message: /\("192\.0\.2\.0\/33": the prefix length must be 0-32 for IPv4\)$/ },
  );
});

Deno.test("parseInvocation() reads the scan subcommand with its own flags", () => {
  assert.deepEqual(
    { ...parse(["scan"]), config: undefined },
    { kind: "scan", config: undefined, json: false, watch: false },
  );
  const scan = parse(["--log-level", "debug", "scan", "--json", "--watch", "--port", "80"], {
    CONNTRACK_TABLE_DUMP_FREQUENCY: "5s",
  });
  assert.equal(scan.kind, "scan");
  if (scan.kind !== "scan") return;
  assert.equal(scan.json, true);
  assert.equal(scan.watch, true);
  assert.equal(scan.config.logLevel, "debug");
  assert.deepEqual(scan.config.ports, [80]);
  assert.equal(scan.config.periodMs, 5000);
});

Deno.test("parseInvocation() validates the options of scan too", () => {
  assert.throws(() => parse(["scan", "--renewal-threshold", "abc"]), {
    name: "ConfigError",
    message: "Cannot parse --renewal-threshold (CONNECTION_RENEWAL_THRESHOLD) as a non-negative " +
      'integer: current value is "abc"',
  });
});

Deno.test("parseInvocation() rejects scan's flags outside scan", () => {
  assert.throws(() => parse(["--json"]), {
    name: "ConfigError",
    message: "Cannot parse the command line: unknown option '--json' (see --help)",
  });
});

Deno.test("parseInvocation() rejects unknown flags in one line", () => {
  assert.throws(() => parse(["--prot", "80"]), {
    name: "ConfigError",
    message: "Cannot parse the command line: unknown option '--prot' (Did you mean --port?) " +
      "(see --help)",
  });
});

Deno.test("parseInvocation() rejects extra arguments and unknown commands", () => {
  for (const args of [["cleanup"], ["scan", "now"], ["--port", "80", "extra"]]) {
    assert.throws(() => parse(args), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /^Cannot parse the command line: unexpected argument/);
      assert.ok(error.message.includes(JSON.stringify(args.at(-1))));
      return true;
    });
  }
});

Deno.test("parseInvocation() rejects a flag missing its value", () => {
  assert.throws(() => parse(["--dump-frequency"]), {
    name: "ConfigError",
    message:
      /^Cannot parse the command line: option '--dump-frequency <duration>' argument missing/,
  });
});

Deno.test("parseInvocation() asks for the version with --version and -V", () => {
  const version = { kind: "version", conntrackBin: "conntrack" };
  assert.deepEqual(parse(["--version"]), version);
  assert.deepEqual(parse(["-V"]), version);
  // Asking for the version must work even when the environment is broken.
  assert.deepEqual(parse(["-V"], { CONNECTION_RENEWAL_THRESHOLD: "abc" }), version);
});

Deno.test("parseInvocation() names for --version the conntrack a run would use", () => {
  const bin = (args: readonly string[], env: Env = {}) => {
    const invocation = parse(args, env);
    return invocation.kind === "version" ? invocation.conntrackBin : invocation.kind;
  };
  assert.equal(bin(["--version", "--conntrack", "/opt/ct"]), "/opt/ct");
  assert.equal(bin(["--version"], { CONNTRACK_BIN: "/usr/sbin/conntrack" }), "/usr/sbin/conntrack");
  // The flag wins over the variable, as for a run.
  assert.equal(bin(["-V", "--conntrack", "/opt/ct"], { CONNTRACK_BIN: "/usr/sbin/ct" }), "/opt/ct");
});

Deno.test("parseInvocation() returns help listing every flag and environment variable", () => {
  for (const args of [["--help"], ["-h"], ["help"]]) {
    const invocation = parse(args, { CONNECTION_RENEWAL_THRESHOLD: "abc" });
    assert.equal(invocation.kind, "help", args.join(" "));
    if (invocation.kind !== "help") continue;
    assert.match(invocation.text, /^Usage: conntrack-cleaner /);
    for (const option of OPTIONS) {
      assert.ok(invocation.text.includes(option.flag), `${args}: help lists ${option.flag}`);
      // The help wraps lines, but never inside a name.
      assert.ok(invocation.text.includes(option.env), `${args}: help lists ${option.env}`);
    }
    assert.match(invocation.text, /\bscan\b/);
  }
});

Deno.test("parseInvocation() returns help for scan with its flags and the global ones", () => {
  for (const args of [["scan", "--help"], ["help", "scan"]]) {
    const invocation = parse(args);
    assert.equal(invocation.kind, "help");
    if (invocation.kind !== "help") continue;
    assert.match(invocation.text, /^Usage: conntrack-cleaner scan /);
    assert.match(invocation.text, /--json/);
    assert.match(invocation.text, /--watch/);
    for (const option of OPTIONS) assert.ok(invocation.text.includes(option.env), option.env);
  }
});

Deno.test("OPTIONS names each flag and environment variable once", () => {
  const flags = OPTIONS.map((option) => option.flag);
  const envs = OPTIONS.map((option) => option.env);
  assert.equal(new Set(flags).size, flags.length);
  assert.equal(new Set(envs).size, envs.length);
  for (const option of OPTIONS) {
    assert.match(option.flag, /^--[a-z][a-z-]+$/);
    assert.match(option.env, /^[A-Z][A-Z_]+$/);
  }
});

Deno.test("parseInvocation() rejects a dump frequency longer than a timer can wait", () => {
  assert.throws(
    () => parseInvocation(["--dump-frequency", "1000h"], () => undefined, false),
    /--dump-frequency.*"1000h" \(at most 596h\)/,
  );
  const ok = parseInvocation(["--dump-frequency", "596h"], () => undefined, false);
  assert.equal(ok.kind === "run" && ok.config.periodMs, 596 * 3600_000);
});

/** The three list options, each with one valid entry. */
const LISTS: ReadonlyArray<{ readonly flag: string; readonly entry: string }> = [
  { flag: "--destination", entry: "192.0.2.0/24" },
  { flag: "--exclude-destination", entry: "192.0.2.53/32" },
  { flag: "--port", entry: "80" },
];

/** Lists with no entry, or an empty one, refused from either source. */
const EMPTY_ENTRIES = [",", ",,", " , ", "ENTRY,,ENTRY", "ENTRY,", ",ENTRY", "ENTRY, ,ENTRY"];

for (const { flag, entry } of LISTS) {
  Deno.test(`parseInvocation() refuses ${flag} lists with an empty entry, as flag and variable`, () => {
    for (const form of EMPTY_ENTRIES) {
      const value = form.replaceAll("ENTRY", entry);
      assertRejected(flag, value, "flag");
      assertRejected(flag, value, "env");
      assert.throws(() => parse([flag, value]), { message: /entry \d+ of \d+ is empty\)$/ });
    }
  });

  Deno.test(`parseInvocation() refuses ${flag} given as '', also over a variable`, () => {
    const { env } = spec(flag);
    for (const value of ["", " "]) {
      assertRejected(flag, value, "flag");
      assert.throws(() => parse([flag, value], { [env]: entry }), ConfigError);
      assert.throws(() => parse([`${flag}=${value}`]), {
        message: /the list is empty; to .*, leave out/,
      });
    }
    // One empty occurrence among repeated flags is refused too.
    assert.throws(() => parse([flag, entry, flag, ""]), { message: /entry 2 of 2 is empty/ });
  });

  Deno.test(`parseInvocation() reads an empty or unset ${spec(flag).env} as no entry`, () => {
    const { env } = spec(flag);
    const key = flag === "--destination"
      ? "destinations"
      : flag === "--port"
      ? "ports"
      : "excludeDestinations";
    for (const value of [undefined, "", "  "]) {
      const list = config([], value === undefined ? {} : { [env]: value })[key];
      assert.deepEqual(list, [], `${env}=${JSON.stringify(value)}`);
    }
  });
}

Deno.test("main.ts exits 2 with one line for --destination ,", async () => {
  const root = new URL("../", import.meta.url).pathname;
  const cases: ReadonlyArray<{ args: string[]; env: Record<string, string> }> = [
    { args: ["--destination", ","], env: {} },
    { args: ["--destination", ""], env: { CONNTRACK_CLEANER_DESTINATIONS: "192.0.2.0/24" } },
    { args: [], env: { CONNTRACK_CLEANER_PORTS: "80,,443" } },
  ];
  for (const { args, env } of cases) {
    const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const out = await runToEnd(denoSpawn, "env", [
      ...assignments,
      Deno.execPath(),
      "run",
      "--no-check",
      `--config=${root}deno.json`,
      "--allow-env",
      `${root}main.ts`,
      ...args,
    ]);
    const stderr = out.stderr;
    assert.equal(out.code, 2, stderr);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(
      stderr,
      /^conntrack-cleaner: Cannot parse .*(DESTINATIONS|PORTS).*: current value is/,
    );
  }
});
