/**
 * Deletion by kernel id against a real kernel, in a throwaway network namespace: a client's SYN
 * makes a `SYN_SENT [UNREPLIED]` entry (its SYNs are dropped on input, after conntrack has seen
 * them), the entry is judged with its id, then deleted and re-created by a new SYN from the same
 * source port before the deleter runs. The deleter, and a bare DELETE carrying the stale id, must
 * leave the new entry alone; the new entry's own id deletes it.
 *
 * Needs root; ignored otherwise, and failing instead when CI=true.
 */
import assert from "node:assert/strict";
import { rootTest } from "../root.ts";
import { runToEnd } from "../../lib/seams/spawn.ts";
import type { DeleteOutcome, DeleteTarget } from "../../lib/table/deleter.ts";
import type { Flow } from "../../lib/core/flow.ts";
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import { createNetns, inNetns } from "../../bench/fill_table.ts";

const HELPER = new URL("../fixtures/scale_netlink_delete.ts", import.meta.url).pathname;
const SYN_BATCH = new URL("./syn_batch.ts", import.meta.url).pathname;

const CLIENT = "198.51.100.2";
const SERVICE = "192.0.2.10";
const flow: Flow = {
  family: "ipv4",
  original: { src: CLIENT, dst: SERVICE, sport: 40000, dport: 80 },
  reply: { src: SERVICE, dst: CLIENT, sport: 80, dport: 40000 },
  zone: 0,
};
/** Another client, whose established entries must survive every deletion here. */
const OTHER = "198.51.100.3";

/** The `conntrack -R` line of an established entry of {@link OTHER} from `sport`. */
function fillerLine(sport: number): string {
  return `-A -t 600 -u SEEN_REPLY,ASSURED -p tcp -s ${OTHER} -d ${SERVICE} -r ${SERVICE} ` +
    `-q ${OTHER} --sport ${sport} --dport 80 --reply-port-src 80 --reply-port-dst ${sport} ` +
    "--state ESTABLISHED";
}

/** A bystander with another source port: it must survive every deletion here. */
const BYSTANDER_PORT = 40001;

async function netlinkDelete(
  netns: string,
  flows: readonly DeleteTarget[],
  raw = false,
): Promise<DeleteOutcome> {
  const out = await runToEnd(
    denoSpawn,
    "ip",
    ["netns", "exec", netns, Deno.execPath(), "run", "--allow-ffi", HELPER],
    { stdin: JSON.stringify({ flows, raw }) },
  );
  assert.equal(out.code, 0, out.stderr);
  const result = JSON.parse(out.stdout);
  if (result.kind !== "ok") throw new Error(`netlink unavailable: ${result.reason}`);
  return result.outcome;
}

/** One SYN from `CLIENT:sport` to the Service, whose socket is then dropped without a word. */
async function syn(netns: string, sport: number): Promise<void> {
  await inNetns(
    denoSpawn,
    netns,
    [Deno.execPath(), "run", "--no-config", "--allow-net", SYN_BATCH, "--wait-ms", "50"],
    `${CLIENT} ${sport} ${SERVICE} 80\n`,
  );
}

/** The ids of the `SYN_SENT [UNREPLIED]` entries by source port. */
async function unrepliedIds(netns: string): Promise<Map<number, number>> {
  const text = await inNetns(denoSpawn, netns, ["conntrack", "-L", "-p", "tcp", "-o", "id"]);
  const ids = new Map<number, number>();
  for (const line of text.split("\n")) {
    const match = / SYN_SENT src=\S+ dst=\S+ sport=(\d+) .*\[UNREPLIED\].* id=(\d+)/.exec(line);
    if (match) ids.set(Number(match[1]), Number(match[2]));
  }
  return ids;
}

rootTest(
  "netlink delete() spares an entry re-created by a new SYN since it was judged (root, netns)",
  async () => {
    await using ns = await createNetns(denoSpawn, "delete-id");
    for (const address of [CLIENT, SERVICE]) {
      await inNetns(denoSpawn, ns.name, ["ip", "addr", "add", `${address}/32`, "dev", "lo"]);
    }
    // A rule with a ct expression turns conntrack on in the namespace; the drop leaves each SYN
    // unanswered, so its entry stays SYN_SENT [UNREPLIED].
    await inNetns(denoSpawn, ns.name, [
      "nft",
      "add table inet t; add chain inet t in { type filter hook input priority 0; }; " +
      "add rule inet t in tcp dport 80 ct state new drop",
    ]);
    await syn(ns.name, flow.original.sport);
    await syn(ns.name, BYSTANDER_PORT);
    const judged = (await unrepliedIds(ns.name)).get(flow.original.sport);
    assert.ok(judged !== undefined, "the first SYN made an unreplied entry");

    // The kernel's id hashes the entry's address: a re-created entry that lands in the memory its
    // predecessor freed gets the same id. Established entries of another client take the freed
    // memory first, and the re-creation is retried until its id differs.
    let current: number | undefined = judged;
    let fillers = 0;
    for (let attempt = 0; attempt < 20 && current === judged; attempt++) {
      await inNetns(denoSpawn, ns.name, [
        ...["conntrack", "-D", "-p", "tcp", "-s", CLIENT, "--sport", "40000"],
      ]);
      const lines = Array.from({ length: 16 }, () => fillerLine(50000 + fillers++));
      await inNetns(denoSpawn, ns.name, ["conntrack", "-R", "-"], lines.join("\n") + "\n");
      await syn(ns.name, flow.original.sport);
      current = (await unrepliedIds(ns.name)).get(flow.original.sport);
      assert.ok(current !== undefined, "the new SYN made an unreplied entry");
    }
    assert.ok(current !== undefined && current !== judged, "a re-created entry with another id");

    const stale = { ...flow, id: judged };
    assert.deepEqual(await netlinkDelete(ns.name, [stale]), {
      deleted: [],
      gone: [stale],
      failed: [],
    });
    assert.equal((await unrepliedIds(ns.name)).get(flow.original.sport), current);

    // The kernel's own check, for an entry replaced between the deleter's GET and its DELETE.
    assert.deepEqual(await netlinkDelete(ns.name, [stale], true), {
      deleted: [],
      gone: [stale],
      failed: [],
    });
    assert.equal((await unrepliedIds(ns.name)).get(flow.original.sport), current);

    const right = { ...flow, id: current };
    assert.deepEqual(await netlinkDelete(ns.name, [right]), {
      deleted: [right],
      gone: [],
      failed: [],
    });
    const left = await unrepliedIds(ns.name);
    assert.equal(left.get(flow.original.sport), undefined);
    assert.ok(left.has(BYSTANDER_PORT), "the bystander survives");
    const established = await inNetns(denoSpawn, ns.name, ["conntrack", "-L", "-s", OTHER]);
    assert.equal(established.split("\n").filter((l) => l.includes("ESTABLISHED")).length, fillers);
  },
);
