/**
 * Bench helper, run inside a namespace: real TCP connection churn on loopback. A server on
 * 127.0.0.1:PORT accepts and closes; clients open and close RATE connections a second for SECONDS
 * seconds (bounded in count and time). Prints `{ connections, seconds, cpuSeconds }`: the CPU
 * includes the kernel's work done in this process's system calls and the softirqs run on its
 * behalf, which is where conntrack builds its events on loopback.
 *
 * CLI: `deno run -A bench/events_churn.ts RATE SECONDS PORT`
 *
 * @module
 */
import process from "node:process";

const [rateText = "1000", secondsText = "5", portText = "18080"] = Deno.args;
const rate = Number(rateText);
const seconds = Number(secondsText);
const port = Number(portText);
const listener = Deno.listen({ hostname: "127.0.0.1", port });
const serving = (async () => {
  for await (const conn of listener) conn.close();
})().catch(() => {});

const before = process.cpuUsage();
const started = performance.now();
let connections = 0;
const TICK_MS = 10;
const perTick = rate * TICK_MS / 1000;
let owed = 0;
while (performance.now() - started < seconds * 1000) {
  const tick = performance.now();
  owed += perTick;
  const batch: Promise<void>[] = [];
  for (; owed >= 1; owed--) {
    batch.push(
      Deno.connect({ hostname: "127.0.0.1", port }).then((c) => c.close()).then(() =>
        void connections++
      ).catch(() => {}),
    );
  }
  await Promise.all(batch);
  const left = TICK_MS - (performance.now() - tick);
  if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
}
const took = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(before);
listener.close();
await serving;
console.log(JSON.stringify({
  connections,
  seconds: took,
  rate: Math.round(connections / took),
  cpuSeconds: (cpu.user + cpu.system) / 1e6,
}));
