/**
 * What one line of conntrack text is, as the tokenizer reports it.
 *
 * @module
 */
import type { Candidate } from "../../core/flow.ts";

/**
 * What one line of conntrack output is.
 * - `candidate`: a TCP entry in `SYN_SENT` that has seen no reply, the only kind the agent acts on.
 * - `other`: a well-formed entry that is not a candidate, a blank line, or conntrack's summary
 *   line. Always the same frozen object, {@link OTHER_LINE}.
 * - `malformed`: a line conntrack could not have printed; `reason` names what is wrong.
 */
export type ParsedLine =
  | {
    /** A TCP `SYN_SENT [UNREPLIED]` entry. */
    readonly kind: "candidate";
    /** The entry. */
    readonly candidate: Candidate;
  }
  | {
    /** Well formed, nothing to act on. */
    readonly kind: "other";
  }
  | {
    /** Not something conntrack prints. */
    readonly kind: "malformed";
    /** One short line naming what is wrong, e.g. `bad port "70000" in sport=`. */
    readonly reason: string;
  };

/** The one result for every well-formed line that is not a candidate (never a new object). */
export const OTHER_LINE: ParsedLine = Object.freeze({ kind: "other" });
