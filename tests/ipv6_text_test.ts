import assert from "node:assert/strict";
import { mulberry32 } from "../bench/random.ts";
import { formatIPv6 } from "../lib/core/address.ts";

/** Address family number of IPv6 on Linux. */
const AF_INET6 = 10;
/** `INET6_ADDRSTRLEN`: the longest IPv6 text plus its NUL. */
const INET6_ADDRSTRLEN = 46;

/** glibc's `inet_ntop`, or `undefined` when libc.so.6 cannot be opened (or FFI is not allowed). */
const libc = (() => {
  try {
    return Deno.dlopen(
      "libc.so.6",
      {
        inet_ntop: { parameters: ["i32", "buffer", "buffer", "u32"], result: "pointer" },
      } as const,
    );
  } catch {
    return undefined;
  }
})();
const noLibc = libc === undefined;

/** What glibc prints for the 16 bytes of `address`. */
function inetNtop(address: Uint8Array<ArrayBuffer>): string {
  assert.ok(libc !== undefined);
  const out = new Uint8Array(INET6_ADDRSTRLEN);
  const result = libc.symbols.inet_ntop(AF_INET6, address, out, out.length);
  assert.notEqual(result, null, "inet_ntop() failed");
  const nul = out.indexOf(0);
  assert.ok(nul !== -1, "inet_ntop() wrote no NUL");
  return new TextDecoder().decode(out.subarray(0, nul));
}

/** The 16 bytes of an address given as its 8 groups. */
function fromGroups(groups: readonly number[]): Uint8Array<ArrayBuffer> {
  assert.equal(groups.length, 8);
  const bytes = new Uint8Array(16);
  for (const [i, g] of groups.entries()) {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  }
  return bytes;
}

// Every expected text below was printed by glibc 2.36's inet_ntop(AF_INET6, ...); the test
// "table matches the inet_ntop() of this libc" re-checks them against the libc it runs on.
const TABLE: readonly (readonly [readonly number[], string])[] = [
  [[0, 0, 0, 0, 0, 0, 0, 0], "::"],
  [[0, 0, 0, 0, 0, 0, 0, 1], "::1"],
  [[0, 0, 0, 0, 0, 0, 0, 2], "::2"],
  [[0, 0, 0, 0, 0, 0, 0, 0x100], "::100"],
  [[0, 0, 0, 0, 0, 0, 0, 0xffff], "::ffff"],
  [[0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], "2001:db8::1"],
  // Two runs of two: the first is compressed.
  [[0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], "2001:db8::1:0:0:1"],
  // A run of two then a run of three: the longer one is compressed.
  [[0x2001, 0, 0, 1, 0, 0, 0, 1], "2001:0:0:1::1"],
  // A single zero group is written "0", not "::".
  [[0x2001, 0xdb8, 0, 1, 1, 1, 1, 1], "2001:db8:0:1:1:1:1:1"],
  [[0xfe80, 0, 0, 0, 0, 0, 0, 1], "fe80::1"],
  [[0xfe80, 0, 0, 0, 0x2aa, 0xff, 0xfe28, 0x9c5a], "fe80::2aa:ff:fe28:9c5a"],
  [[1, 0, 0, 0, 0, 0, 0, 0], "1::"],
  [[1, 0, 0, 0, 0, 0, 0, 1], "1::1"],
  [[0, 0, 1, 0, 0, 0, 0, 0], "0:0:1::"],
  [[0, 1, 0, 0, 0, 0, 0xc000, 0x201], "0:1::c000:201"],
  [
    [0x2001, 0xdb8, 0xabcd, 0xef01, 0x2345, 0x6789, 0xabcd, 0xef01],
    "2001:db8:abcd:ef01:2345:6789:abcd:ef01",
  ],
  [
    [0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff],
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
  ],
  // Embedded IPv4: a run of 5 from group 0 followed by ffff (IPv4-mapped).
  [[0, 0, 0, 0, 0, 0xffff, 0xc000, 0x201], "::ffff:192.0.2.1"],
  [[0, 0, 0, 0, 0, 0xffff, 0, 0], "::ffff:0.0.0.0"],
  [[0, 0, 0, 0, 0, 0xffff, 0, 1], "::ffff:0.0.0.1"],
  [[0, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff], "::ffff:255.255.255.255"],
  // Embedded IPv4: a run of exactly 6 from group 0 (IPv4-compatible).
  [[0, 0, 0, 0, 0, 0, 0xc000, 0x201], "::192.0.2.1"],
  [[0, 0, 0, 0, 0, 0, 1, 0], "::0.1.0.0"],
  [[0, 0, 0, 0, 0, 0, 1, 2], "::0.1.0.2"],
  [[0, 0, 0, 0, 0, 0, 0xffff, 0xffff], "::255.255.255.255"],
  // Not embedded IPv4: group 5 is not ffff, or the run is not 5 or 6 long from group 0.
  [[0, 0, 0, 0, 0, 0xfffe, 0xc000, 0x201], "::fffe:c000:201"],
  [[0, 0, 0, 0, 0, 1, 0xc000, 0x201], "::1:c000:201"],
  [[0, 0, 0, 0, 0xffff, 0, 0xc000, 0x201], "::ffff:0:c000:201"],
];

Deno.test("formatIPv6() writes the hand-picked addresses as glibc does", () => {
  for (const [groups, expected] of TABLE) {
    assert.equal(formatIPv6(fromGroups(groups), 0), expected, expected);
  }
});

Deno.test({
  name: "formatIPv6() table matches the inet_ntop() of this libc",
  ignore: noLibc,
  fn() {
    for (const [groups, expected] of TABLE) {
      assert.equal(inetNtop(fromGroups(groups)), expected, expected);
    }
  },
});

Deno.test("formatIPv6() never writes uppercase hex", () => {
  const text = formatIPv6(fromGroups([0xabcd, 0xef00, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf]), 0);
  assert.equal(text, "abcd:ef00:a:b:c:d:e:f");
  assert.equal(text, text.toLowerCase());
});

Deno.test("formatIPv6() reads the 16 bytes at offset and nothing around them", () => {
  const address = fromGroups([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
  for (const offset of [0, 1, 7, 24]) {
    // Non-zero filler on both sides, so a read outside the address would change the text.
    const buffer = new Uint8Array(offset + 16 + 9).fill(0xee);
    buffer.set(address, offset);
    assert.equal(formatIPv6(buffer, offset), "2001:db8::1", `offset ${offset}`);
  }
  const mapped = fromGroups([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x201]);
  const buffer = new Uint8Array(40).fill(0xff);
  buffer.set(mapped, 24);
  assert.equal(formatIPv6(buffer, 24), "::ffff:192.0.2.1");
});

Deno.test("formatIPv6() throws a RangeError when 16 bytes do not follow offset", () => {
  const buffer = new Uint8Array(20);
  assert.equal(formatIPv6(buffer, 4), "::");
  for (const offset of [5, 20, -1, 1.5, NaN]) {
    assert.throws(() => formatIPv6(buffer, offset), {
      name: "RangeError",
      message: new RegExp(`^Cannot format an IPv6 address at offset ${offset}: `),
    });
  }
});

Deno.test({
  name: "formatIPv6() matches inet_ntop() on every address built from 0, 1, ffff and abcd",
  ignore: noLibc,
  fn() {
    // 4^8 addresses: every placement of zero runs, with 1 and ffff in the embedded-IPv4 slots.
    const values = [0, 1, 0xffff, 0xabcd];
    const groups = [0, 0, 0, 0, 0, 0, 0, 0];
    const buffer = new Uint8Array(3 + 16 + 5);
    for (let n = 0; n < 4 ** 8; n++) {
      for (let i = 0, rest = n; i < 8; i++, rest >>= 2) groups[i] = values[rest & 3] as number;
      const address = fromGroups(groups);
      buffer.set(address, 3);
      const expected = inetNtop(address);
      assert.equal(formatIPv6(buffer, 3), expected, `groups ${groups.map((g) => g.toString(16))}`);
    }
  },
});

Deno.test({
  name: "formatIPv6() matches inet_ntop() on seeded random addresses",
  ignore: noLibc,
  fn() {
    const seed = 0x5eed_1e55;
    const random = mulberry32(seed);
    const word = () => Math.floor(random() * 0x10000);
    // Short values too, so every hex length and dotted-quad octet width shows up.
    const smallWord = () => Math.floor(random() * 0x10 ** (1 + Math.floor(random() * 4)));
    const groups = [0, 0, 0, 0, 0, 0, 0, 0];
    for (let n = 0; n < 20_000; n++) {
      const zeroChance = n < 10_000 ? 0.6 : 0; // half biased toward zero groups, half uniform
      for (let i = 0; i < 8; i++) {
        groups[i] = random() < zeroChance ? 0 : random() < 0.5 ? smallWord() : word();
      }
      // Sometimes force ffff in group 5, the IPv4-mapped marker.
      if (zeroChance > 0 && random() < 0.2) groups[5] = 0xffff;
      const address = fromGroups(groups);
      assert.equal(
        formatIPv6(address, 0),
        inetNtop(address),
        `seed ${seed}, case ${n}: groups ${groups.map((g) => g.toString(16))}`,
      );
    }
  },
});
