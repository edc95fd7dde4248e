/**
 * The signal guard of {@link guardSignals}, taken when this module is evaluated. `main.ts`
 * imports it first, so it runs before the rest of the agent's modules (the npm packages take
 * ~100 ms to evaluate): until it runs, a `SIGUSR1` ends the process (the default action), and the
 * sooner Deno's first `SIGUSR1` registration is ours, the safer. Importing it has that effect on
 * purpose; nothing else should import it.
 *
 * @module
 */
import { type GuardResult, guardSignals } from "./signals.ts";

/** `SIGUSR1` ignored and `SIGHUP` reported since this module was evaluated, or why not. */
export const startupSignals: GuardResult = guardSignals();
