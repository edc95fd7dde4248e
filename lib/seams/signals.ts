/**
 * What the agent does with the signals it does not stop on.
 *
 * - `SIGUSR1`: Deno 2.9.2 and later start a V8 inspector on 127.0.0.1:9229 when the process gets
 *   `SIGUSR1` (denoland/deno#35738), whatever JavaScript listeners say, and offer no switch to turn
 *   that off. The agent runs with `--allow-ffi` and CAP_NET_ADMIN, so that port would hand any
 *   local user code execution with the agent's privileges. The signal is therefore set to
 *   `SIG_IGN` through libc. Deno installs its own handler ~500 ms after start, but its signal
 *   registry calls `sigaction` only on a signal's first registration: registering a listener of
 *   our own first makes that first registration ours, and the later one never undoes `SIG_IGN`.
 *   {@link SignalGuard.reassert} checks it again, in case a runtime changes that order.
 * - `SIGHUP`: operators send it meaning "reload". The configuration is read once at start, so the
 *   agent keeps running and says a restart applies changes (Deno's default would end it, exit 129).
 *
 * @module
 */
import { describeUnavailable, libraryPaths, openLibrary } from "./native_library.ts";

const SIGUSR1 = 10;
const SIG_IGN = 1n;
// SIG_ERR is (void (*)(int)) -1.
const SIG_ERR = 0xffff_ffff_ffff_ffffn;

const LIBC_SYMBOLS = {
  // sighandler_t signal(int signum, sighandler_t handler): the previous handler, or SIG_ERR.
  signal: { parameters: ["i32", "usize"], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The line logged for each `SIGHUP`. */
export const HANGUP_MESSAGE =
  "SIGHUP ignored: the configuration is read once at start; restart the agent to apply changes";

/** Sets a signal's disposition to "ignore"; returns whether it was ignored before. */
export type IgnoreSignal = (signo: number) => "was-ignored" | "was-handled";

/** The outcome of {@link guardSignals}. */
export type GuardResult =
  | {
    /** `SIGUSR1` is ignored; `SIGHUP` is reported. */
    readonly kind: "guarded";
    /** The guard. */
    readonly guard: SignalGuard;
  }
  | {
    /** `SIGUSR1` could not be ignored: it would open a debugger. */
    readonly kind: "unprotected";
    /** One line saying why and what fixes it. */
    readonly message: string;
  };

/** Keeps `SIGUSR1` ignored and reports `SIGHUP`. */
export interface SignalGuard extends Disposable {
  /**
   * Ignores `SIGUSR1` again if anything made it handled since; returns `true` when it had to.
   * One libc call: cheap enough for every cycle.
   */
  reassert(): boolean;
  /**
   * Where each `SIGHUP` is reported from now on; any that arrived before are reported at once.
   * Until this is called, hangups are only counted (the logger may not exist yet).
   */
  onHangup(report: () => void): void;
}

/**
 * Ignores `SIGUSR1` (so no signal can open Deno's inspector) and keeps the agent running on
 * `SIGHUP`. Call it first thing: until it runs, `SIGUSR1` has its default action (the process
 * ends), and from ~500 ms on Deno's inspector handler would be installed first.
 *
 * `ignore` defaults to libc's `signal(2)` through FFI; without `--allow-ffi` or libc the result is
 * `unprotected`, and the caller decides whether to go on.
 *
 * @example
 * ```ts
 * import { guardSignals } from "./signals.ts";
 * const result = guardSignals();
 * if (result.kind === "unprotected") console.error(result.message);
 * else result.guard[Symbol.dispose]();
 * ```
 */
export function guardSignals(ignore?: IgnoreSignal): GuardResult {
  // First, so that this registration is the one that installs the process's SIGUSR1 handler.
  // The listener itself never runs once the signal is ignored.
  const onUsr1 = () => {};
  Deno.addSignalListener("SIGUSR1", onUsr1);
  let pending = 0;
  let report: (() => void) | undefined;
  const onHup = () => {
    if (report) report();
    else pending++;
  };
  Deno.addSignalListener("SIGHUP", onHup);
  let close = () => {};
  if (!ignore) {
    const libc = openLibc();
    if (libc.kind === "missing") {
      return {
        kind: "unprotected",
        message: `Cannot ignore SIGUSR1, which would open a debugger on 127.0.0.1:9229, as ` +
          `libc cannot be loaded: current value is ${libc.reason}; run with --allow-ffi ` +
          `(deno task start and the compiled binary have it)`,
      };
    }
    ignore = libc.ignore;
    close = libc.close;
  }
  const ignoreSignal = ignore;
  ignoreSignal(SIGUSR1);
  return {
    kind: "guarded",
    guard: {
      reassert: () => ignoreSignal(SIGUSR1) === "was-handled",
      onHangup: (next) => {
        report = next;
        for (; pending > 0; pending--) next();
      },
      [Symbol.dispose]: () => {
        // SIGUSR1 stays ignored (the process is ending); only the listeners go.
        Deno.removeSignalListener("SIGUSR1", onUsr1);
        Deno.removeSignalListener("SIGHUP", onHup);
        close();
      },
    },
  };
}

function openLibc():
  | { readonly kind: "ok"; readonly ignore: IgnoreSignal; readonly close: () => void }
  | { readonly kind: "missing"; readonly reason: string } {
  const opened = openLibrary(libraryPaths("libc.so.6"), LIBC_SYMBOLS);
  if (opened.kind !== "ok") {
    return { kind: "missing", reason: describeUnavailable("libc.so.6", opened) };
  }
  const { library } = opened;
  return {
    kind: "ok",
    ignore: (signo) => {
      const previous = BigInt(library.symbols.signal(signo, SIG_IGN));
      if (previous === SIG_ERR) return "was-handled";
      return previous === SIG_IGN ? "was-ignored" : "was-handled";
    },
    close: () => library.close(),
  };
}
