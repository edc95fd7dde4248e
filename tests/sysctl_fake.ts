/**
 * A fake `sysctl` (and `ip netns list`) over an in-memory table, for the unit tests of the
 * host-state helpers: `sysctl -n NAME` and `sysctl -qw NAME=VALUE`, with parameters that can be
 * made to refuse writes.
 *
 * @module
 */
import type { SpawnCommand } from "../lib/seams/spawn.ts";

/** The fake kernel: its parameters, and the writes made in order. */
export class FakeSysctl {
  /** Current values; a missing name is a parameter the kernel lacks. */
  readonly values: Map<string, string>;
  /** Names whose writes fail with "Invalid argument". */
  readonly refuse = new Set<string>();
  /** Every successful write, as `NAME=VALUE`, in order. */
  readonly writes: string[] = [];
  /** Lines `ip netns list` prints. */
  namespaces: string[] = [];

  /** Starts with the given parameters. */
  constructor(values: Record<string, string>) {
    this.values = new Map(Object.entries(values));
  }

  /** The seam to hand to the code under test. */
  readonly spawn: SpawnCommand = (program, args) => {
    const [code, stdout, stderr] = program === "ip"
      ? [0, this.namespaces.map((n) => `${n}\n`).join(""), ""]
      : this.#sysctl(args);
    return {
      stdout: ReadableStream.from([new TextEncoder().encode(stdout)]),
      status: Promise.resolve({ code, stderr }),
    };
  };

  #sysctl(args: readonly string[]): [number, string, string] {
    const [flag, operand = ""] = args;
    if (flag === "-n") {
      const value = this.values.get(operand);
      return value === undefined
        ? [255, "", `sysctl: cannot stat /proc/sys/${operand.replaceAll(".", "/")}: No such file`]
        : [0, `${value}\n`, ""];
    }
    const [name = "", value = ""] = operand.split("=");
    if (this.refuse.has(name) || !this.values.has(name)) {
      return [255, "", `sysctl: setting key "${name}": Invalid argument`];
    }
    this.values.set(name, value);
    this.writes.push(operand);
    return [0, "", ""];
  }
}
