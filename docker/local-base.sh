#!/usr/bin/env bash
# Make a local Debian bookworm base image (python3 3.11, venv, pip, libsndfile1) from Debian's
# own packages, for hosts that cannot pull python:3.11-slim or nvidia/cuda from a registry.
#   docker/local-base.sh [IMAGE]          (default slidead-base:bookworm; needs root and debootstrap)
# Both Dockerfiles take it as --build-arg BASE=IMAGE. The host's CA bundle is copied in, so pip
# and uv inside a build trust the same certificates as the host (e.g. a TLS-intercepting proxy).
set -euo pipefail
IMAGE=${1:-slidead-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-$(grep -rhoE '^(deb |URIs: )https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | head -1 | sed -E 's/^(deb |URIs: )//; s/ *$//' || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CA=${CA_BUNDLE:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
CA=${CA:-/etc/ssl/certs/ca-certificates.crt}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "local base $IMAGE exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "local-base: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
ROOTFS=$(mktemp -d /tmp/slidead-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,libsndfile1,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; echo "local-base: debootstrap failed" >&2; exit 1; }
rm -f "$ROOTFS.log"
echo "deb $MIRROR bookworm main" >"$ROOTFS/etc/apt/sources.list"
cp "$CA" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOTFS/etc/pip.conf"
# what an image does not need: package caches, docs, man pages, translations
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* \
  "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/info/*
tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "local base $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
