/**
 * Test doubles for the outside world: a virtual clock, a recording logger, and a fake conntrack
 * whose in-memory table applies the same exact-match rule as the kernel does for `-D` lines.
 *
 * @module
 */
import type { Clock } from "../lib/seams/clock.ts";
import type { SpawnCommand, SpawnedProcess } from "../lib/seams/spawn.ts";
import type { Flow } from "../lib/core/flow.ts";
import type { Logger, LogProperties } from "../lib/seams/logger.ts";

/** A clock whose time moves only when a test (or a sleep) moves it. */
export class FakeClock implements Clock {
  #now: number;
  #wallOffset: number;
  readonly sleeps: number[] = [];
  constructor(start = 1_000_000, wallStart = Date.UTC(2026, 10, 25)) {
    this.#now = start;
    this.#wallOffset = wallStart - start;
  }
  monotonic(): number {
    return this.#now;
  }
  wall(): number {
    return this.#now + this.#wallOffset;
  }
  advance(ms: number): void {
    this.#now += ms;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    if (!signal?.aborted) this.#now += ms;
    return Promise.resolve();
  }
}

/** One logged record. */
export interface LogRecord {
  readonly level: "debug" | "info" | "warn" | "error";
  readonly message: string;
  readonly properties: LogProperties;
}

/** A logger that keeps every record for assertions. */
export class RecordingLogger implements Logger {
  readonly records: LogRecord[] = [];
  debug(message: string, properties: LogProperties = {}): void {
    this.records.push({ level: "debug", message, properties });
  }
  info(message: string, properties: LogProperties = {}): void {
    this.records.push({ level: "info", message, properties });
  }
  warn(message: string, properties: LogProperties = {}): void {
    this.records.push({ level: "warn", message, properties });
  }
  error(message: string, properties: LogProperties = {}): void {
    this.records.push({ level: "error", message, properties });
  }
  messages(level?: LogRecord["level"]): string[] {
    return this.records.filter((r) => !level || r.level === level).map((r) => r.message);
  }
}

/** An entry of the fake table. */
export interface FakeEntry {
  readonly flow: Flow;
  state: "SYN_SENT" | "ESTABLISHED";
  /** Monotonic ms at which the entry expires. */
  expires: number;
  readonly created: number;
  readonly id: number;
}

/** What the fake should do on the next listings, for failure tests. */
export type ListBehaviour =
  | { readonly kind: "ok" }
  | { readonly kind: "fail"; readonly code: number; readonly stderr: string }
  | { readonly kind: "garbage"; readonly lines: readonly string[] };

/**
 * A conntrack with an in-memory table, driven by a {@link FakeClock}. `-L` prints the table in
 * conntrack's default format (timer = whole seconds left, rounded down), `-R -` applies `-D`
 * lines with exact tuple, zone and state matching and prints what it deleted.
 */
export class FakeConntrack {
  readonly table: FakeEntry[] = [];
  readonly spawned: string[][] = [];
  readonly stdins: string[] = [];
  behaviour: ListBehaviour = { kind: "ok" };
  #nextId = 1;
  constructor(readonly clock: FakeClock) {}

  add(
    flow: Flow,
    options: { state?: "SYN_SENT" | "ESTABLISHED"; timeoutS?: number } = {},
  ): FakeEntry {
    const now = this.clock.monotonic();
    const entry: FakeEntry = {
      flow,
      state: options.state ?? "SYN_SENT",
      expires: now + (options.timeoutS ?? 120) * 1000,
      created: now,
      id: this.#nextId++,
    };
    this.table.push(entry);
    return entry;
  }

  count(kind: "-L" | "-R"): number {
    return this.spawned.filter((args) => args[0] === kind).length;
  }

  readonly spawn: SpawnCommand = (_program, args, options = {}) => {
    this.spawned.push([...args]);
    if (args[0] === "--version") return respond(0, "", "conntrack v1.4.7 (conntrack-tools)\n");
    if (args[0] === "-L") return this.#list();
    if (args[0] === "-R") return this.#restore(options.stdin ?? "");
    return respond(2, "", `conntrack v1.4.7 (conntrack-tools): unknown option ${args[0]}\n`);
  };

  #live(): FakeEntry[] {
    const now = this.clock.monotonic();
    for (let i = this.table.length - 1; i >= 0; i--) {
      if (this.table[i]!.expires <= now) this.table.splice(i, 1);
    }
    return this.table;
  }

  #list(): SpawnedProcess {
    const b = this.behaviour;
    if (b.kind === "fail") return respond(b.code, "", b.stderr);
    if (b.kind === "garbage") return respond(0, b.lines.map((l) => l + "\n").join(""), "");
    const now = this.clock.monotonic();
    const text = this.#live().map((e) => render(e, now) + "\n").join("");
    return respond(0, text, "");
  }

  #restore(stdin: string): SpawnedProcess {
    this.stdins.push(stdin);
    const now = this.clock.monotonic();
    let out = "";
    for (const line of stdin.split("\n").filter((l) => l.length > 0)) {
      const want = parseDeleteLine(line);
      const live = this.#live();
      for (let i = live.length - 1; i >= 0; i--) {
        const e = live[i]!;
        if (e.state === want.state && sameTarget(e.flow, want)) {
          out += render(e, now) + "\n";
          live.splice(i, 1);
        }
      }
    }
    return respond(0, out, "");
  }
}

function respond(code: number, stdout: string, stderr: string): SpawnedProcess {
  return {
    stdout: ReadableStream.from([new TextEncoder().encode(stdout)]),
    status: Promise.resolve({ code, stderr }),
  };
}

/** Renders an entry the way `conntrack -L` prints it. */
export function render(e: FakeEntry, now: number): string {
  const o = e.flow.original;
  const r = e.flow.reply;
  const timer = Math.max(0, Math.floor((e.expires - now) / 1000));
  const unreplied = e.state === "SYN_SENT" ? " [UNREPLIED]" : "";
  const assured = e.state === "ESTABLISHED" ? " [ASSURED]" : "";
  const zone = e.flow.zone !== 0 ? ` zone=${e.flow.zone}` : "";
  return `tcp      6 ${timer} ${e.state} src=${o.src} dst=${o.dst} sport=${o.sport} ` +
    `dport=${o.dport}${unreplied} src=${r.src} dst=${r.dst} sport=${r.sport} dport=${r.dport}` +
    `${assured} mark=0${zone} use=1 id=${e.id}`;
}

interface DeleteTarget {
  readonly values: ReadonlyMap<string, string>;
  readonly state: string;
}

function parseDeleteLine(line: string): DeleteTarget {
  const words = line.trim().split(/\s+/);
  const values = new Map<string, string>();
  for (let i = 1; i < words.length; i += 2) values.set(words[i]!, words[i + 1] ?? "");
  return { values, state: values.get("--state") ?? "" };
}

/** The kernel's `-D` semantics: every given option must match; an absent one matches anything. */
function sameTarget(flow: Flow, want: DeleteTarget): boolean {
  const o = flow.original;
  const r = flow.reply;
  const actual: Record<string, string> = {
    "-p": "tcp",
    "-s": o.src,
    "-d": o.dst,
    "--sport": String(o.sport),
    "--dport": String(o.dport),
    "-r": r.src,
    "-q": r.dst,
    "--reply-port-src": String(r.sport),
    "--reply-port-dst": String(r.dport),
    "-w": String(flow.zone),
  };
  for (const [option, value] of want.values) {
    if (option === "--state") continue;
    if (actual[option] !== value) return false;
  }
  return true;
}

/** A flow from the client 198.51.100.2 (or 2001:db8::2) to the VIP, un-NATed. */
export function staleFlow(
  sport: number,
  options: { v6?: boolean; zone?: number; dport?: number } = {},
): Flow {
  const client = options.v6 ? "2001:db8::2" : "198.51.100.2";
  const vip = options.v6 ? "2001:db8:100::10" : "192.0.2.10";
  const dport = options.dport ?? 80;
  return {
    family: options.v6 ? "ipv6" : "ipv4",
    original: { src: client, dst: vip, sport, dport },
    reply: { src: vip, dst: client, sport: dport, dport: sport },
    zone: options.zone ?? 0,
  };
}

/** A program that prints nothing and never exits until its signal aborts it (then: code 143). */
export const hangingSpawn: SpawnCommand = (_program, _args, options = {}) => {
  let close = () => {};
  const stdout = new ReadableStream<Uint8Array>({
    start(controller) {
      close = () => controller.close();
    },
  });
  const status = new Promise<{ code: number; stderr: string }>((resolve) => {
    options.signal?.addEventListener("abort", () => {
      close();
      resolve({ code: 143, stderr: "" });
    });
  });
  return { stdout, status };
};
