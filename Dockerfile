# syntax=docker/dockerfile:1
# conntrack-cleaner: the compiled agent, plus conntrack, iptables-save, ip6tables-save (both
# flavours), nft and exactly the shared libraries they load, on distroless (no shell, no package
# manager).
#
#   docker build -t conntrack-cleaner:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/conntrack-cleaner:0.1.0 .
#
# Offline compile with a local denort (deno compile reads DENORT_BIN before downloading one; it
# must match the target platform):
#   docker buildx build --build-context denort=DIR --build-arg DENORT_BIN=denort .
#
# The file list comes from deploy/rootfs.sh alone; tests/rootfs_test.ts runs the same script and
# executes every collected program in a chroot.

ARG DENO_VERSION=2.9.6
# gcr.io/distroless/cc-debian12 (tag latest: runs as root, which the agent needs for
# CAP_NET_ADMIN). The digest is the one public BuildKit logs resolved this tag to; it could not be
# checked against the registry from the build machine. Refresh with:
#   crane digest gcr.io/distroless/cc-debian12:latest
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:latest@sha256:72344f7f909a8bf003c67f55687e6d51a441b49661af8f660aa7b285f00e57df

# Empty unless replaced with --build-context denort=DIR.
FROM scratch AS denort

# 1. Compile on the build machine's own platform, for the target platform.
FROM --platform=$BUILDPLATFORM denoland/deno:debian-${DENO_VERSION} AS build
ARG TARGETARCH
ARG DENORT_BIN=
WORKDIR /src
COPY deno.json deno.lock main.ts ./
COPY lib/ lib/
COPY deploy/compile.sh deploy/
# deploy/compile.sh bakes in the start task's permission flags (one source); only --target and
# --frozen are added here.
RUN --mount=type=bind,from=denort,target=/denort \
    set -eu; \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "Cannot compile for $TARGETARCH: deno compile targets amd64 and arm64" >&2; exit 1 ;; \
    esac; \
    if [ -n "$DENORT_BIN" ]; then export DENORT_BIN="/denort/$DENORT_BIN"; else unset DENORT_BIN; fi; \
    bash deploy/compile.sh --frozen --target "$target"; \
    ./conntrack-cleaner --help >/dev/null 2>&1 || [ "$TARGETARCH" != "$(dpkg --print-architecture)" ]

# 2. On the target platform (emulated when cross-building, since ldd must use the target's
#    loader): install the programs and stage them with their libraries.
FROM debian:bookworm-slim AS rootfs
RUN apt-get update \
    && apt-get install -y --no-install-recommends conntrack iptables nftables libmnl0 \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/rootfs.sh /usr/local/sbin/rootfs.sh
COPY --from=build /src/conntrack-cleaner /tmp/conntrack-cleaner
RUN /usr/local/sbin/rootfs.sh --agent /tmp/conntrack-cleaner /staging

# 3. The image: the base, the staged files, nothing else.
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/conntrack-cleaner/conntrack-cleaner
LABEL org.opencontainers.image.title="conntrack-cleaner" \
      org.opencontainers.image.description="Deletes stale SYN_SENT conntrack entries to new LoadBalancer VIPs" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=rootfs /staging/ /
ENTRYPOINT ["/usr/local/bin/conntrack-cleaner"]
