#!/usr/bin/env bash
# Collects the files the conntrack-cleaner image needs on top of its base image, into a staging
# root. This script is the one source of the image's file list: the Dockerfile runs it, and
# tests/rootfs_test.ts runs it too and then executes every collected program in a chroot.
#
# Usage:
#   deploy/rootfs.sh [--agent FILE] DEST   collect into DEST (created); prints each path added
#   deploy/rootfs.sh --base-packages       print the Debian packages the base image provides
#
# Runs on the Debian release the base image is built from (bookworm for cc-debian12), with the
# programs below installed. Libraries are computed with ldd, never listed by hand; only those the
# base image lacks are copied, so the base's own glibc is never replaced by another build of it.
set -euo pipefail

# What the agent spawns (see lib/table/conntrack_cli.ts and lib/nat/nat_reader.ts), looked up on PATH.
# The legacy flavour is run only where iptables-nft reports legacy tables (kube-proxy in legacy mode).
PROGRAMS=(conntrack iptables-save ip6tables-save iptables-legacy-save ip6tables-legacy-save nft)
# What the agent opens with Deno.dlopen (lib/seams/netlink_socket.ts, lib/table/netlink/netlink_lister.ts), which ldd cannot see.
# It also opens libc.so.6 (for setsockopt, recv, poll, errno), which the base image's libc6 provides.
DLOPEN_LIBS=(libmnl.so.0)
# The Debian packages gcr.io/distroless/cc-debian12 is assembled from
# (GoogleContainerTools/distroless: static/static.bzl, base/config.bzl, cc/config.bzl).
BASE_PACKAGES=(base-files netbase tzdata media-types libc6 libssl3 libgomp1 libstdc++6 libgcc-s1
  gcc-12-base)
# Where the agent binary goes in the image.
AGENT_PATH=/usr/local/bin/conntrack-cleaner

die() {
  echo "rootfs.sh: $*" >&2
  exit 2
}

# distroless/debian12 is not usr-merged (/lib, /bin and /sbin are directories there) while
# bookworm build hosts are, so everything is staged under /usr, which is a directory in both:
# a staged /lib would clash with the base image's /lib when the stage is copied over it.
canon() {
  case "$1" in
  /lib/* | /bin/* | /sbin/* | /lib64/*) echo "/usr$1" ;;
  *) echo "$1" ;;
  esac
}

# The package that ships a file, or nothing. dpkg records paths as packaged (/lib/... for most
# bookworm libraries), so both spellings are asked for.
owner() {
  local path=$1 alt
  case "$path" in
  /usr/lib/* | /usr/bin/* | /usr/sbin/*) alt=${path#/usr} ;;
  /lib/* | /bin/* | /sbin/*) alt=/usr$path ;;
  *) alt=$path ;;
  esac
  { dpkg-query -S "$path" 2>/dev/null || dpkg-query -S "$alt" 2>/dev/null || true; } |
    head -n 1 | cut -d: -f1
}

is_base() {
  local pkg=$1 base
  for base in "${BASE_PACKAGES[@]}"; do
    [[ "$pkg" == "$base" ]] && return 0
  done
  return 1
}

# The shared libraries an ELF file loads, as resolved by this system's loader.
needed() {
  local out
  if ! out=$(ldd "$1" 2>&1); then
    # "not a dynamic executable" (static) is fine; anything else is not.
    grep -q "not a dynamic executable" <<<"$out" && return 0
    die "Cannot list the libraries of $1: $out"
  fi
  if grep -q "not found" <<<"$out"; then
    die "Cannot collect the libraries of $1: $(grep "not found" <<<"$out" | tr -s ' \t' ' ')"
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$out"
}

declare -A ADDED=() PACKAGES=() SEEN=()

add() { # add SRC DESTPATH: copy SRC's content to DEST/DESTPATH once
  local src=$1 to=$2
  [[ -n "${ADDED[$to]:-}" ]] && return 0
  ADDED[$to]=1
  install -D -m "$(stat -L -c %a "$src")" "$src" "$DEST$to"
  echo "${to#/}"
}

link() { # link PATH TARGET: a symlink PATH -> TARGET inside DEST
  local path=$1 target=$2
  [[ -n "${ADDED[$path]:-}" ]] && return 0
  ADDED[$path]=1
  mkdir -p "$DEST$(dirname "$path")"
  ln -sfn "$target" "$DEST$path"
  echo "${path#/} -> $target"
}

QUEUE=()

# Adds an ELF file and queues it for its libraries.
add_elf() {
  local src=$1 to=$2 pkg
  pkg=$(owner "$src")
  [[ -n "$pkg" ]] && PACKAGES[$pkg]=1
  add "$src" "$to"
  QUEUE+=("$src")
}

add_program() {
  local name=$1 path real
  path=$(command -v "$name") || die "Cannot find $name on PATH: install it (apt-get install conntrack iptables nftables)"
  real=$(readlink -f "$path")
  add_elf "$real" "$(canon "$real")"
  # Multi-call binaries (xtables-nft-multi) dispatch on the name they are run as.
  [[ "$(canon "$path")" != "$(canon "$real")" ]] && link "$(canon "$path")" "$(canon "$real")"
  return 0
}

add_library() { # by path as the loader resolved it
  local path=$1 pkg
  [[ -n "${SEEN[$path]:-}" ]] && return 0
  SEEN[$path]=1
  pkg=$(owner "$path")
  if [[ -n "$pkg" ]] && is_base "$pkg"; then return 0; fi
  [[ -n "$pkg" ]] && PACKAGES[$pkg]=1
  add "$path" "$(canon "$path")"
  QUEUE+=("$path")
  # libxtables loads its match and target extensions with dlopen from a directory beside it;
  # iptables-save cannot print a rule whose extension is missing.
  if [[ "$(basename "$path")" == libxtables.so.* ]]; then
    local dir ext
    dir=$(dirname "$(readlink -f "$path")")/xtables
    [[ -d "$dir" ]] || die "Cannot find the iptables extensions: $dir is missing"
    for ext in "$dir"/*.so; do
      add "$ext" "$(canon "$ext")"
      QUEUE+=("$ext")
    done
  fi
}

find_library() { # a soname, as the loader would find it
  local soname=$1 path
  path=$(ldconfig -p | awk -v so="$soname" '$1 == so { print $NF; exit }')
  [[ -n "$path" ]] || die "Cannot find $soname: install it (apt-get install libmnl0)"
  echo "$path"
}

main() {
  local agent=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
    --base-packages)
      printf '%s\n' "${BASE_PACKAGES[@]}"
      exit 0
      ;;
    --agent)
      [[ $# -ge 2 ]] || die "Cannot read --agent: it needs a file"
      agent=$2
      shift 2
      ;;
    -*) die "Cannot use option $1: expected --agent FILE or --base-packages" ;;
    *) break ;;
    esac
  done
  [[ $# -eq 1 ]] || die "Cannot collect: expected one destination directory, got $#"
  DEST=${1%/}
  mkdir -p "$DEST"

  local name lib file pkg
  [[ -n "$agent" ]] && add_elf "$agent" "$AGENT_PATH"
  for name in "${PROGRAMS[@]}"; do add_program "$name"; done
  for name in "${DLOPEN_LIBS[@]}"; do add_library "$(find_library "$name")"; done
  while [[ ${#QUEUE[@]} -gt 0 ]]; do
    file=${QUEUE[0]}
    QUEUE=("${QUEUE[@]:1}")
    for lib in $(needed "$file"); do add_library "$lib"; done
  done
  # Licences travel with the binaries, as in the base image.
  for pkg in "${!PACKAGES[@]}"; do
    file=/usr/share/doc/${pkg%%:*}/copyright
    [[ -f "$file" ]] && add "$file" "$file"
  done
  return 0
}

main "$@"
