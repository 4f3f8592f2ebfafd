#!/usr/bin/env bash
# Installs Prometheus Operator and one Prometheus into a cluster, from the images that
# hack/monitoring/images.sh builds here, and waits until that Prometheus answers /-/ready:
#   1. the prometheus-operator CRDs, from the pinned module's example/prometheus-operator-crd/
#      (server-side apply: they are too large for the last-applied annotation);
#   2. upstream's operator ClusterRole (example/rbac/prometheus-operator/), then
#      hack/monitoring/manifests.yaml: namespace monitoring, the operator's Deployment,
#      ServiceAccount and binding, a Prometheus `prometheus` (ServiceAccount `prometheus`, one
#      replica, 5 s scrape and rule evaluation, 2 h retention) that selects every ServiceMonitor
#      and PrometheusRule labelled agentflow.dev/e2e: "true" in any namespace, a Service
#      `prometheus` (port 9090) and ServiceMonitors of Prometheus and the operator themselves.
# The images must be in the cluster's nodes already: the caller loads the references that
# images.sh prints (hack/kind/cluster.sh load ..., as tests/e2e/conftest.py does), or passes
# --load to have this script do it for the kind cluster $AGENTFLOW_KIND_CLUSTER.  Nothing is
# pulled: the images have local names and imagePullPolicy IfNotPresent.
# Idempotent: a second run applies the same objects and waits again.
# Prometheus' HTTP API, through the API server's service proxy (no port-forward):
#   kubectl get --raw /api/v1/namespaces/monitoring/services/prometheus:9090/proxy/api/v1/targets
# usage: hack/monitoring/install.sh KUBECONFIG [--load]
#   MONITORING_TIMEOUT  seconds to wait for each of the operator and Prometheus (default 300)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kubeconfig=${1:?usage: $0 KUBECONFIG [--load]}
load=${2:-}
timeout=${MONITORING_TIMEOUT:-300}
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=readonly
log() { printf '[monitoring] %s\n' "$*" >&2; }
if [ -x "$repo/.venv/bin/kubectl" ]; then kubectl=$repo/.venv/bin/kubectl; else kubectl=kubectl; fi
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

mapfile -t refs < <("$here/images.sh")
[ "${#refs[@]}" = 3 ] || { log "images.sh printed ${#refs[@]} references, not 3"; exit 1; }
prometheus_image=${refs[0]} operator_image=${refs[1]} reloader_image=${refs[2]}
if [ "$load" = --load ]; then
  log "loading ${refs[*]} into kind cluster ${AGENTFLOW_KIND_CLUSTER:-agentflow}"
  "$repo/hack/kind/cluster.sh" load "${refs[@]}" >&2
elif [ -n "$load" ]; then
  echo "usage: $0 KUBECONFIG [--load]" >&2
  exit 2
fi

version=$(cat "$here/VERSION")
moddir=$(cd "$here" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$version" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')

diagnose() {
  log "not ready; the monitoring namespace:"
  k -n monitoring get prometheus,statefulsets,deployments,pods,endpointslices -o wide >&2 || true
  k -n monitoring get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
  k -n monitoring logs deploy/prometheus-operator --tail=30 >&2 || true
  k -n monitoring logs statefulset/prometheus-prometheus --all-containers --tail=30 >&2 || true
}

log "applying the prometheus-operator $version CRDs"
k apply --server-side --force-conflicts --field-manager=agentflow-monitoring \
  -f "$moddir/example/prometheus-operator-crd/" >/dev/null
crds=()
for f in "$moddir"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml; do
  f=${f##*/monitoring.coreos.com_}
  crds+=("crd/${f%.yaml}.monitoring.coreos.com")
done
k wait --for condition=Established --timeout=60s "${crds[@]}" >/dev/null

log "applying the operator ($operator_image) and Prometheus ($prometheus_image)"
k apply --server-side --force-conflicts --field-manager=agentflow-monitoring \
  -f "$moddir/example/rbac/prometheus-operator/prometheus-operator-cluster-role.yaml" >/dev/null
sed -e "s#@PROMETHEUS_IMAGE@#$prometheus_image#g" -e "s#@PROMETHEUS_VERSION@#${prometheus_image##*:}#g" \
  -e "s#@OPERATOR_IMAGE@#$operator_image#g" -e "s#@RELOADER_IMAGE@#$reloader_image#g" \
  -e "s#@OPERATOR_VERSION@#${version#v}#g" "$here/manifests.yaml" |
  k apply --server-side --force-conflicts --field-manager=agentflow-monitoring -f - >/dev/null

if ! k -n monitoring rollout status deployment/prometheus-operator --timeout="${timeout}s" >&2; then
  diagnose
  exit 1
fi

log "waiting for Prometheus to answer /-/ready"
ready=/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/-/ready
deadline=$((SECONDS + timeout))
until k get --raw "$ready" >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    diagnose
    log "Prometheus did not answer $ready within ${timeout}s"
    exit 1
  fi
  sleep 2
done
log "Prometheus is ready: namespace monitoring, ServiceAccount prometheus, Service prometheus:9090"
