/**
 * A small builder of netlink messages of nested attributes, written from the kernel's layout
 * (`include/uapi/linux/netlink.h`, `nfnetlink_conntrack.h`) independently of the codec under
 * test, so that tests compare the codec's bytes with bytes built another way.
 *
 * @module
 */

/** One attribute: its type, and raw bytes or nested attributes (which set `NLA_F_NESTED`). */
export type Attr = readonly [type: number, value: Uint8Array | readonly Attr[]];

/** Attributes as bytes: a 4-byte header each (length, type), bodies padded to 4 bytes. */
export function attrs(list: readonly Attr[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [type, value] of list) {
    const body = value instanceof Uint8Array ? value : attrs(value);
    const out = new Uint8Array((4 + body.length + 3) & ~3);
    const view = new DataView(out.buffer);
    view.setUint16(0, 4 + body.length, true);
    view.setUint16(2, value instanceof Uint8Array ? type : type | 0x8000, true);
    out.set(body, 4);
    parts.push(out);
  }
  return concat(parts);
}

/** The parts, one after the other. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A big-endian u32. */
export function be32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, false);
  return b;
}

/** A big-endian u16. */
export function be16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n, false);
  return b;
}

/** A u8. */
export function u8(n: number): Uint8Array {
  return Uint8Array.of(n);
}

/** A dotted quad's four bytes. */
export function v4(text: string): Uint8Array {
  return Uint8Array.from(text.split(".").map(Number));
}

/** A netlink message: header (length, type, flags, seq, port id 0), then the payload. */
export function message(type: number, flags: number, seq: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, out.length, true);
  view.setUint16(4, type, true);
  view.setUint16(6, flags, true);
  view.setUint32(8, seq, true);
  out.set(payload, 16);
  return out;
}

/** The nfgenmsg header: family, version 0, resource id 0. */
export function nfgen(family: number): Uint8Array {
  return Uint8Array.of(family, 0, 0, 0);
}

/**
 * The kernel's acknowledgement of request `seq`: `NLMSG_ERROR` with `-errno` (0 for success)
 * and the request's header.
 */
export function ack(seq: number, errno: number): Uint8Array {
  const payload = new Uint8Array(20);
  new DataView(payload.buffer).setInt32(0, -errno, true);
  return message(2, 0, seq, payload);
}
