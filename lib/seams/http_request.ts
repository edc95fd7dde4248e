/**
 * Reading an HTTP/1.1 request head (RFC 9112) strictly enough for a listener that anyone on the
 * network can reach: only what the probe routes need is accepted, and anything odd is a
 * `malformed` result with a short reason, answered 400, never an exception.
 *
 * @module
 */

/** A request head that parsed. */
export interface HttpRequestHead {
  /** The method as sent, e.g. `GET`. */
  readonly method: string;
  /** The path of the target without its query, e.g. `/metrics`. */
  readonly path: string;
  /** Whether the client asked to keep the connection open (HTTP/1.1 default). */
  readonly keepAlive: boolean;
  /** Whether the request announces a body (`Content-Length` above 0 or `Transfer-Encoding`). */
  readonly hasBody: boolean;
}

/** What {@link parseRequestHead} made of a head. */
export type ParsedHead =
  | {
    /** The head is well formed. */
    readonly kind: "ok";
    /** The request. */
    readonly request: HttpRequestHead;
  }
  | {
    /** The head breaks the protocol; answer 400 and close. */
    readonly kind: "malformed";
    /** One short line saying what is wrong, for a debug log. */
    readonly reason: string;
  };

/**
 * Where the head in `bytes` ends: the index just past its empty line (CRLF CRLF, or bare LF
 * line ends, which RFC 9112 §2.2 lets a server accept), or -1 while it is incomplete.
 *
 * @example
 * ```ts
 * import { headEnd } from "./http_request.ts";
 * headEnd(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\n\r\nnext")); // 27
 * ```
 */
export function headEnd(bytes: Uint8Array, from = 0): number {
  for (let i = Math.max(0, from); i < bytes.length; i++) {
    if (bytes[i] !== LF) continue;
    if (bytes[i + 1] === LF) return i + 2;
    if (bytes[i + 1] === CR && bytes[i + 2] === LF) return i + 3;
  }
  return -1;
}

/**
 * Parses a complete request head (request line and header fields, with its empty line).
 *
 * Accepted: `METHOD SP target SP HTTP/1.0|HTTP/1.1`, an origin-form target (`/path?query`) or an
 * `http://` absolute-form one, printable ASCII only, one valid `Host` (required from HTTP/1.1).
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "./http_request.ts";
 * const head = new TextEncoder().encode("GET /metrics?x=1 HTTP/1.1\r\nHost: [::1]:9469\r\n\r\n");
 * parseRequestHead(head);
 * // { kind: "ok", request: { method: "GET", path: "/metrics", keepAlive: true, hasBody: false } }
 * ```
 */
export function parseRequestHead(head: Uint8Array): ParsedHead {
  for (const byte of head) {
    // Printable ASCII, tab and line ends only: anything else (controls, NUL, UTF-8) is refused.
    if ((byte < 0x20 && byte !== TAB && byte !== CR && byte !== LF) || byte > 0x7e) {
      return malformed("a byte outside printable ASCII");
    }
  }
  const lines = new TextDecoder("latin1").decode(head).split(/\r?\n/);
  // The head ends with its empty line, which split() turns into two empty strings.
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const requestLine = REQUEST_LINE.exec(lines[0] ?? "");
  if (requestLine === null) return malformed("a bad request line");
  const [, method = "", target = "", minor = ""] = requestLine;
  const path = targetPath(target);
  if (path === undefined) return malformed("a bad request target");

  const fields = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const field = FIELD.exec(line);
    if (field === null) return malformed("a bad header field");
    const [, rawName = "", value = ""] = field;
    const name = rawName.toLowerCase();
    fields.set(name, [...(fields.get(name) ?? []), value.trim()]);
  }

  const hosts = fields.get("host") ?? [];
  if (hosts.length > 1) return malformed("more than one Host");
  if (hosts.length === 0 && minor === "1") return malformed("no Host");
  if (hosts.length === 1 && !HOST.test(hosts[0] ?? "")) return malformed("a bad Host");

  const lengths = fields.get("content-length") ?? [];
  if (lengths.some((l) => !/^\d{1,15}$/.test(l))) return malformed("a bad Content-Length");
  const hasBody = fields.has("transfer-encoding") || lengths.some((l) => Number(l) > 0);

  const connection = (fields.get("connection") ?? []).join(",").toLowerCase().split(",")
    .map((token) => token.trim());
  const keepAlive = minor === "1"
    ? !connection.includes("close")
    : connection.includes("keep-alive");
  return { kind: "ok", request: { method, path, keepAlive, hasBody } };
}

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;

const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const REQUEST_LINE = new RegExp(`^(${TOKEN}) (\\S+) HTTP/1\\.([01])$`);
const FIELD = new RegExp(`^(${TOKEN}):[ \\t]*(.*)$`);
/** uri-host [":" port]: a bracketed IPv6 literal, or a reg-name / IPv4 address. */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::\d*)?$/;
const ORIGIN_FORM =
  /^\/[!$&'()*+,;=:@\-._~%A-Za-z0-9/]*(?:\?[!$&'()*+,;=:@\-._~%A-Za-z0-9/?\[\]]*)?$/;

/** The path of an origin-form or `http://` absolute-form target, or undefined when neither. */
function targetPath(target: string): string | undefined {
  let origin = target;
  const absolute = /^http:\/\/([^/?#]*)(.*)$/i.exec(target);
  if (absolute !== null) {
    const [, authority = "", rest = ""] = absolute;
    if (!HOST.test(authority)) return undefined;
    origin = rest === "" ? "/" : rest;
  }
  if (!ORIGIN_FORM.test(origin)) return undefined;
  const query = origin.indexOf("?");
  return query < 0 ? origin : origin.slice(0, query);
}

function malformed(what: string): ParsedHead {
  return { kind: "malformed", reason: `the request has ${what}` };
}
