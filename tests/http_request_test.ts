import assert from "node:assert/strict";
import { headEnd, parseRequestHead } from "../lib/seams/http_request.ts";
import type { ParsedHead } from "../lib/seams/http_request.ts";

const parse = (text: string): ParsedHead => parseRequestHead(new TextEncoder().encode(text));
const ok = (method: string, path: string, keepAlive: boolean, hasBody = false): ParsedHead => ({
  kind: "ok",
  request: { method, path, keepAlive, hasBody },
});

Deno.test("headEnd() finds the empty line after CRLF or bare LF line ends, or says -1", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);
  assert.equal(headEnd(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\nrest")), 27);
  assert.equal(headEnd(bytes("GET / HTTP/1.1\nHost: a\n\nrest")), 24);
  assert.equal(headEnd(bytes("GET / HTTP/1.1\r\nHost: a\r\n")), -1);
});

Deno.test("parseRequestHead() reads method, path and keep-alive of well-formed heads", () => {
  const rows: readonly (readonly [string, ParsedHead])[] = [
    ["GET /metrics HTTP/1.1\r\nHost: 10.0.0.1:9469\r\n\r\n", ok("GET", "/metrics", true)],
    [
      "HEAD /healthz?x=1 HTTP/1.1\r\nhost: [2001:db8::1]:9469\r\n\r\n",
      ok("HEAD", "/healthz", true),
    ],
    ["GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", ok("GET", "/readyz", false)],
    ["GET /readyz HTTP/1.0\r\n\r\n", ok("GET", "/readyz", false)],
    ["GET /readyz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", ok("GET", "/readyz", true)],
    ["GET http://node:9469 HTTP/1.1\r\nHost: node:9469\r\n\r\n", ok("GET", "/", true)],
    [
      "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
      ok("POST", "/metrics", true),
    ],
    [
      "POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
      ok("POST", "/metrics", true, true),
    ],
  ];
  for (const [text, want] of rows) assert.deepEqual(parse(text), want, JSON.stringify(text));
});

Deno.test("parseRequestHead() says what is wrong with a malformed head", () => {
  const rows: readonly (readonly [string, string])[] = [
    ["GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n", "the request has a bad Host"],
    ["GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n", "the request has a bad Host"],
    ["GET /healthz HTTP/1.1\r\n\r\n", "the request has no Host"],
    ["GET /healthz HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "the request has more than one Host"],
    ["GET /healthz\r\n\r\n", "the request has a bad request line"],
    ["PRI * HTTP/2.0\r\n\r\n", "the request has a bad request line"],
    ["GET * HTTP/1.1\r\nHost: a\r\n\r\n", "the request has a bad request target"],
    ["GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "the request has a bad request target"],
    ["GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", "the request has a bad request target"],
    ["GET / HTTP/1.1\r\nHost: a\r\nBroken\r\n\r\n", "the request has a bad header field"],
    ["GET / HTTP/1.1\r\nHost : a\r\n\r\n", "the request has a bad header field"],
    [
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n",
      "the request has a bad Content-Length",
    ],
    ["GET /\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n", "the request has a byte outside printable ASCII"],
  ];
  for (const [text, reason] of rows) {
    assert.deepEqual(parse(text), { kind: "malformed", reason }, JSON.stringify(text));
  }
});
