"""The Workflow daemon of ``agentflow.handlers`` in-process, on the in-memory fake of
``agentflow.kube``: it reconciles only while this replica leads, and forgets a deleted Workflow.

Leadership on Kubernetes (a Lease, two replicas) is proven in tests/integration/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import kopf
from kopf._core.intents.stoppers import DaemonStopper  # kopf exports only the waiting side

from agentflow import handlers
from agentflow.api.models import StepResult
from agentflow.report import encode_termination_message
from tests.support.shell import NAMESPACE, Clock, Shell, daemon_indexes
from tests.support.world import T0


async def until(condition: Callable[[], bool]) -> None:
    """Poll: the daemon's progress shows only in the fake's state."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def writes(shell: Shell) -> list[tuple[str, str]]:
    return [c for c in shell.kube.calls if c[0] != "get-workflow"]


async def leadership_changes() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", {"steps": [{"name": "s", "agent": "a"}], "agents": [{"name": "a"}]})
    body = shell.body(key)
    body["metadata"]["finalizers"] = [handlers.FINALIZER]  # kopf's, added before the first pass
    rt = shell.rt
    rt.is_leader = False
    stopper: Any = DaemonStopper()
    daemon = asyncio.create_task(
        handlers.workflow_daemon(
            body=body,
            namespace=NAMESPACE,
            name="wf",
            stopped=stopper.async_waiter,
            memo=SimpleNamespace(runtime=rt),
            logger=logging.getLogger("test"),
            **daemon_indexes(shell, key),
        )
    )
    await asyncio.sleep(0.2)
    assert writes(shell) == []  # a replica that does not lead only waits
    rt.is_leader = True
    rt.wake(key)  # what the elector's callback does for every Workflow
    await until(lambda: any(verb == "create-job" for verb, _ in writes(shell)))
    [(_, job)] = shell.kube.jobs
    # Leadership lost: the Job finishes and wakes the daemon, which leaves it to the leader.
    rt.is_leader = False
    before = len(writes(shell))
    done = encode_termination_message(StepResult(summary="done"), full_size=4)
    shell.kube.finish_job(NAMESPACE, job, T0, message=done)
    rt.wake(key)
    await asyncio.sleep(0.2)
    assert len(writes(shell)) == before
    assert shell.status(key)["phase"] == "Running"
    rt.is_leader = True
    rt.wake(key)
    await until(lambda: shell.status(key).get("phase") == "Succeeded")
    # Deleted: kopf sets the flag, then cancels the daemon (its cancellation_timeout).
    stopper.set(kopf.DaemonStoppingReason.RESOURCE_DELETED)
    daemon.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await daemon
    assert key not in rt.wakeups  # a deleted Workflow is forgotten


def test_the_daemon_reconciles_only_while_this_replica_leads() -> None:
    asyncio.run(leadership_changes())
