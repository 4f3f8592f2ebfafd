"""Concurrency limits through the reconcile pass (a fake API server): the Jobs of a limit are
counted from what the Job index holds plus what this process just created, the waiters are
kept per Workflow, and a freed slot goes to the earliest waiter at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from agentflow.config import ConcurrencyLimit, OperatorConfig
from agentflow.engine.usage import Waiter
from tests.support.shell import Clock, QueuedPass, Shell

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "steps": [{"name": "call", "agent": "llm", "prompt": "go"}],
    "agents": [{"name": "llm", "provider": "anthropic", "model": "m"}],
}


def _shell() -> Shell:
    limits = (ConcurrencyLimit(name="llm", provider="anthropic", max=1),)
    return Shell(Clock(T0), config=OperatorConfig(concurrency_limits=limits))


def _limited_jobs(shell: Shell) -> list[str]:
    return sorted(
        name
        for (_, name), job in shell.kube.jobs.items()
        if (job["metadata"].get("labels") or {}).get("agentflow.dev/limit") == "llm"
        and not (job.get("status") or {}).get("conditions")
    )


def test_one_slot_three_workflows_served_in_the_order_they_became_ready() -> None:
    shell = _shell()
    keys = []
    for i in range(3):
        keys.append(shell.submit(f"wf-{i}", SPEC))
        shell.reconcile(keys[-1])
        shell.clock.now += timedelta(seconds=1)
    assert len(_limited_jobs(shell)) == 1
    first = _limited_jobs(shell)[0]
    assert first.startswith("wf-0-")
    waiting = [shell.status(k)["steps"][0] for k in keys[1:]]
    assert [(s["phase"], s["message"]) for s in waiting] == [
        ("Pending", "waiting: concurrency limit llm reached (1 at once)")
    ] * 2
    assert [k for k in shell.rt.limit_waiters["llm"]] == keys[1:]

    # The Job is seen by the watch now: planned again, nobody else starts.
    for key in reversed(keys):
        shell.reconcile(key)
    assert _limited_jobs(shell) == [first]

    # It finishes.  The latest Workflow plans first, but the slot is wf-1's.
    shell.kube.finish_job("team", first, shell.clock.now)
    woken = [QueuedPass(shell.rt, k) for k in keys]
    shell.reconcile(keys[2])
    assert _limited_jobs(shell) == []
    assert [e.is_set() for e in woken] == [False, True, False]  # told that its slot is free
    shell.reconcile(keys[1])
    [second] = _limited_jobs(shell)
    assert second.startswith("wf-1-")
    assert list(shell.rt.limit_waiters["llm"]) == [keys[2]]


def test_the_waiters_of_a_deleted_workflow_are_forgotten() -> None:
    shell = _shell()
    a, b = shell.submit("a", SPEC), shell.submit("b", SPEC)
    shell.reconcile(a)
    shell.reconcile(b)
    assert list(shell.rt.limit_waiters["llm"]) == [b]
    shell.rt.forget(b)
    assert shell.rt.limit_waiters == {}
    assert shell.rt.limit_queues == {}


def test_a_grant_does_not_count_a_workflows_own_waiters_as_ahead_of_it() -> None:
    shell = _shell()
    rt = shell.rt
    rt.set_waiters(("team", "a"), [Waiter("llm", "s", T0)])
    rt.set_waiters(("team", "b"), [Waiter("llm", "s", T0 + timedelta(seconds=1))])
    later = (T0 + timedelta(seconds=5), "team", "a", "s")
    grant_a = rt.concurrency_grant(("team", "a"), {"llm": 0})
    assert grant_a.free == {"llm": 1}
    assert grant_a.waiters_before("llm", later) == 1  # b's only
    grant_c = rt.concurrency_grant(("team", "c"), {"llm": 1})
    assert grant_c.free == {"llm": 0}
    assert grant_c.waiters_before("llm", later) == 2


def _limit_job(uid: str, limit: str, *, complete: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    return {
        "metadata": {
            "name": f"job-{uid}",
            "uid": uid,
            "namespace": "team",
            "labels": {
                "agentflow.dev/workflow": "wf-9",
                "agentflow.dev/step": "call",
                "agentflow.dev/limit": limit,
            },
            "ownerReferences": [{"kind": "Workflow", "uid": "wf-9-uid", "controller": True}],
        },
        "status": {"conditions": conditions},
    }


def test_a_limit_jobs_event_wakes_only_as_many_waiters_as_the_limit_has_slots() -> None:
    from types import SimpleNamespace

    from agentflow import handlers

    shell = _shell()  # limit llm: one at a time
    rt = shell.rt
    keys = [("team", f"wf-{i}") for i in range(3)]
    for key in keys:
        rt.workflows[key] = {}  # delivered by the watch: only a known Workflow is queued
    events = [QueuedPass(rt, k) for k in keys]
    for i, key in reversed(list(enumerate(keys))):
        rt.set_waiters(key, [Waiter("llm", "call", T0 + timedelta(seconds=i))])

    def job_event(body: dict[str, Any]) -> None:
        meta = body["metadata"]
        asyncio.run(
            handlers.step_jobs(  # what kopf calls for a Job's event (see handlers.job_seen)
                body=body,
                uid=meta["uid"],
                namespace="team",
                labels=meta["labels"],
                memo=SimpleNamespace(runtime=rt),
            )
        )

    job_event(_limit_job("j1", "llm", complete=True))
    assert [e.is_set() for e in events] == [True, False, False]
    # The same Job again, unchanged as a plan sees it: no slot came free, nobody is woken.
    events[0].clear()
    job_event(_limit_job("j1", "llm", complete=True))
    assert not any(e.is_set() for e in events)
    # A Job of no limit the operator knows (a label copied by hand) wakes no waiter.
    job_event(_limit_job("j2", "nope", complete=True))
    assert not any(e.is_set() for e in events)
