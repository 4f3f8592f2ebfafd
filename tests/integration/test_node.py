"""The local node against the real control plane: it registers, binds, runs pods as processes,
reports status like a kubelet, serves logs through the API server, stops processes on deletion
and deadlines, survives a restart honestly, and completes pods at once in instant mode.

Most tests use the cluster's own node (``agentflow-local``).  Tests that stop or kill a node run
a second node process with its own name and scheduler name, so that it only takes the pods made
for it and the shared node is never disturbed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from agentflow.api.models import DEFAULT_AGENT_IMAGE
from agentflow.report import decode_termination_message
from agentflow_devcluster import LocalCluster, pki
from agentflow_devcluster.node import (
    ANNOTATION_INSTANT_EXIT_CODE,
    ANNOTATION_INSTANT_MESSAGE,
    DEFAULT_INSTANT_FAILURE_MESSAGE,
    DEFAULT_NODE_NAME,
    LABEL_LOCAL_NODE,
    RUNTIME_VERSION,
)
from tests.integration.conftest import wait_for

T = TypeVar("T")
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


# ------------------------------------------------------------------------------------ helpers


def pod_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "busybox:1.36", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def job_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    template_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": command}],
    }
    template_spec.update(spec.pop("pod", {}))
    template: dict[str, Any] = {"spec": template_spec}
    if "pod_metadata" in spec:
        template["metadata"] = spec.pop("pod_metadata")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"backoffLimit": 0, "template": template, **spec},
    }


def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    selector = f"{JOB_NAME_LABEL}={job}"
    items: list[client.V1Pod] = core.list_namespaced_pod(namespace, label_selector=selector).items
    return items


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, type_: str) -> Any:
    job = batch.read_namespaced_job(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type == type_ and cond.status == "True":
            return cond
    return None


def terminated(pod: client.V1Pod | None) -> Any:
    """The first container's terminated state, once the pod is finished."""
    if pod is None or pod.status.phase not in ("Succeeded", "Failed"):
        return None
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def finished_pod(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 60) -> Any:
    pod = wait_for(
        lambda: (p := read_pod(core, namespace, name)) and terminated(p) and p,
        timeout,
        f"pod {name} to finish",
    )
    return pod


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has stopped running, which is what matters.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def pid_recording_command(pid_file: Path) -> list[str]:
    """A shell that records its pid and becomes a long sleep (same pid, same process group).

    ``$$$$`` because Kubernetes expands ``$$`` in a command to ``$``: the shell sees ``$$``.
    """
    script = f'echo $$$$ > "{pid_file}.tmp" && mv "{pid_file}.tmp" "{pid_file}"; exec sleep 300'
    return ["sh", "-c", script]


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def node_log(cluster: LocalCluster) -> Path:
    return cluster.logs_dir / "node.log"


# ------------------------------------------------------------------------------- a second node


class NodeProcess:
    """A node process of the test's own, with its own name, scheduler name and state dir."""

    def __init__(self, cluster: LocalCluster, state_dir: Path, *extra: str) -> None:
        self.name = f"agentflow-test-{secrets.token_hex(3)}"
        self.scheduler = self.name
        self.cluster = cluster
        self.state_dir = state_dir
        self.extra = extra
        self.log = state_dir / "node.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, core: client.CoreV1Api) -> None:
        started = datetime.now(UTC).replace(microsecond=0)
        argv = [
            sys.executable,
            "-m",
            "agentflow_devcluster.node",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--state-dir",
            str(self.state_dir),
            "--pki-dir",
            str(self.cluster.pki_dir),
            "--name",
            self.name,
            "--scheduler-name",
            self.scheduler,
            *self.extra,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                node = core.read_node(self.name)
            except ApiException:
                return False
            return any(
                c.type == "Ready" and c.status == "True" and c.last_heartbeat_time >= started
                for c in node.status.conditions or []
            )

        wait_for(ready, 60, f"node {self.name} to be Ready")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def pod(self, name: str, command: list[str], **spec: Any) -> dict[str, Any]:
        return pod_manifest(name, command, schedulerName=self.scheduler, **spec)


@pytest.fixture
def second_node(
    cluster: LocalCluster, core: client.CoreV1Api, tmp_path: Path
) -> Iterator[Callable[..., NodeProcess]]:
    nodes: list[NodeProcess] = []

    def make(*extra: str) -> NodeProcess:
        node = NodeProcess(cluster, tmp_path / f"node-{len(nodes)}", *extra)
        node.state_dir.mkdir()
        nodes.append(node)
        node.start(core)
        return node

    yield make
    coordination = client.CoordinationV1Api(core.api_client)
    for node in nodes:
        if node.process is not None:
            node.stop()
        with contextlib.suppress(ApiException):
            core.delete_node(node.name)
        with contextlib.suppress(ApiException):
            coordination.delete_namespaced_lease(node.name, "kube-node-lease")


# ------------------------------------------------------------------------------ registration


def test_node_is_registered_ready_with_a_lease(
    cluster: LocalCluster, core: client.CoreV1Api
) -> None:
    node = core.read_node(DEFAULT_NODE_NAME)
    labels = node.metadata.labels
    assert labels["kubernetes.io/hostname"] == DEFAULT_NODE_NAME
    assert labels["kubernetes.io/os"] == "linux"
    assert labels[LABEL_LOCAL_NODE] == "true"
    conditions = {c.type: c.status for c in node.status.conditions}
    assert conditions == {
        "Ready": "True",
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
    }
    assert {(a.type, a.address) for a in node.status.addresses} >= {("InternalIP", "127.0.0.1")}
    assert int(node.status.capacity["cpu"]) == os.cpu_count()
    assert int(node.status.allocatable["pods"]) > 100
    info = node.status.node_info
    version = client.VersionApi(core.api_client).get_code().git_version
    assert (info.kubelet_version, info.operating_system) == (version, "linux")
    assert info.container_runtime_version == RUNTIME_VERSION
    assert node.status.daemon_endpoints.kubelet_endpoint.port > 0

    lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease(
        DEFAULT_NODE_NAME, "kube-node-lease"
    )
    assert lease.spec.holder_identity == DEFAULT_NODE_NAME
    # Renewed every ~10 s, so never older than a lease duration.
    assert datetime.now(UTC) - lease.spec.renew_time < timedelta(seconds=40)


def test_log_endpoint_requires_a_client_certificate_from_the_cluster_ca(
    cluster: LocalCluster, core: client.CoreV1Api
) -> None:
    port = core.read_node(DEFAULT_NODE_NAME).status.daemon_endpoints.kubelet_endpoint.port
    url = f"https://127.0.0.1:{port}/healthz"
    anonymous = ssl.create_default_context(cafile=str(cluster.pki_dir / pki.CA_CERT))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(url, context=anonymous, timeout=10).read()

    admin = ssl.create_default_context(cafile=str(cluster.pki_dir / pki.CA_CERT))
    admin.load_cert_chain(cluster.pki_dir / pki.ADMIN_CERT, cluster.pki_dir / pki.ADMIN_KEY)
    with urllib.request.urlopen(url, context=admin, timeout=10) as resp:
        assert resp.read() == b"ok"


# ------------------------------------------------------------------------------ running Jobs


def test_job_completes_and_its_logs_are_served(
    namespace: str, kubectl: Kubectl, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    created = kubectl(
        "-n", namespace, "create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo hi"
    )
    assert created.returncode == 0, created.stderr
    wait_for(lambda: job_condition(batch, namespace, "hello", "Complete"), 60, "job complete")

    logs = kubectl("-n", namespace, "logs", "job/hello")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hi\n"
    (pod,) = job_pods(core, namespace, "hello")
    assert pod.spec.node_name == DEFAULT_NODE_NAME
    assert pod.status.phase == "Succeeded"
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (0, "Completed")
    assert state.started_at <= state.finished_at
    assert {c.type: c.status for c in pod.status.conditions} == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "False",
        "Ready": "False",
    }


def test_failing_command_fails_the_job_with_its_exit_code(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(namespace, job_manifest("fails", ["sh", "-c", "exit 3"]))
    failed = wait_for(lambda: job_condition(batch, namespace, "fails", "Failed"), 60, "job failed")
    assert failed.reason == "BackoffLimitExceeded"
    (pod,) = job_pods(core, namespace, "fails")
    assert pod.status.phase == "Failed"
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (3, "Error")


def test_logs_tail_and_follow(namespace: str, kubectl: Kubectl, core: client.CoreV1Api) -> None:
    script = "echo one; echo two; sleep 1; echo three"
    core.create_namespaced_pod(namespace, pod_manifest("chatty", ["sh", "-c", script]))
    wait_for(
        lambda: (p := read_pod(core, namespace, "chatty")) and p.status.phase == "Running",
        60,
        "pod running",
    )
    # Follow streams until the container ends, so it sees the line written after the sleep.
    followed = kubectl("-n", namespace, "logs", "-f", "chatty")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "one\ntwo\nthree\n"
    finished_pod(core, namespace, "chatty")
    tail = kubectl("-n", namespace, "logs", "--tail=2", "chatty")
    assert tail.stdout == "two\nthree\n"
    limited = kubectl("-n", namespace, "logs", "--limit-bytes=5", "chatty")
    assert limited.stdout == "one\nt"


# ------------------------------------------------------------------- termination messages


def test_termination_message_comes_from_the_mapped_file(
    namespace: str, core: client.CoreV1Api
) -> None:
    script = 'printf "%s" "result for $POD" > "$AGENTFLOW_TERMINATION_MESSAGE_PATH"'
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    manifest = pod_manifest("reports", ["sh", "-c", script], container={"env": env})
    core.create_namespaced_pod(namespace, manifest)
    state = terminated(finished_pod(core, namespace, "reports"))
    assert (state.exit_code, state.message) == (0, "result for reports")


def test_termination_message_is_capped_at_4096_bytes(
    namespace: str, core: client.CoreV1Api
) -> None:
    script = 'head -c 5000 /dev/zero | tr "\\0" x > "$AGENTFLOW_TERMINATION_MESSAGE_PATH"'
    core.create_namespaced_pod(namespace, pod_manifest("long", ["sh", "-c", script]))
    state = terminated(finished_pod(core, namespace, "long"))
    assert state.message == "x" * 4096


def test_fallback_to_logs_on_error_uses_the_log_tail(
    namespace: str, core: client.CoreV1Api
) -> None:
    script = "for i in $(seq 1 100); do echo line $i; done; echo boom >&2; exit 2"
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    core.create_namespaced_pod(
        namespace, pod_manifest("fallback", ["sh", "-c", script], container=fallback)
    )
    # The default policy (File) never reads the log.
    core.create_namespaced_pod(namespace, pod_manifest("file-policy", ["sh", "-c", script]))
    # A successful exit does not fall back either.
    core.create_namespaced_pod(
        namespace, pod_manifest("succeeds", ["sh", "-c", "echo fine"], container=fallback)
    )

    state = terminated(finished_pod(core, namespace, "fallback"))
    assert state.exit_code == 2
    expected = "".join(f"line {i}\n" for i in range(22, 101)) + "boom\n"  # the last 80 lines
    assert state.message == expected
    assert len(expected.encode()) <= 2048
    assert terminated(finished_pod(core, namespace, "file-policy")).message is None
    assert terminated(finished_pod(core, namespace, "succeeds")).message is None


# ------------------------------------------------------------------------------------- env


def test_secret_env_reaches_the_process_but_not_the_node_log(
    namespace: str, core: client.CoreV1Api, node_log: Path
) -> None:
    value = f"s3cr3t-{secrets.token_hex(8)}"
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "creds"}, "stringData": {"token": value}},
    )
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "GREETING", "value": "token=$(TOKEN)"},
    ]
    script = 'printf "%s" "$GREETING" > "$AGENTFLOW_TERMINATION_MESSAGE_PATH"'
    core.create_namespaced_pod(
        namespace, pod_manifest("uses-secret", ["sh", "-c", script], container={"env": env})
    )
    state = terminated(finished_pod(core, namespace, "uses-secret"))
    assert state.message == f"token={value}"
    assert value not in node_log.read_text(errors="replace")


def test_missing_secret_waits_until_it_exists(namespace: str, core: client.CoreV1Api) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    script = 'printf "%s" "$TOKEN" > "$AGENTFLOW_TERMINATION_MESSAGE_PATH"'
    core.create_namespaced_pod(
        namespace, pod_manifest("waits", ["sh", "-c", script], container={"env": env})
    )

    def config_error() -> Any:
        pod = read_pod(core, namespace, "waits")
        statuses = (pod.status.container_statuses or []) if pod else []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting and waiting.reason == "CreateContainerConfigError" else None

    waiting = wait_for(config_error, 60, "CreateContainerConfigError")
    assert waiting.message == 'secret "later" not found'
    assert read_pod(core, namespace, "waits").status.phase == "Pending"

    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "later"}, "stringData": {"token": "now"}}
    )
    state = terminated(finished_pod(core, namespace, "waits"))
    assert state.message == "now"


def test_init_container_and_main_container_share_an_empty_dir(
    namespace: str, core: client.CoreV1Api
) -> None:
    mount = {"volumeMounts": [{"name": "work", "mountPath": "/work"}], "workingDir": "/work"}
    init = {
        "name": "prepare",
        "image": "docker.io/library/alpine:3",
        "command": ["sh", "-c", "echo from-init > shared.txt"],
        **mount,
    }
    script = (
        'cat shared.txt "$AGENTFLOW_VOLUME_WORK/shared.txt" > "$AGENTFLOW_TERMINATION_MESSAGE_PATH"'
    )
    manifest = pod_manifest(
        "init",
        ["sh", "-c", script],
        container=mount,
        initContainers=[init],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    core.create_namespaced_pod(namespace, manifest)
    pod = finished_pod(core, namespace, "init")
    assert pod.status.phase == "Succeeded"
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    assert terminated(pod).message == "from-init\nfrom-init\n"


def test_agent_runner_image_runs_the_project_runner(namespace: str, core: client.CoreV1Api) -> None:
    env = [
        {"name": "AGENTFLOW_PROMPT", "value": "Check the VAT rules"},
        {"name": "AGENTFLOW_STEP", "value": "vat-check"},
        {"name": "AGENTFLOW_AGENT", "value": "scripted"},
        {"name": "AGENTFLOW_SCRIPT_REPORT", "value": "## Summary\nchecked {step}\n"},
    ]
    container = {
        "image": DEFAULT_AGENT_IMAGE,
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }
    # No command: the image's entrypoint (python -m agentflow.runner) runs.
    manifest = pod_manifest(
        "runner", [], container=container, volumes=[{"name": "scratch", "emptyDir": {}}]
    )
    core.create_namespaced_pod(namespace, manifest)
    pod = finished_pod(core, namespace, "runner")
    state = terminated(pod)
    assert state.exit_code == 0, state.message
    result = decode_termination_message(state.message)
    assert (result.summary, result.truncated) == ("checked vat-check", False)
    assert "checked vat-check" in core.read_namespaced_pod_log("runner", namespace)


# --------------------------------------------------------------------------- unknown images


def test_unknown_image_never_starts_and_backs_off(namespace: str, core: client.CoreV1Api) -> None:
    manifest = pod_manifest(
        "unknown", ["true"], container={"image": "registry.example/team/tool:1"}
    )
    core.create_namespaced_pod(namespace, manifest)

    def waiting_reason(reason: str) -> Any:
        pod = read_pod(core, namespace, "unknown")
        statuses = (pod.status.container_statuses or []) if pod else []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting and waiting.reason == reason else None

    pulled = wait_for(lambda: waiting_reason("ErrImagePull"), 60, "ErrImagePull")
    assert 'image "registry.example/team/tool:1" is not available on the local node' in (
        pulled.message
    )
    assert "busybox" in pulled.message  # it says which images are
    backoff = wait_for(lambda: waiting_reason("ImagePullBackOff"), 30, "ImagePullBackOff")
    assert "registry.example/team/tool:1" in backoff.message
    assert read_pod(core, namespace, "unknown").status.phase == "Pending"


# ------------------------------------------------------------------- deletion and deadlines


def test_deleting_a_running_job_kills_its_process_and_removes_the_pod(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    batch.create_namespaced_job(namespace, job_manifest("sleeper", pid_recording_command(pid_file)))
    pid = wait_for(lambda: read_pid(pid_file), 60, "the pod's process to start")
    assert not process_gone(pid)

    batch.delete_namespaced_job("sleeper", namespace, propagation_policy="Background")
    wait_for(lambda: process_gone(pid), 30, "the process to be killed")
    wait_for(lambda: not job_pods(core, namespace, "sleeper"), 30, "the pod to be deleted")


def test_job_active_deadline_kills_the_pod(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    manifest = job_manifest("slow", pid_recording_command(pid_file), activeDeadlineSeconds=3)
    batch.create_namespaced_job(namespace, manifest)
    pid = wait_for(lambda: read_pid(pid_file), 60, "the pod's process to start")
    failed = wait_for(lambda: job_condition(batch, namespace, "slow", "Failed"), 60, "job failed")
    assert failed.reason == "DeadlineExceeded"
    wait_for(lambda: process_gone(pid), 30, "the process to be killed")


def test_pod_active_deadline_fails_the_pod(
    namespace: str, core: client.CoreV1Api, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    manifest = pod_manifest("deadline", pid_recording_command(pid_file), activeDeadlineSeconds=2)
    core.create_namespaced_pod(namespace, manifest)
    pod = finished_pod(core, namespace, "deadline")
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    assert terminated(pod).exit_code == 128 + signal.SIGTERM
    assert process_gone(read_pid(pid_file) or 0)


def test_finished_job_with_ttl_zero_is_removed(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(
        namespace, job_manifest("short-lived", ["true"], ttlSecondsAfterFinished=0)
    )

    def gone() -> bool:
        try:
            batch.read_namespaced_job("short-lived", namespace)
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(gone, 60, "the ttl-after-finished controller to delete the job")
    wait_for(lambda: not job_pods(core, namespace, "short-lived"), 30, "its pods to go")


def test_deleting_the_owner_of_a_job_removes_the_job_and_kills_its_pod(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api, tmp_path: Path
) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    pid_file = tmp_path / "pid"
    manifest = job_manifest(
        "owned", pid_recording_command(pid_file), metadata={"ownerReferences": [ref]}
    )
    batch.create_namespaced_job(namespace, manifest)
    pid = wait_for(lambda: read_pid(pid_file), 60, "the pod's process to start")

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_for(lambda: process_gone(pid), 60, "the garbage collector to stop the pod")
    wait_for(lambda: not batch.list_namespaced_job(namespace).items, 30, "the job to go")
    wait_for(lambda: not job_pods(core, namespace, "owned"), 30, "the pod to go")


# ------------------------------------------------------------------------------ scheduling


def test_pod_that_does_not_fit_the_node_stays_unschedulable(
    namespace: str, core: client.CoreV1Api
) -> None:
    manifest = pod_manifest("picky", ["true"], nodeSelector={"disktype": "ssd"})
    core.create_namespaced_pod(namespace, manifest)

    def unschedulable() -> Any:
        pod = read_pod(core, namespace, "picky")
        for cond in (pod.status.conditions or []) if pod else []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return cond
        return None

    cond = wait_for(unschedulable, 60, "PodScheduled=False")
    assert cond.reason == "Unschedulable"
    pod = read_pod(core, namespace, "picky")
    assert pod is not None and pod.spec.node_name is None


def test_pods_of_another_scheduler_are_left_alone(
    namespace: str, core: client.CoreV1Api, second_node: Callable[..., NodeProcess]
) -> None:
    node = second_node()
    core.create_namespaced_pod(namespace, node.pod("for-second", ["true"]))
    core.create_namespaced_pod(
        namespace, pod_manifest("for-nobody", ["true"], schedulerName="no-such-scheduler")
    )
    pod = finished_pod(core, namespace, "for-second")
    assert pod.spec.node_name == node.name
    assert pod.status.phase == "Succeeded"
    assert read_pod(core, namespace, "for-nobody").spec.node_name is None


# ----------------------------------------------------------------------- node stop / restart


def test_node_stops_its_processes_on_sigterm(
    namespace: str,
    core: client.CoreV1Api,
    second_node: Callable[..., NodeProcess],
    tmp_path: Path,
) -> None:
    node = second_node()
    pid_file = tmp_path / "pid"
    core.create_namespaced_pod(namespace, node.pod("running", pid_recording_command(pid_file)))
    pid = wait_for(lambda: read_pid(pid_file), 60, "the pod's process to start")
    assert node.stop(signal.SIGTERM) == 0
    assert process_gone(pid)


def test_pods_running_when_the_node_died_fail_with_node_restarted(
    namespace: str,
    core: client.CoreV1Api,
    kubectl: Kubectl,
    second_node: Callable[..., NodeProcess],
    tmp_path: Path,
) -> None:
    node = second_node()
    pid_file = tmp_path / "pid"
    core.create_namespaced_pod(namespace, node.pod("orphan", pid_recording_command(pid_file)))
    core.create_namespaced_pod(namespace, node.pod("finished", ["echo", "before"]))
    core.create_namespaced_pod(namespace, node.pod("deleted", ["echo", "meanwhile"]))
    wait_for(
        lambda: (p := read_pod(core, namespace, "orphan")) and p.status.phase == "Running",
        60,
        "pod running",
    )
    finished_pod(core, namespace, "finished")
    deleted_uid = finished_pod(core, namespace, "deleted").metadata.uid
    pod_dirs = node.state_dir / "pods"
    assert list(pod_dirs.glob(f"*_{deleted_uid}"))
    pid = read_pid(pid_file)
    assert pid is not None
    node.stop(signal.SIGKILL)  # no chance to clean up: the process outlives the node
    assert not process_gone(pid)
    core.delete_namespaced_pod("deleted", namespace, grace_period_seconds=0)

    node.start(core)
    pod = finished_pod(core, namespace, "orphan")
    assert (pod.status.phase, pod.status.reason) == ("Failed", "NodeRestarted")
    assert terminated(pod).reason == "ContainerStatusUnknown"
    wait_for(lambda: process_gone(pid), 10, "the restarted node to kill the leftover process")
    # The log of a pod that finished before the restart is still served; the files of the pod
    # deleted while the node was down are removed.
    logs = kubectl("-n", namespace, "logs", "finished")
    assert (logs.returncode, logs.stdout) == (0, "before\n"), logs.stderr
    wait_for(lambda: not list(pod_dirs.glob(f"*_{deleted_uid}")), 10, "the stale pod files to go")


# ------------------------------------------------------------------------------ instant mode


def test_instant_mode_completes_pods_with_the_annotated_result(
    namespace: str,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    kubectl: Kubectl,
    second_node: Callable[..., NodeProcess],
) -> None:
    node = second_node("--instant")
    message = json.dumps({"v": 1, "summary": "done instantly"})
    ok = job_manifest(
        "instant-ok",
        ["does-not-run"],
        pod={"schedulerName": node.scheduler},
        pod_metadata={"annotations": {ANNOTATION_INSTANT_MESSAGE: message}},
    )
    failing = job_manifest(
        "instant-fails",
        ["does-not-run"],
        pod={"schedulerName": node.scheduler},
        pod_metadata={"annotations": {ANNOTATION_INSTANT_EXIT_CODE: "7"}},
    )
    batch.create_namespaced_job(namespace, ok)
    batch.create_namespaced_job(namespace, failing)

    wait_for(lambda: job_condition(batch, namespace, "instant-ok", "Complete"), 60, "complete")
    (pod,) = job_pods(core, namespace, "instant-ok")
    assert pod.spec.node_name == node.name
    state = terminated(pod)
    assert (state.exit_code, state.message) == (0, message)
    logs = kubectl("-n", namespace, "logs", "job/instant-ok")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == message

    wait_for(lambda: job_condition(batch, namespace, "instant-fails", "Failed"), 60, "failed")
    (pod,) = job_pods(core, namespace, "instant-fails")
    state = terminated(pod)
    assert (state.exit_code, state.reason) == (7, "Error")
    assert state.message == DEFAULT_INSTANT_FAILURE_MESSAGE
