"""The bench's own local cluster: a fresh control plane, the node in instant mode, the CRDs."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from agentflow_devcluster import LocalCluster, pki
from bench.kubeapi import Api, ApiError
from bench.stats import SampleKey, parse_metrics

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = REPO / ".agentflow" / "bench-cluster"
CRDS = REPO / "crds"


class BenchCluster:
    def __init__(self, state_dir: Path = STATE_DIR) -> None:
        self.cluster = LocalCluster(state_dir)
        self.state_dir = state_dir
        self._api: Api | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def api(self) -> Api:
        if self._api is None:
            p = self.cluster.pki_dir
            self._api = Api(
                self.cluster.api_url, p / pki.CA_CERT, p / pki.ADMIN_CERT, p / pki.ADMIN_KEY
            )
        return self._api

    def up(self) -> None:
        """A clean cluster: whatever an earlier run left (processes, etcd data) goes first."""
        self.cluster.stop()
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        began = time.monotonic()
        self.cluster.start(timeout=240.0)
        self.cluster.start_node(instant=True, timeout=120.0)
        log.info("bench cluster up in %.0fs at %s", time.monotonic() - began, self.cluster.api_url)

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.cluster.stop()

    def kubectl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        binary = Path(sys.executable).parent / "kubectl"
        return subprocess.run(
            [
                str(binary if binary.exists() else "kubectl"),
                f"--kubeconfig={self.kubeconfig}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apply_crds(self, path: Path, names: list[str]) -> None:
        """Server-side apply of CRD files, then wait until each one is Established."""
        result = self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        if result.returncode != 0:
            raise RuntimeError(f"applying CRDs from {path} failed: {result.stderr}")
        # Polled rather than `kubectl wait`: that fails at once ("accessor error") when it reads
        # a CRD whose status has no conditions yet.
        established = '{.status.conditions[?(@.type=="Established")].status}'
        for name in names:
            deadline = time.monotonic() + 60
            while True:
                got = self.kubectl("get", f"crd/{name}", "-o", f"jsonpath={established}")
                if got.returncode == 0 and got.stdout.strip() == "True":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not established: {got.stderr or got.stdout}")
                time.sleep(0.2)

    def namespace(self, name: str) -> None:
        """Create ``name`` and wait for its default ServiceAccount (pods need it)."""
        try:
            self.api.call(
                "POST", "/api/v1/namespaces", {"apiVersion": "v1", "metadata": {"name": name}}
            )
        except ApiError as e:
            if e.status != 409:
                raise
        path = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        if not self.api.wait(f"{name} SA", lambda: self.api.request("GET", path)[0] == 200, 60):
            raise RuntimeError(f"namespace {name} has no default ServiceAccount")

    def apiserver_metrics(self) -> dict[SampleKey, float]:
        return parse_metrics(self.api.text("/metrics"))
