/**
 * Sends one TCP SYN per probe, all at once, from a fixed source address and port each, and
 * reports how each connect ended; the nat differential test reads the node's conntrack table
 * afterwards, so nothing needs to answer.
 *
 * Usage: `deno run --allow-net syn_burst.ts <timeout-ms>` with a JSON array of
 * `{ src, sport, dst, dport }` on stdin; prints one JSON object `{ results: string[] }`.
 *
 * @module
 */
import net from "node:net";

/** One SYN to send. */
interface Probe {
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
}

function probe(p: Probe, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({
      host: p.dst,
      port: p.dport,
      localAddress: p.src,
      localPort: p.sport,
    });
    const done = (result: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done("timeout"), timeoutMs);
    socket.on("connect", () => done("connected"));
    socket.on("error", (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
  });
}

const timeoutMs = Number(Deno.args[0] ?? "500");
const probes = JSON.parse(await new Response(Deno.stdin.readable).text()) as Probe[];
const results = await Promise.all(probes.map((p) => probe(p, timeoutMs)));
console.log(JSON.stringify({ results }));
