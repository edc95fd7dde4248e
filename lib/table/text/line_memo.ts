/**
 * A memo of the lines of the previous listing, so that a table that changes little costs a
 * lookup per line rather than a parse.
 *
 * Between two listings an unreplied entry's line changes only in its timer: everything after the
 * timer (state, both tuples, zones, mark, `id=`) is the same text. The memo keeps, per kernel entry
 * id, that text and what the tokenizer made of it; a line whose id and text after the timer are
 * both the same as last time gets the remembered result with the new timer, and any other line is
 * tokenized. The text comparison is what makes the shortcut safe: the 32-bit id alone could name
 * two different entries, the whole text cannot.
 *
 * Only lines in the layout the agent lists (`tcp      6 TIMER ... id=N`) are remembered. With
 * `-o ktimestamp` or kernel timestamps on, `delta-time=` changes every second, so those lines are
 * tokenized every time: correct, only slower.
 *
 * @module
 */
import { ownCopy } from "./_own_copy.ts";
import { digitsValue } from "./_digits.ts";
import type { Candidate } from "../../core/flow.ts";
import { OTHER_LINE, type ParsedLine, tokenizeLine } from "./tokenizer.ts";

/** What the memo keeps of one line. Mutated in place: replacing it every listing costs more. */
interface Slot {
  /** The line from the space after the timer to its end, copied out of its chunk. */
  readonly rest: string;
  /** The candidate the tokenizer read (its timeout is stale), or undefined for `other`. */
  readonly candidate: Candidate | undefined;
  /** The listing that last saw the line. */
  seen: number;
}

/** How the agent's listing lines begin: the protocol padded to eight characters, then `6`. */
const HEAD = "tcp      6 ";
const ID = " id=";
const MAX_U32 = 0xffff_ffff;
const ZERO = 48;

/**
 * Remembers the lines of the latest listing. Call {@link LineMemo.begin} before a listing,
 * {@link LineMemo.read} for each of its lines and {@link LineMemo.end} after it; lines not seen in a
 * listing are forgotten at its end, so memory holds one listing's lines at most.
 *
 * @example The second sighting of an entry is a lookup, with the new timer
 * ```ts
 * import { LineMemo } from "./line_memo.ts";
 * const memo = new LineMemo();
 * const line = (timer: number) =>
 *   `tcp      6 ${timer} SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 ` +
 *   `[UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1 id=7`;
 * memo.begin();
 * memo.read(line(119));
 * memo.end();
 * memo.begin();
 * const parsed = memo.read(line(118)); // remembered: no parse
 * memo.end();
 * parsed.kind === "candidate" && parsed.candidate.timeout; // 118
 * ```
 */
export class LineMemo {
  readonly #slots = new Map<number, Slot>();
  #listing = 0;
  #seen = 0;

  /** Starts a listing. */
  begin(): void {
    this.#listing++;
    this.#seen = 0;
  }

  /** What `line` is: the remembered result when the line is known, else the tokenizer's. */
  read(line: string): ParsedLine {
    const timerEnd = line.startsWith(HEAD) ? timerEndOf(line) : -1;
    const id = timerEnd < 0 ? -1 : trailingId(line, timerEnd);
    if (id < 0) return tokenizeLine(line);
    // The slot's text, which includes `id=`, is what identifies the line; the id only finds the
    // slot, so it may be cut to 30 bits, which V8 keeps as a small integer (a larger number is
    // a heap object, allocated and hashed at twice the cost). Two ids that meet there cost a
    // parse, never a wrong answer.
    const slotKey = id & 0x3fff_ffff;
    const slot = this.#slots.get(slotKey);
    // A second line with an id already read in this listing (a duplicate, or two entries whose
    // ids collide) is tokenized and leaves the memo alone.
    const fresh = slot === undefined || slot.seen !== this.#listing;
    if (fresh && slot !== undefined && sameRest(slot.rest, line, timerEnd)) {
      slot.seen = this.#listing;
      this.#seen++;
      if (slot.candidate === undefined) return OTHER_LINE;
      const timeout = digitsValue(line, HEAD.length, timerEnd);
      return { kind: "candidate", candidate: withTimeout(slot.candidate, timeout) };
    }
    const parsed = tokenizeLine(line);
    if (fresh && parsed.kind !== "malformed") {
      this.#slots.set(slotKey, {
        rest: ownCopy(line.slice(timerEnd)),
        candidate: parsed.kind === "candidate" ? parsed.candidate : undefined,
        seen: this.#listing,
      });
      this.#seen++;
    } else if (fresh && slot !== undefined) {
      // The entry behind this id now prints a malformed line: remember nothing of it.
      this.#slots.delete(slotKey);
    }
    return parsed;
  }

  /** Ends a listing: forgets the lines it did not print. */
  end(): void {
    if (this.#slots.size === this.#seen) return;
    // Deleting the current entry while iterating a Map is well defined in JavaScript.
    for (const [id, slot] of this.#slots) {
      if (slot.seen !== this.#listing) this.#slots.delete(id);
    }
  }

  /** Lines remembered. */
  get size(): number {
    return this.#slots.size;
  }
}

/** Where the timer after {@link HEAD} ends (the space after it), or -1 when it is not canonical. */
function timerEndOf(line: string): number {
  const start = HEAD.length;
  const end = line.indexOf(" ", start);
  if (end <= start || end - start > 10) return -1;
  if (line.charCodeAt(start) === ZERO && end - start > 1) return -1;
  for (let i = start; i < end; i++) {
    const c = line.charCodeAt(i) - ZERO;
    if (c < 0 || c > 9) return -1;
  }
  return digitsValue(line, start, end) > MAX_U32 ? -1 : end;
}

/**
 * The id of a line that ends in ` id=N` (N canonical, at most 32 bits) after `from`, read
 * backwards from the end; -1 for any other line.
 */
function trailingId(line: string, from: number): number {
  const end = line.length;
  let start = end;
  while (start > from && isDigit(line.charCodeAt(start - 1))) start--;
  if (start === end || end - start > 10 || start - ID.length < from) return -1;
  if (line.charCodeAt(start) === ZERO && end - start > 1) return -1;
  for (let i = 0; i < ID.length; i++) {
    if (line.charCodeAt(start - ID.length + i) !== ID.charCodeAt(i)) return -1;
  }
  const value = digitsValue(line, start, end);
  return value > MAX_U32 ? -1 : value;
}

function isDigit(code: number): boolean {
  return code >= ZERO && code <= ZERO + 9;
}

function sameRest(rest: string, line: string, from: number): boolean {
  // A slice and `===` compare natively; `endsWith` was ten times slower here.
  return line.length - from === rest.length && line.slice(from) === rest;
}

/** The candidate of a remembered line with the timer of its latest sighting. */
function withTimeout(c: Candidate, timeout: number): Candidate {
  // Spelled out rather than spread: one object of the same shape every time.
  if (c.deltaTime === undefined) {
    return c.id === undefined
      ? { flow: c.flow, key: c.key, timeout }
      : { flow: c.flow, key: c.key, timeout, id: c.id };
  }
  return c.id === undefined
    ? { flow: c.flow, key: c.key, timeout, deltaTime: c.deltaTime }
    : { flow: c.flow, key: c.key, timeout, deltaTime: c.deltaTime, id: c.id };
}
