import assert from "node:assert/strict";
import { addressInCidr, cidrContains, parseAddress, parseCidr } from "../lib/core/cidr.ts";

Deno.test("parseAddress() reads IPv4 addresses as 32-bit integers", () => {
  assert.deepEqual(parseAddress("192.0.2.1"), { family: "ipv4", value: 0xc0000201n });
  assert.deepEqual(parseAddress("0.0.0.0"), { family: "ipv4", value: 0n });
  assert.deepEqual(parseAddress("255.255.255.255"), { family: "ipv4", value: 0xffffffffn });
});

Deno.test("parseAddress() reads every IPv6 text form as the same 128-bit integer", () => {
  const expected = 0x20010db8000000000000000000000001n;
  for (
    const text of [
      "2001:db8::1",
      "2001:DB8::1",
      "2001:0db8:0000:0000:0000:0000:0000:0001",
      "2001:db8:0:0:0:0:0:1",
      "2001:db8::0:1",
    ]
  ) {
    assert.deepEqual(parseAddress(text), { family: "ipv6", value: expected }, text);
  }
  assert.deepEqual(parseAddress("::"), { family: "ipv6", value: 0n });
  assert.deepEqual(parseAddress("::1"), { family: "ipv6", value: 1n });
  assert.deepEqual(parseAddress("2001:db8::"), { family: "ipv6", value: 0x20010db8n << 96n });
  assert.deepEqual(parseAddress("1:2:3:4:5:6:7::"), {
    family: "ipv6",
    value: 0x0001000200030004000500060007_0000n,
  });
});

Deno.test("parseAddress() reads an IPv4-mapped IPv6 address as IPv6", () => {
  assert.deepEqual(parseAddress("::ffff:192.0.2.1"), { family: "ipv6", value: 0xffffc0000201n });
  assert.deepEqual(parseAddress("::ffff:c000:201"), { family: "ipv6", value: 0xffffc0000201n });
});

for (
  const text of [
    "",
    "banana",
    "192.0.2",
    "192.0.2.1.5",
    "256.0.0.1",
    "01.2.3.4",
    "192.0.2.-1",
    " 192.0.2.1",
    ":::",
    "1::2::3",
    "2001:db8::g",
    "12345::",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8::",
    "fe80::1%eth0",
    "::192.0.2.1:1",
    "[2001:db8::1]",
  ]
) {
  Deno.test(`parseAddress() rejects ${JSON.stringify(text)} with a RangeError`, () => {
    assert.throws(() => parseAddress(text), {
      name: "RangeError",
      message: `Cannot parse ${JSON.stringify(text)} as an IP address: expected a dotted-quad ` +
        `IPv4 or an IPv6 address`,
    });
  });
}

Deno.test("parseCidr() reads IPv4, IPv6 and IPv4-mapped blocks", () => {
  assert.deepEqual(parseCidr("192.0.2.0/24"), {
    family: "ipv4",
    text: "192.0.2.0/24",
    network: 0xc0000200n,
    prefix: 24,
  });
  assert.deepEqual(parseCidr("2001:db8::/32"), {
    family: "ipv6",
    text: "2001:db8::/32",
    network: 0x20010db8n << 96n,
    prefix: 32,
  });
  assert.deepEqual(parseCidr("::ffff:192.0.2.0/120"), {
    family: "ipv6",
    text: "::ffff:192.0.2.0/120",
    network: 0xffffc0000200n,
    prefix: 120,
  });
});

Deno.test("parseCidr() treats a bare address as a block of one", () => {
  assert.equal(parseCidr("192.0.2.7").prefix, 32);
  assert.equal(parseCidr("2001:db8::7").prefix, 128);
});

Deno.test("parseCidr() accepts /0 for every address of a family", () => {
  assert.deepEqual(parseCidr("0.0.0.0/0"), {
    family: "ipv4",
    text: "0.0.0.0/0",
    network: 0n,
    prefix: 0,
  });
  assert.equal(parseCidr("::/0").network, 0n);
});

Deno.test("parseCidr() clears host bits but keeps the text as written", () => {
  const v4 = parseCidr("192.0.2.77/24");
  assert.equal(v4.network, 0xc0000200n);
  assert.equal(v4.text, "192.0.2.77/24");
  assert.equal(parseCidr("2001:db8::ffff/112").network, 0x20010db8n << 96n);
  assert.equal(parseCidr("203.0.113.200/0").network, 0n);
});

for (
  const [text, why] of [
    ["192.0.2.0/33", "the prefix length must be 0-32 for IPv4"],
    ["2001:db8::/129", "the prefix length must be 0-128 for IPv6"],
    ["192.0.2.0/-1", "the prefix length must be 0-32 for IPv4"],
    ["192.0.2.0/", "the prefix length must be 0-32 for IPv4"],
    ["192.0.2.0/24/1", "the prefix length must be 0-32 for IPv4"],
    ["192.0.2.0/08", "the prefix length must be 0-32 for IPv4"],
    ["192.0.2.0/ 8", "the prefix length must be 0-32 for IPv4"],
    ["192.0.2.0/x", "the prefix length must be 0-32 for IPv4"],
    ["192.0.2.256/24", '"192.0.2.256" is not an IP address'],
    ["/24", '"" is not an IP address'],
    ["banana", '"banana" is not an IP address'],
  ] as const
) {
  Deno.test(`parseCidr() rejects ${JSON.stringify(text)} with a RangeError`, () => {
    assert.throws(() => parseCidr(text), {
      name: "RangeError",
      message: `Cannot parse ${JSON.stringify(text)} as a CIDR block: ${why}`,
    });
  });
}

Deno.test("cidrContains() matches IPv4 addresses up to the block's edges", () => {
  const block = parseCidr("192.0.2.0/24");
  assert.equal(cidrContains(block, "192.0.2.0"), true);
  assert.equal(cidrContains(block, "192.0.2.255"), true);
  assert.equal(cidrContains(block, "192.0.1.255"), false);
  assert.equal(cidrContains(block, "192.0.3.0"), false);
  const one = parseCidr("198.51.100.7");
  assert.equal(cidrContains(one, "198.51.100.7"), true);
  assert.equal(cidrContains(one, "198.51.100.8"), false);
});

Deno.test("cidrContains() matches IPv6 addresses up to the block's edges", () => {
  const block = parseCidr("2001:db8::/32");
  assert.equal(cidrContains(block, "2001:db8::"), true);
  assert.equal(cidrContains(block, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), true);
  assert.equal(cidrContains(block, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"), false);
  assert.equal(cidrContains(block, "2001:db9::"), false);
  assert.equal(cidrContains(parseCidr("2001:db8::10/128"), "2001:db8::10"), true);
  assert.equal(cidrContains(parseCidr("2001:db8::10/128"), "2001:db8::11"), false);
});

Deno.test("cidrContains() matches an IPv4 address against an IPv4-mapped IPv6 block", () => {
  assert.equal(cidrContains(parseCidr("::ffff:192.0.2.0/120"), "192.0.2.10"), true);
  assert.equal(cidrContains(parseCidr("::ffff:192.0.2.0/120"), "192.0.3.10"), false);
  assert.equal(cidrContains(parseCidr("::ffff:0:0/96"), "203.0.113.5"), true);
});

Deno.test("cidrContains() matches an IPv4-mapped IPv6 address against an IPv4 block", () => {
  assert.equal(cidrContains(parseCidr("192.0.2.0/24"), "::ffff:192.0.2.10"), true);
  assert.equal(cidrContains(parseCidr("192.0.2.0/24"), "::ffff:198.51.100.1"), false);
  assert.equal(cidrContains(parseCidr("0.0.0.0/0"), "::ffff:198.51.100.1"), true);
});

Deno.test("cidrContains() keeps /0 blocks to their own family", () => {
  assert.equal(cidrContains(parseCidr("0.0.0.0/0"), "203.0.113.5"), true);
  assert.equal(cidrContains(parseCidr("0.0.0.0/0"), "2001:db8::1"), false);
  assert.equal(cidrContains(parseCidr("::/0"), "2001:db8::1"), true);
  assert.equal(cidrContains(parseCidr("::/0"), "203.0.113.5"), false);
  // A non-mapped IPv6 block never holds IPv4 addresses, even when its bits would line up.
  assert.equal(cidrContains(parseCidr("::c000:200/120"), "192.0.2.10"), false);
});

Deno.test("cidrContains() says no for an address that does not parse", () => {
  assert.equal(cidrContains(parseCidr("0.0.0.0/0"), "not-an-address"), false);
  assert.equal(cidrContains(parseCidr("::/0"), ""), false);
});

Deno.test("addressInCidr() agrees with cidrContains() on parsed addresses", () => {
  const block = parseCidr("198.51.100.0/25");
  for (const text of ["198.51.100.0", "198.51.100.127", "198.51.100.128", "::ffff:198.51.100.9"]) {
    assert.equal(addressInCidr(block, parseAddress(text)), cidrContains(block, text), text);
  }
});
