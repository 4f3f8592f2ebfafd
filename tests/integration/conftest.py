"""Fixtures that run the real operator against the local control plane.

The cluster fixtures (``cluster``, ``kubeconfig``, ``api``, ``namespace``, ``kubectl``) come
from ``tests/conftest.py``; here the CRDs are installed once and the operator runs as a
separate process (``agentflow operator``), exactly as a user would run it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from agentflow_devcluster import LocalCluster
from tests.conftest import Kubectl

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 60.0, what: str = "", interval: float = 0.2
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log_dir: Path
    metrics_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.metrics_port}.log"

    def start(self) -> None:
        self.starts += 1
        env = {
            **os.environ,
            "AGENTFLOW_LEASE_DURATION": "6",
            "AGENTFLOW_LEASE_RENEW_INTERVAL": "2",
            "AGENTFLOW_CACHE_SWEEP_SECONDS": "3",
            **self.env,
        }
        # The operator writes to its own copy of the descriptor; ours is closed once it has it.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentflow.cli",
                    "operator",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--metrics-port",
                    str(self.metrics_port),
                    "--metrics-host",
                    "127.0.0.1",
                    "--log-format",
                    "json",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.wait_healthy()

    def http(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{tail}")
            return self.http("/healthz")[0] == 200

        wait_for(healthy, timeout, what="operator /healthz")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def metrics(self) -> str:
        status, body = self.http("/metrics")
        assert status == 200, body
        return body


def install_crds(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert result.returncode == 0, result.stderr
    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        waited = kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        assert waited.returncode == 0, waited.stderr


def fresh_namespace(kubectl: Callable[..., subprocess.CompletedProcess[str]], name: str) -> str:
    """A new namespace ``<name>-<random>``, once its ``default`` ServiceAccount exists (a pod
    created before that is rejected)."""
    full = f"{name}-{secrets.token_hex(3)}"
    created = kubectl("create", "namespace", full)
    assert created.returncode == 0, created.stderr
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", "-n", full).returncode == 0,
        30,
        what=f"the default ServiceAccount of {full}",
    )
    return full


@contextlib.contextmanager
def cluster_of_its_own(prefix: str) -> Iterator[tuple[LocalCluster, Kubectl]]:
    """A local cluster of its own, with the node and the CRDs; stopped and removed afterwards,
    also when the test failed."""
    state = REPO / ".agentflow" / f"{prefix}-{secrets.token_hex(3)}"
    cluster = LocalCluster(state)
    try:
        cluster.start()
        cluster.start_node()
        kubectl = Kubectl(cluster.kubeconfig)
        install_crds(kubectl)
        yield cluster, kubectl
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def operator_of_its_own(
    prefix: str, log_dir: Path, **options: Any
) -> Iterator[tuple[LocalCluster, Kubectl, OperatorProcess]]:
    """A cluster of its own (``cluster_of_its_own``) and one operator started with ``options``
    (``extra_args``, ``env``): for tests whose operator flags would change what the shared one
    does.  Everything is stopped and removed afterwards, also when the test failed."""
    with cluster_of_its_own(prefix) as (cluster, kubectl):
        operator = OperatorProcess(kubeconfig=cluster.kubeconfig, log_dir=log_dir, **options)
        operator.start()
        try:
            yield cluster, kubectl, operator
        finally:
            operator.stop()


@pytest.fixture(scope="session")
def crds(cluster: Any, kubectl_session: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    install_crds(kubectl_session)


def kubectl_for(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the venv's kubectl against ``kubeconfig``; the result is returned, never raised."""
    binary = str(Path(sys.executable).parent / "kubectl")

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=300,
        )

    return run


@pytest.fixture(scope="session")
def kubectl_session(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    return kubectl_for(kubeconfig)


@pytest.fixture(scope="session")
def operator(
    crds: None, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()
