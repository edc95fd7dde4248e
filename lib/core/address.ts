/**
 * IP addresses as text: the one parser and the one formatter of the agent.
 *
 * Parsing follows glibc's `inet_pton`: a dotted quad of four decimal octets without leading zeros
 * (`010.0.0.1` is refused, since some tools read it as octal and others as decimal), or an IPv6
 * address in any RFC 4291 text form, with `::` standing for at least one zero group and an
 * optional dotted-quad tail (`::ffff:192.0.2.1`). Zone ids (`fe80::1%eth0`), brackets, prefixes
 * and white space are not part of an address and are refused.
 *
 * Formatting follows glibc's `inet_ntop`, byte for byte, because `conntrack -L` prints addresses
 * through it and flows are matched by their text (see `Tuple` in `flow.ts`).
 *
 * The tokenizer of `conntrack -L` lines (`lib/table/text/`) checks addresses inline, as part of
 * its grammar, on the hot path of every listed line; it keeps its own validators on purpose and
 * hands on the text unchanged, so it needs neither the parser nor the formatter here.
 *
 * @module
 */

/** Address family, as conntrack names it in `-o extended` output. */
export type AddressFamily = "ipv4" | "ipv6";

/** A parsed IP address. */
export interface Address {
  /** Address family; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is `ipv6`. */
  readonly family: AddressFamily;
  /** The address as a 32-bit (IPv4) or 128-bit (IPv6) integer. */
  readonly value: bigint;
}

/** Bytes in an IPv6 address. */
const IPV6_BYTES = 16;

/** Groups of 16 bits in an IPv6 address. */
const GROUPS = 8;

/** A decimal octet as `inet_pton` reads it: no sign, no leading zero. */
const OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** A group of an IPv6 address: one to four hex digits (leading zeros are allowed there). */
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/**
 * Parses an IPv4 address (dotted quad) or an IPv6 address (any RFC 4291 text form, including
 * `::` compression and an embedded IPv4 tail such as `::ffff:192.0.2.1`), as `inet_pton` does.
 *
 * @param text The address, without brackets, prefix or zone.
 * @returns The address family and its integer value.
 * @throws {RangeError} When `text` is not an IP address.
 *
 * @example
 * ```ts
 * import { parseAddress } from "./address.ts";
 * parseAddress("192.0.2.1"); // { family: "ipv4", value: 3221225985n }
 * parseAddress("2001:db8::1").family; // "ipv6"
 * ```
 */
export function parseAddress(text: string): Address {
  const address = tryParseAddress(text);
  if (address !== undefined) return address;
  throw new RangeError(
    `Cannot parse ${JSON.stringify(text)} as an IP address: expected a dotted-quad IPv4 ` +
      `or an IPv6 address`,
  );
}

/**
 * Like {@link parseAddress}, for text that may well not be an address: `undefined` instead of an
 * exception. With `family`, text of the other family is `undefined` too.
 *
 * @param text The address, without brackets, prefix or zone.
 * @param family The only family to accept; either when not given.
 * @returns The parsed address, or `undefined`.
 *
 * @example
 * ```ts
 * import { tryParseAddress } from "./address.ts";
 * tryParseAddress("192.0.2.01"); // undefined (leading zero)
 * tryParseAddress("::ffff:192.0.2.1", "ipv4"); // undefined (IPv6 text)
 * tryParseAddress("::ffff:192.0.2.1", "ipv6")?.value; // 281473902969345n
 * ```
 */
export function tryParseAddress(text: string, family?: AddressFamily): Address | undefined {
  if (text.includes(":")) {
    if (family === "ipv4") return undefined;
    const groups = ipv6Groups(text);
    if (groups === undefined) return undefined;
    let value = 0n;
    for (const g of groups) value = (value << 16n) | BigInt(g);
    return { family: "ipv6", value };
  }
  if (family === "ipv6") return undefined;
  const value = ipv4Value(text);
  return value === undefined ? undefined : { family: "ipv4", value: BigInt(value) };
}

/**
 * An address in network byte order (4 bytes for IPv4, 16 for IPv6), as the kernel takes it in a
 * netlink attribute, or `undefined` when `text` is not an address of that family.
 *
 * @param text The address, without brackets, prefix or zone.
 * @param family The family the bytes are for.
 * @returns The bytes, or `undefined`.
 *
 * @example
 * ```ts
 * import { addressBytes } from "./address.ts";
 * addressBytes("192.0.2.10", "ipv4"); // Uint8Array [192, 0, 2, 10]
 * addressBytes("2001:db8::1", "ipv6")?.length; // 16
 * addressBytes("2001:db8::1", "ipv4"); // undefined
 * ```
 */
export function addressBytes(
  text: string,
  family: AddressFamily,
): Uint8Array<ArrayBuffer> | undefined {
  if (family === "ipv4") {
    const value = text.includes(":") ? undefined : ipv4Value(text);
    if (value === undefined) return undefined;
    return new Uint8Array([
      value >>> 24,
      (value >>> 16) & 0xff,
      (value >>> 8) & 0xff,
      value & 0xff,
    ]);
  }
  const groups = text.includes(":") ? ipv6Groups(text) : undefined;
  if (groups === undefined) return undefined;
  const bytes = new Uint8Array(IPV6_BYTES);
  for (const [i, g] of groups.entries()) {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  }
  return bytes;
}

/**
 * An address as text, the way conntrack prints it: a dotted quad for IPv4, and for IPv6 what
 * {@link formatIPv6} writes. Every text form of one address gives the same text, so the result
 * also serves as a key.
 *
 * @param address A parsed address.
 * @returns The address text.
 *
 * @example
 * ```ts
 * import { formatAddress, parseAddress } from "./address.ts";
 * formatAddress(parseAddress("2001:DB8:0:0::A")); // "2001:db8::a"
 * formatAddress(parseAddress("::ffff:c000:201")); // "::ffff:192.0.2.1"
 * formatAddress(parseAddress("192.0.2.1")); // "192.0.2.1"
 * ```
 */
export function formatAddress(address: Address): string {
  const { family, value } = address;
  if (family === "ipv4") {
    const v = Number(value & 0xffff_ffffn);
    return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
  }
  const bytes = new Uint8Array(IPV6_BYTES);
  for (let i = 0; i < IPV6_BYTES; i++) {
    bytes[i] = Number((value >> BigInt(8 * (IPV6_BYTES - 1 - i))) & 0xffn);
  }
  return formatIPv6(bytes, 0);
}

/**
 * Formats the IPv6 address held in the 16 bytes at `offset` of `bytes` (network byte order) the
 * way glibc's `inet_ntop(AF_INET6, …)` does, quirks included (RFC 5952 differs on both of the
 * last two points, so a generic formatter will not do):
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
 * import { formatIPv6 } from "./address.ts";
 * const bytes = new Uint8Array(16);
 * bytes.set([0x20, 0x01, 0x0d, 0xb8], 0);
 * bytes[15] = 1;
 * formatIPv6(bytes, 0); // "2001:db8::1"
 * bytes.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1], 0);
 * formatIPv6(bytes, 0); // "::ffff:192.0.2.1"
 * ```
 */
export function formatIPv6(bytes: Uint8Array, offset: number): string {
  if (!Number.isInteger(offset) || offset < 0 || offset + IPV6_BYTES > bytes.length) {
    throw new RangeError(
      `Cannot format an IPv6 address at offset ${offset}: the buffer holds ${bytes.length} ` +
        `bytes, and the offset must be an integer from 0 to ${bytes.length - IPV6_BYTES}`,
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

/**
 * An address and a port as one endpoint: `192.0.2.10:80`, or `[2001:db8::10]:443` for IPv6,
 * whose colons would otherwise run into the port's (RFC 3986's form). A host name, which has no
 * colon, is written like an IPv4 address.
 *
 * @param address The address (or host name) as text.
 * @param port The port.
 * @returns The endpoint text.
 *
 * @example
 * ```ts
 * import { hostPort } from "./address.ts";
 * hostPort("192.0.2.10", 80); // "192.0.2.10:80"
 * hostPort("2001:db8::10", 443); // "[2001:db8::10]:443"
 * ```
 */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Group `i` (0-7) of the address at `offset`; the caller has checked the bounds. */
function group(bytes: Uint8Array, offset: number, i: number): number {
  const at = offset + 2 * i;
  return ((bytes[at] as number) << 8) | (bytes[at + 1] as number);
}

/** A dotted quad as a 32-bit unsigned integer, or `undefined`. */
function ipv4Value(text: string): number | undefined {
  const octets = text.split(".");
  if (octets.length !== 4) return undefined;
  let value = 0;
  for (const octet of octets) {
    if (!OCTET.test(octet)) return undefined;
    const n = Number(octet);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value;
}

/** The 8 groups of an IPv6 address, or `undefined`. */
function ipv6Groups(text: string): number[] | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const [head = "", tail] = halves;
  const split = (part: string) => (part === "" ? [] : part.split(":"));
  if (tail === undefined) {
    const all = hexGroups(split(head), true);
    return all !== undefined && all.length === GROUPS ? all : undefined;
  }
  const left = hexGroups(split(head), false);
  const right = hexGroups(split(tail), true);
  // "::" stands for at least one zero group.
  if (left === undefined || right === undefined || left.length + right.length > GROUPS - 1) {
    return undefined;
  }
  return [...left, ...new Array<number>(GROUPS - left.length - right.length).fill(0), ...right];
}

/** Hex groups as numbers; a dotted quad, where allowed (last), counts as two groups. */
function hexGroups(parts: readonly string[], allowIpv4Tail: boolean): number[] | undefined {
  const out: number[] = [];
  for (const [index, part] of parts.entries()) {
    if (allowIpv4Tail && index === parts.length - 1 && part.includes(".")) {
      const v4 = ipv4Value(part);
      if (v4 === undefined) return undefined;
      out.push(Math.floor(v4 / 65536), v4 % 65536);
    } else if (HEX_GROUP.test(part)) {
      out.push(parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return out;
}
