#!/usr/bin/env bash
# Builds the control plane (etcd, kube-apiserver, kube-controller-manager) and the tools the tests
# use (helm, kubeconform, promtool; each `go install`ed in its own module graph) from Go modules into a cache outside the repo, keyed by
# version, and skips whatever is already built.  Prints the bin directory last.
# usage: hack/build-binaries.sh [controlplane|tools|all|argo|node]   (default: all)
# `node` (kubelet, kubeadm, kubectl, kube-scheduler, kube-proxy, kind, crictl, coredns: what the
# kind node image of `make kind-up` needs) is not part of `all` either.
# `argo` (Argo Workflows' workflow-controller, the peer of `make bench`) is not part of `all`.
# `monitoring` (prometheus, and prometheus-operator's operator and prometheus-config-reloader: the
# e2e tests' Prometheus, hack/monitoring/) is not part of `all` either.
# `storage` (rancher's local-path-provisioner: the e2e cluster's default StorageClass,
# hack/storage/) is not part of `all` either.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
cache=${AGENTFLOW_CACHE:-$HOME/.cache/agentflow}
K8S_VERSION=$(cat "$here/controlplane/VERSION")
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.7.0
PROMETHEUS_VERSION=v0.316.0  # the Go module version of Prometheus 3.16.0
KIND_VERSION=v0.32.0
CRICTL_VERSION=v1.34.0  # the module proxy serves no v1.35 (crictl speaks CRI v1 to any 1.3x runtime)
COREDNS_VERSION=v1.13.1  # the CoreDNS kubeadm $K8S_VERSION deploys
LOCAL_PATH_PROVISIONER_VERSION=$(cat "$here/storage/VERSION")  # the e2e's StorageClass (hack/storage/)
# Prometheus' service discovery: Kubernetes only, all that prometheus-operator's ServiceMonitors,
# PodMonitors and Probes generate (upstream's remove_all_sd/enable_*_sd build tags; the cloud SDKs
# of the other mechanisms are most of the build).
PROMETHEUS_TAGS=remove_all_sd,enable_kubernetes_sd
bin="$cache/bin"
mkdir -p "$bin"
log() { printf '[build-binaries] %s\n' "$*" >&2; }

# The -ldflags that stamp a Kubernetes binary with its version, as upstream's hack/lib/version.sh
# does: an unstamped binary reports v0.0.0-master, which breaks helm's kubeVersion checks,
# `kubectl version` and kubeadm's version checks.
k8s_ldflags() {
  local major minor now ldf p
  major=$(echo "$K8S_VERSION" | sed 's/^v\([0-9]*\)\..*/\1/')
  minor=$(echo "$K8S_VERSION" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=$now"
  done
  echo "$ldf"
}

build_controlplane() {
  local out="$cache/k8s-$K8S_VERSION"
  if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/etcd" ]; then
    log "control plane $K8S_VERSION: cached in $out"
  else
    log "building control plane $K8S_VERSION into $out (the first build takes a while)"
    mkdir -p "$out.tmp"
    (cd "$here/controlplane" &&
      go build -trimpath -tags=selinux,notest -ldflags="$(k8s_ldflags)" -o "$out.tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager &&
      go build -trimpath -ldflags="-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  ln -sf "$out/kube-apiserver" "$out/kube-controller-manager" "$out/etcd" "$bin/"
}

# What a kind node image needs beyond the control plane above (hack/kind/node-image.sh): the
# node's own binaries and those of the remaining control-plane and add-on images, all from the
# same pinned module graph as the local control plane.
NODE_BINARIES=(kubelet kubeadm kubectl kube-scheduler kube-proxy)
build_node() {
  build_controlplane
  local out="$cache/k8s-$K8S_VERSION-node" missing="" name pkgs=()
  for name in "${NODE_BINARIES[@]}"; do [ -x "$out/$name" ] || missing+=" $name"; done
  if [ -z "$missing" ]; then
    log "node binaries $K8S_VERSION: cached in $out"
  else
    log "building node binaries $K8S_VERSION ($missing) into $out"
    mkdir -p "$out.tmp"
    for name in "${NODE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
    (cd "$here/controlplane" &&
      go build -trimpath -tags=selinux,notest -ldflags="$(k8s_ldflags)" -o "$out.tmp/" "${pkgs[@]}")
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  go_install kind "$KIND_VERSION" sigs.k8s.io/kind
  go_install crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns
}

go_install() {  # name version package [ldflags]
  local name=$1 version=$2 pkg=$3 ldflags=${4:-}
  local out="$cache/tools/$name-$version"
  if [ ! -x "$out/$name" ]; then
    log "building $name $version"
    GOBIN="$out" go install -trimpath -ldflags="-s -w $ldflags" "$pkg@$version"
  fi
  ln -sf "$out/$name" "$bin/$name"
}

build_tools() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  go_install kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
  go_install promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool
}

build_argo() {  # pinned by hack/argo/go.mod (hack/argo/pin.sh)
  local version out ldf commit p
  version=$(cat "$here/argo/VERSION")
  out="$cache/tools/argo-$version"
  if [ ! -x "$out/workflow-controller" ]; then
    log "building Argo Workflows workflow-controller $version into $out (takes several minutes)"
    # Stamped as upstream's Makefile does, with the release's commit from the module proxy.
    commit=$(cd "$here/argo" && go mod download -json "github.com/argoproj/argo-workflows/v3@$version" |
      python3 -c 'import json,sys;print(json.load(sys.stdin).get("Origin",{}).get("Hash",""))')
    ldf="-s -w"
    for p in "version=$version" "gitTag=$version" "gitCommit=$commit" "gitTreeState=clean" \
      "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      ldf+=" -X github.com/argoproj/argo-workflows/v3.$p"
    done
    (cd "$here/argo" &&
      go build -trimpath -ldflags="$ldf" -o "$out.tmp/workflow-controller" \
        github.com/argoproj/argo-workflows/v3/cmd/workflow-controller)
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  ln -sf "$out/workflow-controller" "$bin/workflow-controller"
}

# The -ldflags that stamp prometheus/common/version, as upstream's Makefiles do: module version
# string, and the release's commit from the module proxy.
prom_version_ldflags() {  # module version version-string [dir to run go in]
  local mod=$1 version=$2 dir=${3:-$cache} commit p ldf="-s -w"
  commit=$(cd "$dir" && go mod download -json "$mod" |
    python3 -c 'import json,sys;print(json.load(sys.stdin).get("Origin",{}).get("Hash",""))')
  for p in "Version=$version" "Revision=$commit" "Branch=HEAD" "BuildUser=agentflow" \
    "BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"; do
    ldf+=" -X github.com/prometheus/common/version.$p"
  done
  echo "$ldf"
}

build_monitoring() {  # prometheus-operator pinned by hack/monitoring/go.mod (hack/monitoring/pin.sh)
  local version out dir
  # Prometheus, from the same module version as promtool.  Its web UI's assets are built with
  # npm and are not in the Go module: this binary serves the HTTP API (/api/v1/...), /-/ready,
  # /metrics and /federate, and no UI pages (upstream's builtinassets tag is not set).
  out="$cache/tools/prometheus-$PROMETHEUS_VERSION"
  if [ ! -x "$out/prometheus" ]; then
    log "building prometheus $PROMETHEUS_VERSION (tags $PROMETHEUS_TAGS) into $out"
    dir=$(cd "$cache" && go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" |
      python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
    rm -rf "$out.tmp"
    GOBIN="$out.tmp" go install -trimpath -tags="$PROMETHEUS_TAGS" \
      -ldflags="$(prom_version_ldflags "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" "$(cat "$dir/VERSION")")" \
      "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  ln -sf "$out/prometheus" "$bin/prometheus"
  version=$(cat "$here/monitoring/VERSION")
  out="$cache/tools/prometheus-operator-$version"
  if [ ! -x "$out/operator" ] || [ ! -x "$out/prometheus-config-reloader" ]; then
    log "building prometheus-operator $version (operator, prometheus-config-reloader) into $out"
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    (cd "$here/monitoring" &&
      go build -trimpath \
        -ldflags="$(prom_version_ldflags "github.com/prometheus-operator/prometheus-operator@$version" "${version#v}" "$here/monitoring")" \
        -o "$out.tmp/" \
        github.com/prometheus-operator/prometheus-operator/cmd/operator \
        github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader)
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  ln -sf "$out/operator" "$bin/prometheus-operator"
  ln -sf "$out/prometheus-config-reloader" "$bin/prometheus-config-reloader"
}

build_storage() {  # its module has no replace directives: `go install` at the pinned version
  go_install local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
    github.com/rancher/local-path-provisioner "-X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
}

case "$what" in
  controlplane) build_controlplane ;;
  tools) build_tools ;;
  all) build_controlplane; build_tools ;;
  argo) build_argo ;;
  node) build_node ;;
  monitoring) build_monitoring ;;
  storage) build_storage ;;
  *) echo "usage: $0 [controlplane|tools|all|argo|node|monitoring|storage]" >&2; exit 2 ;;
esac
echo "$bin"
