#!/usr/bin/env bash
# Removes what hack/monitoring/install.sh installed: the Prometheus (first, so that the operator
# is still there to see it go), the namespace monitoring with everything in it, the cluster-wide
# RBAC and the prometheus-operator CRDs (which deletes every ServiceMonitor, PrometheusRule and
# other monitoring.coreos.com object left in the cluster, a chart's included).  Missing objects
# are skipped, so it also cleans up after a half-finished install.
# usage: hack/monitoring/uninstall.sh KUBECONFIG
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kubeconfig=${1:?usage: $0 KUBECONFIG}
log() { printf '[monitoring] %s\n' "$*" >&2; }
if [ -x "$repo/.venv/bin/kubectl" ]; then kubectl=$repo/.venv/bin/kubectl; else kubectl=kubectl; fi
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

log "removing Prometheus, the operator and namespace monitoring"
if k get crd prometheuses.monitoring.coreos.com >/dev/null 2>&1; then
  k -n monitoring delete prometheus prometheus --ignore-not-found --wait --timeout=120s >&2
fi
k delete namespace monitoring --ignore-not-found --wait --timeout=180s >&2
k delete clusterrolebinding prometheus-operator monitoring-prometheus --ignore-not-found >&2
k delete clusterrole prometheus-operator monitoring-prometheus --ignore-not-found >&2
crds=$(k get crd -o name | grep '\.monitoring\.coreos\.com$' || true)
if [ -n "$crds" ]; then
  log "removing the monitoring.coreos.com CRDs"
  # shellcheck disable=SC2086  # one name a word
  k delete --wait --timeout=120s $crds >&2
fi
