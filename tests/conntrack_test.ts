import assert from "node:assert/strict";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { SpawnError } from "../lib/seams/spawn.ts";
import {
  CLI_DELETE_PIECE,
  ConntrackUnusableError,
  conntrackVersion,
  createCliDeleter,
  deleteLine,
  type DumpOptions,
  LIST_ARGS,
  listCandidates,
  probeConntrack,
} from "../lib/table/conntrack_cli.ts";
import type { Candidate } from "../lib/core/flow.ts";
import { FakeClock, FakeConntrack, hangingSpawn, staleFlow } from "./fakes.ts";

/** One listing, with its candidates collected from the batches. */
async function dumpAll(spawn: SpawnCommand, options: Omit<DumpOptions, "onBatch">) {
  const candidates: Candidate[] = [];
  const batches: number[] = [];
  const dump = await listCandidates(spawn, {
    ...options,
    onBatch: (batch) => {
      batches.push(batch.length);
      candidates.push(...batch);
    },
  });
  return { dump, candidates, batches };
}

Deno.test("deleteLine() names protocol, both tuples, the zone and the state guard", () => {
  const cases = [
    {
      name: "IPv4",
      flow: staleFlow(40000),
      want: "-D -p tcp -s 198.51.100.2 -d 192.0.2.10 --sport 40000 --dport 80 " +
        "-r 192.0.2.10 -q 198.51.100.2 --reply-port-src 80 --reply-port-dst 40000 " +
        "-w 0 --state SYN_SENT",
    },
    {
      name: "IPv6",
      flow: staleFlow(40200, { v6: true }),
      want: "-D -p tcp -s 2001:db8::2 -d 2001:db8:100::10 --sport 40200 --dport 80 " +
        "-r 2001:db8:100::10 -q 2001:db8::2 --reply-port-src 80 --reply-port-dst 40200 " +
        "-w 0 --state SYN_SENT",
    },
    {
      name: "zoned",
      flow: staleFlow(40100, { zone: 7 }),
      want: "-D -p tcp -s 198.51.100.2 -d 192.0.2.10 --sport 40100 --dport 80 " +
        "-r 192.0.2.10 -q 198.51.100.2 --reply-port-src 80 --reply-port-dst 40100 " +
        "-w 7 --state SYN_SENT",
    },
    {
      name: "directional zones",
      flow: { ...staleFlow(40101), origZone: 3, replyZone: 4 },
      want: "-D -p tcp -s 198.51.100.2 -d 192.0.2.10 --sport 40101 --dport 80 " +
        "-r 192.0.2.10 -q 198.51.100.2 --reply-port-src 80 --reply-port-dst 40101 " +
        "-w 0 --orig-zone 3 --reply-zone 4 --state SYN_SENT",
    },
  ];
  for (const c of cases) assert.equal(deleteLine(c.flow), c.want, c.name);
});

Deno.test("createCliDeleter() deletes a batch in one conntrack -R - and spares other flows", async () => {
  const clock = new FakeClock();
  const ct = new FakeConntrack(clock);
  const stale = [staleFlow(40000), staleFlow(40001, { v6: true }), staleFlow(40002, { zone: 7 })];
  for (const f of stale) ct.add(f);
  // The same two hosts, established on another source port, and the same tuple in another zone.
  const established = ct.add(staleFlow(40003), { state: "ESTABLISHED" });
  const otherZone = ct.add(staleFlow(40000, { zone: 9 }));
  const deleter = createCliDeleter(ct.spawn, "conntrack");
  const outcome = await deleter.delete(stale);
  assert.equal(outcome.deleted.length, 3);
  assert.deepEqual(outcome.failed, []);
  assert.deepEqual(ct.spawned, [["-R", "-"]]);
  assert.deepEqual(ct.table, [established, otherZone]);
});

Deno.test("createCliDeleter() cuts a large batch into pieces and reports progress after each", async () => {
  const ct = new FakeConntrack(new FakeClock());
  const stale = Array.from({ length: 2 * CLI_DELETE_PIECE + 3 }, (_, i) => staleFlow(41000 + i));
  for (const f of stale) ct.add(f);
  const kept = ct.add(staleFlow(42000), { state: "ESTABLISHED" });
  let progress = 0;
  const outcome = await createCliDeleter(ct.spawn, "conntrack").delete(stale, undefined, () => {
    progress++;
  });
  assert.equal(outcome.deleted.length, stale.length);
  assert.equal(ct.count("-R"), 3);
  assert.equal(progress, 3);
  assert.deepEqual(ct.table, [kept]);
});

Deno.test("createCliDeleter() starts no further piece once the agent is stopping", async () => {
  const ct = new FakeConntrack(new FakeClock());
  const stale = Array.from({ length: 2 * CLI_DELETE_PIECE }, (_, i) => staleFlow(41000 + i));
  for (const f of stale) ct.add(f);
  const controller = new AbortController();
  const outcome = await createCliDeleter(ct.spawn, "conntrack").delete(
    stale,
    controller.signal,
    () => controller.abort(),
  );
  assert.equal(ct.count("-R"), 1);
  assert.equal(outcome.deleted.length, CLI_DELETE_PIECE);
  assert.equal(outcome.failed.length, CLI_DELETE_PIECE);
  assert.match(outcome.failed[0]!.reason, /stopping/);
});

Deno.test("createCliDeleter() leaves a flow that completed in between and reports it gone", async () => {
  const ct = new FakeConntrack(new FakeClock());
  const entry = ct.add(staleFlow(40000));
  entry.state = "ESTABLISHED";
  const outcome = await createCliDeleter(ct.spawn, "conntrack").delete([staleFlow(40000)]);
  assert.equal(outcome.deleted.length, 0);
  assert.equal(outcome.gone.length, 1);
  assert.equal(ct.table.length, 1);
});

Deno.test("createCliDeleter() spawns nothing for an empty batch", async () => {
  const ct = new FakeConntrack(new FakeClock());
  const outcome = await createCliDeleter(ct.spawn, "conntrack").delete([]);
  assert.deepEqual(outcome, { deleted: [], gone: [], failed: [] });
  assert.equal(ct.spawned.length, 0);
});

Deno.test("createCliDeleter() reports every flow failed when conntrack cannot start", async () => {
  const missing: SpawnCommand = (program) => {
    throw new SpawnError(program, "not-found", "not found");
  };
  const outcome = await createCliDeleter(missing, "/nope/conntrack").delete([staleFlow(1)]);
  assert.equal(outcome.failed.length, 1);
  assert.match(outcome.failed[0]!.reason, /\/nope\/conntrack: not found/);
});

Deno.test("listCandidates() lists with the kernel-filtered form, in listing order", async () => {
  const ct = new FakeConntrack(new FakeClock());
  ct.behaviour = {
    kind: "garbage",
    lines: [
      "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1",
      "tcp      6 115 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=40000 dport=80 [UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1",
      "tcp      6 116 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=99999 dport=80 [UNREPLIED]",
      "not conntrack output at all",
    ],
  };
  const { dump, candidates } = await dumpAll(ct.spawn, { conntrack: "conntrack" });
  assert.deepEqual(ct.spawned, [[...LIST_ARGS]]);
  assert.equal(dump.kind, "ok");
  if (dump.kind !== "ok") return;
  assert.equal(dump.lines, 4);
  // A flow printed twice (a table changing during the listing) is left for the tracker to count once.
  assert.deepEqual(candidates.map((c) => c.timeout), [116, 115]);
  assert.equal(dump.unparsable?.count, 2);
  assert.match(dump.unparsable?.firstLine ?? "", /sport=99999/);
});

Deno.test("listCandidates() turns a failing conntrack into a failed dump with its message", async () => {
  const ct = new FakeConntrack(new FakeClock());
  ct.behaviour = {
    kind: "fail",
    code: 1,
    stderr: "conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters\n",
  };
  const { dump } = await dumpAll(ct.spawn, { conntrack: "conntrack" });
  assert.deepEqual(dump, {
    kind: "failed",
    reason: "conntrack exited 1: Operation failed: invalid parameters",
  });
});

Deno.test("listCandidates() keeps only the flows the filter accepts", async () => {
  const ct = new FakeConntrack(new FakeClock());
  ct.add(staleFlow(1));
  ct.add(staleFlow(2, { dport: 443 }));
  const { dump, candidates } = await dumpAll(ct.spawn, {
    conntrack: "conntrack",
    accept: (flow) => flow.original.dport === 443,
  });
  assert.equal(dump.kind, "ok");
  assert.deepEqual(candidates.map((c) => c.flow.original.sport), [2]);
});

Deno.test("listCandidates() hands candidates on while the listing is still being read", async () => {
  // 3,000 candidate lines (about 500 KB) arriving in 64 KiB pieces, as a pipe delivers them; the
  // output stays open until the first batch has been handed on.
  const lines = Array.from({ length: 3000 }, (_, i) => candidateLine(10000 + i)).join("");
  const bytes = new TextEncoder().encode(lines);
  let handedOn!: () => void;
  const firstBatch = new Promise<void>((resolve) => handedOn = resolve);
  const spawn: SpawnCommand = () => ({
    stdout: new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(bytes.subarray(0, 65536));
        await firstBatch;
        for (let at = 65536; at < bytes.length; at += 65536) {
          controller.enqueue(bytes.subarray(at, at + 65536));
        }
        controller.close();
      },
    }),
    status: Promise.resolve({ code: 0, stderr: "" }),
  });
  const candidates: Candidate[] = [];
  const batches: number[] = [];
  const dump = await listCandidates(spawn, {
    conntrack: "conntrack",
    onBatch: (batch) => {
      batches.push(batch.length);
      candidates.push(...batch);
      handedOn();
    },
  });
  assert.equal(dump.kind === "ok" && dump.lines, 3000);
  assert.equal(candidates.length, 3000);
  assert.ok(batches.length >= 8, `one batch per read, got ${batches.length}`);
});

function candidateLine(sport: number): string {
  return `tcp      6 117 SYN_SENT src=198.51.100.2 dst=192.0.2.10 sport=${sport} dport=80 ` +
    `[UNREPLIED] src=192.0.2.10 dst=198.51.100.2 sport=80 dport=${sport} mark=0 use=1 id=${sport}\n`;
}

Deno.test("probeConntrack() names CONNTRACK_BIN when the binary is missing", async () => {
  const missing: SpawnCommand = (program) => {
    throw new SpawnError(program, "not-found", "not found");
  };
  await assert.rejects(
    probeConntrack(missing, "/opt/none/conntrack"),
    (error: Error) =>
      error instanceof ConntrackUnusableError && /CONNTRACK_BIN/.test(error.message) &&
      /\/opt\/none\/conntrack: not found/.test(error.message) && !error.message.includes("\n"),
  );
});

Deno.test("probeConntrack() says CAP_NET_ADMIN is missing when the table cannot be read", async () => {
  const ct = new FakeConntrack(new FakeClock());
  ct.behaviour = {
    kind: "fail",
    code: 1,
    stderr: "conntrack v1.4.7 (conntrack-tools): Operation failed: sorry, you must be root or " +
      "get CAP_NET_ADMIN capability to do this\n",
  };
  await assert.rejects(probeConntrack(ct.spawn, "conntrack"), /needs CAP_NET_ADMIN/);
});

Deno.test("probeConntrack() returns the version of a working conntrack", async () => {
  const ct = new FakeConntrack(new FakeClock());
  assert.equal(await probeConntrack(ct.spawn, "conntrack"), "conntrack v1.4.7");
});

Deno.test("listCandidates() kills a listing that hangs and reports a failed dump", async () => {
  const { dump } = await dumpAll(hangingSpawn, { conntrack: "conntrack", timeoutMs: 50 });
  assert.deepEqual(dump, {
    kind: "failed",
    reason: "conntrack -L did not finish within 0.05 s; killed",
  });
});

/** A conntrack whose output is made as it is read: `chunks` pieces of `piece`, then `tail`. */
function lazyOutput(piece: Uint8Array, chunks: number, tail: string): SpawnCommand {
  return () => {
    let sent = 0;
    return {
      stdout: new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent++ < chunks) return controller.enqueue(piece);
          controller.enqueue(new TextEncoder().encode(tail));
          controller.close();
        },
      }),
      status: Promise.resolve({ code: 0, stderr: "" }),
    };
  };
}

Deno.test("listCandidates() counts a 600 MB line as unparsable and reads the entries after it", async () => {
  const piece = new TextEncoder().encode("a".repeat(64 * 1024));
  const chunks = Math.ceil(600e6 / piece.length);
  const spawn = lazyOutput(piece, chunks, "\n" + candidateLine(40000) + candidateLine(40001));
  const { dump, candidates } = await dumpAll(spawn, { conntrack: "conntrack" });
  assert.equal(dump.kind, "ok");
  assert.deepEqual(candidates.map((c) => c.flow.original.sport), [40000, 40001]);
  if (dump.kind !== "ok") return;
  assert.equal(dump.lines, 3);
  assert.equal(dump.unparsable?.count, 1);
  assert.equal(dump.unparsable?.firstLine, "a".repeat(200));
  assert.equal(
    dump.unparsable?.firstReason,
    `line of ${chunks * piece.length} characters is longer than the 16384 a conntrack line can be`,
  );
});

/** What 64 KiB of stderr in one line, the most the spawner keeps, looks like. */
const FLOOD = "conntrack v1.4.7 (conntrack-tools): " + "x".repeat(64 * 1024 - 36);

Deno.test("listCandidates() quotes at most 512 characters of a flooded stderr", async () => {
  const ct = new FakeConntrack(new FakeClock());
  ct.behaviour = { kind: "fail", code: 1, stderr: FLOOD };
  const { dump } = await dumpAll(ct.spawn, { conntrack: "conntrack" });
  assert.equal(dump.kind, "failed");
  if (dump.kind !== "failed") return;
  assert.equal(
    dump.reason,
    `conntrack exited 1: ${"x".repeat(512)}… (${64 * 1024 - 36 - 512} more bytes)`,
  );
});

Deno.test("createCliDeleter() quotes at most 512 characters of a flooded stderr", async () => {
  const spawn: SpawnCommand = () => ({
    stdout: ReadableStream.from<Uint8Array>([]),
    status: Promise.resolve({ code: 1, stderr: "first\n" + FLOOD + "\n\n" }),
  });
  const outcome = await createCliDeleter(spawn, "conntrack").delete([staleFlow(40000)]);
  const reason = outcome.failed[0]?.reason ?? "";
  assert.ok(reason.length < 600, `${reason.length} characters`);
  assert.match(reason, /^conntrack -R exited 1: x{512}… \(64988 more bytes\)$/);
});

Deno.test("probeConntrack() quotes at most 512 characters of a flooded stderr", async () => {
  const ct = new FakeConntrack(new FakeClock());
  ct.behaviour = { kind: "fail", code: 1, stderr: FLOOD };
  await assert.rejects(probeConntrack(ct.spawn, "conntrack"), (error: Error) => {
    assert.ok(error.message.length < 700, `${error.message.length} characters`);
    assert.match(error.message, /x{512}… \(64988 more bytes\)$/);
    return true;
  });
});

Deno.test("conntrackVersion() quotes at most 512 characters of a flooded stderr", async () => {
  const spawn: SpawnCommand = () => ({
    stdout: ReadableStream.from<Uint8Array>([]),
    status: Promise.resolve({ code: 1, stderr: "\x1b[31m" + "y".repeat(70_000) }),
  });
  await assert.rejects(conntrackVersion(spawn, "conntrack"), (error: Error) => {
    assert.ok(error.message.length < 700, `${error.message.length} characters`);
    // A terminal escape in the child's output is shown, not sent to the operator's terminal.
    assert.ok(!error.message.includes("\x1b"));
    assert.match(error.message, /\\x1b\[31my+… \(69493 more bytes\)$/);
    return true;
  });
});
