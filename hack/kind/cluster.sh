#!/usr/bin/env bash
# A kind cluster on this machine with no registry: agentflow's node image (node-image.sh) and
# the project's images loaded into it.  Its nodes sit on a Docker network of their own, which
# `down` removes with the cluster.
# usage: hack/kind/cluster.sh up|down|load IMAGE...|kubeconfig
#   AGENTFLOW_KIND_CLUSTER  cluster name (default agentflow)
#   AGENTFLOW_KIND_KUBECONFIG  where `up` writes the kubeconfig (default .agentflow/kind/<name>.kubeconfig)
#   AGENTFLOW_KIND_RETAIN=1  keep the node container when creation fails, to read its logs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=${AGENTFLOW_KIND_CLUSTER:-agentflow}
kubeconfig=${AGENTFLOW_KIND_KUBECONFIG:-$repo/.agentflow/kind/$name.kubeconfig}
export KIND_EXPERIMENTAL_DOCKER_NETWORK=${KIND_EXPERIMENTAL_DOCKER_NETWORK:-agentflow-kind}
log() { printf '[kind] %s\n' "$*" >&2; }
kind() { "${AGENTFLOW_BIN_DIR:-${AGENTFLOW_CACHE:-$HOME/.cache/agentflow}/bin}/kind" "$@"; }

exists() { kind get clusters 2>/dev/null | grep -qx "$name"; }

up() {
  local node_image etcd_tag config
  node_image=$("$here/node-image.sh")
  if exists; then
    if [ "$(docker inspect -f '{{.Config.Image}}' "$name-control-plane" 2>/dev/null)" = "$node_image" ] &&
      [ "$(docker inspect -f '{{.State.Running}}' "$name-control-plane" 2>/dev/null)" = true ]; then
      log "cluster $name runs $node_image already"
      kind export kubeconfig --name "$name" --kubeconfig "$kubeconfig" 2>/dev/null
      echo "$kubeconfig"
      return
    fi
    log "cluster $name is stopped or runs another node image: recreating it"
    kind delete cluster --name "$name" >/dev/null
  fi
  etcd_tag=$(docker inspect -f '{{index .Config.Labels "dev.agentflow.etcd-tag"}}' "$node_image")
  mkdir -p "$(dirname "$kubeconfig")"
  config=$(mktemp)
  trap 'rm -f "$config"' RETURN
  cat >"$config" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # The node image carries a CNI configuration of its own (ptp, one node): no image to pull.
  disableDefaultCNI: true
kubeadmConfigPatches:
- |
  kind: ClusterConfiguration
  etcd:
    local:
      # The etcd the local control plane pins, built into the node image.
      imageTag: "$etcd_tag"
- |
  kind: KubeletConfiguration
  # Kubernetes 1.35's kubelet refuses cgroup v1 hosts (this machine's) unless told otherwise.
  failCgroupV1: false
  # Written by the node's entrypoint: see hack/kind/node/usr/local/bin/entrypoint.
  resolvConf: /etc/agentflow/pod-resolv.conf
YAML
  log "creating cluster $name from $node_image"
  kind create cluster --name "$name" --image "$node_image" --config "$config" \
    --kubeconfig "$kubeconfig" --wait 180s ${AGENTFLOW_KIND_RETAIN:+--retain}
  echo "$kubeconfig"
}

down() {
  if exists; then
    kind delete cluster --name "$name"
  fi
  # The network is ours (KIND_EXPERIMENTAL_DOCKER_NETWORK); remove it once no node uses it.
  if docker network inspect "$KIND_EXPERIMENTAL_DOCKER_NETWORK" >/dev/null 2>&1 &&
    [ -z "$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$KIND_EXPERIMENTAL_DOCKER_NETWORK")" ]; then
    docker network rm "$KIND_EXPERIMENTAL_DOCKER_NETWORK" >/dev/null
  fi
  rm -f "$kubeconfig"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  load) shift; kind load docker-image --name "$name" "$@" ;;
  kubeconfig) echo "$kubeconfig" ;;
  *) echo "usage: $0 up|down|load IMAGE...|kubeconfig" >&2; exit 2 ;;
esac
