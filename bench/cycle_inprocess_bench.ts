/**
 * One agent cycle in-process, on a synthetic `conntrack -L -p tcp -u UNREPLIED -o id` output of
 * N candidates (same flows every cycle, as in steady state): what the agent itself costs per
 * cycle, without conntrack's own time. Run: `deno bench bench/cycle_inprocess_bench.ts`.
 *
 * @module
 */
import { createAgent } from "../lib/loop/agent.ts";
import type { SpawnCommand } from "../lib/seams/spawn.ts";
import { createCliLister } from "../lib/table/conntrack_cli.ts";
import { silentLogger } from "../lib/seams/logger.ts";

function dumpText(n: number, timer: number): Uint8Array {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const v6 = i % 10 === 0;
    const src = v6
      ? `2001:db8:1::${(i % 65535).toString(16)}`
      : `198.51.${(i >> 16) & 255}.${(i >> 8) & 255}`;
    const dst = v6 ? "2001:db8:100::10" : `192.0.2.${i & 255}`;
    const sport = 1024 + (i % 60000);
    lines.push(
      `tcp      6 ${timer} SYN_SENT src=${src} dst=${dst} sport=${sport} dport=80 [UNREPLIED] ` +
        `src=${dst} dst=${src} sport=80 dport=${sport} mark=0 use=1 id=${3000000000 + i}`,
    );
  }
  return new TextEncoder().encode(lines.join("\n") + "\n");
}

for (const n of [10_000, 50_000]) {
  const texts = [dumpText(n, 117), dumpText(n, 116)];
  let cycle = 0;
  let now = 0;
  const spawn: SpawnCommand = () => {
    const bytes = texts[cycle++ % 2]!;
    // conntrack writes in 64 KiB chunks or so; hand them over likewise.
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += 65536) chunks.push(bytes.subarray(i, i + 65536));
    return {
      stdout: ReadableStream.from(chunks),
      status: Promise.resolve({ code: 0, stderr: "" }),
    };
  };
  const agent = createAgent({
    lister: createCliLister(spawn, "conntrack"),
    clock: {
      monotonic: () => (now += 500),
      wall: () => Date.now(),
      sleep: () => Promise.resolve(),
    },
    logger: silentLogger,
    deleter: { name: "none", delete: () => Promise.resolve({ deleted: [], gone: [], failed: [] }) },
  }, {
    periodMs: 1000,
    renewalThreshold: 3,
    unrepliedMaxAgeMs: 0,
    dryRun: true,
  });
  Deno.bench(`agent cycle, ${n} candidates (list, parse, track)`, { n: 20 }, async () => {
    await agent.cycle();
  });
}
