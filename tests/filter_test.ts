import assert from "node:assert/strict";
import { parseCidr } from "../lib/core/cidr.ts";
import { makeTargetFilter, type Target } from "../lib/core/target_filter.ts";
import type { Flow } from "../lib/core/flow.ts";

/** An un-NATed flow from a client to `dst:dport`. */
function flowTo(dst: string, dport: number): Flow {
  const src = dst.includes(":") ? "2001:db8:ffff::2" : "198.51.100.2";
  return {
    family: dst.includes(":") ? "ipv6" : "ipv4",
    original: { src, dst, sport: 40000, dport },
    reply: { src: dst, dst: src, sport: dport, dport: 40000 },
    zone: 0,
  };
}

function target(
  destinations: readonly string[],
  excludeDestinations: readonly string[] = [],
  ports: readonly number[] = [],
): Target {
  return {
    destinations: destinations.map(parseCidr),
    excludeDestinations: excludeDestinations.map(parseCidr),
    ports,
  };
}

Deno.test("makeTargetFilter() matches every flow when nothing is configured", () => {
  const inTarget = makeTargetFilter(target([]));
  assert.equal(inTarget(flowTo("192.0.2.10", 80)), true);
  assert.equal(inTarget(flowTo("2001:db8::10", 443)), true);
});

Deno.test("makeTargetFilter() matches only flows to the configured destinations", () => {
  const inTarget = makeTargetFilter(target(["192.0.2.0/24", "2001:db8:1::/48"]));
  assert.equal(inTarget(flowTo("192.0.2.10", 80)), true);
  assert.equal(inTarget(flowTo("203.0.113.10", 80)), false);
  assert.equal(inTarget(flowTo("2001:db8:1::10", 80)), true);
  assert.equal(inTarget(flowTo("2001:db8:2::10", 80)), false);
});

Deno.test("makeTargetFilter() lets an excluded destination win over an included one", () => {
  const inTarget = makeTargetFilter(target(["192.0.2.0/24"], ["192.0.2.53"]));
  assert.equal(inTarget(flowTo("192.0.2.10", 53)), true);
  assert.equal(inTarget(flowTo("192.0.2.53", 53)), false);
});

Deno.test("makeTargetFilter() with only exclusions matches everything else", () => {
  const inTarget = makeTargetFilter(target([], ["198.51.100.0/24", "2001:db8::/32"]));
  assert.equal(inTarget(flowTo("192.0.2.10", 80)), true);
  assert.equal(inTarget(flowTo("198.51.100.10", 80)), false);
  assert.equal(inTarget(flowTo("2001:db8::10", 80)), false);
});

Deno.test("makeTargetFilter() matches only the configured destination ports", () => {
  const inTarget = makeTargetFilter(target([], [], [80, 443]));
  assert.equal(inTarget(flowTo("192.0.2.10", 80)), true);
  assert.equal(inTarget(flowTo("192.0.2.10", 443)), true);
  assert.equal(inTarget(flowTo("192.0.2.10", 8080)), false);
});

Deno.test("makeTargetFilter() needs both a matching destination and a matching port", () => {
  const inTarget = makeTargetFilter(target(["192.0.2.0/24"], [], [443]));
  assert.equal(inTarget(flowTo("192.0.2.10", 443)), true);
  assert.equal(inTarget(flowTo("192.0.2.10", 80)), false);
  assert.equal(inTarget(flowTo("203.0.113.10", 443)), false);
});

Deno.test("makeTargetFilter() judges the original destination, not the reply source", () => {
  // A DNATed flow: the client dialled the VIP 192.0.2.10:80, a pod 203.0.113.7:8080 replies.
  const natted: Flow = {
    family: "ipv4",
    original: { src: "198.51.100.2", dst: "192.0.2.10", sport: 40000, dport: 80 },
    reply: { src: "203.0.113.7", dst: "198.51.100.2", sport: 8080, dport: 40000 },
    zone: 0,
  };
  assert.equal(makeTargetFilter(target(["192.0.2.10"], [], [80]))(natted), true);
  assert.equal(makeTargetFilter(target(["203.0.113.0/24"]))(natted), false);
  assert.equal(makeTargetFilter(target([], [], [8080]))(natted), false);
});

Deno.test("makeTargetFilter() bridges IPv4 and IPv4-mapped IPv6 destinations", () => {
  assert.equal(makeTargetFilter(target(["::ffff:192.0.2.0/120"]))(flowTo("192.0.2.10", 80)), true);
  assert.equal(makeTargetFilter(target(["192.0.2.0/24"]))(flowTo("::ffff:192.0.2.10", 80)), true);
  assert.equal(makeTargetFilter(target([], ["::ffff:0:0/96"]))(flowTo("192.0.2.10", 80)), false);
});

Deno.test("makeTargetFilter() keeps /0 blocks to their own family", () => {
  const v4Only = makeTargetFilter(target(["0.0.0.0/0"]));
  assert.equal(v4Only(flowTo("203.0.113.10", 80)), true);
  assert.equal(v4Only(flowTo("2001:db8::10", 80)), false);
  const v6Only = makeTargetFilter(target(["::/0"]));
  assert.equal(v6Only(flowTo("2001:db8::10", 80)), true);
  assert.equal(v6Only(flowTo("203.0.113.10", 80)), false);
});

Deno.test("makeTargetFilter() never matches a destination it cannot parse when blocks are set", () => {
  const odd = flowTo("not-an-address", 80);
  assert.equal(makeTargetFilter(target(["0.0.0.0/0"]))(odd), false);
  assert.equal(makeTargetFilter(target([], ["192.0.2.0/24"]))(odd), false);
});
