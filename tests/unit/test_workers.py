"""The workers of ``agentflow.handlers`` in-process, on the in-memory fake of ``agentflow.kube``:
they reconcile only while this replica leads, plan each Workflow's next pass, and keep nothing
of a deleted one.

Leadership on Kubernetes (a Lease, two replicas) is proven in tests/integration/test_replicas.py,
and the queue's own semantics in test_workqueue.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from agentflow import handlers
from agentflow.api.models import StepResult
from agentflow.report import encode_termination_message
from tests.support.shell import NAMESPACE, Clock, Shell, workflow_indexes
from tests.support.world import T0

SPEC = {"steps": [{"name": "s", "agent": "a"}], "agents": [{"name": "a"}]}


async def until(condition: Callable[[], bool]) -> None:
    """Poll: the workers' progress shows only in the fake's state."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def writes(shell: Shell) -> list[tuple[str, str]]:
    return [c for c in shell.kube.calls if c[0] != "get-workflow"]


async def delivered(shell: Shell, body: dict[str, Any], type_: str = "ADDED") -> None:
    """What kopf does with a watch event of the Workflow."""
    await handlers.workflow_changed(
        type=type_,
        body=body,
        namespace=NAMESPACE,
        name=body["metadata"]["name"],
        memo=SimpleNamespace(runtime=shell.rt),
    )


async def leadership_changes() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", SPEC)
    rt = shell.rt
    rt.is_leader = False
    workers = [asyncio.create_task(handlers.work(rt, workflow_indexes(shell, key)))]
    await delivered(shell, shell.body(key))
    await asyncio.sleep(0.2)
    assert writes(shell) == []  # a replica that does not lead takes keys and leaves them
    rt.is_leader = True
    rt.wake_all()  # what the elector's callback does on taking the lead
    await until(lambda: any(verb == "create-job" for verb, _ in writes(shell)))
    [(_, job)] = shell.kube.jobs
    # Leadership lost: the Job finishes and wakes the Workflow, which is left to the leader.
    rt.is_leader = False
    before = len(writes(shell))
    done = encode_termination_message(StepResult(summary="done"), full_size=4)
    shell.kube.finish_job(NAMESPACE, job, T0, message=done)
    rt.wake(key)
    await asyncio.sleep(0.2)
    assert len(writes(shell)) == before
    assert shell.status(key)["phase"] == "Running"
    rt.is_leader = True
    rt.wake_all()
    await until(lambda: shell.status(key).get("phase") == "Succeeded")
    await until(lambda: not rt.queue.is_pending(key))
    assert not rt.queue.is_timed(key)  # finished: no pass until it changes
    rt.queue.shut_down()
    await asyncio.wait_for(asyncio.gather(*workers), 1)  # the workers end with the queue


def test_the_workers_reconcile_only_while_this_replica_leads() -> None:
    asyncio.run(leadership_changes())


async def one_pass(shell: Shell, key: tuple[str, str]) -> None:
    await handlers.reconcile_key(shell.rt, workflow_indexes(shell, key), key)


def test_an_unfinished_workflow_is_timed_for_its_next_pass() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        await delivered(shell, shell.body(key))
        await one_pass(shell, key)
        assert shell.status(key)["phase"] == "Running"
        assert shell.rt.queue.is_timed(key)  # the level-triggered resync, at the latest
        shell.rt.queue.shut_down()

    asyncio.run(scenario())


def test_a_pass_that_raises_is_tried_again_later() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        await delivered(shell, shell.body(key))

        async def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("the API server is having a bad day")

        shell.kube.create_job = broken  # type: ignore[method-assign]
        await one_pass(shell, key)
        assert shell.rt.queue.is_timed(key)
        assert "status" not in shell.body(key)
        shell.rt.queue.shut_down()

    asyncio.run(scenario())


def test_a_workflow_being_deleted_starts_nothing() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        body = copy.deepcopy(shell.body(key))
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # another's finalizer
        await delivered(shell, body, "MODIFIED")
        await one_pass(shell, key)
        assert writes(shell) == []

    asyncio.run(scenario())


def test_a_deleted_workflow_is_forgotten_and_never_planned_again() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        await delivered(shell, shell.body(key))
        await one_pass(shell, key)
        rt = shell.rt
        assert key in rt.written and rt.queue.is_timed(key)
        rt.wake(key)
        await delivered(shell, copy.deepcopy(shell.body(key)), "DELETED")
        assert key not in rt.workflows and key not in rt.written and key not in rt.phases
        assert not rt.queue.is_pending(key) and not rt.queue.is_timed(key)
        rt.wake(key)  # a Job event of the gone Workflow, say
        assert not rt.queue.is_pending(key)

    asyncio.run(scenario())


def test_a_workflow_deleted_during_its_pass_is_forgotten_when_the_pass_ends() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        await delivered(shell, shell.body(key))
        create_job = shell.kube.create_job

        async def deleted_meanwhile(*args: Any, **kwargs: Any) -> Any:
            await delivered(shell, copy.deepcopy(shell.body(key)), "DELETED")
            return await create_job(*args, **kwargs)

        shell.kube.create_job = deleted_meanwhile  # type: ignore[method-assign]
        await one_pass(shell, key)
        rt = shell.rt
        assert key not in rt.written and key not in rt.phases and key not in rt.specs
        assert not rt.queue.is_timed(key)

    asyncio.run(scenario())


def test_a_pass_after_a_lost_write_starts_from_the_object_read_again_not_an_older_event() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        rt = shell.rt
        newer = copy.deepcopy(shell.body(key))
        newer["metadata"]["resourceVersion"] = "50"
        older = copy.deepcopy(newer)
        older["metadata"]["resourceVersion"] = "40"
        rt.saw_workflow(key, newer)  # read again after a 409
        await delivered(shell, older, "MODIFIED")  # the watch, lagging behind
        assert rt.workflows[key]["metadata"]["resourceVersion"] == "50"
        newest = copy.deepcopy(newer)
        newest["metadata"]["resourceVersion"] = "60"
        await delivered(shell, newest, "MODIFIED")
        assert rt.workflows[key] == newest
        recreated = copy.deepcopy(older)
        recreated["metadata"]["uid"] = "another"  # deleted and made again: always taken
        await delivered(shell, recreated, "ADDED")
        assert rt.workflows[key] == recreated

    asyncio.run(scenario())


def test_a_finished_workflow_rests_without_its_body_until_it_changes() -> None:
    async def scenario() -> None:
        shell = Shell(Clock(T0))
        key = shell.submit("wf", SPEC)
        rt = shell.rt
        await delivered(shell, shell.body(key))
        await one_pass(shell, key)
        [(_, job)] = shell.kube.jobs
        done = encode_termination_message(StepResult(summary="done"), full_size=4)
        shell.kube.finish_job(NAMESPACE, job, T0, message=done)
        await one_pass(shell, key)
        assert shell.status(key)["phase"] == "Succeeded"
        assert key in rt.resting and key not in rt.workflows
        # The echo of the write that finished it keeps no body either.
        await delivered(shell, copy.deepcopy(shell.body(key)), "MODIFIED")
        assert key in rt.resting and key not in rt.workflows
        taken = await rt.queue.get()  # the wake-up of its first delivery, passed above
        rt.queue.done(taken)
        assert not rt.queue.is_pending(key)
        # The Job controller marking the Job Complete wakes nothing: there is nothing to plan.
        rt.wake(key)
        rt.wake_all()
        assert not rt.queue.is_pending(key)
        # A rerun is a change of the Workflow itself: its body comes with it, and it plans.
        rerun = copy.deepcopy(shell.body(key))
        rerun["metadata"]["annotations"] = {"agentflow.dev/rerun": "1"}
        rerun["metadata"]["resourceVersion"] = str(int(rerun["metadata"]["resourceVersion"]) + 1)
        shell.kube.workflows[key] = copy.deepcopy(rerun)
        await delivered(shell, rerun, "MODIFIED")
        assert key not in rt.resting and rt.queue.is_pending(key)
        await one_pass(shell, key)
        assert shell.status(key)["run"] == 2 and len(shell.kube.jobs) == 2
        await delivered(shell, copy.deepcopy(shell.body(key)), "DELETED")
        assert key not in rt.resting
        rt.queue.shut_down()

    asyncio.run(scenario())
