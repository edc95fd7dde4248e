/**
 * Steady-state cost of `Tracker.assess()`: the same keys in every dump, as when a node holds many
 * stuck SYN_SENT entries. Candidates per second = candidates / time per iteration.
 *
 * Run: `deno bench bench/tracker_bench.ts`
 *
 * @module
 */
import { type Candidate, type Flow, flowKey } from "../lib/core/flow.ts";
import { Tracker } from "../lib/core/tracker.ts";

/** `count` distinct un-NATed flows, half IPv4 and half IPv6, with realistic keys. */
function candidates(count: number): Candidate[] {
  return Array.from({ length: count }, (_, i) => {
    const sport = 1024 + (i % 60_000);
    const host = Math.floor(i / 60_000);
    const [src, dst] = i % 2 === 0
      ? [`198.51.${100 + (host % 100)}.${2 + (host % 250)}`, "192.0.2.10"]
      : [`2001:db8::${host.toString(16)}:2`, "2001:db8:100::10"];
    const flow: Flow = {
      family: i % 2 === 0 ? "ipv4" : "ipv6",
      original: { src, dst, sport, dport: 80 },
      reply: { src: dst, dst: src, sport: 80, dport: sport },
      zone: 0,
    };
    // Timers spread over the whole range, so that windows narrow, renew and overlap.
    return { flow, key: flowKey(flow), timeout: i % 120 };
  });
}

for (const count of [10_000, 100_000, 1_000_000]) {
  const dump = candidates(count);
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 10_000 });
  let start = 0;
  tracker.assess(dump, { start, end: start + 50 });
  Deno.bench({
    name: `Tracker.assess() of ${count} candidates, same keys every dump`,
    group: "assess",
    ...(count >= 1_000_000 ? { n: 10, warmup: 2 } : {}),
    fn: () => {
      // One second later with the same timers: windows overlap, the common "counting" path.
      start += 1000;
      const assessments = tracker.assess(dump, { start, end: start + 50 });
      if (assessments.length !== count) throw new Error("lost candidates");
    },
  });
}

/** Prints candidates per second for each size: best of three dumps after a warm-up. */
function printRates(): void {
  for (const count of [10_000, 100_000, 1_000_000]) {
    const dump = candidates(count);
    const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 10_000 });
    let start = 0;
    tracker.assess(dump, { start, end: start + 50 });
    let best = Infinity;
    for (let round = 0; round < 3; round++) {
      start += 1000;
      const t0 = performance.now();
      tracker.assess(dump, { start, end: start + 50 });
      best = Math.min(best, performance.now() - t0);
    }
    const rate = (count / (best / 1000) / 1e6).toFixed(2);
    console.log(`Tracker.assess(): ${count} candidates: ${rate}M candidates/s (best of 3)`);
  }
}

printRates();
