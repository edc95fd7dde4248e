#!/usr/bin/env bash
# Builds the conntrack-cleaner binary with exactly the permissions of deno.json's start task baked
# in (one source for both). Extra arguments go to deno compile, before the entry point:
#   deno task compile                                   # for this machine
#   deno task compile --target aarch64-unknown-linux-gnu
#   DENORT_BIN=/path/to/denort deno task compile        # offline: a local runtime for the target
# --no-code-cache: the binary must not try to write a code cache on a read-only root filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=$(deno eval --quiet '
  const start = JSON.parse(Deno.readTextFileSync("deno.json")).tasks.start;
  console.log(start.replace(/^deno run /, "").replace(/ main\.ts$/, ""));')
# shellcheck disable=SC2086 # the permission flags are separate words on purpose
exec deno compile $flags --no-code-cache --output conntrack-cleaner "$@" main.ts
