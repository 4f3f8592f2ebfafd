"""kstatus-style conditions and the one-line summaries of a Workflow's status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from agentflow.api.models import TERMINAL_STEP_PHASES, Condition, StepPhase, StepStatus

ConditionStatus = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """``conditions`` with ``type_`` set; its lastTransitionTime changes only when status flips.

    Returns a new list (the input is not changed); a new condition type is appended.
    """
    previous = next((c for c in conditions if c.type == type_), None)
    held = previous is not None and previous.status == status
    since = previous.last_transition_time if previous is not None and held else now
    condition = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, condition]
    return [condition if c.type == type_ else c for c in conditions]


def finished(step: StepStatus) -> bool:
    """Whether ``step`` counts as finished in the progress: it is over, and not a step that
    failed before it ran a Job (at its ``when``, its prompt or its agent), which a reader of
    ``2/2`` would take for done."""
    if step.phase is StepPhase.FAILED:
        return bool(step.attempts)
    return step.phase in TERMINAL_STEP_PHASES


def progress(steps: Sequence[StepStatus]) -> str:
    """``<finished steps>/<total>``, e.g. ``3/5`` (see :func:`finished`)."""
    return f"{sum(finished(s) for s in steps)}/{len(steps)}"


_COUNT_ORDER = ("Succeeded", "Fallback", "Cached", "Skipped", "Failed", "Running", "Pending")


def step_counts(steps: Sequence[StepStatus]) -> str:
    """``Steps: 5 (Succeeded 3, Fallback 1, Skipped 1)``: the numbers add up to the total.

    ``Fallback`` counts succeeded steps that needed a fallback agent; ``Succeeded`` the rest.
    """
    counts = dict.fromkeys(_COUNT_ORDER, 0)
    for step in steps:
        if step.phase is StepPhase.SUCCEEDED and step.fallback_used:
            counts["Fallback"] += 1
        else:
            counts[str(step.phase)] += 1
    shown = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
    return f"Steps: {len(steps)} ({shown})"
