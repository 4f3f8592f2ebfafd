"""The step Jobs that count against a namespace's limit (``--max-jobs-per-namespace``)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf
import pytest

from agentflow import controller, handlers
from agentflow.config import OperatorConfig
from agentflow.controller import Runtime
from agentflow.engine.types import LABEL_LIMIT, LABEL_STEP, LABEL_WORKFLOW
from agentflow.metrics import OperatorMetrics


def _runtime() -> Runtime:
    return Runtime(
        kube=cast(Any, None),
        metrics=OperatorMetrics(),
        config=OperatorConfig(max_jobs_per_namespace=2),
        post_event=lambda *_: None,
    )


OWNER = ("team", "uid-1")


def shown_nowhere(owner: tuple[str, str], job_name: str) -> bool:
    return False


def test_the_watched_active_jobs_count() -> None:
    rt = _runtime()
    assert rt.active_jobs("team", [], shown_nowhere) == 0
    assert rt.active_jobs("team", ["a", "c"], shown_nowhere) == 2


def test_a_job_just_created_counts_until_the_watch_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    rt = _runtime()
    rt.note_launched("team", "a", OWNER, "a")
    rt.note_launched("team", "b", OWNER, "b")
    # Our status write woke a pass before the Job watch delivered a and b.
    assert rt.active_jobs("team", [], shown_nowhere) == 2
    assert rt.active_jobs("other", [], shown_nowhere) == 0
    # The watch shows a (active): it is counted once, as watched.
    assert rt.active_jobs("team", ["a"], shown_nowhere) == 2
    # b finished before any pass saw it active: its Workflow's Jobs show it, so it is done.
    finished = {(OWNER, "b")}
    assert rt.active_jobs("team", ["a"], lambda owner, name: (owner, name) in finished) == 1
    assert rt.launched["team"] == {}
    # A Job deleted before the watch ever showed it stops counting after a while.
    rt.note_launched("team", "lost", OWNER, "lost")
    clock[0] += controller.LAUNCH_VISIBLE_SECONDS - 1
    assert rt.active_jobs("team", [], shown_nowhere) == 1
    clock[0] += 2
    assert rt.active_jobs("team", [], shown_nowhere) == 0


def test_a_limits_jobs_are_noted_under_the_name_its_index_gives_them() -> None:
    rt = _runtime()
    scope = controller.limit_scope("provider")
    rt.note_launched(scope, "team/a", OWNER, "a")
    assert rt.active_jobs(scope, [], shown_nowhere) == 1
    assert rt.active_jobs(scope, ["team/a"], shown_nowhere) == 1
    assert rt.launched[scope] == {}
    rt.note_launched(scope, "team/b", OWNER, "b")
    assert rt.active_jobs(scope, [], lambda owner, name: name == "b") == 0


def _job_body(conditions: list[dict[str, Any]], labels: dict[str, str]) -> Any:
    return kopf.Body(
        {
            "metadata": {
                "name": "wf-a-1",
                "namespace": "team",
                "uid": "job-uid",
                "labels": {LABEL_WORKFLOW: "wf", LABEL_STEP: "a", **labels},
                "ownerReferences": [
                    {"kind": "Workflow", "name": "wf", "uid": "uid-1", "controller": True}
                ],
            },
            "status": {"conditions": conditions},
        }
    )


def test_a_job_leaves_the_active_indexes_when_it_finishes() -> None:
    # kopf drops an object's entries when its index function returns {}; so a count is len().
    labels = {LABEL_LIMIT: "provider"}
    active = _job_body([], labels)
    done = _job_body([{"type": "Complete", "status": "True"}], labels)
    by_namespace = handlers.namespace_active_jobs
    assert asyncio.run(by_namespace(body=active, namespace="team")) == {"team": "wf-a-1"}
    assert asyncio.run(by_namespace(body=done, namespace="team")) == {}
    by_limit = handlers.limit_active_jobs
    assert asyncio.run(by_limit(body=active, namespace="team", labels=labels)) == {
        "provider": "team/wf-a-1"
    }
    assert asyncio.run(by_limit(body=done, namespace="team", labels=labels)) == {}
    assert asyncio.run(by_limit(body=active, namespace="team", labels={})) == {}
