/**
 * CIDR blocks for the destination filters, and whether an address lies in one.
 *
 * Addresses (parsed in `address.ts`) are handled as integers (32-bit for IPv4, 128-bit for
 * IPv6) so that a containment test is one XOR and one shift. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as the
 * IPv4 address they carry when compared with a block of the other family, so a filter written
 * either way matches either way of printing the address.
 *
 * @module
 */
import { type Address, type AddressFamily, parseAddress, tryParseAddress } from "./address.ts";

// The address parser is re-exported because a block and the addresses it holds are read alike,
// and the command line reads both; it is defined once, in address.ts.
export { type Address, parseAddress };

/** A parsed CIDR block. IPv4-mapped IPv6 blocks (`::ffff:a.b.c.d/n`) are kept as IPv6. */
export interface Cidr {
  /** Address family. */
  readonly family: AddressFamily;
  /** The block as the user wrote it, for messages. */
  readonly text: string;
  /** Network address as a 32- or 128-bit integer, host bits cleared. */
  readonly network: bigint;
  /** Prefix length. */
  readonly prefix: number;
}

const BITS: Readonly<Record<AddressFamily, number>> = { ipv4: 32, ipv6: 128 };

/** `::ffff:0:0/96`, the prefix of IPv4-mapped IPv6 addresses. */
const MAPPED_PREFIX = 0xffffn << 32n;

/**
 * Parses a CIDR block such as `192.0.2.0/24`, `2001:db8::/32` or `::ffff:192.0.2.0/120`.
 *
 * A bare address is a block of one (`/32` or `/128`), and `/0` is every address of the family.
 * Host bits set in the address are cleared (`192.0.2.7/24` is `192.0.2.0/24`), so the block
 * behaves the way the prefix says; `text` keeps what the user wrote.
 *
 * @param text The block as written by the user.
 * @returns The parsed block.
 * @throws {RangeError} When the address or the prefix length is invalid.
 *
 * @example
 * ```ts
 * import { parseCidr } from "./cidr.ts";
 * const block = parseCidr("192.0.2.7/24");
 * block.prefix; // 24
 * block.network; // 3221225984n (192.0.2.0)
 * ```
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const address = tryParseAddress(addressText);
  if (address === undefined) {
    throw new RangeError(
      `Cannot parse ${JSON.stringify(text)} as a CIDR block: ` +
        `${JSON.stringify(addressText)} is not an IP address`,
    );
  }
  const bits = BITS[address.family];
  let prefix = bits;
  if (slash !== -1) {
    const prefixText = text.slice(slash + 1);
    prefix = /^(0|[1-9][0-9]{0,2})$/.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix <= bits)) {
      throw new RangeError(
        `Cannot parse ${JSON.stringify(text)} as a CIDR block: the prefix length must be ` +
          `0-${bits} for ${address.family === "ipv4" ? "IPv4" : "IPv6"}`,
      );
    }
  }
  const hostBits = BigInt(bits - prefix);
  const network = (address.value >> hostBits) << hostBits;
  return { family: address.family, text, network, prefix };
}

/**
 * Whether a parsed address lies in a block. See {@link cidrContains} for the IPv4-mapped rule.
 *
 * @example
 * ```ts
 * import { addressInCidr, parseAddress, parseCidr } from "./cidr.ts";
 * addressInCidr(parseCidr("192.0.2.0/24"), parseAddress("192.0.2.9")); // true
 * ```
 */
export function addressInCidr(cidr: Cidr, address: Address): boolean {
  let value = address.value;
  if (cidr.family !== address.family) {
    if (cidr.family === "ipv6") {
      // Only blocks inside ::ffff:0:0/96 hold IPv4 addresses; `::/0` must not mean "IPv4 too".
      if (cidr.prefix < 96 || cidr.network >> 32n !== 0xffffn) return false;
      value = MAPPED_PREFIX | value;
    } else if (value >> 32n === 0xffffn) {
      value = value & 0xffff_ffffn;
    } else {
      return false;
    }
  }
  return (value ^ cidr.network) >> BigInt(BITS[cidr.family] - cidr.prefix) === 0n;
}

/**
 * Whether an address, as conntrack prints it, lies in a block.
 *
 * Families are bridged through IPv4-mapped IPv6: the IPv4 address `192.0.2.9` lies in
 * `::ffff:192.0.2.0/120` and in `::ffff:0:0/96`, and the IPv6 address `::ffff:192.0.2.9` lies in
 * `192.0.2.0/24`. Only blocks inside `::ffff:0:0/96` hold IPv4 addresses, so `::/0` is "every
 * IPv6 destination" and `0.0.0.0/0` "every IPv4 destination" (plus IPv4-mapped IPv6 ones).
 * An address that does not parse lies in no block.
 *
 * @param cidr The block.
 * @param address The address text (IPv4 dotted quad or IPv6).
 * @returns `true` when the address is in the block.
 *
 * @example
 * ```ts
 * import { cidrContains, parseCidr } from "./cidr.ts";
 * cidrContains(parseCidr("2001:db8::/32"), "2001:db8::10"); // true
 * cidrContains(parseCidr("::ffff:192.0.2.0/120"), "192.0.2.10"); // true
 * cidrContains(parseCidr("192.0.2.0/24"), "198.51.100.1"); // false
 * ```
 */
export function cidrContains(cidr: Cidr, address: string): boolean {
  const parsed = tryParseAddress(address);
  return parsed !== undefined && addressInCidr(cidr, parsed);
}
