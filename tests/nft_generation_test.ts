import assert from "node:assert/strict";
import {
  decodeGenerationAnswer,
  encodeGenerationRequest,
  followGeneration,
} from "../lib/nat/nft_generation.ts";
import type { NetfilterRequests } from "../lib/seams/netfilter_request.ts";
import { attrs, be32, concat, message, nfgen } from "./support/netlink_messages.ts";
import { RecordingLogger } from "./fakes.ts";

/** `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN`, from the kernel's uapi headers. */
const GETGEN = (10 << 8) | 16;
/** `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN`: the kernel's answer. */
const NEWGEN = (10 << 8) | 15;
const NLMSG_ERROR = 2;
const NFTA_GEN_ID = 1;
const NFTA_GEN_PROC_PID = 2;
const NFTA_GEN_PROC_NAME = 3;

/** An answer as the kernel sends it: generation id, then the committing process's pid and name. */
function newgen(seq: number, id: number): Uint8Array {
  return message(
    NEWGEN,
    0,
    seq,
    concat([
      nfgen(0),
      attrs([
        [NFTA_GEN_ID, be32(id)],
        [NFTA_GEN_PROC_PID, be32(4242)],
        [NFTA_GEN_PROC_NAME, new TextEncoder().encode("kube-proxy\0")],
      ]),
    ]),
  );
}

function refusal(seq: number, errno: number): Uint8Array {
  const body = new Uint8Array(4 + 16);
  new DataView(body.buffer).setInt32(0, -errno, true);
  return message(NLMSG_ERROR, 0, seq, body);
}

Deno.test("encodeGenerationRequest() builds one NFT_MSG_GETGEN request with an empty nfgenmsg", () => {
  assert.deepEqual(encodeGenerationRequest(7), message(GETGEN, 1, 7, nfgen(0)));
});

Deno.test("decodeGenerationAnswer() reads NFTA_GEN_ID as a big-endian u32", () => {
  assert.deepEqual(decodeGenerationAnswer(newgen(7, 0x01020304), 7), {
    kind: "generation",
    id: 0x01020304,
  });
  assert.deepEqual(decodeGenerationAnswer(newgen(8, 0xfffffffe), 8), {
    kind: "generation",
    id: 0xfffffffe,
  });
});

Deno.test("decodeGenerationAnswer() finds NFTA_GEN_ID after other attributes", () => {
  const bytes = message(
    NEWGEN,
    0,
    3,
    concat([
      nfgen(0),
      attrs([[NFTA_GEN_PROC_NAME, new TextEncoder().encode("nft\0")], [NFTA_GEN_ID, be32(99)]]),
    ]),
  );
  assert.deepEqual(decodeGenerationAnswer(bytes, 3), { kind: "generation", id: 99 });
});

Deno.test("decodeGenerationAnswer() gives the errno of a refusal", () => {
  assert.deepEqual(decodeGenerationAnswer(refusal(5, 1), 5), { kind: "error", errno: 1 });
});

Deno.test("decodeGenerationAnswer() refuses an answer to another request", () => {
  assert.throws(
    () => decodeGenerationAnswer(newgen(6, 1), 7),
    SyntaxError,
    "Cannot decode a generation answer as it answers request 6, not 7: current value is 6",
  );
});

Deno.test("decodeGenerationAnswer() refuses truncated bytes, other messages and a missing id", () => {
  assert.throws(() => decodeGenerationAnswer(new Uint8Array(10), 1), SyntaxError, "shorter");
  assert.throws(() => decodeGenerationAnswer(newgen(1, 5).slice(0, 24), 1), SyntaxError, "length");
  assert.throws(
    () => decodeGenerationAnswer(message(GETGEN, 0, 1, nfgen(0)), 1),
    SyntaxError,
    "not NFT_MSG_NEWGEN",
  );
  assert.throws(
    () =>
      decodeGenerationAnswer(
        message(NEWGEN, 0, 1, concat([nfgen(0), attrs([[NFTA_GEN_PROC_PID, be32(1)]])])),
        1,
      ),
    SyntaxError,
    "no NFTA_GEN_ID",
  );
});

/** A socket that answers each request with what `answer` builds from its sequence number. */
function fakeRequests(
  answer: (seq: number) => Uint8Array | undefined | Error,
): NetfilterRequests & { sent: Uint8Array[] } {
  const sent: Uint8Array[] = [];
  return {
    sent,
    request(bytes) {
      sent.push(bytes);
      const seq = new DataView(bytes.buffer).getUint32(8, true);
      const out = answer(seq);
      return out instanceof Error ? Promise.reject(out) : Promise.resolve(out);
    },
    [Symbol.dispose]() {},
  };
}

Deno.test("followGeneration() answers the kernel's id, one request per call", async () => {
  let id = 41;
  const requests = fakeRequests((seq) => newgen(seq, id));
  using generation = followGeneration({
    logger: new RecordingLogger(),
    open: () => ({ kind: "ok", requests }),
  });
  assert.equal(await generation.read(), 41);
  id = 42;
  assert.equal(await generation.read(), 42);
  assert.equal(requests.sent.length, 2);
});

Deno.test("followGeneration() answers undefined and warns once when it cannot tell, and says when it can again", async () => {
  let mode: "refuse" | "silent" | "ok" = "refuse";
  const requests = fakeRequests((seq) =>
    mode === "refuse" ? refusal(seq, 1) : mode === "silent" ? undefined : newgen(seq, 3)
  );
  const logger = new RecordingLogger();
  using generation = followGeneration({ logger, open: () => ({ kind: "ok", requests }) });
  assert.equal(await generation.read(), undefined);
  mode = "silent";
  assert.equal(await generation.read(), undefined);
  assert.equal(logger.records.filter((r) => r.level === "warn").length, 1);
  assert.match(logger.records[0]!.message, /^Cannot read the nftables generation/);
  mode = "ok";
  assert.equal(await generation.read(), 3);
  assert.equal(logger.records.filter((r) => r.level === "info").length, 1);
});

Deno.test("followGeneration() answers undefined without a socket, and opens it only when asked", async () => {
  let opens = 0;
  const logger = new RecordingLogger();
  using generation = followGeneration({
    logger,
    open: () => {
      opens++;
      return { kind: "unavailable", reason: "libmnl.so.0 not found" };
    },
  });
  assert.equal(opens, 0);
  assert.equal(await generation.read(), undefined);
  assert.equal(await generation.read(), undefined);
  assert.equal(opens, 1);
  assert.equal(logger.records[0]?.properties["reason"], "libmnl.so.0 not found");
});
