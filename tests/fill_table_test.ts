import assert from "node:assert/strict";
import { conntrackCapacityFor, fillTable, raiseConntrackCapacity } from "../bench/fill_table.ts";
import type { OnInterrupt } from "./support/interrupt_cleanup.ts";
import { FakeSysctl } from "./sysctl_fake.ts";

const MAX = "net.netfilter.nf_conntrack_max";
const BUCKETS = "net.netfilter.nf_conntrack_buckets";
const noSignals: OnInterrupt = () => ({ [Symbol.dispose]: () => {} });

Deno.test("conntrackCapacityFor() leaves a quarter to spare, buckets capped at 1M", () => {
  assert.deepEqual(conntrackCapacityFor(3000), { max: 262_144, buckets: 131_072 });
  assert.deepEqual(conntrackCapacityFor(1_000_000), { max: 2_097_152, buckets: 1_048_576 });
  assert.deepEqual(conntrackCapacityFor(4_000_000), { max: 8_388_608, buckets: 1_048_576 });
});

Deno.test("raiseConntrackCapacity() raises both limits and disposal puts the host's back", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144", [BUCKETS]: "262144" });
  {
    await using _capacity = await raiseConntrackCapacity(kernel.spawn, 1_000_000, {
      onInterrupt: noSignals,
    });
    assert.equal(kernel.values.get(MAX), "2097152");
    assert.equal(kernel.values.get(BUCKETS), "1048576");
  }
  assert.deepEqual(Object.fromEntries(kernel.values), { [MAX]: "262144", [BUCKETS]: "262144" });
});

Deno.test("raiseConntrackCapacity() never lowers a limit and writes nothing when both fit", async () => {
  const kernel = new FakeSysctl({ [MAX]: "4194304", [BUCKETS]: "65536" });
  {
    await using capacity = await raiseConntrackCapacity(kernel.spawn, 1_000_000, {
      onInterrupt: noSignals,
    });
    assert.deepEqual(capacity.applied, { [BUCKETS]: "1048576" });
  }
  assert.deepEqual(kernel.writes, [`${BUCKETS}=1048576`, `${BUCKETS}=65536`]);

  const roomy = new FakeSysctl({ [MAX]: "262144", [BUCKETS]: "262144" });
  await (await raiseConntrackCapacity(roomy.spawn, 3000, { onInterrupt: noSignals }))
    [Symbol.asyncDispose]();
  assert.deepEqual(roomy.writes, []);
});

Deno.test("fillTable() refuses a table larger than nf_conntrack_max instead of raising it", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144", [BUCKETS]: "262144" });
  await assert.rejects(
    () => fillTable(kernel.spawn, "cct-x", { entries: 1_000_000 }),
    RangeError,
    `Cannot fill 1000000 entries as ${MAX} is smaller: current value is 262144`,
  );
  assert.deepEqual(kernel.writes, []);
});
