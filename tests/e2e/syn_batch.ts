/**
 * Sends one TCP SYN per line of its standard input, run in the client namespace of the nftables
 * differential test. Each line is `src sport dst dport`; every connection is started at once from
 * that fixed source address and port, left unanswered for `--wait-ms`, then dropped (closing a
 * socket in SYN_SENT sends nothing, so the node keeps the conntrack entry the SYN made).
 *
 * Usage: `deno run --no-config --allow-net tests/e2e/syn_batch.ts [--wait-ms 400] < pairs`
 *
 * @module
 */
import net from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: { "wait-ms": { type: "string", default: "400" } },
});
const waitMs = Number(values["wait-ms"]);
const text = await new Response(Deno.stdin.readable).text();
const sockets: net.Socket[] = [];
for (const line of text.split("\n")) {
  const [src, sport, dst, dport] = line.trim().split(/\s+/);
  if (!dst) continue;
  const socket = net.connect({
    host: dst,
    port: Number(dport),
    localAddress: src,
    localPort: Number(sport),
  });
  // Refused, reset or unreachable are all answers the test reads from the node, not from here.
  socket.on("error", () => {});
  sockets.push(socket);
}
await new Promise((resolve) => setTimeout(resolve, waitMs));
for (const socket of sockets) socket.destroy();
console.log(`sent ${sockets.length}`);
Deno.exit(0);
