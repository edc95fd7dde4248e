import assert from "node:assert/strict";
import {
  addressBytes,
  formatAddress,
  hostPort,
  parseAddress,
  tryParseAddress,
} from "../lib/core/address.ts";
import { cidrContains, parseCidr } from "../lib/core/cidr.ts";

/** Text that is not one address, as inet_pton(3) would refuse it too. */
const NOT_ADDRESSES = [
  // Leading zeros: octal to some tools, decimal to others.
  "010.0.0.1",
  "192.0.2.01",
  "192.0.2.00",
  "::ffff:192.0.2.01",
  "2001:db8::010.0.0.1",
  // Zone ids, brackets, prefixes and white space are not part of an address.
  "fe80::1%eth0",
  "fe80::1%2",
  "[2001:db8::1]",
  "192.0.2.1/32",
  " 192.0.2.1",
  "2001:db8::1 ",
  // Wrong shapes.
  "",
  "192.0.2",
  "192.0.2.256",
  "1.2.3.4.5",
  "0x1.2.3.4",
  "2001:db8::1::2",
  "2001:db8:0:0:0:0:0:0:1",
  "1:2:3:4:5:6:7::8",
  "1:2:3:4:5:6::1.2.3.4",
  "1.2.3.4::",
  "::1.2.3.4:1",
  "2001:db8::12345",
  "2001:db8::g",
  ":1::",
  "1:::2",
];

for (const text of NOT_ADDRESSES) {
  Deno.test(`tryParseAddress() and its users refuse ${JSON.stringify(text)}`, () => {
    assert.equal(tryParseAddress(text), undefined);
    assert.throws(() => parseAddress(text), RangeError);
    assert.equal(addressBytes(text, "ipv4"), undefined);
    assert.equal(addressBytes(text, "ipv6"), undefined);
    // A block is an address and a prefix; the address part is refused the same way.
    assert.throws(() => parseCidr(`${text}/24`), RangeError);
    assert.equal(cidrContains(parseCidr("0.0.0.0/0"), text), false);
    assert.equal(cidrContains(parseCidr("::/0"), text), false);
  });
}

Deno.test("tryParseAddress() reads ::ffff:a.b.c.d as the IPv6 address it is", () => {
  const mapped = tryParseAddress("::ffff:192.0.2.1");
  assert.deepEqual(mapped, { family: "ipv6", value: 0xffff_c000_0201n });
  assert.deepEqual(tryParseAddress("::FFFF:c000:0201"), mapped);
  assert.deepEqual(tryParseAddress("0:0:0:0:0:ffff:192.0.2.1"), mapped);
  assert.equal(tryParseAddress("::ffff:192.0.2.1", "ipv4"), undefined);
  assert.deepEqual(
    [...addressBytes("::ffff:192.0.2.1", "ipv6") ?? []],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1],
  );
  assert.equal(formatAddress(parseAddress("0:0:0:0:0:FFFF:C000:201")), "::ffff:192.0.2.1");
});

Deno.test("tryParseAddress() keeps each family to its own text when asked", () => {
  assert.equal(tryParseAddress("192.0.2.1", "ipv6"), undefined);
  assert.equal(tryParseAddress("2001:db8::1", "ipv4"), undefined);
  assert.equal(addressBytes("192.0.2.1", "ipv6"), undefined);
  assert.equal(addressBytes("::1", "ipv4"), undefined);
});

Deno.test("formatAddress() gives back the text conntrack prints, whatever form was parsed", () => {
  const forms: readonly (readonly [string, string])[] = [
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["192.0.2.1", "192.0.2.1"],
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:1:1:1:1:0:1", "2001:db8:1:1:1:1:0:1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["::1", "::1"],
    ["::2", "::2"],
    ["::0.0.0.2", "::2"],
    ["::192.0.2.1", "::192.0.2.1"],
    ["1::", "1::"],
  ];
  for (const [text, printed] of forms) {
    assert.equal(formatAddress(parseAddress(text)), printed, text);
    // The printed form reads back as the same address, and prints the same again.
    assert.deepEqual(parseAddress(printed), parseAddress(text), printed);
  }
});

Deno.test("addressBytes() and parseAddress() agree on every address of a round trip", () => {
  for (const text of ["192.0.2.10", "2001:db8::10a", "::ffff:192.0.2.1", "::", "fe80::1"]) {
    const { family, value } = parseAddress(text);
    const bytes = addressBytes(text, family) ?? [];
    const fromBytes = [...bytes].reduce((v, b) => (v << 8n) | BigInt(b), 0n);
    assert.equal(fromBytes, value, text);
    assert.equal(bytes.length, family === "ipv4" ? 4 : 16, text);
  }
});

Deno.test("hostPort() brackets IPv6 addresses only", () => {
  assert.equal(hostPort("192.0.2.10", 80), "192.0.2.10:80");
  assert.equal(hostPort("2001:db8::10", 443), "[2001:db8::10]:443");
  assert.equal(hostPort("::ffff:192.0.2.1", 8080), "[::ffff:192.0.2.1]:8080");
  assert.equal(hostPort("localhost", 9100), "localhost:9100");
});
