"""What the API server refuses is settled, not sent again on every pass.

A Job or ConfigMap the API server refuses (an invalid field the CRD schema let through, an
object too large, a quota) would be refused again on every pass: the attempt fails with the
server's message (a Job, an output ConfigMap), or the pass goes on without it (a cache entry).
These tests drive one reconcile pass against a fake API; ``tests/integration/test_hostile.py``
does it against the real API server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from agentflow import children, controller
from agentflow.api.models import StepResult
from agentflow.children import WorkflowRef
from agentflow.config import OperatorConfig
from agentflow.controller import Observations, Runtime
from agentflow.engine.types import WriteCache
from agentflow.kube import ApiError, is_refusal, utf8_prefix
from agentflow.metrics import OperatorMetrics

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


@dataclass
class FakeKube:
    """The API, as far as one pass uses it; ``refuse`` says what each create answers."""

    refuse_jobs: ApiError | None = None
    refuse_configmaps: ApiError | None = None
    log: str = ""
    jobs: list[dict[str, Any]] = field(default_factory=list)
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    status_patches: list[dict[str, Any]] = field(default_factory=list)

    async def create_job(self, manifest: dict[str, Any]) -> Any:
        if self.refuse_jobs is not None:
            raise self.refuse_jobs
        self.jobs.append(manifest)
        return controller.CreateResult(controller.CreateOutcome.CREATED)

    async def create_configmap(self, manifest: dict[str, Any]) -> bool:
        if self.refuse_configmaps is not None:
            raise self.refuse_configmaps
        self.configmaps.append(manifest)
        return True

    async def replace_configmap_data(self, manifest: dict[str, Any]) -> None:
        await self.create_configmap(manifest)

    async def read_job_log(self, *_: Any) -> str:
        return self.log

    async def patch_workflow_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        self.status_patches.append(status)
        version = str(int(resource_version or 1) + 1)
        return {"metadata": {"resourceVersion": version}, "status": status}


def runtime(kube: FakeKube, events: list[tuple[str, str, str]]) -> Runtime:
    return Runtime(
        kube=kube,  # type: ignore[arg-type]
        metrics=OperatorMetrics(),
        config=OperatorConfig(),
        post_event=lambda _body, type_, reason, message: events.append((type_, reason, message)),
    )


def workflow_body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "wf", "namespace": "team", "uid": "u-1", "resourceVersion": "1"},
        "spec": {
            "steps": [{"name": "s", "agent": "a", "prompt": "go"}],
            "agents": [{"name": "a", "provider": "script"}],
            **spec,
        },
    }


def no_observations() -> Observations:
    return Observations(
        jobs=[], pods=[], policies={}, cache=lambda _: None, active_jobs_in_namespace=0
    )


def test_a_refused_job_fails_its_attempt_with_the_servers_message_in_the_same_pass() -> None:
    kube = FakeKube(refuse_jobs=ApiError(422, "error", {"message": INVALID}))
    events: list[tuple[str, str, str]] = []
    rt = runtime(kube, events)
    asyncio.run(controller.reconcile(rt, ("team", "wf"), workflow_body(), no_observations))

    [status] = kube.status_patches
    [attempt] = status["steps"][0]["attempts"]
    expected = f"JobRefused: the API server refused the Job: 422: {INVALID}"
    assert attempt["outcome"] == "Failed" and attempt["reason"] == "JobRefused"
    assert attempt["message"] == expected
    assert status["phase"] == "Failed"
    assert status["message"] == f"step s failed: {expected}"
    assert ("Warning", "JobRefused", expected.removeprefix("JobRefused: ")) in events
    assert kube.jobs == []


def test_a_job_refused_with_a_retry_left_is_retried_under_the_policy() -> None:
    kube = FakeKube(refuse_jobs=ApiError(403, "error", {"message": "exceeded quota: jobs"}))
    rt = runtime(kube, [])
    body = workflow_body(
        steps=[{"name": "s", "agent": "a", "prompt": "go", "retries": {"limit": 1}}]
    )
    asyncio.run(controller.reconcile(rt, ("team", "wf"), body, no_observations))
    step = kube.status_patches[-1]["steps"][0]
    assert step["phase"] == "Running" and step["nextAttemptAt"]
    assert "attempt 1 failed: JobRefused: the API server refused the Job: 403:" in step["message"]
    assert "exceeded quota: jobs; retrying in 10s" in step["message"]


def test_an_api_error_that_is_no_refusal_still_fails_the_pass() -> None:
    kube = FakeKube(refuse_jobs=ApiError(429, "error", {"message": "too many requests"}))
    rt = runtime(kube, [])
    with pytest.raises(ApiError):
        asyncio.run(controller.reconcile(rt, ("team", "wf"), workflow_body(), no_observations))
    assert kube.status_patches == []


def test_a_refused_cache_entry_is_reported_and_the_pass_goes_on() -> None:
    refusal = ApiError(422, "error", {"message": "metadata.labels: Invalid value"})
    kube = FakeKube(refuse_configmaps=refusal)
    events: list[tuple[str, str, str]] = []
    rt = runtime(kube, events)
    wf = WorkflowRef(name="wf", namespace="team", uid="u-1")
    write = WriteCache(key="sha256:k", step="s", result=StepResult(summary="x"), ttl_seconds=60)
    after = controller.RecordEvent(type="Normal", reason="After", message="still carried out")
    asyncio.run(controller.execute(rt, {}, wf, [write, after], NOW, {}))
    [(type_, reason, message), later] = events
    assert (type_, reason) == ("Warning", "CacheWriteRefused")
    name = children.cache_configmap_name("sha256:k")
    assert message == (
        f"step s: the API server refused cache ConfigMap {name}: "
        "422: metadata.labels: Invalid value; the result is not cached"
    )
    assert later == ("Normal", "After", "still carried out")
