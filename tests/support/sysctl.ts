/**
 * Reading kernel parameters, and changing them for a while: {@link setSysctls} returns a change
 * that writes back exactly the values it found when disposed (`await using`), also when the code
 * in between throws, and also when the process is interrupted. The tests and benchmarks that need
 * a bigger conntrack table go through it, because `nf_conntrack_max` and `nf_conntrack_buckets`
 * are host-wide: left raised, they resize a real node's live conntrack hash.
 *
 * @module
 */
import { runToEnd } from "../../lib/seams/spawn.ts";
import type { SpawnCommand } from "../../lib/seams/spawn.ts";
import { cleanupOnInterrupt } from "./interrupt_cleanup.ts";
import type { OnInterrupt } from "./interrupt_cleanup.ts";

/** Values by sysctl name, e.g. `{ "net.netfilter.nf_conntrack_max": "262144" }`. */
export type SysctlValues = Readonly<Record<string, string>>;

/** `sysctl` could not read or write a parameter. */
export class SysctlError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "SysctlError";
  }
}

/**
 * Reads one parameter with `sysctl -n`; `undefined` when the kernel does not have it (for
 * example `net.netfilter.*` before the conntrack module is loaded).
 *
 * @example
 * ```ts ignore
 * import { readSysctl } from "./sysctl.ts";
 * import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
 * await readSysctl(denoSpawn, "net.netfilter.nf_conntrack_max"); // "262144"
 * ```
 */
export async function readSysctl(spawn: SpawnCommand, name: string): Promise<string | undefined> {
  const out = await runToEnd(spawn, "sysctl", ["-n", name]);
  if (out.code === 0) return out.stdout.trim();
  if (/cannot stat|no such file/i.test(out.stderr)) return undefined;
  throw new SysctlError(
    `Cannot read ${name} as sysctl exited ${out.code}: current value is "${out.stderr.trim()}"`,
  );
}

/**
 * Writes parameters in the given order with `sysctl -w`; throws {@link SysctlError} on the first
 * that fails.
 */
export async function writeSysctls(spawn: SpawnCommand, values: SysctlValues): Promise<void> {
  for (const [name, value] of Object.entries(values)) {
    const out = await runToEnd(spawn, "sysctl", ["-qw", `${name}=${value}`]);
    if (out.code !== 0) {
      throw new SysctlError(
        `Cannot set ${name} to ${value} as sysctl exited ${out.code}: ` +
          `current value is "${out.stderr.trim()}"`,
      );
    }
  }
}

/** A temporary change of parameters; disposing it writes the previous values back. */
export interface SysctlChange extends AsyncDisposable {
  /** The values found before the change, for the names that were changed. */
  readonly previous: SysctlValues;
  /** The values written. */
  readonly applied: SysctlValues;
}

/** Options of {@link setSysctls}. */
export interface SetSysctlsOptions {
  /**
   * Where the restore is registered to run if the process is interrupted before disposal.
   * @default {cleanupOnInterrupt}
   */
  readonly onInterrupt?: OnInterrupt;
}

/**
 * Writes `values` and returns a change that restores what was there before: in reverse order,
 * once, on disposal or on SIGINT/SIGTERM. If one write fails, the writes already made are undone
 * before the error propagates. A parameter the kernel lacks cannot be set and throws.
 *
 * @example
 * ```ts ignore
 * import { setSysctls } from "./sysctl.ts";
 * import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
 * {
 *   await using _limit = await setSysctls(denoSpawn, {
 *     "net.netfilter.nf_conntrack_max": "2097152",
 *   });
 *   // ... fill a big table ...
 * } // nf_conntrack_max is back to what it was, even if the block threw.
 * ```
 */
export async function setSysctls(
  spawn: SpawnCommand,
  values: SysctlValues,
  options: SetSysctlsOptions = {},
): Promise<SysctlChange> {
  const previous: Record<string, string> = {};
  for (const name of Object.keys(values)) {
    const value = await readSysctl(spawn, name);
    if (value === undefined) {
      throw new SysctlError(
        `Cannot set ${name} as the kernel does not have it: current value is unset`,
      );
    }
    previous[name] = value;
  }
  const written: Record<string, string> = {};
  let restored = false;
  const restore = async () => {
    if (restored) return;
    restored = true;
    // Every parameter gets its attempt, even after one fails: a half-restored host is worse.
    const failures: string[] = [];
    for (const name of Object.keys(written).reverse()) {
      try {
        await writeSysctls(spawn, { [name]: previous[name] ?? "" });
      } catch (error) {
        failures.push(errorText(error));
      }
    }
    if (failures.length > 0) throw new SysctlError(failures.join("; "));
  };
  // Registered before the first write: an interrupt in between must still restore.
  const guard = (options.onInterrupt ?? cleanupOnInterrupt)(restore);
  try {
    for (const [name, value] of Object.entries(values)) {
      // Recorded first: an interrupt during the write restores this one too (harmless if unset).
      written[name] = value;
      await writeSysctls(spawn, { [name]: value });
    }
  } catch (error) {
    guard[Symbol.dispose]();
    try {
      await restore();
    } catch (restoreError) {
      throw new AggregateError(
        [error, restoreError],
        `${errorText(error)}; ${errorText(restoreError)}`,
      );
    }
    throw error;
  }
  return {
    previous,
    applied: { ...values },
    [Symbol.asyncDispose]: async () => {
      guard[Symbol.dispose]();
      await restore();
    },
  };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
