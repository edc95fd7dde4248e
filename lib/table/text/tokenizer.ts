/**
 * Reads one line of `conntrack -L` output into a typed result, by field name.
 *
 * The agent lists with `-o id`, so it reads the list forms only, and these are all understood:
 * the default form, `-o extended` (`ipv4 2` / `ipv6 10` first), `-o id`, `-o ktimestamp`
 * (`[start=...]`, which contains spaces), accounting (`packets=`/`bytes=` per direction), event
 * lines of `conntrack -E` and conntrack's summary line. Every line is checked in full, so a line
 * conntrack could not have printed is reported as malformed rather than half-read. The `-o save`
 * form (`-A -t 98 -u UNSET ...`), which the agent never asks for, is reported as malformed here;
 * its grammar lives with the tests (`tests/support/save_line.ts`), which read the save-form
 * fixtures with it in `tests/tokenizer_test.ts`.
 *
 * The tokenizer is on the hot path: one call per table entry per cycle. TCP lines in the
 * printer's field order, nearly all of a dump, are matched by native patterns
 * (`tcp_line_pattern.ts`), which V8 runs several times faster than any JavaScript character loop
 * (they cost 2-4 ns a character, a pattern about 0.5). Every other line goes to the field-by-field
 * reader (`list_line.ts`). Both give the same results (a test holds them to it), and what a
 * candidate keeps holds no part of the text its line was cut from (another test holds that).
 *
 * @module
 */
import { contentEnd, DASH, malformed, skipBlanks } from "./_scan.ts";
import { summaryLine, tokenizeListLine } from "./list_line.ts";
import { OTHER_LINE, type ParsedLine } from "./parsed_line.ts";
import { tokenizeTcpLine } from "./tcp_line_pattern.ts";

export { OTHER_LINE, type ParsedLine } from "./parsed_line.ts";

/**
 * Reads one line of conntrack output. Never throws.
 *
 * @example A candidate
 * ```ts
 * import { tokenizeLine } from "./tokenizer.ts";
 * const parsed = tokenizeLine(
 *   "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] " +
 *     "src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1",
 * );
 * if (parsed.kind === "candidate") parsed.candidate.flow.original.dport; // 80
 * ```
 *
 * @example Not a candidate, and not parseable
 * ```ts
 * import { OTHER_LINE, tokenizeLine } from "./tokenizer.ts";
 * tokenizeLine("") === OTHER_LINE; // true
 * tokenizeLine("tcp 6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=70000");
 * // { kind: "malformed", reason: 'bad port "70000" in sport=' }
 * ```
 */
export function tokenizeLine(line: string): ParsedLine {
  const first = line.charCodeAt(0);
  // Most lines of a dump are TCP entries in the printer's field order: one native pattern match
  // reads those several times faster than any character loop. Whatever it does not take, the
  // field-by-field reader decides, with a reason when malformed.
  if (first === 116 /* t */ || first === 105 /* i */) {
    const fast = tokenizeTcpLine(line);
    if (fast !== undefined) return fast;
  }
  return tokenizeLineByFields(line);
}

/**
 * The field-by-field reader behind {@link tokenizeLine}: takes fields in any order, understands
 * every form, and names what is wrong in a malformed line. {@link tokenizeLine} answers the
 * common TCP lines with one pattern first and gives the same result; this is exported so that
 * tests can hold the two to that.
 */
export function tokenizeLineByFields(line: string): ParsedLine {
  const end = contentEnd(line);
  const start = skipBlanks(line, 0, end);
  if (start === end) return OTHER_LINE;
  const first = line.charCodeAt(start);
  // The agent never asks for the save form; see the module doc for where it is read.
  if (first === DASH) return malformed("the -o save form is not read by the agent");
  if (first === 99 /* c */ && line.startsWith("conntrack v", start)) {
    return summaryLine(line.slice(start, end));
  }
  return tokenizeListLine(line, start, end);
}
