/**
 * The backend of the end-to-end suite, run in the backend namespace: the DNAT target. Listens on
 * `[::]:PORT` (IPv4 too, as v4-mapped), sends one banner line on every connection and keeps the
 * connection until the client closes it. Prints `listening` once ready.
 *
 * Usage: `deno run --no-config --allow-net tests/e2e/backend.ts 8080 "hello from the backend"`
 *
 * @module
 */
import net from "node:net";

const port = Number(Deno.args[0] ?? "8080");
const banner = Deno.args[1] ?? "hello";

const server = net.createServer((socket) => {
  socket.on("error", () => socket.destroy());
  socket.write(`${banner} ${socket.remoteAddress}\n`);
  // Drain whatever the client sends; its close ends ours.
  socket.resume();
  socket.on("end", () => socket.end());
});
server.listen({ host: "::", port, ipv6Only: false }, () => console.log(`listening ${port}`));
