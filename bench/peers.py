"""The two systems under test, behind one interface: agentflow's operator and Argo Workflows.

Each peer runs its controller as a separate process against the bench cluster, watching only
its own namespace, and knows how to express the benchmark's workflow shapes in its own API:
a chain of single-container steps (``sequential``) or a fan-out (``parallel``) with a bound on
the steps running at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path

from bench import proc
from bench.cluster import CRDS, REPO, BenchCluster
from bench.kubeapi import Api, ApiError, Obj, Watcher
from bench.stats import SampleKey, parse_metrics, sum_by

log = logging.getLogger("bench")

NOOP_IMAGE = "bench.local/noop:1"
AF_LABEL_WORKFLOW = "agentflow.dev/workflow"
ARGO_LABEL_WORKFLOW = "workflows.argoproj.io/workflow"
ARGO_GROUP = "argoproj.io"
ARGO_HEALTHZ_PORT = 6060
ARGO_CRDS = (
    "clusterworkflowtemplates",
    "cronworkflows",
    "workflowartifactgctasks",
    "workfloweventbindings",
    "workflows",
    "workflowtaskresults",
    "workflowtasksets",
    "workflowtemplates",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


class Peer(ABC):
    """A workflow controller under test."""

    name: str
    namespace: str
    version: str = "?"
    process: subprocess.Popen[bytes] | None = None

    def __init__(self, bench: BenchCluster, namespace: str, log_dir: Path) -> None:
        self.bench = bench
        self.namespace = namespace
        self.log_dir = log_dir

    @property
    def api(self) -> Api:
        return self.bench.api

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    # -- what differs between the peers ------------------------------------------------------

    @property
    @abstractmethod
    def workflows_path(self) -> str: ...

    @property
    @abstractmethod
    def child_path(self) -> str:
        """Where the per-step objects live (Jobs for agentflow, Pods for Argo)."""

    @property
    @abstractmethod
    def child_selector(self) -> str: ...

    @abstractmethod
    def manifest(
        self,
        name: str,
        steps: int,
        parallel: bool,
        parallelism: int | None = None,
        cache: bool = False,
        seed: str = "",
    ) -> Obj: ...

    @abstractmethod
    def child_finished(self, obj: Obj) -> bool: ...

    @abstractmethod
    def child_workflow(self, obj: Obj) -> str | None: ...

    @abstractmethod
    def start(self, env: dict[str, str] | None = None) -> None: ...

    @abstractmethod
    def own_requests(self) -> dict[str, float] | None:
        """The controller's own count of its API requests, by lower-case verb, if it has one."""

    def phase(self, obj: Obj) -> str | None:
        phase = (obj.get("status") or {}).get("phase")
        return str(phase) if phase else None

    @property
    def healthz_url(self) -> str | None:
        """Where the controller answers its liveness probe, if it has one."""
        return None

    def metrics(self) -> dict[SampleKey, float]:
        return {}

    def extra_paths(self) -> list[str]:
        """Collections to wait empty (besides workflows and children) after a clean-up."""
        return [f"/api/v1/namespaces/{self.namespace}/pods"]

    # -- shared ---------------------------------------------------------------------------

    def _spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.log_dir / log_name).open("ab")
        self.process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: stop() gets all of it
        )
        out.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def cpu_seconds(self) -> float:
        return proc.cpu_seconds(self.pid)

    def rss_kib(self) -> int | None:
        return proc.memory_kib(self.pid, "VmRSS")

    def submit(self, manifests: list[Obj]) -> None:
        self.api.create_many(self.workflows_path, manifests)

    def clean(self, timeout: float = 300.0) -> bool:
        """Delete every workflow of the namespace and wait until its children are gone."""
        with contextlib.suppress(ApiError):
            self.api.call("DELETE", self.workflows_path, {"propagationPolicy": "Background"})
        paths = [self.workflows_path, self.child_path, *self.extra_paths()]

        def empty() -> bool:
            return all(self.api.count(path) == 0 for path in paths)

        done = self.api.wait("clean", empty, timeout, interval=1.0)
        if not done:
            left = {path: self.api.count(path) for path in paths}
            log.warning("%s: objects left after %.0fs of clean-up: %s", self.name, timeout, left)
        return done


class AgentflowPeer(Peer):
    name = "agentflow"

    def __init__(self, bench: BenchCluster, namespace: str, log_dir: Path) -> None:
        super().__init__(bench, namespace, log_dir)
        self.metrics_port = 0
        self.env: dict[str, str] = {}
        from agentflow import __version__

        self.version = __version__

    @property
    def workflows_path(self) -> str:
        return f"/apis/agentflow.dev/v1alpha1/namespaces/{self.namespace}/workflows"

    @property
    def child_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs"

    @property
    def child_selector(self) -> str:
        return AF_LABEL_WORKFLOW

    def install(self) -> None:
        self.bench.apply_crds(
            CRDS, ["workflows.agentflow.dev", "agentfallbackpolicies.agentflow.dev"]
        )
        self.bench.namespace(self.namespace)

    def manifest(
        self,
        name: str,
        steps: int,
        parallel: bool,
        parallelism: int | None = None,
        cache: bool = False,
        seed: str = "",
    ) -> Obj:
        spec: Obj = {
            "strategy": "Parallel" if parallel else "Sequential",
            "agents": [{"name": "noop", "image": NOOP_IMAGE}],
            "steps": [
                {
                    "name": f"s{i}",
                    "agent": "noop",
                    "prompt": f"bench {seed or name} step {i}",
                    "cache": {"enabled": cache},
                }
                for i in range(steps)
            ],
        }
        if parallelism is not None:
            spec["parallelism"] = parallelism
        return {
            "apiVersion": "agentflow.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }

    @property
    def healthz_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/healthz"

    def child_finished(self, obj: Obj) -> bool:
        return any(
            c.get("type") == "Complete" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )

    def child_workflow(self, obj: Obj) -> str | None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        value = labels.get(AF_LABEL_WORKFLOW)
        return str(value) if value else None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.metrics_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "agentflow.cli",
            "operator",
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.bench.kubeconfig),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--log-format",
            "json",
        ]
        self._spawn(argv, env or {}, "operator.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the operator exited; see {self.log_dir / 'operator.log'}")
            if http_get(f"http://127.0.0.1:{self.metrics_port}/healthz")[0] == 200:
                return
            time.sleep(0.3)
        raise RuntimeError("the operator did not become healthy in 120s")

    def metrics(self) -> dict[SampleKey, float]:
        status, body = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        if status != 200:
            return {}
        return parse_metrics(body)

    def own_requests(self) -> dict[str, float] | None:
        by_verb = sum_by(self.metrics(), "agentflow_kubernetes_api_requests_total", ["verb"])
        return {verb: n for (verb,), n in by_verb.items()}


class ArgoPeer(Peer):
    name = "argo"

    def __init__(
        self, bench: BenchCluster, namespace: str, log_dir: Path, binary: Path, version: str
    ) -> None:
        super().__init__(bench, namespace, log_dir)
        self.binary = binary
        self.version = version
        self.metrics_port = 0
        self.requeue: str | None = None
        self.helper: TaskResultHelper | None = None

    @property
    def workflows_path(self) -> str:
        return f"/apis/{ARGO_GROUP}/v1alpha1/namespaces/{self.namespace}/workflows"

    @property
    def child_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    @property
    def child_selector(self) -> str:
        return ARGO_LABEL_WORKFLOW

    def extra_paths(self) -> list[str]:
        return [f"/apis/{ARGO_GROUP}/v1alpha1/namespaces/{self.namespace}/workflowtaskresults"]

    def install(self, module_dir: Path) -> None:
        crds = module_dir / "manifests" / "base" / "crds" / "minimal"
        for plural in ARGO_CRDS:
            self.bench.apply_crds(crds / f"{ARGO_GROUP}_{plural}.yaml", [f"{plural}.{ARGO_GROUP}"])
        self.bench.namespace(self.namespace)

    def manifest(
        self,
        name: str,
        steps: int,
        parallel: bool,
        parallelism: int | None = None,
        cache: bool = False,
        seed: str = "",
    ) -> Obj:
        noop = {"name": "noop", "container": {"image": NOOP_IMAGE, "command": ["true"]}}
        if steps == 1:
            templates: list[Obj] = [noop]
            entrypoint = "noop"
        else:
            names = [f"s{i}" for i in range(steps)]
            groups = (
                [[{"name": n, "template": "noop"} for n in names]]
                if parallel
                else [[{"name": n, "template": "noop"}] for n in names]
            )
            templates = [{"name": "main", "steps": groups}, noop]
            entrypoint = "main"
        spec: Obj = {"entrypoint": entrypoint, "templates": templates}
        if parallelism is not None:
            spec["parallelism"] = parallelism
        return {
            "apiVersion": f"{ARGO_GROUP}/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }

    @property
    def healthz_url(self) -> str | None:
        # workflow-controller serves /healthz on a fixed port, 6060, of every interface.
        return f"http://127.0.0.1:{ARGO_HEALTHZ_PORT}/healthz"

    def child_finished(self, obj: Obj) -> bool:
        return (obj.get("status") or {}).get("phase") == "Succeeded"

    def child_workflow(self, obj: Obj) -> str | None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        value = labels.get(ARGO_LABEL_WORKFLOW)
        return str(value) if value else None

    def start(
        self,
        env: dict[str, str] | None = None,
        qps: float = 20,
        burst: int = 30,
        requeue: str | None = None,
    ) -> None:
        """Start the controller with its defaults, except ``requeue`` (DEFAULT_REQUEUE_TIME)."""
        env = dict(env or {})
        if requeue:
            env["DEFAULT_REQUEUE_TIME"] = requeue
        self.requeue = requeue
        self.metrics_port = free_port()
        config = {
            # No TLS and a free port for /metrics; the executor image is never pulled (the
            # instant node runs nothing), so its name does not matter.
            "metricsConfig": json.dumps(
                {"enabled": True, "port": self.metrics_port, "secure": False}
            ),
            "executor": json.dumps({"image": NOOP_IMAGE}),
        }
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "workflow-controller-configmap", "namespace": self.namespace},
            "data": config,
        }
        path = f"/api/v1/namespaces/{self.namespace}/configmaps"
        with contextlib.suppress(ApiError):
            self.api.call("DELETE", f"{path}/workflow-controller-configmap")
        self.api.call("POST", path, configmap)
        argv = [
            str(self.binary),
            f"--kubeconfig={self.bench.kubeconfig}",
            f"--namespace={self.namespace}",
            "--namespaced",
            f"--managed-namespace={self.namespace}",
            f"--qps={qps}",
            f"--burst={burst}",
            "--log-format=json",
            "--loglevel=warn",
        ]
        self._spawn(argv, {"LEADER_ELECTION_DISABLE": "true", **env}, "argo.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"workflow-controller exited; see {self.log_dir / 'argo.log'}")
            if http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[0] == 200:
                break
            time.sleep(0.3)
        else:
            raise RuntimeError("workflow-controller did not serve /metrics in 120s")
        self.helper = TaskResultHelper(self.api, self.namespace)
        self.helper.start()

    def stop(self) -> None:
        if self.helper is not None:
            self.helper.stop()
            self.helper = None
        super().stop()

    def metrics(self) -> dict[SampleKey, float]:
        status, body = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        if status != 200:
            return {}
        return parse_metrics(body)

    def own_requests(self) -> dict[str, float] | None:
        samples = self.metrics()
        names = {name for name, _ in samples}
        metric = next((n for n in ("argo_workflows_k8s_request_total",) if n in names), None)
        if metric is None:
            return None
        by_verb = sum_by(samples, metric, ["verb"])
        return {verb.lower(): n for (verb,), n in by_verb.items()}


class TaskResultHelper:
    """Stands in for Argo's executor, which the instant node never runs.

    Argo's controller learns a pod's outputs from a ``WorkflowTaskResult`` named after the
    node id that the ``wait`` container writes (``workflow/executor/taskresult.go``): a
    placeholder labelled ``report-outputs-completed=false``, the outputs, then the label set to
    ``true`` before the pod ends.  Here the finished result is created in one request as soon
    as the pod appears, so the controller never waits for it (kinder to Argo than the
    executor's three requests).
    """

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.seen: set[str] = set()
        self.created = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.watcher = Watcher(
            api, f"/api/v1/namespaces/{namespace}/pods", self._on_pod, ARGO_LABEL_WORKFLOW
        )

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def _on_pod(self, kind: str, pod: Obj, _: float) -> None:
        if kind == "DELETED":
            return
        meta = pod.get("metadata") or {}
        node_id = (meta.get("annotations") or {}).get("workflows.argoproj.io/node-id")
        workflow = (meta.get("labels") or {}).get(ARGO_LABEL_WORKFLOW)
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Workflow"]
        if not node_id or not workflow or not owners:
            return
        with self._lock:
            if node_id in self.seen:
                return
            self.seen.add(node_id)
        result = {
            "apiVersion": f"{ARGO_GROUP}/v1alpha1",
            "kind": "WorkflowTaskResult",
            "metadata": {
                "name": node_id,
                "namespace": self.namespace,
                "labels": {
                    ARGO_LABEL_WORKFLOW: workflow,
                    "workflows.argoproj.io/report-outputs-completed": "true",
                },
                "ownerReferences": [
                    {
                        "apiVersion": f"{ARGO_GROUP}/v1alpha1",
                        "kind": "Workflow",
                        "name": owners[0]["name"],
                        "uid": owners[0]["uid"],
                    }
                ],
            },
            "outputs": {},
        }
        path = f"/apis/{ARGO_GROUP}/v1alpha1/namespaces/{self.namespace}/workflowtaskresults"
        status, body = self.api.request("POST", path, result)
        if status < 400 or status == 409:
            self.created += 1
        else:
            self.failures.append(f"{status} {str(body)[:200]}")


def argo_module_dir(version: str) -> Path:
    """Where the Go module cache holds Argo's source (its CRDs ship in the module)."""
    gomodcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(gomodcache) / "github.com" / "argoproj" / "argo-workflows" / f"v3@{version}"
    if not path.is_dir():
        subprocess.run(
            ["go", "mod", "download", f"github.com/argoproj/argo-workflows/v3@{version}"],
            cwd=REPO / "hack" / "argo",
            env={**os.environ, "GOTOOLCHAIN": "local"},
            check=True,
            capture_output=True,
        )
    return path


def build_argo() -> tuple[Path, str]:
    """Build (or find cached) workflow-controller; returns the binary and Argo's version."""
    version = (REPO / "hack" / "argo" / "VERSION").read_text().strip()
    result = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh"), "argo"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/build-binaries.sh argo failed:\n{result.stderr[-3000:]}")
    cache = Path(os.environ.get("AGENTFLOW_CACHE", Path.home() / ".cache" / "agentflow"))
    binary = cache / "tools" / f"argo-{version}" / "workflow-controller"
    if not binary.exists():
        raise RuntimeError(f"{binary} missing after the build")
    return binary, version
