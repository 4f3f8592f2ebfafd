#!/usr/bin/env bash
# Builds the e2e cluster's storage images with the local Docker engine (no registry can be
# reached here):
#   agentflow.local/local-path-provisioner:<version>   rancher's local-path-provisioner, from its
#       Go module at hack/storage/VERSION (hack/build-binaries.sh storage), FROM scratch (the
#       binary is static) with upstream's LICENSE, as /usr/bin/local-path-provisioner;
#   agentflow.local/local-path-helper:<suite>-<digest>  the helper pod that makes and removes a
#       volume's directory on the node (the ConfigMap's setup and teardown scripts run with
#       /bin/sh, mkdir and rm): Debian minbase (hack/containers/debian.sh), instead of busybox.
# Cached: an image whose label dev.agentflow.binary-sha256 matches its binary is not rebuilt.
# usage: hack/storage/images.sh     prints the two references, in the order above
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hack=$(dirname "$here")
log() { printf '[storage-images] %s\n' "$*" >&2; }
export DOCKER_BUILDKIT=0 GOTOOLCHAIN=local

"$hack/containers/engine.sh"
bindir=$("$hack/build-binaries.sh" storage | tail -n 1)
version=$(cat "$here/VERSION")
ref="agentflow.local/local-path-provisioner:$version"
binary=$(readlink -f "$bindir/local-path-provisioner")
sum=$(sha256sum "$binary" | cut -c1-64)
if [ "$(docker image inspect -f '{{index .Config.Labels "dev.agentflow.binary-sha256"}}' "$ref" 2>/dev/null)" != "$sum" ]; then
  log "building $ref"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  src=$(cd "$tmp" && GOWORK=off go mod download -json "github.com/rancher/local-path-provisioner@$version" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  cp "$binary" "$tmp/local-path-provisioner"
  cp "$src/LICENSE" "$tmp/LICENSE"
  cat >"$tmp/Dockerfile" <<DOCKERFILE
FROM scratch
COPY local-path-provisioner /usr/bin/local-path-provisioner
COPY LICENSE /
ENV PATH=/usr/bin
ENTRYPOINT ["/usr/bin/local-path-provisioner"]
LABEL dev.agentflow.binary-sha256=$sum
DOCKERFILE
  docker build --quiet --tag "$ref" "$tmp" >/dev/null
fi
echo "$ref"
"$hack/containers/debian.sh" local-path-helper trixie
