#!/usr/bin/env bash
# Builds the e2e tests' monitoring images with the local Docker engine, from the binaries that
# `hack/build-binaries.sh monitoring` builds from Go modules (no registry can be reached here):
#   agentflow.local/prometheus:v<prometheus version>                   /bin/prometheus
#   agentflow.local/prometheus-operator:<operator version>             /bin/operator
#   agentflow.local/prometheus-config-reloader:<operator version>      /bin/prometheus-config-reloader
# Each is FROM scratch (the binaries are static) with the binary where upstream's image has it
# (prometheus-operator's StatefulSets run /bin/prometheus-config-reloader by that path, and the
# prometheus container by the image's entrypoint), upstream's LICENSE and NOTICE, and user
# nobody (65534), as upstream's images.  Prometheus' web UI is not in them (its assets are not in
# the Go module): the HTTP API is.
# Cached: an image whose label dev.agentflow.binary-sha256 matches its binary is not rebuilt.
# usage: hack/monitoring/images.sh     prints the three references, in the order above
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hack=$(dirname "$here")
log() { printf '[monitoring-images] %s\n' "$*" >&2; }
export DOCKER_BUILDKIT=0 GOTOOLCHAIN=local

"$hack/containers/engine.sh"
bindir=$("$hack/build-binaries.sh" monitoring | tail -n 1)
operator_version=$(cat "$here/VERSION")
# "prometheus, version 3.16.0 (branch: HEAD, revision: ...)"
prometheus_version=v$("$bindir/prometheus" --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\) .*/\1/p')
[ "$prometheus_version" != v ] || { log "cannot read the version of $bindir/prometheus"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

moddir() {  # module@version: its directory in the module cache (for LICENSE and NOTICE)
  (cd "$tmp" && GOWORK=off go mod download -json "$1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
}

# image REF BINARY DEST MODULE_DIR ENTRYPOINT_ARGS...: one static binary FROM scratch.
image() {
  local ref=$1 binary=$2 dest=$3 src=$4
  shift 4
  local sum dir entry
  binary=$(readlink -f "$binary")
  sum=$(sha256sum "$binary" | cut -c1-64)
  if [ "$(docker image inspect -f '{{index .Config.Labels "dev.agentflow.binary-sha256"}}' "$ref" 2>/dev/null)" = "$sum" ]; then
    echo "$ref"
    return
  fi
  log "building $ref"
  dir="$tmp/${ref//[\/:]/_}"
  mkdir -p "$dir"
  cp "$binary" "$dir/binary"
  cp "$src/LICENSE" "$dir/LICENSE"
  if [ -f "$src/NOTICE" ]; then cp "$src/NOTICE" "$dir/NOTICE"; else : >"$dir/NOTICE"; fi
  entry=$(python3 -c 'import json,sys;print(json.dumps(sys.argv[1:]))' "$dest" "$@")
  {
    echo 'FROM scratch'
    echo "COPY binary $dest"
    echo 'COPY LICENSE NOTICE /'
    # The data directory the prometheus container writes to (a volume in the StatefulSet).
    [ "$(basename "$dest")" != prometheus ] || echo 'WORKDIR /prometheus'
    echo 'USER 65534:65534'
    echo "ENTRYPOINT $entry"
    echo "LABEL dev.agentflow.binary-sha256=$sum"
  } >"$dir/Dockerfile"
  docker build --quiet --tag "$ref" "$dir" >/dev/null
  echo "$ref"
}

prom_src=$(moddir "github.com/prometheus/prometheus@$(sed -n 's/^PROMETHEUS_VERSION=\([^ ]*\).*/\1/p' "$hack/build-binaries.sh")")
po_src=$(moddir "github.com/prometheus-operator/prometheus-operator@$operator_version")
image "agentflow.local/prometheus:$prometheus_version" "$bindir/prometheus" /bin/prometheus "$prom_src"
image "agentflow.local/prometheus-operator:$operator_version" "$bindir/prometheus-operator" /bin/operator "$po_src"
image "agentflow.local/prometheus-config-reloader:$operator_version" "$bindir/prometheus-config-reloader" \
  /bin/prometheus-config-reloader "$po_src"
