"""Which watch events queue a pass of a Workflow (``agentflow.handlers``), on the in-memory fake.

A step brings about a dozen watch events (Job status updates, pod phases, the tracking
finalizer, our own status write coming back); only those that change what a plan sees, or that
delete something, may cost a pass.  The counts per step on a real control plane are in
docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import inspect
import logging
from types import SimpleNamespace
from typing import Any

import kopf

from agentflow import handlers
from tests.support.shell import NAMESPACE, Clock, QueuedPass, Shell
from tests.support.world import T0

JOBS = kopf.Resource("batch", "v1", "jobs")
PODS = kopf.Resource("", "v1", "pods")
SPEC = {"steps": [{"name": "s", "agent": "a"}], "agents": [{"name": "a"}]}


def _started() -> tuple[Shell, tuple[str, str], QueuedPass]:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", SPEC)
    shell.reconcile(key)  # creates the step's Job and writes the status that records it
    return shell, key, QueuedPass(shell.rt, key)


def _job(shell: Shell) -> dict[str, Any]:
    [job] = shell.kube.jobs.values()
    return job


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    """The step Job's pod, as the Job controller makes it (Pending, tracked)."""
    return {
        "metadata": {
            "name": "p",
            "uid": "pod-1",
            "namespace": NAMESPACE,
            "labels": {
                "agentflow.dev/workflow": "wf",
                "batch.kubernetes.io/job-name": job["metadata"]["name"],
            },
            "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"], "controller": True}],
            "finalizers": ["batch.kubernetes.io/job-tracking"],
        },
        "spec": {},
        "status": {"phase": "Pending"},
    }


def _event(
    handler: Any, shell: Shell, body: dict[str, Any], type_: str = "MODIFIED", **extra: Any
) -> None:
    meta = body["metadata"]
    asyncio.run(
        handler(
            **extra,
            type=type_,
            body=body,
            uid=meta.get("uid"),
            namespace=NAMESPACE,
            name=meta.get("name"),
            labels=meta.get("labels") or {},
            memo=SimpleNamespace(runtime=shell.rt),
        )
    )


def _job_event(shell: Shell, job: dict[str, Any], type_: str = "MODIFIED") -> None:
    """What kopf calls for a Job's watch event: the index function, or on a deletion (where
    kopf only drops the Job from the index) the event handler."""
    if type_ == "DELETED":
        _event(handlers.child_deleted, shell, job, type_, resource=JOBS)
    else:
        _event(handlers.step_jobs, shell, job, type_)


def _pod_event(shell: Shell, pod: dict[str, Any]) -> None:
    _event(handlers.step_pods, shell, pod)


def test_a_job_event_that_changes_nothing_a_plan_sees_wakes_nobody() -> None:
    shell, _, wakeup = _started()
    job = copy.deepcopy(_job(shell))
    _job_event(shell, job)
    assert wakeup.is_set()  # the first sight of a Job is news
    wakeup.clear()
    job.setdefault("status", {})["ready"] = 1  # the Job controller's count: not in a summary
    job["metadata"]["resourceVersion"] = "999"
    _job_event(shell, job)
    assert not wakeup.is_set()
    job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    _job_event(shell, job)
    assert wakeup.is_set()


def test_a_deleted_job_always_wakes_even_when_its_summary_is_the_same() -> None:
    shell, key, wakeup = _started()
    job = copy.deepcopy(_job(shell))
    _job_event(shell, job)
    wakeup.clear()
    _job_event(shell, job, "DELETED")
    assert wakeup.is_set()
    assert key not in shell.rt.children_seen  # nothing kept for a child that is gone


def test_pod_events_wake_on_a_new_state_but_not_on_a_node_or_finalizer_change() -> None:
    shell, _, wakeup = _started()
    pod = _pod(_job(shell))
    _pod_event(shell, pod)
    assert wakeup.is_set()
    wakeup.clear()
    pod["spec"]["nodeName"] = "local"
    _pod_event(shell, pod)
    assert not wakeup.is_set()
    pod["status"] = {
        "phase": "Succeeded",
        "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
    }
    _pod_event(shell, pod)
    assert wakeup.is_set()
    wakeup.clear()
    pod["metadata"]["finalizers"] = []  # the Job controller has counted it
    _pod_event(shell, pod)
    assert not wakeup.is_set()


def test_the_echo_of_our_own_status_write_wakes_nobody_and_frees_its_copy() -> None:
    shell, key, wakeup = _started()
    assert key in shell.rt.written  # the pass keeps what it wrote until the watch delivers it
    echo = copy.deepcopy(shell.body(key))
    _event(handlers.workflow_changed, shell, echo)
    assert not wakeup.is_set()
    assert key not in shell.rt.written
    assert shell.rt.workflows[key] == echo  # the next pass plans from what the watch delivered
    # Anything newer (a user's edit, kopf's finalizer) is news, and so is our echo once the
    # copy is gone (it can no longer be told from an edit).
    echo["metadata"]["resourceVersion"] = str(int(echo["metadata"]["resourceVersion"]) + 1)
    _event(handlers.workflow_changed, shell, echo)
    assert wakeup.is_set()


def test_the_workflow_kept_for_the_next_pass_is_no_reference_cycle() -> None:
    # kopf's Body is one (its views point back at it): kept, it would outlive its event into
    # the collector's oldest generation, and only a full collection would free it.
    shell, key, _ = _started()
    news = copy.deepcopy(shell.body(key))
    news["metadata"]["resourceVersion"] = str(int(news["metadata"]["resourceVersion"]) + 1)
    body = kopf.Body(news)  # type: ignore[arg-type]
    assert any(r is body for view in gc.get_referents(body) for r in gc.get_referents(view))
    _event(handlers.workflow_changed, shell, body)  # type: ignore[arg-type]
    kept = shell.rt.workflows[key]
    assert type(kept) is dict and kept == news
    assert not any(r is kept for value in gc.get_referents(kept) for r in gc.get_referents(value))


def test_the_deletion_of_a_workflow_forgets_it_even_at_the_version_we_wrote() -> None:
    shell, key, wakeup = _started()
    shell.rt.wake(key)
    _event(handlers.workflow_changed, shell, copy.deepcopy(shell.body(key)), "DELETED")
    assert not wakeup.is_set()  # its queued pass is dropped: there is nothing left to plan
    assert key not in shell.rt.workflows and key not in shell.rt.written


def test_forgetting_a_workflow_forgets_what_was_seen_of_its_children() -> None:
    shell, key, _ = _started()
    _job_event(shell, copy.deepcopy(_job(shell)))
    assert key in shell.rt.children_seen
    shell.rt.forget(key)
    assert key not in shell.rt.children_seen


def test_every_handler_that_queues_a_pass_runs_on_the_event_loop() -> None:
    # kopf runs a sync handler in a thread; the work queue (an asyncio.Event inside) is not
    # thread-safe, and each hop costs CPU.
    for handler in (
        handlers.child_deleted,
        handlers.workflow_changed,
        handlers.policy_changed,
        handlers.cache_entry_changed,
        handlers.step_jobs,
        handlers.step_pods,
        handlers.fallback_policies,
        handlers.cache_entries,
    ):
        assert inspect.iscoroutinefunction(handler), handler.__name__


def test_no_handler_needs_a_diff_essence() -> None:
    # handlers.UnusedDiffBaseStorage builds no essence: only change-detecting handlers
    # (on.create/update/delete/resume/field) would read one, and the operator registers none.
    registry = kopf.get_default_registry()
    assert handlers.workflow_changed is not None  # the module's handlers are registered
    assert list(registry._spawning.get_all_handlers()) == []  # no daemons: no finalizer
    assert list(registry._changing.get_all_handlers()) == []
    storage = handlers.UnusedDiffBaseStorage(prefix="agentflow.dev")
    job = kopf.Body({"metadata": {"name": "j"}, "spec": {"template": {"spec": {}}}})
    assert storage.build(body=job) == {}


def test_only_a_deletion_of_a_job_or_pod_reaches_an_event_handler() -> None:
    # Every other event wakes its Workflow from the index function (see handlers.job_seen).
    registry = kopf.get_default_registry()
    registered = [
        h for h in registry._watching.get_all_handlers() if h.fn is handlers.child_deleted
    ]
    assert sorted(
        (h.selector.group, h.selector.any_name) for h in registered if h.selector is not None
    ) == [("", "pods"), ("batch", "jobs")]
    assert all(h.when is handlers.is_deletion for h in registered)
    assert handlers.is_deletion(type="DELETED")
    assert not any(handlers.is_deletion(type=t) for t in (None, "ADDED", "MODIFIED"))


def test_a_deleted_pod_wakes_and_is_forgotten() -> None:
    shell, key, wakeup = _started()
    pod = _pod(_job(shell))
    _pod_event(shell, pod)
    wakeup.clear()
    _event(handlers.child_deleted, shell, pod, "DELETED", resource=PODS)
    assert wakeup.is_set()
    assert key not in shell.rt.children_seen


def test_kopf_stores_an_index_entry_before_a_task_woken_by_its_function_runs() -> None:
    # handlers.step_jobs and step_pods wake a Workflow's pass from inside the index function:
    # the pass must find the entry the function returned.  That holds because kopf does not
    # yield to the loop between the function's return and storing its result; this test runs
    # kopf's own indexing step and fails if a kopf release changes that.
    from kopf._cogs.structs import bodies, references
    from kopf._core.engines import indexing

    registry = kopf.OperatorRegistry()
    indexers = indexing.OperatorIndexers()
    woken = asyncio.Event()
    waiting = asyncio.Event()
    seen_by_the_woken: list[list[str]] = []

    @kopf.index("batch", "v1", "jobs", registry=registry, id="jobs")
    async def jobs(name: str, **_: Any) -> dict[str, str]:
        woken.set()
        return {"key": name}

    async def woken_pass() -> None:
        waiting.set()
        await woken.wait()
        seen_by_the_woken.append(list(indexers.indices["jobs"].get("key", [])))

    async def main() -> None:
        indexers.ensure(registry._indexing.get_all_handlers())
        waiter = asyncio.create_task(woken_pass())
        await waiting.wait()  # the waiter now waits, as an idle worker does
        raw = {"metadata": {"name": "job-1", "namespace": "ns", "uid": "u1"}}
        await indexing.index_resource(
            indexers=indexers,
            registry=registry,
            settings=kopf.OperatorSettings(),
            resource=references.Resource("batch", "v1", "jobs"),
            raw_event={"type": "ADDED", "object": raw},  # type: ignore[typeddict-item]
            memory=indexing.IndexingMemory(),
            logger=logging.getLogger("test"),
            memo=kopf.Memo(),
            body=bodies.Body(raw),  # type: ignore[arg-type]
        )
        await waiter

    asyncio.run(main())
    assert seen_by_the_woken == [["job-1"]]
