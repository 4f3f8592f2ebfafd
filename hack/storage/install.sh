#!/usr/bin/env bash
# Installs rancher's local-path-provisioner into a cluster as its default StorageClass
# (`local-path`, WaitForFirstConsumer, reclaim Delete), from the images hack/storage/images.sh
# builds here: upstream's deploy/local-path-storage.yaml of the pinned module (hack/storage/VERSION)
# with those images, and kind's own default class `standard` (the in-tree host-path provisioner,
# which no controller serves) no longer the default.  Volumes are directories under
# /opt/local-path-provisioner on the node.  Waits until the provisioner runs.
# The images must be in the cluster's nodes already (hack/kind/cluster.sh load, as
# tests/e2e/conftest.py does); nothing is pulled.  Idempotent.
# usage: hack/storage/install.sh KUBECONFIG
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kubeconfig=${1:?usage: $0 KUBECONFIG}
export GOTOOLCHAIN=local GOWORK=off
log() { printf '[storage] %s\n' "$*" >&2; }
if [ -x "$repo/.venv/bin/kubectl" ]; then kubectl=$repo/.venv/bin/kubectl; else kubectl=kubectl; fi
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

mapfile -t refs < <("$here/images.sh")
[ "${#refs[@]}" = 2 ] || { log "images.sh printed ${#refs[@]} references, not 2"; exit 1; }
provisioner=${refs[0]} helper=${refs[1]}
version=$(cat "$here/VERSION")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
moddir=$(cd "$tmp" && go mod download -json "github.com/rancher/local-path-provisioner@$version" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
manifest="$moddir/deploy/local-path-storage.yaml"
grep -q "image: rancher/local-path-provisioner:$version" "$manifest" &&
  grep -q 'image: busybox' "$manifest" ||
  { log "$manifest does not name the images this script replaces"; exit 1; }

log "installing local-path-provisioner $version ($provisioner, helper $helper)"
sed -e "s#image: rancher/local-path-provisioner:$version#image: $provisioner#" \
  -e "s#image: busybox#image: $helper#" "$manifest" | k apply -f - >/dev/null
if k get storageclass standard >/dev/null 2>&1; then
  k annotate storageclass standard --overwrite storageclass.kubernetes.io/is-default-class=false >/dev/null
fi
k annotate storageclass local-path --overwrite storageclass.kubernetes.io/is-default-class=true >/dev/null
if ! k -n local-path-storage rollout status deployment/local-path-provisioner --timeout=180s >&2; then
  k -n local-path-storage get pods -o wide >&2 || true
  k -n local-path-storage logs deployment/local-path-provisioner --tail=30 >&2 || true
  exit 1
fi
