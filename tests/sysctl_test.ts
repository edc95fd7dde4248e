import assert from "node:assert/strict";
import type { Cleanup, OnInterrupt } from "./support/interrupt_cleanup.ts";
import { readSysctl, setSysctls, SysctlError } from "./support/sysctl.ts";
import { FakeSysctl } from "./sysctl_fake.ts";

const MAX = "net.netfilter.nf_conntrack_max";
const BUCKETS = "net.netfilter.nf_conntrack_buckets";

/** An {@link OnInterrupt} that records what is registered instead of listening for signals. */
function recordingInterrupts(): { onInterrupt: OnInterrupt; registered: Set<Cleanup> } {
  const registered = new Set<Cleanup>();
  return {
    registered,
    onInterrupt: (cleanup) => {
      registered.add(cleanup);
      return { [Symbol.dispose]: () => registered.delete(cleanup) };
    },
  };
}

Deno.test("setSysctls() changes the values and disposal writes back the previous ones", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144", [BUCKETS]: "262144" });
  const { onInterrupt } = recordingInterrupts();
  {
    await using change = await setSysctls(
      kernel.spawn,
      { [MAX]: "2097152", [BUCKETS]: "1048576" },
      {
        onInterrupt,
      },
    );
    assert.deepEqual(change.previous, { [MAX]: "262144", [BUCKETS]: "262144" });
    assert.equal(kernel.values.get(BUCKETS), "1048576");
  }
  assert.deepEqual(Object.fromEntries(kernel.values), { [MAX]: "262144", [BUCKETS]: "262144" });
  // The last one changed is the first put back.
  assert.deepEqual(kernel.writes.slice(2), [`${BUCKETS}=262144`, `${MAX}=262144`]);
});

Deno.test("setSysctls() writes the previous values back when the scope throws", async () => {
  const kernel = new FakeSysctl({ [MAX]: "65536" });
  const { onInterrupt } = recordingInterrupts();
  await assert.rejects(async () => {
    await using _change = await setSysctls(kernel.spawn, { [MAX]: "2097152" }, { onInterrupt });
    throw new Error("the test failed");
  }, /the test failed/);
  assert.equal(kernel.values.get(MAX), "65536");
});

Deno.test("setSysctls() undoes its earlier writes when a later one is refused", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144", [BUCKETS]: "262144" });
  kernel.refuse.add(BUCKETS);
  const { onInterrupt, registered } = recordingInterrupts();
  await assert.rejects(
    () => setSysctls(kernel.spawn, { [MAX]: "2097152", [BUCKETS]: "1048576" }, { onInterrupt }),
    AggregateError,
    `Cannot set ${BUCKETS} to 1048576 as sysctl exited 255`,
  );
  assert.equal(kernel.values.get(MAX), "262144");
  assert.equal(registered.size, 0, "nothing left to restore on an interrupt");
});

Deno.test("setSysctls() disposal restores every parameter it can and names the one it cannot", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144", [BUCKETS]: "262144" });
  const { onInterrupt } = recordingInterrupts();
  const change = await setSysctls(kernel.spawn, { [MAX]: "2097152", [BUCKETS]: "1048576" }, {
    onInterrupt,
  });
  kernel.refuse.add(BUCKETS);
  await assert.rejects(
    async () => await change[Symbol.asyncDispose](),
    SysctlError,
    `Cannot set ${BUCKETS} to 262144`,
  );
  assert.equal(kernel.values.get(MAX), "262144");
});

Deno.test("setSysctls() restores on an interrupt until disposed, and only once", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144" });
  const { onInterrupt, registered } = recordingInterrupts();
  const change = await setSysctls(kernel.spawn, { [MAX]: "2097152" }, { onInterrupt });
  assert.equal(registered.size, 1);
  const [cleanup] = registered;
  await cleanup?.();
  assert.equal(kernel.values.get(MAX), "262144", "the interrupt put it back");
  await change[Symbol.asyncDispose]();
  assert.equal(registered.size, 0);
  assert.deepEqual(kernel.writes, [`${MAX}=2097152`, `${MAX}=262144`], "restored once");
});

Deno.test("setSysctls() refuses a parameter the kernel lacks and writes nothing", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144" });
  const { onInterrupt } = recordingInterrupts();
  await assert.rejects(
    () => setSysctls(kernel.spawn, { [MAX]: "2097152", [BUCKETS]: "1048576" }, { onInterrupt }),
    SysctlError,
    `Cannot set ${BUCKETS} as the kernel does not have it`,
  );
  assert.deepEqual(kernel.writes, []);
});

Deno.test("readSysctl() reads a value, and undefined for a parameter the kernel lacks", async () => {
  const kernel = new FakeSysctl({ [MAX]: "262144" });
  assert.equal(await readSysctl(kernel.spawn, MAX), "262144");
  assert.equal(await readSysctl(kernel.spawn, BUCKETS), undefined);
});
