"""Workflows in one namespace stay out of each other's way, on the real control plane.

- Two Workflows whose Job names used to be the same (``a`` step ``b-c`` and ``a-b`` step ``c``:
  ``a-b-c-1-1-1``) each run their own Job.
- A Job that is not a Workflow's, under that Workflow's next Job name and carrying its labels,
  fails that attempt with a clear message; it is neither adopted nor deleted.
- A Workflow deleted and at once created again under its name runs to the end, though the Job
  of the one before is still there (held, as the garbage collector may take its time).
- The cache sweep deletes only the operator's own entries: a user's ConfigMap carrying the
  cache label survives it, and so does an expired copy of an entry under another name.
- A hand-made cache entry far larger than any result is cut like a fresh result when used.

The operator's side of the same rules, in detail: tests/unit/test_tenancy.py,
tests/unit/test_controller.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentflow.api.models import Artifact, StepResult, WorkflowSpec
from agentflow.children import (
    CACHE_CREATED_ANNOTATION,
    CACHE_DATA_KEY,
    CACHE_EXPIRES_ANNOTATION,
    CACHE_KEY_ANNOTATION,
    cache_configmap_name,
)
from agentflow.engine import cache_key, job_name, resolve_agent
from agentflow.report import MAX_ARTIFACTS, MAX_SUMMARY_CHARS
from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.workflows import (
    Kubectl,
    apply,
    events,
    get,
    items,
    script_agent,
    step,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

CACHE_LABEL = "agentflow.dev/cache"


def owned_jobs(kubectl: Kubectl, namespace: str, wf: dict[str, Any]) -> list[dict[str, Any]]:
    """The Jobs whose ownerReference is this Workflow (by uid), whatever their labels say."""
    uid = wf["metadata"]["uid"]
    return [
        j
        for j in items(kubectl, namespace, "jobs")
        if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])
    ]


def create(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    result = kubectl("create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(doc))
    assert result.returncode == 0, result.stderr
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def test_workflows_whose_job_names_used_to_collide_each_run_their_own_job(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    pair = [("a", "b-c"), ("a-b", "c")]  # both were a-b-c-1-1-1
    apply(
        kubectl,
        namespace,
        [workflow(wf, [{"name": s, "agent": "x"}], [script_agent("x")]) for wf, s in pair],
    )
    names = set()
    for wf_name, step_name in pair:
        wf = wait_finished(kubectl, namespace, wf_name)
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        [attempt] = step(wf, step_name)["attempts"]
        assert attempt["outcome"] == "Succeeded"
        [job] = owned_jobs(kubectl, namespace, wf)
        assert (
            job["metadata"]["name"]
            == attempt["jobName"]
            == job_name(wf_name, step_name, 1, 1, 1, uid=wf["metadata"]["uid"])
        )
        assert job["metadata"]["labels"]["agentflow.dev/workflow"] == wf_name
        names.add(job["metadata"]["name"])
    assert len(names) == 2


def test_a_foreign_job_under_the_next_job_name_fails_that_attempt_and_is_left_alone(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    victim = workflow(
        "victim",
        [
            {
                "name": "s",
                "agent": "a",
                "timeoutSeconds": 30,
                "retries": {"limit": 1, "backoffSeconds": 0},
            }
        ],
        [script_agent("a")],
    )
    # Created suspended: its Job names hold its uid, so the foreign Job can take the first one
    # only once the Workflow exists; resuming changes nothing else (the same run).
    created = create(kubectl, namespace, {**victim, "spec": {**victim["spec"], "suspend": True}})
    name = job_name("victim", "s", 1, 1, 1, uid=created["metadata"]["uid"])
    labels = {
        "agentflow.dev/workflow": "victim",
        "agentflow.dev/step": "s",
        "agentflow.dev/run": "1",
        "agentflow.dev/iteration": "1",
        "agentflow.dev/attempt": "1",
        "agentflow.dev/agent": "a",
    }
    # Suspended: it never finishes, so a Workflow that took it for its attempt would wait for
    # it until the step's timeout, and then delete it.
    foreign = create(
        kubectl,
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox:1.36", "command": ["true"]}],
                    }
                },
            },
        },
    )
    resumed = kubectl(
        "patch",
        "-n",
        namespace,
        "workflows.agentflow.dev",
        "victim",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": False}}),
    )
    assert resumed.returncode == 0, resumed.stderr
    wf = wait_finished(kubectl, namespace, "victim", timeout=90)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    first, second = step(wf, "s")["attempts"]
    assert (first["jobName"], first["outcome"], first["reason"]) == (name, "Failed", "JobConflict")
    assert first["message"] == (
        f"JobConflict: job {name} exists and is not owned by this run; "
        "it is left alone, neither adopted nor deleted"
    )
    assert second["outcome"] == "Succeeded" and second["jobName"] != name
    assert [j["metadata"]["name"] for j in owned_jobs(kubectl, namespace, wf)] == [
        second["jobName"]
    ]
    warnings = [e for e in events(kubectl, namespace, "victim") if e["reason"] == "JobConflict"]
    assert warnings and name in warnings[0]["message"]
    # Untouched: the same object, not deleted, not adopted, still suspended.
    now = get(kubectl, namespace, "job", name)
    assert now is not None
    assert now["metadata"]["uid"] == foreign["metadata"]["uid"]
    assert not now["metadata"].get("deletionTimestamp")
    assert not now["metadata"].get("ownerReferences")
    assert now["metadata"]["labels"] == labels and now["spec"]["suspend"] is True


HOLD = "agentflow.dev/test-hold"


def hold_job(kubectl: Kubectl, namespace: str, name: str, finalizers: list[str] | None) -> None:
    """Set the Job's finalizers: while one is there, a deleted Job stays (deleting)."""
    patch = json.dumps({"metadata": {"finalizers": finalizers}})
    done = kubectl("patch", "-n", namespace, "job", name, "--type=merge", "-p", patch)
    assert done.returncode == 0, done.stderr


def test_a_workflow_made_again_under_its_name_runs_while_the_old_job_is_still_there(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    """The Jobs of a deleted Workflow stay until the garbage collector deletes them; here a
    finalizer holds the old Job (deleting, owned by the old uid) while the new Workflow runs."""
    # Not cached: the new Workflow must run its step, under its own Job name.
    doc = workflow(
        "reborn", [{"name": "s", "agent": "a", "cache": {"enabled": False}}], [script_agent("a")]
    )
    apply(kubectl, namespace, [doc])
    before = wait_finished(kubectl, namespace, "reborn")
    assert before["status"]["phase"] == "Succeeded", before["status"]
    [old_attempt] = step(before, "s")["attempts"]
    old_job = old_attempt["jobName"]
    hold_job(kubectl, namespace, old_job, [HOLD])
    try:
        deleted = kubectl("delete", "-n", namespace, "workflows.agentflow.dev", "reborn")
        assert deleted.returncode == 0, deleted.stderr
        apply(kubectl, namespace, [doc])
        after = wait_finished(kubectl, namespace, "reborn")
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
        assert after["status"]["phase"] == "Succeeded", after["status"]
        [attempt] = step(after, "s")["attempts"]
        assert attempt["outcome"] == "Succeeded" and attempt["jobName"] != old_job
        # The old Job was there all along, still the old Workflow's, and left alone.
        old = get(kubectl, namespace, "job", old_job)
        assert old is not None
        assert [o["uid"] for o in old["metadata"]["ownerReferences"]] == [before["metadata"]["uid"]]
        reasons = {e["reason"] for e in events(kubectl, namespace, "reborn")}
        assert "JobConflict" not in reasons
    finally:
        hold_job(kubectl, namespace, old_job, None)


def test_the_cache_sweep_deletes_only_the_operators_own_entries(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    theirs = create(
        kubectl,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "team-notes", "labels": {CACHE_LABEL: "true"}},
            "data": {"notes": "ours, not a cache entry"},
        },
    )
    # A copy of an entry, expired, under another name: not one the operator wrote either.
    copy = create(
        kubectl,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "copy-of-an-entry",
                "labels": {CACHE_LABEL: "true"},
                "annotations": {
                    CACHE_KEY_ANNOTATION: "sha256:" + "0" * 64,
                    CACHE_CREATED_ANNOTATION: past,
                    CACHE_EXPIRES_ANNOTATION: past,
                },
            },
            "data": {CACHE_DATA_KEY: StepResult(summary="old").model_dump_json()},
        },
    )
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "short-lived",
                [{"name": "once", "agent": "a", "cache": {"ttlSeconds": 2}}],
                [script_agent("a")],
            )
        ],
    )
    wf = wait_finished(kubectl, namespace, "short-lived")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    entry = cache_configmap_name(step(wf, "once")["cacheKey"])

    def cache_configmaps() -> set[str]:
        return {
            cm["metadata"]["name"] for cm in items(kubectl, namespace, "configmaps", CACHE_LABEL)
        }

    assert entry in cache_configmaps()
    # The operator's own entry expires and is swept (so sweeps ran after the others existed).
    wait_for(lambda: entry not in cache_configmaps(), 60, what="the expired entry to be swept")
    for before in (theirs, copy):
        after = get(kubectl, namespace, "configmap", before["metadata"]["name"])
        assert after is not None, f"{before['metadata']['name']} was deleted"
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_hand_made_oversized_cache_entry_is_cut_like_a_fresh_result_when_used(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    # Parallelism 1: "b-cached" looks the cache up only after "a-slow" has run, long after the
    # operator has seen the entry made below.
    doc = workflow(
        "reuser",
        [
            {"name": "a-slow", "agent": "slow"},
            {"name": "b-cached", "agent": "a", "prompt": "reuse me"},
        ],
        [script_agent("slow", sleep=3), script_agent("a")],
        strategy="Parallel",
        parallelism=1,
    )
    spec = WorkflowSpec.model_validate(doc["spec"])
    cached_step = spec.steps[1]
    key = cache_key(resolve_agent(spec, cached_step, "a"), "reuse me", {}, 1)
    marker = "hand-made entry: "
    huge = StepResult(
        status="success",
        summary=marker + "word " * 60_000,
        artifacts=[Artifact(path=f"src/module_{i}/file.py") for i in range(3_000)],
        digest="sha256:" + "1" * 64,
    )
    now = datetime.now(UTC)
    create(
        kubectl,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": cache_configmap_name(key),
                "labels": {CACHE_LABEL: "true", "agentflow.dev/step": "b-cached"},
                "annotations": {
                    CACHE_KEY_ANNOTATION: key,
                    CACHE_CREATED_ANNOTATION: now.isoformat(),
                    CACHE_EXPIRES_ANNOTATION: (now + timedelta(hours=1)).isoformat(),
                },
            },
            "data": {CACHE_DATA_KEY: huge.model_dump_json(by_alias=True, exclude_none=True)},
        },
    )
    apply(kubectl, namespace, [doc])
    wf = wait_finished(kubectl, namespace, "reuser")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    cached = step(wf, "b-cached")
    assert cached["phase"] == "Cached" and cached["cacheKey"] == key
    result = cached["result"]
    assert result["summary"].startswith(marker)
    assert len(result["summary"]) <= MAX_SUMMARY_CHARS
    assert len(result.get("artifacts", [])) <= MAX_ARTIFACTS
    assert result["truncated"] is True and result["digest"] == huge.digest
    # About what a fresh result can carry (a termination message of 4096 bytes, whose field
    # names are a little shorter), not the entry's 460 KB.
    assert len(json.dumps(result, separators=(",", ":")).encode()) <= 4096 + 256
    assert len(json.dumps(wf["status"]).encode()) < 16_384
