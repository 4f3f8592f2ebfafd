#!/usr/bin/env bash
# Builds a Debian root filesystem with mmdebstrap from the Debian archive and imports it into the
# local Docker engine as an image: the base of every image this project builds, since no
# container registry can be reached from here.  Cached: an image whose tag (a digest of the suite
# and package list) is already present is not built again.
# usage: hack/containers/debian.sh NAME SUITE [PACKAGE ...]
#   prints the image reference, e.g. agentflow.local/debian-python:bookworm-3f2a9c1e
set -euo pipefail
name=$1 suite=$2
shift 2
packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
mirror=${AGENTFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(printf '%s|%s|%s|v1' "$suite" "$packages" "$mirror" | sha256sum | cut -c1-10)
ref="agentflow.local/$name:$suite-$key"
log() { printf '[debian] %s\n' "$*" >&2; }

if docker image inspect "$ref" >/dev/null 2>&1; then
  echo "$ref"
  exit 0
fi
# shellcheck source=require.sh
. "$(dirname "$0")/require.sh"
require mmdebstrap mmdebstrap
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "building $ref from Debian $suite (${packages:-minbase only})"
# minbase: essential packages and apt only.  No recommends, no docs or locales: images stay small.
mmdebstrap --quiet --variant=minbase --format=tar \
  ${packages:+--include="$packages"} \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$suite" "$tmp/rootfs.tar" "$mirror" >&2
docker import --change 'CMD ["/bin/bash"]' "$tmp/rootfs.tar" "$ref" >/dev/null
echo "$ref"
