"""A local Kubernetes cluster for development and integration tests, all on 127.0.0.1.

``LocalCluster`` runs a real control plane (etcd, kube-apiserver, kube-controller-manager built
by ``make binaries``) and the local node (``agentflow_devcluster.node``).  The CLI is
``python -m agentflow_devcluster up|down|status``.
"""

from agentflow_devcluster.controlplane import (
    LocalCluster,
    LocalClusterError,
    MissingBinaryError,
    default_bin_dir,
    default_state_dir,
)

__all__ = [
    "LocalCluster",
    "LocalClusterError",
    "MissingBinaryError",
    "default_bin_dir",
    "default_state_dir",
]
