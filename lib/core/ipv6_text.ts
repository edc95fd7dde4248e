/**
 * IPv6 addresses as text, exactly as glibc's `inet_ntop(AF_INET6, …)` writes them.
 *
 * `conntrack -L` prints addresses through `inet_ntop`, and flows are matched by their text (see
 * `Tuple` in `flow.ts`), so an address formatted here must be byte for byte what conntrack prints,
 * including glibc's quirks: a dotted-quad tail for `::a.b.c.d` and `::ffff:a.b.c.d`, and a run
 * of one zero group never compressed. RFC 5952 differs on both, so a generic formatter will not do.
 *
 * @module
 */

/** Bytes in an IPv6 address. */
const ADDRESS_BYTES = 16;

/** Groups of 16 bits in an IPv6 address. */
const GROUPS = 8;

/**
 * Formats the IPv6 address held in the 16 bytes at `offset` of `bytes` (network byte order) the
 * way glibc's `inet_ntop(AF_INET6, …)` does:
 *
 * - 8 groups of 16 bits in lowercase hex without leading zeros, separated by `:`;
 * - the longest run of two or more zero groups, the first one on a tie, written as `::`; a lone
 *   zero group is written `0`;
 * - when that run starts at group 0 and is 6 groups long (`::a.b.c.d`), or is 5 groups long and
 *   group 5 is `ffff` (`::ffff:a.b.c.d`), the last 32 bits are written as a dotted quad. A run of
 *   7 (`::2`) is written in hex, and so is the rest of every other address.
 *
 * @param bytes The buffer holding the address, e.g. a netlink attribute.
 * @param offset Where the address starts in `bytes`.
 * @returns The address text, e.g. `2001:db8::1` or `::ffff:192.0.2.1`.
 * @throws {RangeError} When `offset` is not an integer or fewer than 16 bytes follow it.
 *
 * @example
 * ```ts
 * import { formatIPv6 } from "./ipv6_text.ts";
 * const bytes = new Uint8Array(16);
 * bytes.set([0x20, 0x01, 0x0d, 0xb8], 0);
 * bytes[15] = 1;
 * formatIPv6(bytes, 0); // "2001:db8::1"
 * bytes.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1], 0);
 * formatIPv6(bytes, 0); // "::ffff:192.0.2.1"
 * ```
 */
export function formatIPv6(bytes: Uint8Array, offset: number): string {
  if (!Number.isInteger(offset) || offset < 0 || offset + ADDRESS_BYTES > bytes.length) {
    throw new RangeError(
      `Cannot format an IPv6 address at offset ${offset}: the buffer holds ${bytes.length} ` +
        `bytes, and the offset must be an integer from 0 to ${bytes.length - ADDRESS_BYTES}`,
    );
  }

  // Find the longest zero run; `>` rather than `>=` keeps the first of equal runs, as glibc does.
  let bestStart = -1;
  let bestLength = 0;
  let runStart = -1;
  for (let i = 0; i < GROUPS; i++) {
    if (group(bytes, offset, i) === 0) {
      if (runStart === -1) runStart = i;
      if (i - runStart + 1 > bestLength) {
        bestStart = runStart;
        bestLength = i - runStart + 1;
      }
    } else {
      runStart = -1;
    }
  }
  // glibc compresses only runs of two or more groups.
  if (bestLength < 2) bestStart = -1;
  const bestEnd = bestStart + bestLength;

  let text = "";
  for (let i = 0; i < GROUPS; i++) {
    if (bestStart !== -1 && i >= bestStart && i < bestEnd) {
      if (i === bestStart) text += ":";
      continue;
    }
    if (i !== 0) text += ":";
    // glibc's embedded-IPv4 forms. ISC-derived copies of this code also test for a 7-group run
    // (`::a.b.c.d` unless the last group is 1), but such a run covers group 6, so that test can
    // never pass here: inet_ntop writes `::2`, not `::0.0.0.2`.
    if (
      i === 6 && bestStart === 0 &&
      (bestLength === 6 || (bestLength === 5 && group(bytes, offset, 5) === 0xffff))
    ) {
      const at = offset + 12;
      return text + bytes[at] + "." + bytes[at + 1] + "." + bytes[at + 2] + "." + bytes[at + 3];
    }
    text += group(bytes, offset, i).toString(16);
  }
  // A run that reaches the end needs the second colon of `::` (e.g. `1::`, `::`).
  if (bestStart !== -1 && bestEnd === GROUPS) text += ":";
  return text;
}

/** Group `i` (0-7) of the address at `offset`; the caller has checked the bounds. */
function group(bytes: Uint8Array, offset: number, i: number): number {
  const at = offset + 2 * i;
  return ((bytes[at] as number) << 8) | (bytes[at + 1] as number);
}
