"""Fixtures of the end-to-end tier: real containers, a real kubelet, the chart as users install it.

The session builds (or reuses from the cache) the node image and the project's images, creates a
kind cluster of its own (``agentflow-e2e``, on a Docker network of its own), loads the images,
installs rancher's local-path-provisioner as the default StorageClass (hack/storage/), installs
Prometheus Operator and then the chart with ``tests/e2e/values.yaml``, and deletes the
cluster and its network at the end, also when a test failed.  ``AGENTFLOW_E2E_KEEP=1`` keeps the
cluster for a look afterwards (``hack/kind/cluster.sh down`` with
``AGENTFLOW_KIND_CLUSTER=agentflow-e2e`` removes it).

Every test here is marked ``e2e``; none skips: a machine that cannot run containers fails them,
saying what is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import kubectl_for, wait_for
from tests.integration.workflows import Kubectl

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CLUSTER = os.environ.get("AGENTFLOW_E2E_CLUSTER", "agentflow-e2e")
RELEASE = "agentflow"
RELEASE_NAMESPACE = "agentflow-system"
VALUES = HERE / "values.yaml"
KEEP = os.environ.get("AGENTFLOW_E2E_KEEP") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


def run(*args: str | Path, timeout: float = 1800) -> str:
    """Runs a project script; its stderr goes to the test log, its stdout is returned."""
    env = {**os.environ, "AGENTFLOW_KIND_CLUSTER": CLUSTER}
    started = time.monotonic()
    result = subprocess.run(
        [str(a) for a in args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    took = time.monotonic() - started
    print(f"[e2e] {' '.join(str(a) for a in args)}: {took:.0f} s")
    if result.returncode != 0:
        pytest.fail(
            f"{args[0]} exited {result.returncode}:\n{result.stderr[-4000:]}", pytrace=False
        )
    return result.stdout


@dataclass(frozen=True)
class KindCluster:
    kubeconfig: Path
    kubectl: Kubectl
    images: tuple[str, ...]

    def helm(self, *args: str) -> str:
        return run("helm", "--kubeconfig", self.kubeconfig, *args, timeout=600)

    def json(self, *args: str) -> Any:
        result = self.kubectl(*args, "-o", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[KindCluster]:
    images = tuple(run(REPO / "hack/containers/images.sh").split())
    monitoring_images = tuple(run(REPO / "hack/monitoring/images.sh").split())
    storage_images = tuple(run(REPO / "hack/storage/images.sh").split())
    try:
        kubeconfig = Path(run(REPO / "hack/kind/cluster.sh", "up").split()[-1])
        run(REPO / "hack/kind/cluster.sh", "load", *images, *monitoring_images, *storage_images)
        # The default StorageClass: workspace claims (spec.workspace) are provisioned from it.
        run(REPO / "hack/storage/install.sh", kubeconfig)
        yield KindCluster(kubeconfig, kubectl_for(kubeconfig), images)
    finally:
        if not KEEP:
            run(REPO / "hack/kind/cluster.sh", "down")


@pytest.fixture(scope="session")
def monitoring(kind_cluster: KindCluster) -> KindCluster:
    """Prometheus Operator and one Prometheus selecting what the chart labels for the e2e."""
    run(REPO / "hack/monitoring/install.sh", kind_cluster.kubeconfig)
    return kind_cluster


def restricted_namespace(kubectl: Kubectl, name: str) -> None:
    """A namespace that enforces Pod Security ``restricted``, as the runbook recommends."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    result = kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def release(monitoring: KindCluster) -> KindCluster:
    """The chart installed as the runbook says, with the values in tests/e2e/values.yaml."""
    restricted_namespace(monitoring.kubectl, RELEASE_NAMESPACE)
    monitoring.helm(
        "upgrade", "--install", RELEASE, str(REPO / "charts/agentflow"),
        "--namespace", RELEASE_NAMESPACE, "--values", str(VALUES), "--wait", "--timeout", "5m",
    )  # fmt: skip
    return monitoring


@pytest.fixture
def namespace(release: KindCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh restricted namespace for one test, deleted afterwards."""
    name = f"e2e-{request.node.name[5:30].replace('_', '-').strip('-')}-{secrets.token_hex(2)}"
    restricted_namespace(release.kubectl, name)
    yield name
    release.kubectl("delete", "namespace", name, "--wait=false")


def operator_pods(cluster: KindCluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.json(
        "-n", RELEASE_NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=agentflow"
    )["items"]
    return pods


def wait_operator_ready(cluster: KindCluster, timeout: float = 180) -> dict[str, Any]:
    """The operator pod that is Ready (one replica, as the chart installs it)."""

    def ready() -> dict[str, Any] | None:
        for pod in operator_pods(cluster):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True":
                return pod
        return None

    return wait_for(ready, timeout, what="a Ready operator pod")
