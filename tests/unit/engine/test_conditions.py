"""set_condition and the status summaries."""

from __future__ import annotations

from datetime import timedelta

from agentflow.api.models import StepPhase, StepStatus
from agentflow.engine import progress, set_condition, step_counts
from tests.support.world import T0


def test_set_condition_adds_updates_and_keeps_transition_time() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "1/3", 1, T0)
    assert [(c.type, c.status, c.last_transition_time, c.observed_generation) for c in first] == [
        ("Ready", "False", T0, 1)
    ]
    later = T0 + timedelta(minutes=1)
    same = set_condition(first, "Ready", "False", "Progressing", "2/3", 2, later)
    assert (same[0].message, same[0].last_transition_time, same[0].observed_generation) == (
        "2/3",
        T0,
        2,
    )
    flipped = set_condition(same, "Ready", "True", "Succeeded", "", 2, later)
    assert (flipped[0].status, flipped[0].last_transition_time) == ("True", later)
    both = set_condition(flipped, "Stalled", "False", "Succeeded", "", 2, later)
    assert [c.type for c in both] == ["Ready", "Stalled"]
    assert first[0].message == "1/3"  # the input list is not changed


def test_counts_add_up_and_fallback_successes_are_counted_apart() -> None:
    steps = [
        StepStatus(name="a", phase=StepPhase.SUCCEEDED),
        StepStatus(name="b", phase=StepPhase.SUCCEEDED),
        StepStatus(name="c", phase=StepPhase.SUCCEEDED, fallback_used=True),
        StepStatus(name="d", phase=StepPhase.SKIPPED),
        StepStatus(name="e", phase=StepPhase.CACHED),
        StepStatus(name="f", phase=StepPhase.RUNNING),
    ]
    assert (
        step_counts(steps) == "Steps: 6 (Succeeded 2, Fallback 1, Cached 1, Skipped 1, Running 1)"
    )
    assert progress(steps) == "5/6"
