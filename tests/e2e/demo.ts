/**
 * `deno task demo`: the problem and the fix on this machine's real kernel, in three throwaway
 * network namespaces. A client retries from one source port to a LoadBalancer VIP before the
 * Service exists; the Service appears and the client stays stuck on its stale conntrack entry;
 * the agent starts with its default settings and the client gets through. Needs root.
 *
 * @module
 */
import { denoSpawn } from "../../lib/seams/spawn_deno.ts";
import {
  ADDRESSES,
  type AgentLogRecord,
  BACKEND_PORT,
  type ClientEvent,
  missingPrerequisites,
  prepareAgentCommand,
  SERVICE_PORT,
  Testbed,
} from "./testbed.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const CLIENT_PORT = 40000;
const STUCK_WATCH_MS = 4000;
const AGENT_LIMIT_MS = 20_000;

/** Raised when SIGINT or SIGTERM interrupts the demo; it then tears down and exits 130. */
class Interrupted extends Error {
  constructor() {
    super("interrupted");
    this.name = "Interrupted";
  }
}

const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const paint = (code: string) => (text: string) => color ? `\x1b[${code}m${text}\x1b[0m` : text;
const bold = paint("1");
const dim = paint("2");
const green = paint("32");
const red = paint("31");
const cyan = paint("36");

function say(text = ""): void {
  console.log(text);
}

function step(n: number, title: string): void {
  say();
  say(bold(`${n}. ${title}`));
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function describeAttempt(e: ClientEvent): string {
  return e.event === "connected"
    ? green(`attempt ${e.attempt}: connected, the backend says "${e.banner}"`)
    : red(`attempt ${e.attempt}: ${e.result === "timeout" ? "no answer (timed out)" : e.result}`);
}

async function main(signal: AbortSignal): Promise<number> {
  const missing = missingPrerequisites();
  if (missing.length > 0) {
    const hint = missing.includes("root") ? "; run it as root: sudo deno task demo" : "";
    console.error(`demo: cannot run: needs ${missing.join("; ")}${hint}`);
    return 1;
  }
  const until = <T>(promise: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (signal.aborted) return reject(new Interrupted());
      const onAbort = () => reject(new Interrupted());
      signal.addEventListener("abort", onAbort, { once: true });
      promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  const pause = (ms: number) => until(new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const a = ADDRESSES.ipv4;
  const vip = `${a.vip}:${SERVICE_PORT}`;

  say(bold("conntrack-cleaner demo"));
  say(dim("Three network namespaces on this kernel; every address is a documentation address and"));
  say(dim("no packet leaves them. Everything is removed at the end, or on Ctrl-C."));

  step(1, "Setting up the hosts");
  const command = await until(prepareAgentCommand(denoSpawn, ROOT));
  await using bed = await until(Testbed.create({ spawn: denoSpawn, root: ROOT }));
  say(`   client  ${a.client}  retries from one source port, like a firewalled client`);
  say(
    `   node    ${a.nodeClientSide} / ${a.nodeBackendSide}  forwards and tracks connections, with`,
  );
  say("           kube-proxy-like nat rules but no Service yet");
  say(`   backend ${a.backend}:${BACKEND_PORT}  the Service's pod; drops traffic to the bare VIP`);
  say(`   VIP     ${vip}  the LoadBalancer address, routed to the node before the Service exists`);

  step(2, `The client starts knocking on ${vip} before the Service exists`);
  await using client = await until(bed.startClient("ipv4", { sport: CLIENT_PORT }));
  const stale = await until(bed.waitForEntry(
    (e) => e.flow.original.sport === CLIENT_PORT && e.state === "SYN_SENT",
    5000,
    "the client's SYN_SENT entry",
  ));
  say(`   The node's conntrack table now holds, without any NAT:`);
  say(cyan(`   ${stale.line.replace(/\s+/g, " ")}`));

  step(3, `The Service appears: kube-proxy DNATs ${vip} to ${a.backend}:${BACKEND_PORT}`);
  await until(bed.addServiceDnat("ipv4", { style: "kube" }));
  const appeared = performance.now();
  const seenBefore = client.events.length;
  await pause(STUCK_WATCH_MS);
  for (const e of client.events.slice(seenBefore)) say(`   ${describeAttempt(e)}`);
  if (client.isConnected()) {
    say(red("   The client got through without the agent; this kernel does not show the problem."));
    return 1;
  }
  const stuckFor = seconds(performance.now() - appeared);
  say(`   Still stuck after ${stuckFor}: every retry reuses source port ${CLIENT_PORT}, so its`);
  say("   SYNs match the old entry and skip the new DNAT rule.");

  step(4, "Starting conntrack-cleaner on the node, with its default settings");
  say(
    dim(
      "   On this kernel (6.x) SYN_SENT timers are never renewed, so the renewal rule cannot fire.",
    ),
  );
  say(
    dim("   The nat rule can: the node now translates the VIP, yet the entry has no NAT. The age"),
  );
  say(dim("   rule (10 s) would catch it otherwise."));
  const started = performance.now();
  await using agent = await until(
    bed.startAgent(command, ["--log-format", "json", "--metrics-address", ""]),
  );
  const seenAtStart = client.events.length;
  const connected = await until(Promise.race([
    client.connected,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error("the client did not get through")), AGENT_LIMIT_MS)
    ),
  ]));
  const took = performance.now() - started;
  for (const e of client.events.slice(seenAtStart)) say(`   ${describeAttempt(e)}`);
  const deletion = await until(agent.waitFor(
    (r) => r.message === "deleted stale flow" && r.properties["sport"] === CLIENT_PORT,
    2000,
    "the agent's deletion line",
  ));
  say(`   The agent's log line:`);
  say(cyan(`   ${deletion.raw}`));
  say(green(bold(
    `   The client got through ${seconds(took)} after the agent started ` +
      `(attempt ${connected.attempt}), by the ${ruleOf(deletion)} rule.`,
  )));

  step(5, "Tearing down");
  await agent.stop();
  await client.stop();
  await bed[Symbol.asyncDispose]();
  say(`   Removed ${Object.values(bed.names).join(", ")}. Done.`);
  return 0;
}

function ruleOf(record: AgentLogRecord): string {
  return String(record.properties["rule"] ?? "unknown");
}

if (import.meta.main) {
  const controller = new AbortController();
  const stop = () => controller.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  let code: number;
  try {
    code = await main(controller.signal);
  } catch (error) {
    if (error instanceof Interrupted) {
      console.error("demo: interrupted; hosts torn down");
      code = 130;
    } else {
      console.error(`demo: ${error instanceof Error ? error.message : String(error)}`);
      code = 1;
    }
  }
  Deno.exit(code);
}
