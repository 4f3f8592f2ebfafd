#!/usr/bin/env bash
# Builds agentflow's kind node image for the pinned Kubernetes version with no registry: the
# node's root filesystem from Debian packages (systemd, containerd, runc, CNI plugins, iptables),
# the node binaries and the control-plane and add-on images from the pinned Go modules
# (hack/build-binaries.sh node), every image the node runs preloaded into its containerd, as kind's
# own node-image builder does, so that nothing is ever pulled.
# Cached: the tag is a digest of everything that goes in; an image already present is reused.
# usage: hack/kind/node-image.sh      (prints the node image reference)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hack=$(dirname "$here")
cache=${AGENTFLOW_CACHE:-$HOME/.cache/agentflow}
K8S_VERSION=$(cat "$hack/controlplane/VERSION")
log() { printf '[node-image] %s\n' "$*" >&2; }

"$hack/containers/engine.sh"
bindir=$("$hack/build-binaries.sh" node | tail -n 1)
k8s="$cache/k8s-$K8S_VERSION" node="$cache/k8s-$K8S_VERSION-node"
# The versions kubeadm $K8S_VERSION deploys (cmd/kubeadm/app/constants), except etcd: the local
# control plane's pinned etcd is used, and hack/kind/cluster.yaml tells kubeadm its tag.
ETCD_TAG=$("$k8s/etcd" --version | awk '/^etcd Version/ {print $3}')-0
COREDNS_TAG=v1.13.1
PAUSE_TAG=3.10.1

base=$("$hack/containers/debian.sh" kind-node-base trixie \
  systemd systemd-sysv dbus containerd runc containernetworking-plugins \
  iptables nftables conntrack iproute2 ethtool util-linux mount kmod procps socat \
  ca-certificates bash libseccomp2)
proxy_base=$("$hack/containers/debian.sh" kube-proxy-base trixie iptables nftables conntrack)

capdrop="$cache/tools/capdrop/capdrop"
(cd "$hack/capdrop" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags="-s -w" -o "$capdrop" .)
pause="$cache/tools/pause/pause"
mkdir -p "$(dirname "$pause")"
[ "$pause" -nt "$here/pause.c" ] || gcc -static -O2 -Wall -Wextra -o "$pause" "$here/pause.c"

inputs=("$k8s/kube-apiserver" "$k8s/kube-controller-manager" "$k8s/etcd" "$node"/* \
  "$bindir/crictl" "$bindir/coredns" "$capdrop" "$pause")
key=$( (
  echo "$base $proxy_base $ETCD_TAG $COREDNS_TAG $PAUSE_TAG"
  sha256sum "$0" "${inputs[@]}" | cut -d' ' -f1
  find "$here/node" -type f | sort | xargs sha256sum | cut -d' ' -f1
) | sha256sum | cut -c1-10)
ref="agentflow.local/kind-node:$K8S_VERSION-$key"
if docker image inspect "$ref" >/dev/null 2>&1; then
  echo "$ref"
  exit 0
fi

tmp=$(mktemp -d)
stage="agentflow-node-stage-$$"
trap 'docker rm -f "$stage" >/dev/null 2>&1 || true; docker image rm "$ref-stage" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

# component REF BASE BINARY [ENTRYPOINT]: a one-binary image, tagged as kubeadm expects it.
component() {
  local image=$1 from=$2 binary=$3 entry=${4:-}
  local dir="$tmp/${image//[\/:]/_}"
  mkdir -p "$dir"
  cp "$binary" "$dir/"
  {
    echo "FROM $from"
    echo "LABEL org.opencontainers.image.description=\"Built locally by agentflow's hack/kind/node-image.sh from the pinned Go modules\""
    echo "COPY $(basename "$binary") /usr/local/bin/"
    [ -z "$entry" ] || echo "ENTRYPOINT [\"/usr/local/bin/$entry\"]"
  } >"$dir/Dockerfile"
  DOCKER_BUILDKIT=0 docker build --quiet -t "$image" "$dir" >/dev/null
  images+=("$image")
}
images=()
log "building the control-plane and add-on images"
component "registry.k8s.io/kube-apiserver:$K8S_VERSION" scratch "$k8s/kube-apiserver"
component "registry.k8s.io/kube-controller-manager:$K8S_VERSION" scratch "$k8s/kube-controller-manager"
component "registry.k8s.io/kube-scheduler:$K8S_VERSION" scratch "$node/kube-scheduler"
component "registry.k8s.io/kube-proxy:$K8S_VERSION" "$proxy_base" "$node/kube-proxy"
component "registry.k8s.io/etcd:$ETCD_TAG" scratch "$k8s/etcd"
component "registry.k8s.io/coredns/coredns:$COREDNS_TAG" scratch "$bindir/coredns" coredns
component "registry.k8s.io/pause:$PAUSE_TAG" scratch "$pause" pause
docker save -o "$tmp/images.tar" "${images[@]}"

log "building the node image $ref from $base"
mkdir -p "$tmp/node/bin"
cp -a "$here/node/." "$tmp/node/root/"
cp "$node/kubelet" "$node/kubeadm" "$node/kubectl" "$bindir/crictl" "$tmp/node/bin/"
cp "$capdrop" "$tmp/node/"
cat >"$tmp/node/Dockerfile" <<DOCKERFILE
FROM $base
COPY root/ /
COPY bin/ /usr/bin/
COPY capdrop /usr/local/sbin/capdrop
# kind reads /kind/version; kubeadm wants its static-pod directory.  Units a node container does
# not need are masked, so that it boots in seconds.
RUN mkdir -p /kind /etc/kubernetes/manifests \\
 && echo "$K8S_VERSION" >/kind/version \\
 && systemctl enable containerd.service kubelet.service \\
 && systemctl mask getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \\
      systemd-firstboot.service systemd-logind.service
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build --quiet -t "$ref-stage" "$tmp/node" >/dev/null

log "preloading ${#images[@]} images into the node's containerd"
# containerd itself is the stage container's PID 1: `docker stop` shuts it down cleanly, and its
# content store (under /var, which kind turns into a volume) is then committed with the image.
docker run -d --name "$stage" --privileged --entrypoint containerd "$ref-stage" >/dev/null
for _ in $(seq 1 30); do docker exec "$stage" ctr version >/dev/null 2>&1 && break; sleep 1; done
docker exec -i "$stage" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
  --all-platforms --no-unpack --digests - <"$tmp/images.tar" >/dev/null
docker exec "$stage" ctr --namespace=k8s.io images list -q | sort >"$tmp/loaded"
for image in "${images[@]}"; do
  grep -qx "$image" "$tmp/loaded" || { log "$image did not load"; exit 1; }
done
docker stop --time 30 "$stage" >/dev/null
docker commit --change "LABEL dev.agentflow.etcd-tag=$ETCD_TAG" \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  "$stage" "$ref" >/dev/null
echo "$ref"
