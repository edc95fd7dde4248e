/**
 * Cleanups that must also run when the process is interrupted. `await using` and `finally` do
 * not run when SIGINT or SIGTERM ends a process, so a benchmark stopped with Ctrl-C would leave
 * the host's conntrack limits raised and its namespaces behind. A cleanup registered here runs on
 * the first SIGINT or SIGTERM, newest first, and then the process exits as the signal would
 * have ended it (130 or 143).
 *
 * @module
 */

/** Undoes one change to the host. */
export type Cleanup = () => Promise<void>;

/**
 * Registers `cleanup` to run when the process is interrupted; disposing the returned handle
 * unregisters it. Injected, so unit tests can check the registration without signals.
 */
export type OnInterrupt = (cleanup: Cleanup) => Disposable;

const SIGNALS: readonly (readonly [Deno.Signal, number])[] = [["SIGINT", 130], ["SIGTERM", 143]];

const pending: Cleanup[] = [];
const listeners = new Map<Deno.Signal, () => void>();
let exiting = false;

/**
 * The process-wide {@link OnInterrupt}: registers `cleanup` with the SIGINT and SIGTERM
 * listeners of this process. The listeners exist only while a cleanup is registered, so a
 * process with none keeps the default signal behaviour.
 *
 * @example
 * ```ts ignore
 * import { cleanupOnInterrupt } from "./interrupt_cleanup.ts";
 * using _guard = cleanupOnInterrupt(async () => {
 *   await Deno.remove("/tmp/scratch", { recursive: true });
 * });
 * ```
 */
export const cleanupOnInterrupt: OnInterrupt = (cleanup) => {
  pending.push(cleanup);
  if (listeners.size === 0) {
    for (const [signal, code] of SIGNALS) {
      const listener = () => void runAndExit(code);
      Deno.addSignalListener(signal, listener);
      listeners.set(signal, listener);
    }
  }
  return {
    [Symbol.dispose]: () => {
      const at = pending.lastIndexOf(cleanup);
      if (at >= 0) pending.splice(at, 1);
      if (pending.length > 0 || exiting) return;
      // No listener left behind: it would keep the process alive and change how it dies.
      for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
      listeners.clear();
    },
  };
};

async function runAndExit(code: number): Promise<void> {
  // A second Ctrl-C while restoring must not cut the restore short.
  if (exiting) return;
  exiting = true;
  for (const cleanup of pending.splice(0).reverse()) {
    try {
      await cleanup();
    } catch (error) {
      console.error(`Cannot clean up after an interrupt: ${String(error)}`);
    }
  }
  Deno.exit(code);
}
