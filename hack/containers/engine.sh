#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, for `make images`, `make kind-up` and
# `make e2e`.  Installs Debian's docker.io when it is missing (this needs root and the Debian
# archive), and starts dockerd in the background when none runs (these machines have no init
# system).  Where this host's capability bounding set lacks a capability that `--privileged` asks
# for (CAP_SYS_RESOURCE here), dockerd's default runtime is hack/capdrop, which removes that
# capability from each container's spec and then runs runc; elsewhere dockerd is left as it is.
# Prints nothing on success but its log lines; exits non-zero, saying what is missing, otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${AGENTFLOW_CACHE:-$HOME/.cache/agentflow}
log() { printf '[engine] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

# shellcheck source=require.sh
. "$here/containers/require.sh"
require dockerd docker.io

args=(--log-level=warn)
bounding=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
full=$(cat /proc/sys/kernel/cap_last_cap)
if (( (0x$bounding & ((1 << (full + 1)) - 1)) != ((1 << (full + 1)) - 1) )); then
  capdrop="$cache/tools/capdrop/capdrop"
  if [ ! -x "$capdrop" ] || [ "$here/capdrop/main.go" -nt "$capdrop" ] || [ "$here/capdrop/spec.go" -nt "$capdrop" ]; then
    log "building hack/capdrop (this host's bounding set is $bounding: privileged containers need it)"
    (cd "$here/capdrop" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags="-s -w" -o "$capdrop" .)
  fi
  args+=(--add-runtime "capdrop=$capdrop" --default-runtime capdrop)
fi

if pgrep -x dockerd >/dev/null; then
  log "dockerd runs but does not answer yet"
else
  mkdir -p "$cache"
  log "starting dockerd (log: $cache/dockerd.log)"
  # setsid: dockerd outlives this script and the make that called it.
  setsid dockerd "${args[@]}" >"$cache/dockerd.log" 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
log "dockerd did not answer within 60 s; its log:"
tail -n 20 "$cache/dockerd.log" >&2 || true
exit 1
