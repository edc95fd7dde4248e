import assert from "node:assert/strict";
import { type Candidate, type Flow, flowKey } from "../lib/core/flow.ts";
import { type DumpWindow, expiryWindow, Tracker } from "../lib/core/tracker.ts";
import type { Assessment } from "../lib/core/verdict.ts";
import type { NatRules } from "../lib/core/nat_rule.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

function flowOf(src: string, sport: number, dst: string, dport: number, zone = 0): Flow {
  return {
    family: src.includes(":") ? "ipv6" : "ipv4",
    original: { src, dst, sport, dport },
    reply: { src: dst, dst: src, sport: dport, dport: sport },
    zone,
  };
}

function candidateOf(
  flow: Flow,
  timeout: number,
  extra: { readonly deltaTime?: number; readonly id?: number } = {},
): Candidate {
  return { flow, key: flowKey(flow), timeout, ...extra };
}

const CLIENT = flowOf("198.51.100.2", 40000, "192.0.2.10", 80);
const CLIENT6 = flowOf("2001:db8::2", 40200, "2001:db8:100::10", 443);

/** The single assessment of a one-candidate dump. */
function only(assessments: readonly Assessment[]): Assessment {
  assert.equal(assessments.length, 1);
  const [first] = assessments;
  assert.ok(first !== undefined);
  return first;
}

/** A seeded xorshift32 generator of floats in [0, 1), so that failures can be replayed. */
function seededRandom(seed: number): () => number {
  let state = (seed * 2654435761) >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 4294967296;
  };
}

// Dump times are multiples of 1/1024 ms and retries fall halfway between two of them, so that
// all sums are exact in floating point and a retry never coincides with the kernel's read.
const TICK = 1 / 1024;
const quantize = (ms: number) => Math.floor(ms / TICK) * TICK;

/** SYN_SENT timeout that kernels before 5.14 set on every retried SYN. */
const SYN_SENT_TIMEOUT_MS = 120_000;

/**
 * A simulated kernel entry: created at `createdAt`, its timer reset to 120 s at each instant of
 * `renewals` (ascending). Answers what a dump prints at instant `t`.
 */
class SimulatedEntry {
  readonly #createdAt: number;
  readonly #renewals: readonly number[];

  constructor(createdAt: number, renewals: readonly number[]) {
    this.#createdAt = createdAt;
    this.#renewals = renewals;
  }

  /** Renewals the kernel made up to and including instant `t`. */
  renewalsUntil(t: number): number {
    let count = 0;
    for (const r of this.#renewals) if (r <= t) count++;
    return count;
  }

  /** Monotonic ms at which the entry expires, as known at instant `t`. */
  expiryAt(t: number): number {
    const last = this.#renewals.findLast((r) => r <= t) ?? this.#createdAt;
    return last + SYN_SENT_TIMEOUT_MS;
  }

  /** The timer conntrack prints when the kernel reads the entry at `t` (undefined once gone). */
  printedTimer(t: number): number | undefined {
    const left = this.expiryAt(t) - t;
    return left < 0 ? undefined : Math.floor(left / 1000);
  }
}

/** One simulated dump: its window and the instant inside it at which the kernel read the entry. */
interface SimulatedDump {
  readonly window: DumpWindow;
  readonly readAt: number;
}

/**
 * Dumps of random duration (0-300 ms) starting at `firstStart`, each next one starting `period`
 * ms after the END of the previous one (`endToStart`), or after its start otherwise, until
 * `until`. The read instant is often an edge of the window, to stress the bounds.
 */
function* simulatedDumps(
  random: () => number,
  options: {
    readonly period: number;
    readonly firstStart: number;
    readonly until: number;
    readonly endToStart?: boolean;
    readonly minDuration?: number;
  },
): Generator<SimulatedDump> {
  let start = quantize(options.firstStart);
  while (start < options.until) {
    const minDuration = options.minDuration ?? 0;
    const duration = random() < 0.1 && minDuration === 0
      ? 0
      : quantize(minDuration + random() * (300 - minDuration));
    const end = start + duration;
    const pick = random();
    const readAt = pick < 0.2 ? start : pick < 0.4 ? end : start + quantize(random() * duration);
    yield { window: { start, end }, readAt };
    start = (options.endToStart ?? true) ? end + options.period : start + options.period;
  }
}

/** Retry instants every `every` ms after `createdAt` (kept off the dump time grid). */
function retries(createdAt: number, every: number, until: number): number[] {
  const times: number[] = [];
  for (let t = createdAt + every; t < until; t += every) times.push(t);
  return times;
}

/** One dump as the tracker saw the client's entry in it. */
interface TrackedRead {
  /** When the dump printed the entry. */
  readonly readAt: number;
  /** The tracker's verdict on it. */
  readonly verdict: Assessment["verdict"];
  /** Renewals the entry really had since the first read. */
  readonly real: number;
}

/**
 * Reads the client's entry in each dump with the timer the kernel would print then, has the
 * tracker assess it, and yields that with the renewals the entry really had since the first read.
 */
function* trackedReads(
  entry: SimulatedEntry,
  tracker: Tracker,
  dumps: Iterable<SimulatedDump>,
): Generator<TrackedRead> {
  let firstRead: number | undefined;
  for (const { window, readAt } of dumps) {
    const timer = entry.printedTimer(readAt);
    assert.ok(timer !== undefined);
    firstRead ??= readAt;
    const verdict = only(tracker.assess([candidateOf(CLIENT, timer)], window)).verdict;
    yield { readAt, verdict, real: entry.renewalsUntil(readAt) - entry.renewalsUntil(firstRead) };
  }
}

const PERIODS = [100, 1000, 5000] as const;

// ---------------------------------------------------------------------------------------------
// Renewal rule

Deno.test("expiryWindow() spans the dump plus the second the printed timer rounds away", () => {
  assert.deepEqual(expiryWindow(119, { start: 5000, end: 5200 }), { lo: 124000, hi: 125200 });
  assert.deepEqual(expiryWindow(0, { start: 10, end: 10 }), { lo: 10, hi: 1010 });
});

Deno.test("Tracker.assess() never sees a count-down entry renewing, at any period (property)", () => {
  for (const period of PERIODS) {
    for (let seed = 1; seed <= 150; seed++) {
      const random = seededRandom(seed * 1000 + period);
      const createdAt = quantize(random() * 5000) + TICK / 2;
      const entry = new SimulatedEntry(createdAt, []);
      const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
      const firstStart = createdAt + random() * 1000;
      let dumps = 0;
      for (const { window, readAt } of simulatedDumps(random, { period, firstStart, until: 1e9 })) {
        const timer = entry.printedTimer(readAt);
        if (timer === undefined) break;
        const verdict = only(tracker.assess([candidateOf(CLIENT, timer)], window)).verdict;
        dumps++;
        assert.equal(
          verdict.renewals,
          0,
          `seed ${seed}, period ${period} ms: renewal reported at dump ${dumps} (${verdict.why})`,
        );
        assert.equal(verdict.kind, "keep");
      }
      // The entry lived its full 120 s under observation.
      assert.ok(dumps >= Math.floor(110_000 / (period + 300)), `only ${dumps} dumps`);
    }
  }
});

Deno.test("Tracker.assess() sees no renewal when the kernel's jiffies lag by a tick (property)", () => {
  // The kernel reads its clock in jiffies, up to one tick behind the agent's clock, and keeps the
  // expiry on the same tick grid. Short dumps read at their edges make the lag count most.
  for (const tick of [10, 4, 1]) {
    for (const period of [100, 1000]) {
      for (let seed = 1; seed <= 50; seed++) {
        const random = seededRandom(seed * 131 + tick * 7 + period);
        const phase = random() * tick;
        const onGrid = (t: number) => phase + Math.floor((t - phase) / tick) * tick;
        const expiry = onGrid(random() * 5000) + SYN_SENT_TIMEOUT_MS;
        const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
        let start = expiry - SYN_SENT_TIMEOUT_MS + random() * 1000;
        for (;;) {
          const end = start + random() * 20;
          const pick = random();
          const t = pick < 0.4 ? start : pick < 0.8 ? end : start + random() * (end - start);
          const left = expiry - onGrid(t);
          if (left <= 0) break;
          const timer = Math.floor(left / 1000);
          const verdict =
            only(tracker.assess([candidateOf(CLIENT, timer)], { start, end })).verdict;
          assert.equal(verdict.renewals, 0, `tick ${tick}, period ${period}, seed ${seed}`);
          start = end + period;
        }
      }
    }
  }
});

Deno.test("Tracker.assess() never counts more renewals than the kernel made (property)", () => {
  for (const period of PERIODS) {
    for (let seed = 1; seed <= 100; seed++) {
      const random = seededRandom(seed * 7919 + period);
      const createdAt = quantize(random() * 5000) + TICK / 2;
      // Retries at random gaps of 0.1-4 s, like clients with different back-off.
      const renewals: number[] = [];
      for (let t = createdAt + quantize(100 + random() * 3900); t < createdAt + 100_000;) {
        renewals.push(t);
        t += quantize(100 + random() * 3900);
      }
      const entry = new SimulatedEntry(createdAt, renewals);
      const tracker = new Tracker({ renewalThreshold: 1000, unrepliedMaxAgeMs: 0 });
      const dumps = simulatedDumps(random, {
        period,
        firstStart: createdAt + random() * 1000,
        until: createdAt + 100_000,
      });
      for (const { verdict, real } of trackedReads(entry, tracker, dumps)) {
        const counted = verdict.renewals;
        assert.ok(counted <= real, `seed ${seed}, period ${period} ms: ${counted} > ${real}`);
      }
    }
  }
});

Deno.test("Tracker.assess() deletes after exactly threshold+1 renewals at 1 s with 1 s retries", () => {
  for (let seed = 1; seed <= 100; seed++) {
    const random = seededRandom(seed);
    const createdAt = quantize(random() * 5000) + TICK / 2;
    const entry = new SimulatedEntry(createdAt, retries(createdAt, 1000, createdAt + 60_000));
    const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
    const dumps = simulatedDumps(random, {
      period: 1000,
      firstStart: createdAt + random() * 1000,
      until: createdAt + 60_000,
    });
    const verdicts: Assessment["verdict"][] = [];
    let firstRead: number | undefined;
    let lastRead = 0;
    for (const { readAt, verdict } of trackedReads(entry, tracker, dumps)) {
      firstRead ??= readAt;
      lastRead = readAt;
      verdicts.push(verdict);
      if (verdict.kind === "delete") break;
    }
    assert.deepEqual(
      verdicts.map((v) => [v.kind, v.renewals]),
      [["keep", 0], ["keep", 1], ["keep", 2], ["keep", 3], ["delete", 4]],
      `seed ${seed}`,
    );
    const last = verdicts.at(-1);
    assert.ok(last?.kind === "delete");
    assert.equal(last.rule, "renewal");
    assert.equal(last.why, "timer renewed 4 times (threshold 3)");
    assert.equal(verdicts[1]?.why, "counting down (1 renewal, threshold 3)");
    // The kernel really renewed the timer at least that often.
    assert.ok(entry.renewalsUntil(lastRead) - entry.renewalsUntil(firstRead ?? 0) >= 4);
  }
});

Deno.test("Tracker.assess() misses renewals when dumps are scheduled start-to-start", () => {
  // Why the agent sleeps a full period after the END of a dump: start-to-start at the retry
  // period, consecutive windows overlap by the dump's duration and half the renewals go unseen.
  const random = seededRandom(42);
  const createdAt = 0.5 + TICK / 2;
  const entry = new SimulatedEntry(createdAt, retries(createdAt, 1000, 60_000));
  const tracker = new Tracker({ renewalThreshold: 1000, unrepliedMaxAgeMs: 0 });
  const dumps = simulatedDumps(random, {
    period: 1000,
    firstStart: 100,
    until: 30_000,
    endToStart: false,
    minDuration: 10,
  });
  let counted = 0;
  let real = 0;
  for (const read of trackedReads(entry, tracker, dumps)) {
    counted = read.verdict.renewals;
    real = read.real;
  }
  assert.ok(real >= 28, `real ${real}`);
  assert.ok(counted <= real / 2 + 1, `counted ${counted} of ${real}`);
});

Deno.test("Tracker.assess() sees nearly every renewal 1.2 s apart at a 100 ms period", () => {
  // A renewal 1.2 s after the last one moves the expiry by less than one dump's uncertainty
  // (1 s + the dump's duration); only the window narrowed over several dumps proves it.
  for (let seed = 1; seed <= 50; seed++) {
    const random = seededRandom(seed + 500);
    const createdAt = quantize(random() * 1000) + TICK / 2;
    const entry = new SimulatedEntry(createdAt, retries(createdAt, 1200, createdAt + 30_000));
    const tracker = new Tracker({ renewalThreshold: 1000, unrepliedMaxAgeMs: 0 });
    const dumps = simulatedDumps(random, {
      period: 100,
      firstStart: createdAt + 1,
      until: createdAt + 30_000,
    });
    let counted = 0;
    let real = 0;
    for (const read of trackedReads(entry, tracker, dumps)) {
      counted = read.verdict.renewals;
      real = read.real;
    }
    assert.ok(counted >= real - 1 && counted <= real, `seed ${seed}: ${counted} of ${real}`);
  }
});

Deno.test("Tracker.assess() treats an expiry earlier than proven as a re-created entry", () => {
  const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  only(tracker.assess([candidateOf(CLIENT, 100)], { start: 0, end: 10 }));
  const later = only(tracker.assess([candidateOf(CLIENT, 30)], { start: 1000, end: 1010 }));
  assert.equal(later.verdict.kind, "keep");
  assert.equal(later.verdict.renewals, 0);
  assert.equal(later.verdict.why, "new: re-created with the same tuples");
  // Evidence starts over from the new entry: a higher timer next is a renewal of the new one.
  const renewed = only(tracker.assess([candidateOf(CLIENT, 119)], { start: 2000, end: 2010 }));
  assert.equal(renewed.verdict.kind, "delete");
  assert.equal(renewed.verdict.renewals, 1);
});

Deno.test("Tracker.assess() starts over when the kernel id or delta-time shows a new entry", () => {
  const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  only(tracker.assess([candidateOf(CLIENT, 100, { id: 7 })], { start: 0, end: 10 }));
  const newId = only(
    tracker.assess([candidateOf(CLIENT, 119, { id: 8 })], { start: 1010, end: 1020 }),
  );
  assert.equal(newId.verdict.kind, "keep");
  assert.equal(newId.verdict.why, "new: re-created with the same tuples");

  only(tracker.assess([candidateOf(CLIENT6, 100, { deltaTime: 20 })], { start: 0, end: 10 }));
  const younger = only(
    tracker.assess([candidateOf(CLIENT6, 119, { deltaTime: 1 })], { start: 1010, end: 1020 }),
  );
  assert.equal(younger.verdict.kind, "keep");
  assert.equal(younger.verdict.renewals, 0);
});

// ---------------------------------------------------------------------------------------------
// Age rule

Deno.test("Tracker.assess() ages an entry by the kernel's delta-time, less its rounding", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 10_000 });
  const young = only(tracker.assess([candidateOf(CLIENT, 110, { deltaTime: 10 })], {
    start: 0,
    end: 5,
  }));
  // delta-time=10 may mean 9.001 s: conntrack truncates the start time to whole seconds.
  assert.equal(young.verdict.kind, "keep");
  assert.equal(young.verdict.ageSource, "kernel");
  assert.equal(young.verdict.ageMs, 9000);

  const old = only(tracker.assess([candidateOf(CLIENT, 108, { deltaTime: 12 })], {
    start: 2000,
    end: 2005,
  }));
  assert.equal(old.verdict.kind, "delete");
  assert.ok(old.verdict.kind === "delete" && old.verdict.rule === "age");
  assert.equal(old.verdict.ageMs, 11_000);
  assert.equal(old.verdict.why, "unreplied for 11s (max 10s, kernel delta-time=12)");
});

Deno.test("Tracker.assess() ages an entry from the dump that first saw it, conservatively", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 10_000 });
  const first = only(tracker.assess([candidateOf(CLIENT, 119)], { start: 1000, end: 1050 }));
  assert.equal(first.verdict.ageMs, 0);
  assert.equal(first.verdict.ageSource, "observed");
  assert.equal(first.verdict.why, "new: first seen");
  // Age = this dump's start minus the first dump's end: 9999 ms, not yet the maximum.
  const before = only(tracker.assess([candidateOf(CLIENT, 109)], { start: 11_049, end: 11_100 }));
  assert.equal(before.verdict.kind, "keep");
  assert.equal(before.verdict.ageMs, 9999);
  const at = only(tracker.assess([candidateOf(CLIENT, 108)], { start: 11_050, end: 11_100 }));
  assert.equal(at.verdict.kind, "delete");
  assert.equal(at.verdict.ageMs, 10_000);
  assert.equal(at.verdict.why, "unreplied for 10s (max 10s, since the agent first saw it)");
});

Deno.test("Tracker.assess() never deletes by age when the maximum age is 0", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  only(tracker.assess([candidateOf(CLIENT, 119)], { start: 0, end: 10 }));
  const late = only(
    tracker.assess([candidateOf(CLIENT, 0, { deltaTime: 119 })], { start: 119_000, end: 119_010 }),
  );
  assert.equal(late.verdict.kind, "keep");
  assert.equal(late.verdict.ageMs, 118_000);
});

// ---------------------------------------------------------------------------------------------
// NAT rule and rule order

/** NAT rules that translate `192.0.2.10` (and nothing else) to `endpoints`, read at `readStartedAt`. */
function natTo(endpoints: readonly string[], readStartedAt = 0): NatRules {
  return {
    readStartedAt,
    answer: (flow) => {
      if (flow.original.dst === "2001:db8:100::10") {
        return { kind: "dnat", endpoints: [{ address: "2001:db8:a::5", port: 8443 }] };
      }
      if (flow.original.dst !== "192.0.2.10") return { kind: "none" };
      return {
        kind: "dnat",
        endpoints: endpoints.map((e) => ({
          address: e.split(":")[0]!,
          port: Number(e.split(":")[1]),
        })),
      };
    },
  };
}

/** CLIENT's flow as translated to `endpoint` (`address:port`). */
function natedTo(endpoint: string, sport = 40001): Flow {
  const [address = "", port = "0"] = endpoint.split(":");
  return {
    ...CLIENT,
    original: { ...CLIENT.original, sport },
    reply: { src: address, dst: CLIENT.original.src, sport: Number(port), dport: sport },
  };
}

function ruled(a: Assessment): string {
  return a.verdict.kind === "delete"
    ? `${a.verdict.rule} ${a.verdict.reason ?? ""}`.trim()
    : "keep";
}

Deno.test("Tracker.assess() deletes an un-NATed flow whose destination the node translates", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 10_000 });
  const stranger = flowOf("198.51.100.2", 40002, "192.0.2.99", 80);
  const assessments = tracker.assess(
    [candidateOf(CLIENT, 119), candidateOf(CLIENT6, 119), candidateOf(stranger, 119)],
    { start: 0, end: 10 },
    natTo(["10.244.1.5:8080"]),
  );
  assert.deepEqual(assessments.map(ruled), ["nat no-dnat", "nat no-dnat", "keep"]);
  assert.equal(assessments[0]?.verdict.why, "no NAT while the node now translates 192.0.2.10:80");
  assert.equal(
    assessments[1]?.verdict.why,
    "no NAT while the node now translates [2001:db8:100::10]:443",
  );
  // Without the rules, the rule is off.
  const off = only(tracker.assess([candidateOf(CLIENT, 119)], { start: 20, end: 30 }));
  assert.equal(off.verdict.kind, "keep");
});

Deno.test("Tracker.assess() deletes a flow translated to an endpoint the rules no longer choose", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  const gone = candidateOf(natedTo("10.244.1.5:8080"), 119);
  const current = candidateOf(natedTo("10.244.2.9:8080", 40002), 119);
  const otherPort = candidateOf(natedTo("10.244.2.9:9090", 40003), 119);
  tracker.assess([gone, current, otherPort], { start: 0, end: 10 });
  const later = tracker.assess(
    [gone, current, otherPort],
    { start: 1000, end: 1010 },
    natTo(["10.244.2.9:8080"], 500),
  );
  assert.deepEqual(later.map(ruled), ["nat endpoint-gone", "keep", "nat endpoint-gone"]);
  assert.equal(
    later[0]?.verdict.why,
    "translated to 10.244.1.5:8080, no longer an endpoint of 192.0.2.10:80 (now 10.244.2.9:8080)",
  );
});

Deno.test("Tracker.assess() judges a translated flow only by rules read after it was first seen", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  // An endpoint added after the rules were read: the entry may be translated to it.
  const fresh = candidateOf(natedTo("10.244.3.3:8080"), 119);
  const first = only(
    tracker.assess([fresh], { start: 1000, end: 1010 }, natTo(["10.244.2.9:8080"], 900)),
  );
  assert.equal(first.verdict.kind, "keep");
  const stillOld = only(
    tracker.assess([fresh], { start: 2000, end: 2010 }, natTo(["10.244.2.9:8080"], 900)),
  );
  assert.equal(stillOld.verdict.kind, "keep");
  const reread = only(
    tracker.assess([fresh], { start: 3000, end: 3010 }, natTo(["10.244.2.9:8080"], 2500)),
  );
  assert.equal(ruled(reread), "nat endpoint-gone");
});

Deno.test("Tracker.assess() judges a translated flow at once when the kernel's age shows it older than the rules", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  const old = candidateOf(natedTo("10.244.1.5:8080"), 100, { deltaTime: 20 });
  const young = candidateOf(natedTo("10.244.1.6:8080", 40002), 119, { deltaTime: 1 });
  const first = tracker.assess(
    [old, young],
    { start: 30_000, end: 30_010 },
    natTo(["10.244.2.9:8080"], 25_000),
  );
  assert.deepEqual(first.map(ruled), ["nat endpoint-gone", "keep"]);
});

Deno.test("Tracker.assess() keeps a translated flow the rules do not translate, cannot judge, or only SNAT", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  const toStranger: Flow = {
    ...natedTo("10.9.9.9:80"),
    original: { ...CLIENT.original, dst: "192.0.2.99", sport: 40005 },
  };
  const snatOnly: Flow = { ...CLIENT, reply: { ...CLIENT.reply, dst: "10.0.0.1" } };
  const pinned = candidateOf(natedTo("10.244.1.5:8080"), 119);
  const all = [candidateOf(toStranger, 119), candidateOf(snatOnly, 119), pinned];
  tracker.assess(all, { start: 0, end: 10 });
  const later = tracker.assess(all, { start: 1000, end: 1010 }, natTo(["10.244.2.9:8080"], 500));
  assert.deepEqual(later.map(ruled), ["keep", "keep", "nat endpoint-gone"]);
  const unknown: NatRules = {
    readStartedAt: 500,
    answer: () => ({ kind: "unknown", rule: "-i x" }),
  };
  const cannotTell = tracker.assess(all.slice(0, 2), { start: 2000, end: 2010 }, unknown);
  assert.deepEqual(cannotTell.map(ruled), ["keep", "keep"]);
  const unNATed = only(
    tracker.assess([candidateOf(CLIENT, 119)], { start: 3000, end: 3010 }, unknown),
  );
  assert.equal(unNATed.verdict.kind, "keep");
});

Deno.test("Tracker.assess() takes an IPv6 endpoint written another way as the same", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  const flow: Flow = {
    ...CLIENT6,
    reply: {
      src: "2001:db8:a::5",
      dst: CLIENT6.original.src,
      sport: 8443,
      dport: CLIENT6.original.sport,
    },
  };
  const spelled: NatRules = {
    readStartedAt: 500,
    answer: () => ({ kind: "dnat", endpoints: [{ address: "2001:DB8:A:0::5", port: 8443 }] }),
  };
  tracker.assess([candidateOf(flow, 119)], { start: 0, end: 10 });
  const later = only(tracker.assess([candidateOf(flow, 119)], { start: 1000, end: 1010 }, spelled));
  assert.equal(later.verdict.kind, "keep");
});

Deno.test("Tracker.assess() reports the first rule in RULES order when several fire", () => {
  const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 1000 });
  only(tracker.assess([candidateOf(CLIENT, 100, { deltaTime: 30 })], { start: 0, end: 10 }));
  const both = only(
    tracker.assess([candidateOf(CLIENT, 119, { deltaTime: 31 })], { start: 1010, end: 1020 }),
  );
  assert.ok(both.verdict.kind === "delete");
  assert.equal(both.verdict.rule, "renewal");
  only(tracker.assess([candidateOf(CLIENT, 119, { deltaTime: 31 })], { start: 1020, end: 1030 }));
  const all = only(
    tracker.assess(
      [candidateOf(CLIENT, 119, { deltaTime: 32 })],
      { start: 2030, end: 2040 },
      natTo(["10.244.1.5:8080"]),
    ),
  );
  assert.ok(all.verdict.kind === "delete");
  assert.equal(all.verdict.rule, "nat");
});

// ---------------------------------------------------------------------------------------------
// Duplicates, forgetting, memory

Deno.test("Tracker.assess() counts duplicates of one key in one dump once, first wins", () => {
  const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  const first = tracker.assess(
    [candidateOf(CLIENT, 100), candidateOf(CLIENT, 100)],
    { start: 0, end: 10 },
  );
  assert.equal(first.length, 1);
  // The second copy would prove a renewal on its own; it is ignored.
  const second = tracker.assess(
    [candidateOf(CLIENT, 100), candidateOf(CLIENT, 119), candidateOf(CLIENT6, 50)],
    { start: 500, end: 510 },
  );
  assert.deepEqual(second.map((a) => [a.candidate.timeout, a.verdict.renewals]), [[100, 0], [
    50,
    0,
  ]]);
  assert.equal(tracker.size, 2);
});

Deno.test("Tracker.assess() forgets keys absent from the latest dump", () => {
  const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  tracker.assess([candidateOf(CLIENT, 100), candidateOf(CLIENT6, 100)], { start: 0, end: 10 });
  assert.equal(tracker.size, 2);
  tracker.assess([candidateOf(CLIENT, 100)], { start: 1010, end: 1020 });
  assert.equal(tracker.size, 1);
  // Back again with a higher timer: a new entry, not a renewal.
  const back = tracker.assess([candidateOf(CLIENT6, 119)], { start: 2020, end: 2030 });
  assert.equal(only(back).verdict.why, "new: first seen");
  assert.equal(tracker.size, 1);
});

Deno.test("Tracker.forget() drops deleted flows so that they start over", () => {
  const tracker = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  tracker.assess([candidateOf(CLIENT, 100), candidateOf(CLIENT6, 100)], { start: 0, end: 10 });
  tracker.forget([flowKey(CLIENT), "not tracked"]);
  assert.equal(tracker.size, 1);
  const again = only(tracker.assess([candidateOf(CLIENT, 119)], { start: 1010, end: 1020 }));
  assert.equal(again.verdict.kind, "keep");
  assert.equal(again.verdict.why, "new: first seen");
});

Deno.test("Tracker size stays at one dump's candidates while flows churn", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 10_000 });
  for (let dump = 0; dump < 50; dump++) {
    const candidates = Array.from(
      { length: 200 },
      (_, i) => candidateOf(flowOf("198.51.100.2", 1024 + dump * 200 + i, "192.0.2.10", 80), 119),
    );
    tracker.assess(candidates, { start: dump * 1000, end: dump * 1000 + 10 });
    assert.equal(tracker.size, 200);
  }
});

// ---------------------------------------------------------------------------------------------
// Bad input

Deno.test("new Tracker() rejects out-of-range options with a one-line message", () => {
  assert.throws(
    () => new Tracker({ renewalThreshold: -1, unrepliedMaxAgeMs: 0 }),
    new RangeError("Cannot use renewalThreshold as a renewal count: current value is -1"),
  );
  assert.throws(
    () => new Tracker({ renewalThreshold: 1.5, unrepliedMaxAgeMs: 0 }),
    RangeError,
  );
  assert.throws(
    () => new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: Number.NaN }),
    new RangeError("Cannot use unrepliedMaxAgeMs as a maximum age: current value is NaN"),
  );
});

Deno.test("Tracker.assess() rejects a dump window that ends before it starts", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  assert.throws(
    () => tracker.assess([candidateOf(CLIENT, 100)], { start: 10, end: 5 }),
    new RangeError(
      "Cannot assess a dump as its window is not a forward interval: current value is " +
        "start=10 end=5",
    ),
  );
  assert.equal(tracker.size, 0);
});

Deno.test("Tracker.see() rejects a candidate before begin() or read before the dump started", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  assert.throws(() => tracker.see(candidateOf(CLIENT, 119), 10), RangeError);
  tracker.begin(1000);
  assert.throws(() => tracker.see(candidateOf(CLIENT, 119), 999), RangeError);
  assert.equal(tracker.see(candidateOf(CLIENT, 119), 1000)?.verdict.kind, "keep");
});

Deno.test("Tracker.see() with each candidate's own read time catches a renewal assess() misses", () => {
  // A 1.5 s listing of a large table, whose first lines are read 10 ms in. The entry's timer
  // reads 119, is renewed to 120 s at 1 s, and reads 119 again 10 ms into the next listing. With
  // the whole listing as the window (assess) the two windows overlap; with the read time (see)
  // the second lies wholly after the first.
  const withSee = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  withSee.begin(0);
  withSee.see(candidateOf(CLIENT, 119), 10);
  withSee.finish();
  withSee.begin(1900);
  assert.equal(withSee.see(candidateOf(CLIENT, 119), 1910)?.verdict.kind, "delete");

  const withAssess = new Tracker({ renewalThreshold: 0, unrepliedMaxAgeMs: 0 });
  withAssess.assess([candidateOf(CLIENT, 119)], { start: 0, end: 1500 });
  const later = withAssess.assess([candidateOf(CLIENT, 119)], { start: 1900, end: 3400 });
  assert.equal(only(later).verdict.kind, "keep");
});

Deno.test("Tracker forgets nothing when a dump is not finished (a failed listing)", () => {
  const tracker = new Tracker({ renewalThreshold: 3, unrepliedMaxAgeMs: 0 });
  const other = flowOf("198.51.100.3", 40001, "192.0.2.10", 80);
  tracker.assess([candidateOf(CLIENT, 119), candidateOf(other, 119)], { start: 0, end: 10 });
  tracker.begin(1000);
  tracker.see(candidateOf(CLIENT, 118), 1010);
  // The listing failed here: no finish().
  assert.equal(tracker.size, 2);
  tracker.begin(2000);
  assert.equal(tracker.has(flowKey(other)), true);
});
