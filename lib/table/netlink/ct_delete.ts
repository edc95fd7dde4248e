/**
 * ctnetlink DELETEs, many to a datagram, each acknowledged: the deleter's last step once its GETs
 * (`ct_get.ts`) have shown which entries are still the ones judged. As with a GET, the kernel
 * carries out every request of a datagram inside the `send` itself and queues one acknowledgement
 * per request, so the answers are all there when it returns and are taken without waiting.
 *
 * The encoding is pure (`deleteRequests` and `readAcks` in `ctnetlink.ts`); {@link deleteEntries}
 * drives a socket.
 *
 * @module
 */
import { type DeleteEntry, deleteRequests, errnoName, readAcks } from "./ctnetlink.ts";
import type { RawNetlinkSocket } from "../../seams/netlink_socket.ts";

const ENOENT = 2;

/** What the kernel said of one DELETE. */
export type DeleteAnswer =
  | {
    /** The entry was removed. */
    readonly kind: "deleted";
  }
  | {
    /**
     * No entry with this tuple, zone and id (`ENOENT`): it expired, was deleted, or was replaced
     * by another entry of the same tuple since its id was read. Nothing was deleted.
     */
    readonly kind: "gone";
  }
  | {
    /** The kernel refused the request, or never answered it. */
    readonly kind: "failed";
    /** One line saying why. */
    readonly reason: string;
  };

/**
 * How many DELETEs go in one datagram. Each acknowledgement takes a small buffer of its own in
 * the socket's receive queue, so the batch stays well inside a receive buffer of
 * `DELETES_PER_SEND * 4096` bytes.
 */
export const DELETES_PER_SEND = 128;

/**
 * The first sequence number of a datagram of DELETEs: far from the GETs' (which count from 1), so
 * that an answer left from one kind of request is never taken for the other's.
 */
const FIRST_SEQ = 0x4000_0000;

/**
 * Deletes each of `entries` and hands each answer to `onAnswer`, in chunks of
 * {@link DELETES_PER_SEND}. An entry whose acknowledgement never came gets `failed`. Returns false
 * when a send failed (the socket is unusable; the rest got `failed`).
 *
 * @throws {RangeError} from `deleteRequests` when an entry does not encode; check entries first.
 */
export function deleteEntries(
  socket: Pick<RawNetlinkSocket, "send" | "receiveNow">,
  entries: readonly DeleteEntry[],
  onAnswer: (index: number, answer: DeleteAnswer) => void,
  buffer: Uint8Array = new Uint8Array(64 * 1024),
): boolean {
  // Answers left over from an earlier, broken-off round must not be taken for this one's.
  while (socket.receiveNow(buffer).kind === "data");
  for (let from = 0; from < entries.length; from += DELETES_PER_SEND) {
    const chunk = entries.slice(from, from + DELETES_PER_SEND);
    if (!socket.send(deleteRequests(chunk, FIRST_SEQ))) {
      for (let i = from; i < entries.length; i++) {
        onAnswer(i, { kind: "failed", reason: "Cannot send the netlink DELETE requests" });
      }
      return false;
    }
    const answered = new Uint8Array(chunk.length);
    for (let left = chunk.length; left > 0;) {
      const got = socket.receiveNow(buffer);
      if (got.kind !== "data") break;
      for (const ack of readAcks(buffer, got.length)) {
        const index = ack.seq - FIRST_SEQ;
        if (index < 0 || index >= chunk.length || answered[index] === 1) continue;
        answered[index] = 1;
        left--;
        onAnswer(from + index, answerOf(ack.errno));
      }
    }
    answered.forEach((done, i) => {
      if (done === 0) {
        onAnswer(from + i, {
          kind: "failed",
          reason: "Cannot delete flow: no answer from the kernel",
        });
      }
    });
  }
  return true;
}

function answerOf(errno: number): DeleteAnswer {
  if (errno === 0) return { kind: "deleted" };
  if (errno === ENOENT) return { kind: "gone" };
  return { kind: "failed", reason: `Cannot delete flow: ${errnoName(errno)}` };
}
