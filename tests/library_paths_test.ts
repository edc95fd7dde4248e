import assert from "node:assert/strict";
import { describeUnavailable, openLibrary } from "../lib/seams/native_library.ts";

const MNL = { mnl_socket_open: { parameters: ["i32"], result: "pointer" } } as const;
const LIBC = { getpid: { parameters: [], result: "i32" } } as const;

Deno.test("openLibrary() passes over a file that is not the library and opens a later path", () => {
  const opened = openLibrary(["libc.so.6", "/nonexistent/libc.so.6", "libc.so.6"], LIBC);
  assert.equal(opened.kind, "ok");
  if (opened.kind === "ok") opened.library.close();
  const wrong = openLibrary(["/nonexistent/libmnl.so.0", "libc.so.6"], MNL);
  assert.equal(wrong.kind, "unusable");
  if (wrong.kind !== "unusable") return;
  assert.match(wrong.path, /\/libc\.so\.6$/);
  assert.equal(wrong.problem, "missing symbol mnl_socket_open");
});

Deno.test("describeUnavailable() tells a refused permission, a missing file and a wrong one apart", () => {
  assert.equal(
    describeUnavailable("libx.so.1", { kind: "missing", denied: true }),
    "--allow-ffi not granted",
  );
  assert.equal(
    describeUnavailable("libx.so.1", { kind: "missing", denied: false }),
    "libx.so.1 not found",
  );
  assert.equal(
    describeUnavailable("libx.so.1", {
      kind: "unusable",
      path: "/opt/libx.so.1",
      problem: "missing symbol x_open",
      denied: true,
    }),
    "libx.so.1 found at /opt/libx.so.1 but is not a usable libx.so.1: missing symbol x_open",
  );
});
