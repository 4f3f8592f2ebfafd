"""What the API server refuses is settled, not sent again on every pass.

A Job or ConfigMap the API server refuses (an invalid field the CRD schema let through, an
object too large, a quota) would be refused again on every pass: the attempt fails with the
server's message (a Job, an output ConfigMap), or the pass goes on without it (a cache entry).
These tests drive one reconcile pass on the in-memory fake of ``agentflow.kube`` (the outputs
are in tests/unit/test_shell.py); ``tests/integration/test_hostile.py`` does it against the real
API server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from agentflow import children, controller
from agentflow.api.models import StepResult
from agentflow.children import WorkflowRef
from agentflow.controller import Key
from agentflow.engine.types import WriteCache
from agentflow.kube import ApiError, is_refusal, utf8_prefix
from tests.support.shell import Clock, Shell

NOW = datetime(2026, 1, 1, tzinfo=UTC)
INVALID = (
    'Job.batch "wf-s-1-1-1" is invalid: spec.template.spec.containers[0].resources.requests: '
    'Invalid value: "2": must be less than or equal to cpu limit of 1'
)


@pytest.mark.parametrize(
    ("status", "message", "refused"),
    [
        (400, "bad request", True),
        (403, 'jobs "x" is forbidden: exceeded quota: q', True),
        (404, 'namespaces "gone" not found', True),
        (413, "Request entity too large: limit is 3145728", True),
        (422, INVALID, True),
        (500, "etcdserver: request is too large", True),
        (408, "request timeout", False),
        (409, "already exists", False),
        (429, "too many requests", False),
        (500, "internal error", False),
        (503, "unavailable", False),
        (0, "connection refused", False),
    ],
)
def test_refusals_are_answers_about_the_object_itself(
    status: int, message: str, refused: bool
) -> None:
    assert is_refusal(ApiError(status, "error", {"message": message})) is refused


def test_a_log_is_cut_to_its_limit_in_utf8_bytes() -> None:
    # 900 KiB of invalid bytes decode to three times as many bytes of U+FFFD.
    text = (b"\xff" * 900 * 1024).decode("utf-8", "replace")
    cut = utf8_prefix(text, 900 * 1024)
    assert len(cut.encode()) <= 900 * 1024 and cut == "\ufffd" * (300 * 1024)
    assert utf8_prefix("é" * 3, 5) == "éé"  # never half a character
    assert utf8_prefix("short", 100) == "short"


def shell_with_workflow(**spec: Any) -> tuple[Shell, Key]:
    shell = Shell(Clock(NOW))
    body = {
        "steps": [{"name": "s", "agent": "a", "prompt": "go"}],
        "agents": [{"name": "a", "provider": "script"}],
        **spec,
    }
    return shell, shell.submit("wf", body)


def status_patches(shell: Shell) -> int:
    return sum(verb == "patch-status" for verb, _ in shell.kube.calls)


def test_a_refused_job_fails_its_attempt_with_the_servers_message_in_the_same_pass() -> None:
    shell, key = shell_with_workflow()
    shell.kube.faults.job_error = ApiError(422, "error", {"message": INVALID})
    shell.reconcile(key)

    assert status_patches(shell) == 1
    status = shell.status(key)
    [attempt] = status["steps"][0]["attempts"]
    expected = f"JobRefused: the API server refused the Job: 422: {INVALID}"
    assert attempt["outcome"] == "Failed" and attempt["reason"] == "JobRefused"
    assert attempt["message"] == expected
    assert status["phase"] == "Failed"
    assert status["message"] == f"step s failed: {expected}"
    assert ("Warning", "JobRefused", expected.removeprefix("JobRefused: ")) in shell.events
    assert shell.kube.jobs == {}


def test_a_job_refused_with_a_retry_left_is_retried_under_the_policy() -> None:
    shell, key = shell_with_workflow(
        steps=[{"name": "s", "agent": "a", "prompt": "go", "retries": {"limit": 1}}]
    )
    shell.kube.faults.job_error = ApiError(403, "error", {"message": "exceeded quota: jobs"})
    shell.reconcile(key)
    step = shell.status(key)["steps"][0]
    assert step["phase"] == "Running" and step["nextAttemptAt"]
    assert "attempt 1 failed: JobRefused: the API server refused the Job: 403:" in step["message"]
    assert "exceeded quota: jobs; retrying in 10s" in step["message"]


def test_an_api_error_that_is_no_refusal_still_fails_the_pass() -> None:
    shell, key = shell_with_workflow()
    shell.kube.faults.job_error = ApiError(429, "error", {"message": "too many requests"})
    with pytest.raises(ApiError):
        shell.reconcile(key)
    assert status_patches(shell) == 0


def test_a_refused_cache_entry_is_reported_and_the_pass_goes_on() -> None:
    refusal = ApiError(422, "error", {"message": "metadata.labels: Invalid value"})
    shell = Shell(Clock(NOW))
    shell.kube.faults.configmap_error = refusal
    wf = WorkflowRef(name="wf", namespace="team", uid="u-1")
    write = WriteCache(key="sha256:k", step="s", result=StepResult(summary="x"), ttl_seconds=60)
    after = controller.RecordEvent(type="Normal", reason="After", message="still carried out")
    asyncio.run(controller.execute(shell.rt, {}, wf, [write, after], NOW, {}))
    [(type_, reason, message), later] = shell.events
    assert (type_, reason) == ("Warning", "CacheWriteRefused")
    name = children.cache_configmap_name("sha256:k")
    assert message == (
        f"step s: the API server refused cache ConfigMap {name}: "
        "422: metadata.labels: Invalid value; the result is not cached"
    )
    assert later == ("Normal", "After", "still carried out")
