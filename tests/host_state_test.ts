import assert from "node:assert/strict";
import { diffHostState, readHostState, restoreHostSysctls } from "./support/host_state.ts";
import { FakeSysctl } from "./sysctl_fake.ts";

const MAX = "net.netfilter.nf_conntrack_max";
const BUCKETS = "net.netfilter.nf_conntrack_buckets";
const TIMESTAMP = "net.netfilter.nf_conntrack_timestamp";

function host(): FakeSysctl {
  const kernel = new FakeSysctl({
    [MAX]: "262144",
    [BUCKETS]: "262144",
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.forwarding": "0",
  });
  kernel.namespaces = ["cni-1234 (id: 0)", "cct-77-ab12-node (id: 1)"];
  return kernel;
}

Deno.test("readHostState() reads the watched sysctls and the cct- namespaces", async () => {
  const state = await readHostState(host().spawn);
  assert.equal(state.sysctls[BUCKETS], "262144");
  assert.equal(state.sysctls[TIMESTAMP], undefined, "a parameter the kernel lacks");
  assert.deepEqual(state.testNamespaces, ["cct-77-ab12-node"]);
  assert.equal(state.namespaceCount, 2);
});

Deno.test("diffHostState() names each changed sysctl and each namespace left or gone", async () => {
  const kernel = host();
  const before = await readHostState(kernel.spawn);
  kernel.values.set(BUCKETS, "1048576");
  kernel.values.set(MAX, "2097152");
  kernel.namespaces = ["cni-1234", "cct-renewal-0f0f0f0f", "ccm-9-1a2b3c4d"];

  assert.deepEqual(diffHostState(before, await readHostState(kernel.spawn)), [
    `${MAX} is 2097152, was 262144`,
    `${BUCKETS} is 1048576, was 262144`,
    "namespace cct-renewal-0f0f0f0f was left behind",
    "namespace cct-77-ab12-node was deleted",
    "3 network namespaces, was 2",
  ]);
});

Deno.test("diffHostState() is empty for an unchanged host, even once conntrack is loaded", async () => {
  const kernel = host();
  const before = await readHostState(kernel.spawn);
  // The run loaded the conntrack module: a parameter appears with the kernel's default.
  kernel.values.set(TIMESTAMP, "0");
  assert.deepEqual(diffHostState(before, await readHostState(kernel.spawn)), []);
});

Deno.test("restoreHostSysctls() writes back only what differs", async () => {
  const kernel = host();
  const before = await readHostState(kernel.spawn);
  kernel.values.set(BUCKETS, "1048576");
  const restored = await restoreHostSysctls(
    kernel.spawn,
    before,
    await readHostState(kernel.spawn),
  );
  assert.deepEqual(restored, [BUCKETS]);
  assert.deepEqual(kernel.writes, [`${BUCKETS}=262144`]);
});
