/**
 * Time as the agent sees it, behind an interface so that tests step virtual time.
 *
 * @module
 */

/** The agent's view of time. */
export interface Clock {
  /** Monotonic milliseconds, for measuring intervals (never jumps with NTP). */
  monotonic(): number;
  /** Wall-clock milliseconds since the Unix epoch, for timestamps shown to people. */
  wall(): number;
  /**
   * Resolves after `ms` milliseconds, or early (without rejecting) when `signal` aborts.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: `performance.now()`, `Date.now()` and an abortable `setTimeout`. */
export const systemClock: Clock = {
  monotonic: () => performance.now(),
  wall: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener("abort", done, { once: true });
    }),
};
