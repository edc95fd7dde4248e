import assert from "node:assert/strict";
import { createMetrics, type TrackingStatus } from "../lib/operator/metrics.ts";
import { findSample, parseExposition, sampleValue } from "./exposition.ts";

Deno.test("render() shows the tracking mode and event counts as they are at the scrape", async () => {
  let status: TrackingStatus = { mode: "events", eventsReceived: 0, eventsLost: 0, resyncs: 1 };
  const metrics = createMetrics({ version: "0.1.0", denoVersion: "2.9.6" }, {
    tracking: () => status,
  });
  let families = parseExposition(await metrics.render());
  assert.equal(sampleValue(families, "conntrack_cleaner_tracking_mode", { mode: "events" }), 1);
  assert.equal(sampleValue(families, "conntrack_cleaner_tracking_mode", { mode: "dump" }), 0);
  assert.equal(sampleValue(families, "conntrack_cleaner_resyncs_total"), 1);
  status = { mode: "events", eventsReceived: 1234, eventsLost: 2, resyncs: 3 };
  families = parseExposition(await metrics.render());
  assert.equal(families.get("conntrack_cleaner_events_received_total")?.type, "counter");
  assert.equal(sampleValue(families, "conntrack_cleaner_events_received_total"), 1234);
  assert.equal(sampleValue(families, "conntrack_cleaner_events_lost_total"), 2);
  assert.equal(sampleValue(families, "conntrack_cleaner_resyncs_total"), 3);
});

Deno.test("render() says dump mode, with no events, when tracking by dumps", async () => {
  const metrics = createMetrics({ version: "0.1.0", denoVersion: "2.9.6" }, {
    tracking: () => ({ mode: "dump", eventsReceived: 0, eventsLost: 0, resyncs: 0 }),
  });
  const families = parseExposition(await metrics.render());
  assert.equal(sampleValue(families, "conntrack_cleaner_tracking_mode", { mode: "dump" }), 1);
  assert.equal(sampleValue(families, "conntrack_cleaner_tracking_mode", { mode: "events" }), 0);
  assert.equal(sampleValue(families, "conntrack_cleaner_events_received_total"), 0);
});

Deno.test("render() exports no tracking metrics when not given the tracking", async () => {
  const metrics = createMetrics({ version: "0.1.0", denoVersion: "2.9.6" });
  const families = parseExposition(await metrics.render());
  assert.equal(
    findSample(families, "conntrack_cleaner_tracking_mode", { mode: "dump" }),
    undefined,
  );
});
