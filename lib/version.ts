/**
 * The agent's version, taken from deno.json so there is one place to bump it.
 *
 * @module
 */
import meta from "../deno.json" with { type: "json" };

/** The agent's version, e.g. `0.1.0`. */
export const VERSION: string = meta.version;
