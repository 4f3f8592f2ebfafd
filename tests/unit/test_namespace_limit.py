"""The step Jobs that count against a namespace's limit (``--max-jobs-per-namespace``)."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from agentflow import controller, handlers
from agentflow.config import OperatorConfig
from agentflow.controller import Runtime
from agentflow.engine.types import LABEL_LIMIT, LABEL_STEP, LABEL_WORKFLOW, JobState
from agentflow.metrics import OperatorMetrics
from agentflow.observe import JobSummary, summarize_job


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


def _active(owner: tuple[str, str], *names: str) -> list[JobSummary]:
    """Active step Jobs of the Workflow ``owner`` as the step-Job index holds them."""
    return [
        JobSummary(
            name=name,
            uid=f"uid-{name}",
            owner_uid=owner[1],
            workflow="wf",
            step="s",
            run=1,
            iteration=1,
            attempt=1,
            agent="a",
            created_at=None,
            state=JobState.ACTIVE,
            reason=None,
            message=None,
            started_at=None,
            finished_at=None,
        )
        for name in names
    ]


def test_the_watched_active_jobs_count() -> None:
    rt = _runtime()
    assert rt.active_jobs("team", [], shown_nowhere) == 0
    assert rt.active_jobs("team", _active(OWNER, "a", "c"), shown_nowhere) == 2


def test_a_job_just_created_counts_until_the_watch_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    rt = _runtime()
    rt.note_launched("team", OWNER, "a")
    rt.note_launched("team", OWNER, "b")
    # Our status write woke a pass before the Job watch delivered a and b.
    assert rt.active_jobs("team", [], shown_nowhere) == 2
    assert rt.active_jobs("other", [], shown_nowhere) == 0
    # The watch shows a (active): it is counted once, as watched.
    assert rt.active_jobs("team", _active(OWNER, "a"), shown_nowhere) == 2
    # b finished before any pass saw it active: its Workflow's Jobs show it, so it is done.
    finished = {(OWNER, "b")}
    shown_finished = lambda owner, name: (owner, name) in finished  # noqa: E731
    assert rt.active_jobs("team", _active(OWNER, "a"), shown_finished) == 1
    assert rt.launched["team"] == {}
    # A Job deleted before the watch ever showed it stops counting after a while.
    rt.note_launched("team", OWNER, "lost")
    clock[0] += controller.LAUNCH_VISIBLE_SECONDS - 1
    assert rt.active_jobs("team", [], shown_nowhere) == 1
    clock[0] += 2
    assert rt.active_jobs("team", [], shown_nowhere) == 0


def test_a_launched_job_is_told_apart_from_a_namesake_of_another_workflow() -> None:
    # A concurrency limit counts Jobs of every namespace: the same Job name in another
    # Workflow (here another namespace's) is another Job.
    rt = _runtime()
    scope = controller.limit_scope("provider")
    rt.note_launched(scope, OWNER, "a")
    assert rt.active_jobs(scope, [], shown_nowhere) == 1
    other = ("other-team", "uid-2")
    assert rt.active_jobs(scope, _active(other, "a"), shown_nowhere) == 2
    assert rt.active_jobs(scope, _active(other, "a") + _active(OWNER, "a"), shown_nowhere) == 2
    assert rt.launched[scope] == {}
    rt.note_launched(scope, OWNER, "b")
    assert rt.active_jobs(scope, [], lambda owner, name: name == "b") == 0
    rt.note_launched(scope, OWNER, "c")
    rt.forget_launched(scope, OWNER, "c")
    assert rt.active_jobs(scope, [], shown_nowhere) == 0


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


def test_a_job_leaves_the_active_keys_of_the_index_when_it_finishes() -> None:
    # kopf drops the entries an index function no longer returns; so a count is len().
    labels = {LABEL_LIMIT: "provider"}
    active = _job_body([], labels)
    done = _job_body([{"type": "Complete", "status": "True"}], labels)

    def entries(body: Any, labels: dict[str, str]) -> dict[Any, Any]:
        return handlers.job_entries(summarize_job(body), "team", labels)

    running = entries(active, labels)
    assert set(running) == {
        (handlers.JOBS_OF, "team", "uid-1"),
        (handlers.ACTIVE_IN, "team"),
        (handlers.ACTIVE_UNDER, "provider"),
    }
    assert {s.name for s in running.values()} == {"wf-a-1"}
    assert set(entries(done, labels)) == {(handlers.JOBS_OF, "team", "uid-1")}
    assert set(entries(active, {})) == {
        (handlers.JOBS_OF, "team", "uid-1"),
        (handlers.ACTIVE_IN, "team"),
    }
    # Not a Workflow's Job (no owner reference): in no key at all.
    orphan = kopf.Body({**active, "metadata": {**active["metadata"], "ownerReferences": []}})
    assert entries(orphan, labels) == {}
