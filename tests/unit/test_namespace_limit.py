"""The step Jobs that count against a namespace's limit (``--max-jobs-per-namespace``)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from agentflow import controller
from agentflow.config import OperatorConfig
from agentflow.controller import Runtime
from agentflow.metrics import OperatorMetrics


def _runtime() -> Runtime:
    return Runtime(
        kube=cast(Any, None),
        metrics=OperatorMetrics(),
        config=OperatorConfig(max_jobs_per_namespace=2),
        post_event=lambda *_: None,
    )


def test_watched_active_jobs_count_and_finished_ones_do_not() -> None:
    rt = _runtime()
    assert rt.active_jobs("team", []) == 0
    assert rt.active_jobs("team", [("a", True), ("b", False), ("c", True)]) == 2


def test_a_job_just_created_counts_until_the_watch_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    rt = _runtime()
    rt.note_launched("team", "a")
    rt.note_launched("team", "b")
    # Our status write woke the daemon before the Job watch delivered a and b.
    assert rt.active_jobs("team", []) == 2
    assert rt.active_jobs("other", []) == 0
    # The watch shows a (active) and b (already finished): each is counted once, as watched.
    assert rt.active_jobs("team", [("a", True)]) == 2
    assert rt.active_jobs("team", [("a", True), ("b", False)]) == 1
    assert rt.launched["team"] == {}
    # A Job deleted before the watch ever showed it stops counting after a while.
    rt.note_launched("team", "lost")
    clock[0] += controller.LAUNCH_VISIBLE_SECONDS - 1
    assert rt.active_jobs("team", []) == 1
    clock[0] += 2
    assert rt.active_jobs("team", []) == 0
