"""One Workflow never adopts, deletes or reads another's Job: the operator's side, against a
fake API server that keeps Jobs and pods by name and honours delete preconditions.

The same behaviour on the real API server: tests/integration/test_tenancy.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from agentflow.api.models import AgentTemplate, StepPhase
from agentflow.children import WorkflowRef, job_log_pod
from agentflow.config import OperatorConfig
from agentflow.controller import (
    JOB_CONFLICT,
    Observations,
    Planning,
    Runtime,
    act,
)
from agentflow.engine import job_name, plan
from agentflow.engine.types import FallbackPolicy, Limits, no_cache
from agentflow.kube import ApiError, Kube
from agentflow.metrics import OperatorMetrics
from tests.support.world import T0, fallback_policy, step, workflow

T = TypeVar("T")
NS = "team"
OURS = "uid-of-our-workflow"
THEIRS = "uid-of-their-workflow"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class FakeApi(Kube):
    """Jobs and pods by name, uids made up on create; DELETE honours ``preconditions.uid``."""

    def __init__(self) -> None:
        super().__init__(None)
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.created = 0

    def add(self, kind: str, name: str, owner_uid: str | None, **meta: Any) -> dict[str, Any]:
        self.created += 1
        owners = [{"kind": "Workflow", "uid": owner_uid, "controller": True}] if owner_uid else []
        obj = {
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": f"{kind}-uid-{self.created}",
                "ownerReferences": owners,
                **meta,
            }
        }
        self.objects[f"{kind}/{name}"] = obj
        return obj

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        body = kwargs.get("body")
        self.calls.append((method, path, body))
        parts = path.strip("/").split("/")
        if parts[-1] == "log":
            return b"the log of " + parts[-2].encode()
        if method == "GET" and parts[-1] == "pods":
            return {"items": [o for k, o in self.objects.items() if k.startswith("pods/")]}
        if method == "POST":
            key = f"{parts[-1]}/{body['metadata']['name']}"
            if key in self.objects:
                raise ApiError(409, "AlreadyExists")
            owner = body["metadata"]["ownerReferences"][0]["uid"]
            return self.add(parts[-1], body["metadata"]["name"], owner)
        key = f"{parts[-2]}/{parts[-1]}"
        found = self.objects.get(key)
        if found is None:
            raise ApiError(404, "NotFound")
        if method == "DELETE":
            wanted = ((body or {}).get("preconditions") or {}).get("uid")
            if wanted is not None and wanted != found["metadata"]["uid"]:
                raise ApiError(409, "Conflict")
            del self.objects[key]
            return {}
        return found

    def deletes(self) -> list[str]:
        return [path for method, path, _ in self.calls if method == "DELETE"]


def test_a_job_under_our_name_that_is_not_ours_is_never_deleted() -> None:
    api = FakeApi()
    theirs = api.add("jobs", "shared-name", THEIRS)
    assert run(api.delete_job(NS, "shared-name", owner_uid=OURS)) is False
    unowned = api.add("jobs", "unowned", None)
    assert run(api.delete_job(NS, "unowned", owner_uid=OURS)) is False
    assert api.deletes() == []
    assert api.objects["jobs/shared-name"] is theirs and api.objects["jobs/unowned"] is unowned


def test_our_job_is_deleted_under_its_uid_and_a_job_swapped_in_is_not() -> None:
    api = FakeApi()
    ours = api.add("jobs", "ours", OURS)
    assert run(api.delete_job(NS, "ours", owner_uid=OURS)) is True
    [(_, _, body)] = [c for c in api.calls if c[0] == "DELETE"]
    assert body["preconditions"] == {"uid": ours["metadata"]["uid"]}
    assert body["propagationPolicy"] == "Background"
    # The uid we saw in our index: the Job now under the name is another one, and stays.
    seen_uid = api.add("jobs", "reused", OURS)["metadata"]["uid"]
    api.objects.pop("jobs/reused")
    replacement = api.add("jobs", "reused", THEIRS)
    assert run(api.delete_job(NS, "reused", owner_uid=OURS, uid=seen_uid)) is False
    assert api.objects["jobs/reused"] is replacement


def test_a_job_log_is_read_only_from_that_jobs_own_pod() -> None:
    api = FakeApi()
    job = api.add("jobs", "step-job", OURS)
    pod = api.add("pods", "step-job-abcde", None)
    pod["metadata"]["ownerReferences"] = [{"kind": "Job", "uid": "another-job", "controller": True}]
    job_uid = job["metadata"]["uid"]
    assert run(api.read_job_log(NS, "step-job", job_uid, 1000)) is None
    pod["metadata"]["ownerReferences"][0]["uid"] = job_uid
    assert run(api.read_job_log(NS, "step-job", job_uid, 1000)) == "the log of step-job-abcde"


def _pass(api: FakeApi, policy: FallbackPolicy) -> Any:
    """One pass of planning and acting for Workflow ``wf`` (uid OURS), one step ``s``."""
    agents = [AgentTemplate(name="a"), AgentTemplate(name="b")]
    wf = workflow([step("s")], name="wf", uid=OURS, agents=agents)
    events: list[tuple[str, str, str]] = []
    rt = Runtime(
        kube=api,
        metrics=OperatorMetrics(),
        config=OperatorConfig(),
        post_event=lambda _body, type_, reason, message: events.append((type_, reason, message)),
    )
    obs = Observations(jobs=[], pods=[], policies={}, cache=no_cache, active_jobs_in_namespace=0)
    first = plan(wf, policy, [], no_cache, T0, Limits())
    planning = Planning(wf, policy, [], obs, Limits(), T0)
    ref = WorkflowRef(name="wf", namespace=NS, uid=OURS)
    return run(act(rt, {"metadata": {"name": "wf"}}, ref, first, planning)), events


def test_a_foreign_job_under_the_next_name_fails_that_attempt_in_the_same_pass() -> None:
    api = FakeApi()
    name = job_name("wf", "s", 1, 1, 1, uid=OURS)
    foreign = api.add("jobs", name, THEIRS)
    result, events = _pass(api, fallback_policy({"agent": "a", "fallback": "b"}))
    s = result.status.step("s")
    first, second = s.attempts
    assert (first.job_name, first.outcome, first.reason) == (name, "Failed", JOB_CONFLICT)
    assert first.message is not None
    assert name in first.message and "neither adopted nor deleted" in first.message
    # The fallback runs at once, under its own name; the foreign Job is left as it was.
    assert (second.agent, second.outcome) == ("b", "Running")
    assert f"jobs/{second.job_name}" in api.objects
    assert api.objects[f"jobs/{name}"] is foreign
    assert api.deletes() == []
    assert any(reason == JOB_CONFLICT and name in message for _, reason, message in events)


def test_a_foreign_job_fails_the_step_when_nothing_else_may_run() -> None:
    api = FakeApi()
    name = job_name("wf", "s", 1, 1, 1, uid=OURS)
    foreign = api.add("jobs", name, None)
    result, _ = _pass(api, FallbackPolicy())
    s = result.status.step("s")
    assert s.phase is StepPhase.FAILED
    assert [(a.outcome, a.reason) for a in s.attempts] == [("Failed", JOB_CONFLICT)]
    assert result.status.phase == "Failed"
    assert api.objects[f"jobs/{name}"] is foreign and api.deletes() == []


def test_the_log_read_is_the_newest_pod_the_job_owns() -> None:
    def pod(name: str, owner: str, created: str) -> dict[str, Any]:
        owners = [{"kind": "Job", "uid": owner, "controller": True}]
        return {"metadata": {"name": name, "ownerReferences": owners, "creationTimestamp": created}}

    pods = [
        pod("b", "job-1", "2026-01-01T00:00:02Z"),
        pod("c", "job-2", "2026-01-01T00:00:09Z"),  # another Job under the same name: not ours
        pod("a", "job-1", "2026-01-01T00:00:01Z"),
    ]
    assert job_log_pod(pods, "job-1") == "b"
    assert job_log_pod(pods, "job-3") is None
    assert job_log_pod(pods, None) == "c"  # the Job is gone: any pod under its name
