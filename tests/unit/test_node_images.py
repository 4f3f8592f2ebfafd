"""The local node's pure parts: the image table, command lines, $(VAR) expansion, pod status
as the kubelet reports it, termination messages, scheduling fit, instant results, and the
process environment of a container.  No cluster is needed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow.report import decode_termination_message
from agentflow_devcluster.images import (
    ImageNotAvailableError,
    ImageReference,
    container_argv,
    expand_references,
    lookup_image,
    parse_image,
)
from agentflow_devcluster.node import (
    ANNOTATION_INSTANT_EXIT_CODE,
    ANNOTATION_INSTANT_MESSAGE,
    DEFAULT_INSTANT_FAILURE_MESSAGE,
    DEFAULT_INSTANT_MESSAGE,
    ApiError,
    ConditionClock,
    ContainerRun,
    KubeClient,
    LocalNode,
    NodeConfig,
    PodRunner,
    WorkQueue,
    abandoned_pod_status,
    container_state,
    exit_code_of,
    fits_node,
    instant_pod_status,
    instant_result,
    kill_leftover_processes,
    last_lines,
    looks_started,
    parse_args,
    pod_dir_name,
    pod_phase,
    read_tail,
    render_pod_status,
    termination_message,
)

PY = "/opt/venv/bin/python3"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# ------------------------------------------------------------------------------ image table


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", ImageReference(None, "busybox")),
        ("busybox:1.36", ImageReference(None, "busybox", "1.36")),
        (
            "docker.io/library/busybox:1.36@sha256:abc",
            ImageReference("docker.io", "library/busybox", "1.36", "sha256:abc"),
        ),
        (
            "localhost:5000/agentflow/agent-runner:dev",
            ImageReference("localhost:5000", "agentflow/agent-runner", "dev"),
        ),
        ("ghcr.io/agentflow/agent-runner", ImageReference("ghcr.io", "agentflow/agent-runner")),
        ("agentflow/agent-runner:0.1.0", ImageReference(None, "agentflow/agent-runner", "0.1.0")),
        ("localhost/tool", ImageReference("localhost", "tool")),
        ("python@sha256:def", ImageReference(None, "python", None, "sha256:def")),
    ],
)
def test_parse_image(image: str, expected: ImageReference) -> None:
    assert parse_image(image) == expected


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("agentflow/agent-runner:0.1.0", "agentflow/agent-runner"),
        ("agentflow/agent-runner", "agentflow/agent-runner"),
        ("ghcr.io/agentflow/agent-runner:dev@sha256:1", "agentflow/agent-runner"),
        ("busybox", "busybox"),
        ("busybox:1.36-musl", "busybox"),
        ("docker.io/busybox", "busybox"),
        ("index.docker.io/library/alpine:3.20", "alpine"),
        ("library/debian:bookworm-slim", "debian"),
        ("ubuntu:24.04", "ubuntu"),
        ("python:3.12-slim", "python"),
    ],
)
def test_known_images(image: str, name: str) -> None:
    assert lookup_image(image).name == name


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "busyboxx",
        "myorg/busybox",
        "ghcr.io/library/busybox",
        "quay.io/python:3",
        "agentflow/other",
        "registry.example/agentflow/agent-runner-extra",
    ],
)
def test_unknown_images_are_not_available(image: str) -> None:
    with pytest.raises(ImageNotAvailableError) as err:
        lookup_image(image)
    assert str(err.value).startswith(f'image "{image}" is not available on the local node')
    assert "agentflow/agent-runner:<any tag>" in str(err.value)
    assert "busybox" in str(err.value)


def test_runner_image_runs_the_runner_module_with_the_container_args() -> None:
    argv = container_argv("agentflow/agent-runner:0.1.0", None, ["--step", "a"], python=PY)
    assert argv == [PY, "-m", "agentflow.runner", "--step", "a"]
    assert container_argv("agentflow/agent-runner", None, None, python=PY) == [
        PY,
        "-m",
        "agentflow.runner",
    ]


def test_command_replaces_the_entrypoint_and_drops_the_default_command() -> None:
    # Kubernetes: command replaces ENTRYPOINT; without args the image's CMD is not used.
    assert container_argv("busybox", ["echo"], None, python=PY) == ["echo"]
    assert container_argv("busybox", ["echo"], ["a", "b"], python=PY) == ["echo", "a", "b"]
    # args alone replace CMD and keep the entrypoint.
    assert container_argv("busybox", None, ["echo", "hi"], python=PY) == ["echo", "hi"]
    assert container_argv("busybox", None, None, python=PY) == ["sh"]
    assert container_argv("alpine", None, None, python=PY) == ["/bin/sh"]
    assert container_argv("debian", None, None, python=PY) == ["bash"]


@pytest.mark.parametrize("program", ["python", "python3", "python3.12", "/usr/local/bin/python3"])
def test_python_means_the_node_interpreter_in_python_images(program: str) -> None:
    assert container_argv("python:3.12", [program, "-c", "1"], None, python=PY) == [PY, "-c", "1"]
    argv = container_argv("agentflow/agent-runner:1", [program, "-m", "x"], None, python=PY)
    assert argv == [PY, "-m", "x"]


def test_python_image_default_command_is_the_node_interpreter() -> None:
    assert container_argv("python", None, None, python=PY) == [PY]


def test_python_is_not_mapped_in_images_without_it() -> None:
    assert container_argv("busybox", ["python3", "-V"], None, python=PY) == ["python3", "-V"]
    # Only the program is mapped, never an argument or a look-alike.
    assert container_argv("python", ["sh", "-c", "python3"], None, python=PY)[0] == "sh"
    assert container_argv("python", ["pythonista"], None, python=PY) == ["pythonista"]


def test_unknown_image_has_no_command_line() -> None:
    with pytest.raises(ImageNotAvailableError):
        container_argv("nginx:1", ["nginx"], None, python=PY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-$(B)"),  # undefined references stay as written
        ("$$(A)", "$(A)"),  # escaped
        ("$$", "$"),
        ("$$$$", "$$"),
        ("cost: $5 and $x", "cost: $5 and $x"),
        ("$(A", "$(A"),
        ("$(rm -rf /)", "$(rm -rf /)"),
        ("$(A)$(A)", "11"),
        ("", ""),
    ],
)
def test_expand_references_like_the_kubelet(text: str, expected: str) -> None:
    assert expand_references(text, {"A": "1"}) == expected


# ------------------------------------------------------------------------------- pod status


def run(name: str, state: str, code: int | None = None, init: bool = False) -> ContainerRun:
    r = ContainerRun(name, "busybox", init=init)
    if state in ("running", "terminated"):
        r.started_at = NOW
        r.container_id = f"agentflow-local://uid/{name}"
    if state == "terminated":
        assert code is not None
        r.finish(code, "Completed" if code == 0 else "Error", None, NOW)
    return r


@pytest.mark.parametrize(
    ("inits", "mains", "phase"),
    [
        ([], [run("a", "waiting")], "Pending"),
        ([run("i", "running", init=True)], [run("a", "waiting")], "Pending"),
        ([run("i", "terminated", 1, init=True)], [run("a", "waiting")], "Failed"),
        ([run("i", "terminated", 0, init=True)], [run("a", "running")], "Running"),
        ([], [run("a", "running"), run("b", "waiting")], "Pending"),
        ([], [run("a", "running"), run("b", "terminated", 0)], "Running"),
        ([], [run("a", "terminated", 0), run("b", "terminated", 0)], "Succeeded"),
        ([], [run("a", "terminated", 0), run("b", "terminated", 2)], "Failed"),
    ],
)
def test_pod_phase(inits: list[ContainerRun], mains: list[ContainerRun], phase: str) -> None:
    assert pod_phase(inits, mains) == phase


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_running_pod_status() -> None:
    status = render_pod_status(
        [], [run("a", "running")], start_time=NOW, clock=ConditionClock(), now=NOW
    )
    assert status["phase"] == "Running"
    assert conditions(status) == {
        "PodScheduled": ("True", None),
        "Initialized": ("True", None),
        "ContainersReady": ("True", None),
        "Ready": ("True", None),
    }
    (cs,) = status["containerStatuses"]
    assert cs["ready"] is True and cs["started"] is True
    # The unused states are explicit nulls so that a strategic merge patch replaces the state.
    assert cs["state"] == {
        "waiting": None,
        "running": {"startedAt": "2026-01-02T03:04:05Z"},
        "terminated": None,
    }
    assert "initContainerStatuses" not in status
    assert (status["podIP"], status["hostIP"], status["startTime"]) == (
        "127.0.0.1",
        "127.0.0.1",
        "2026-01-02T03:04:05Z",
    )
    assert status["reason"] is None and status["message"] is None


def test_pending_pod_status_names_the_unready_and_uninitialized_containers() -> None:
    status = render_pod_status(
        [run("setup", "running", init=True)],
        [run("a", "waiting"), run("b", "waiting")],
        start_time=NOW,
        clock=ConditionClock(),
        now=NOW,
    )
    assert status["phase"] == "Pending"
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Initialized"]["message"] == "containers with incomplete status: [setup]"
    assert by_type["Ready"]["message"] == "containers with unready status: [a b]"
    assert by_type["Ready"]["reason"] == "ContainersNotReady"
    assert status["initContainerStatuses"][0]["ready"] is False


def test_finished_pod_status() -> None:
    finished = run("a", "terminated", 3)
    finished.message = "why"
    status = render_pod_status(
        [run("i", "terminated", 0, init=True)],
        [finished],
        start_time=NOW,
        clock=ConditionClock(),
        now=NOW,
    )
    assert status["phase"] == "Failed"
    assert conditions(status)["Ready"] == ("False", "PodCompleted")
    assert status["initContainerStatuses"][0]["ready"] is True
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated == {
        "exitCode": 3,
        "reason": "Error",
        "message": "why",
        "startedAt": "2026-01-02T03:04:05Z",
        "finishedAt": "2026-01-02T03:04:05Z",
        "containerID": "agentflow-local://uid/a",
    }


def test_forced_failure_with_reason() -> None:
    status = render_pod_status(
        [],
        [run("a", "terminated", 0)],
        start_time=NOW,
        clock=ConditionClock(),
        now=NOW,
        reason="DeadlineExceeded",
        message="too slow",
        failed=True,
    )
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "DeadlineExceeded",
        "too slow",
    )


def test_waiting_state_carries_reason_and_message() -> None:
    r = ContainerRun("a", "x")
    r.wait("ErrImagePull", "nope")
    assert container_state(r) == {
        "waiting": {"reason": "ErrImagePull", "message": "nope"},
        "running": None,
        "terminated": None,
    }


def test_condition_clock_keeps_the_transition_time_until_the_status_changes() -> None:
    clock = ConditionClock([{"type": "Ready", "status": "False", "lastTransitionTime": "T0"}])
    assert clock.stamp("Ready", "False", NOW) == "T0"
    later = NOW + timedelta(seconds=5)
    assert clock.stamp("Ready", "True", later) == "2026-01-02T03:04:10Z"
    assert clock.stamp("Ready", "True", later + timedelta(seconds=5)) == "2026-01-02T03:04:10Z"
    assert clock.stamp("Initialized", "True", NOW) == "2026-01-02T03:04:05Z"


def test_exit_code_of_a_signal_is_128_plus_the_signal() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-signal.SIGTERM) == 143
    assert exit_code_of(-signal.SIGKILL) == 137


# -------------------------------------------------------------------- termination messages


def test_termination_message_is_the_file_capped_at_4096_bytes(tmp_path: Path) -> None:
    message, log = tmp_path / "message", tmp_path / "log"
    log.write_text("log line\n")
    message.write_text("hello")
    assert termination_message(message, "File", 0, log) == "hello"
    message.write_bytes(b"y" * 5000)
    assert termination_message(message, "FallbackToLogsOnError", 1, log) == "y" * 4096


def test_fallback_to_logs_takes_the_last_80_lines(tmp_path: Path) -> None:
    message, log = tmp_path / "message", tmp_path / "log"
    message.write_text("")
    log.write_text("".join(f"{i}\n" for i in range(200)))
    expected = "".join(f"{i}\n" for i in range(120, 200))
    assert termination_message(message, "FallbackToLogsOnError", 2, log) == expected
    # Not on success, and not with the File policy.
    assert termination_message(message, "FallbackToLogsOnError", 0, log) == ""
    assert termination_message(message, "File", 2, log) == ""
    assert termination_message(message, None, 2, log) == ""


def test_fallback_to_logs_keeps_the_last_2048_bytes(tmp_path: Path) -> None:
    message, log = tmp_path / "message", tmp_path / "log"
    lines = [f"{i:04d}" + "z" * 95 + "\n" for i in range(50)]  # 100 bytes each
    log.write_text("".join(lines))
    result = termination_message(message, "FallbackToLogsOnError", 1, log)  # no message file
    assert len(result) == 2048
    assert result == "".join(lines)[-2048:]


def test_missing_files_give_an_empty_message(tmp_path: Path) -> None:
    assert termination_message(tmp_path / "a", "FallbackToLogsOnError", 1, tmp_path / "b") == ""


@pytest.mark.parametrize(
    ("data", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
        (b"a\nb\n", 0, b""),
        (b"", 3, b""),
    ],
)
def test_last_lines(data: bytes, lines: int, expected: bytes) -> None:
    assert last_lines(data, lines) == expected


def test_read_tail_reads_backwards_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "log"
    lines = [f"{i}:" + "x" * 1000 + "\n" for i in range(300)]  # ~300 KB, several 64 KiB blocks
    path.write_text("".join(lines))
    size = path.stat().st_size
    assert read_tail(path, 3) == ("".join(lines[-3:]).encode(), size)
    assert read_tail(path, 150) == ("".join(lines[-150:]).encode(), size)
    assert read_tail(path, None) == (path.read_bytes(), size)


# ------------------------------------------------------------------------------ scheduling

LABELS = {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux", "tier": "3"}


def with_spec(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "uid": "u"}, "spec": spec}


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    required = {"nodeSelectorTerms": list(terms)}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": op, "values": list(values)}


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        ({}, True),
        ({"nodeSelector": {"kubernetes.io/os": "linux"}}, True),
        ({"nodeSelector": {"kubernetes.io/os": "windows"}}, False),
        ({"nodeSelector": {"disktype": "ssd"}}, False),
        ({"affinity": affinity({"matchExpressions": [expr("tier", "In", "2", "3")]})}, True),
        ({"affinity": affinity({"matchExpressions": [expr("tier", "NotIn", "3")]})}, False),
        ({"affinity": affinity({"matchExpressions": [expr("gpu", "DoesNotExist")]})}, True),
        ({"affinity": affinity({"matchExpressions": [expr("gpu", "Exists")]})}, False),
        ({"affinity": affinity({"matchExpressions": [expr("tier", "Gt", "2")]})}, True),
        ({"affinity": affinity({"matchExpressions": [expr("tier", "Lt", "2")]})}, False),
        ({"affinity": affinity({"matchFields": [expr("metadata.name", "In", "n1")]})}, True),
        ({"affinity": affinity({"matchFields": [expr("metadata.name", "In", "n2")]})}, False),
        (
            # Terms are ORed; expressions within a term are ANDed.
            {
                "affinity": affinity(
                    {"matchExpressions": [expr("gpu", "Exists")]},
                    {"matchExpressions": [expr("tier", "In", "3"), expr("x", "DoesNotExist")]},
                )
            },
            True,
        ),
    ],
)
def test_fits_node(spec: dict[str, Any], fits: bool) -> None:
    assert fits_node(with_spec(**spec), "n1", LABELS) is fits


# ---------------------------------------------------------------------------- instant mode


def test_instant_result_defaults_are_valid_untruncated_agent_results() -> None:
    assert instant_result({}) == (0, DEFAULT_INSTANT_MESSAGE)
    success = decode_termination_message(DEFAULT_INSTANT_MESSAGE)
    assert (success.status, success.summary, success.truncated) == ("success", "instant", False)
    code, message = instant_result({ANNOTATION_INSTANT_EXIT_CODE: "4"})
    assert (code, message) == (4, DEFAULT_INSTANT_FAILURE_MESSAGE)
    failure = decode_termination_message(message)
    assert (failure.status, failure.truncated) == ("failure", False)


def test_instant_result_from_annotations() -> None:
    annotations = {ANNOTATION_INSTANT_EXIT_CODE: "0", ANNOTATION_INSTANT_MESSAGE: "custom"}
    assert instant_result(annotations) == (0, "custom")
    assert instant_result({ANNOTATION_INSTANT_MESSAGE: "é" * 3000})[1] == "é" * 2048
    assert instant_result({ANNOTATION_INSTANT_MESSAGE: ""}) == (0, "")


@pytest.mark.parametrize("raw", ["x", "-1", "256", "1.5"])
def test_invalid_instant_exit_code_fails_the_pod_and_says_why(raw: str) -> None:
    code, message = instant_result({ANNOTATION_INSTANT_EXIT_CODE: raw})
    assert code == 1
    assert ANNOTATION_INSTANT_EXIT_CODE in message and repr(raw) in message


def pod(**spec: Any) -> dict[str, Any]:
    metadata, status = spec.pop("metadata", {}), spec.pop("status", {})
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", **metadata},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
        "status": status,
    }


def test_instant_pod_status() -> None:
    p = pod(
        initContainers=[{"name": "init", "image": "busybox"}],
        metadata={"annotations": {ANNOTATION_INSTANT_EXIT_CODE: "7"}},
    )
    status = instant_pod_status(p, NOW)
    assert status["phase"] == "Failed"
    init = status["initContainerStatuses"][0]["state"]["terminated"]
    assert (init["exitCode"], init["reason"]) == (0, "Completed")
    main = status["containerStatuses"][0]["state"]["terminated"]
    assert (main["exitCode"], main["reason"], main["message"]) == (
        7,
        "Error",
        DEFAULT_INSTANT_FAILURE_MESSAGE,
    )
    assert instant_pod_status(pod(), NOW)["phase"] == "Succeeded"


# ------------------------------------------------------------------- restarts and deletion


def test_looks_started() -> None:
    assert not looks_started(pod())
    assert looks_started(pod(status={"phase": "Running"}))
    waiting = {"containerStatuses": [{"name": "main", "state": {"waiting": {"reason": "x"}}}]}
    assert not looks_started(pod(status={"phase": "Pending", **waiting}))
    running_init = {"initContainerStatuses": [{"name": "i", "state": {"running": {}}}]}
    assert looks_started(pod(status={"phase": "Pending", **running_init}))


def test_abandoned_pod_status_keeps_finished_containers_and_reports_the_rest_gone() -> None:
    status = {
        "phase": "Running",
        "startTime": "2026-01-01T00:00:00Z",
        "containerStatuses": [
            {
                "name": "a",
                "containerID": "agentflow-local://u1/a",
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
            },
            {
                "name": "b",
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": "2026-01-01T00:00:01Z",
                        "finishedAt": "2026-01-01T00:00:02Z",
                    }
                },
            },
        ],
    }
    p = pod(status=status)
    p["spec"]["containers"].append({"name": "b", "image": "busybox"})
    p["spec"]["containers"][0]["name"] = "a"
    result = abandoned_pod_status(p, NOW, "NodeRestarted", "gone")
    assert (result["phase"], result["reason"], result["message"]) == (
        "Failed",
        "NodeRestarted",
        "gone",
    )
    assert result["startTime"] == "2026-01-01T00:00:00Z"
    a, b = (cs["state"]["terminated"] for cs in result["containerStatuses"])
    assert (a["exitCode"], a["reason"], a["startedAt"]) == (
        137,
        "ContainerStatusUnknown",
        "2026-01-01T00:00:01Z",
    )
    assert (b["exitCode"], b["reason"], b["finishedAt"]) == (0, "Completed", "2026-01-01T00:00:02Z")


def test_kill_leftover_processes_only_kills_the_recorded_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        pod_dir = tmp_path / "ns_p_u"
        pod_dir.mkdir()
        # A recorded pid whose start time differs is someone else's process now: left alone.
        (pod_dir / "main.pid").write_text(f"{proc.pid} 1")
        assert kill_leftover_processes(tmp_path) == 0
        assert proc.poll() is None
        assert not (pod_dir / "main.pid").exists()

        (pod_dir / "main.pid").write_text(f"{proc.pid} {stat[19]}")
        assert kill_leftover_processes(tmp_path) == 1
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pod_dir_name_fits_a_file_name() -> None:
    name = pod_dir_name("n" * 63, "p" * 253, "0123e4567-e89b-12d3-a456-426614174000")
    assert len(name.encode()) < 255
    assert name.startswith("n" * 63 + "_ppp") and name.endswith(
        "_0123e4567-e89b-12d3-a456-426614174000"
    )


# ------------------------------------------------------------------------------ plumbing


def test_work_queue_hands_out_a_key_once_and_requeues_what_changed_meanwhile() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue()
        queue.add("a")
        queue.add("a")
        queue.add("b")
        assert len(queue) == 2
        first = await queue.get()
        queue.add(first)  # changed while being processed: not handed out twice at once
        second = await queue.get()
        assert second == "b"
        queue.done(second)
        assert len(queue) == 0
        queue.done(first)  # now it comes back
        return [first, await queue.get()]

    assert asyncio.run(scenario()) == ["a", "a"]


def test_api_error_reads_the_status_body() -> None:
    err = ApiError(
        409, '{"kind":"Status","reason":"AlreadyExists","message":"pods \\"x\\" exists"}'
    )
    assert (err.status, err.reason, err.message) == (409, "AlreadyExists", 'pods "x" exists')
    assert not err.transient
    assert ApiError(503, "unavailable").transient
    assert ApiError(429, "").transient
    assert ApiError(500, "not json").message == "not json"


def test_command_line_defaults_and_flags() -> None:
    args = parse_args(["--kubeconfig", "k", "--state-dir", "s"])
    assert (args.name, args.instant, args.bind, args.scheduler_name) == (
        "agentflow-local",
        False,
        True,
        "default-scheduler",
    )
    args = parse_args(["--kubeconfig", "k", "--state-dir", "s", "--instant", "--no-bind"])
    assert (args.instant, args.bind) == (True, False)


# ----------------------------------------------------------------- a container's environment


def test_container_environment_working_dir_and_volumes(tmp_path: Path) -> None:
    """Env order and expansion, the node-owned variables, and mount paths mapped to volumes."""
    config = NodeConfig(state_dir=tmp_path, python=sys.executable)
    client = KubeClient("https://127.0.0.1:1", ssl_context=None)  # type: ignore[arg-type]
    node = LocalNode(config, client)
    container = {
        "name": "main",
        "image": "busybox",
        "workingDir": "/workspace/sub",
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(HOME)-$$(A)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
            {"name": "HOME", "value": "/root"},  # the node's scratch dir wins
        ],
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/tmp"},
            {"name": "work", "mountPath": "/workspace"},
        ],
    }
    spec_pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"team": "a"}},
        "spec": {
            "containers": [container],
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "work", "emptyDir": {}}],
        },
        "status": {},
    }
    runner = PodRunner(node, spec_pod)

    async def environment() -> dict[str, str]:
        await runner.prepare_volumes()
        return await runner.environment(container)

    env = asyncio.run(environment())
    pod_dir = tmp_path / "pods" / "ns_p_u1"
    assert env["A"] == "1"
    assert env["B"] == "1-$(HOME)-$(A)"  # HOME is not defined before B: left as written
    assert (env["POD"], env["TEAM"], env["HOSTNAME"]) == ("p", "a", "p")
    assert env["HOME"] == str(pod_dir / "scratch")
    assert env["TMPDIR"] == str(pod_dir / "volumes" / "scratch")
    assert env["AGENTFLOW_TERMINATION_MESSAGE_PATH"] == str(pod_dir / "termination" / "main")
    assert env["AGENTFLOW_VOLUME_WORK"] == str(pod_dir / "volumes" / "work")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    # Nothing of the node's own environment leaks into the container.
    assert set(env) == {
        "PATH",
        "HOSTNAME",
        "A",
        "B",
        "POD",
        "TEAM",
        "HOME",
        "TMPDIR",
        "AGENTFLOW_TERMINATION_MESSAGE_PATH",
        "AGENTFLOW_VOLUME_SCRATCH",
        "AGENTFLOW_VOLUME_WORK",
    }
    assert runner.working_dir(container) == pod_dir / "volumes" / "work" / "sub"
    assert runner.working_dir({"name": "x", "workingDir": "/"}) == Path("/")
    assert runner.working_dir({"name": "x", "workingDir": "/no/such/dir"}) == pod_dir / "scratch"
