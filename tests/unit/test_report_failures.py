"""The failure part of the report contract: ``failureClass`` and ``retryAfterSeconds``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.api.models import FailureClass, StepResult
from agentflow.report import (
    MAX_RETRY_AFTER_SECONDS,
    TERMINATION_MESSAGE_LIMIT,
    ReportedFailure,
    decode_termination_message,
    encode_termination_message,
    reported_failure,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_a_json_report_states_its_class_in_either_spelling() -> None:
    assert reported_failure('{"failureClass": "Timeout"}') == ReportedFailure(FailureClass.TIMEOUT)
    stated = reported_failure('{"failure_class": "RateLimited", "retry_after_seconds": 12.5}')
    assert stated == ReportedFailure(FailureClass.RATE_LIMITED, 12.5)
    fenced = '```json\n{"failureClass": "OOMKilled"}\n```'
    assert reported_failure(fenced).failure_class is FailureClass.OOM_KILLED


def test_what_is_not_a_class_or_a_number_is_ignored() -> None:
    assert reported_failure('{"failureClass": "ratelimited"}') == ReportedFailure()
    assert reported_failure('{"failureClass": 3, "retryAfterSeconds": "soon"}') == ReportedFailure()
    assert reported_failure('{"retryAfterSeconds": true}') == ReportedFailure()
    assert reported_failure("## Summary\nfailureClass: RateLimited\n") == ReportedFailure()
    assert reported_failure(None) == ReportedFailure()
    huge = reported_failure('{"failureClass": "Overloaded", "retryAfterSeconds": 1e300}')
    assert huge == ReportedFailure(FailureClass.OVERLOADED, MAX_RETRY_AFTER_SECONDS)
    negative = reported_failure('{"retryAfterSeconds": -5}')
    assert negative.retry_after_seconds == 0.0


def test_the_termination_message_keeps_the_class_when_everything_else_is_cut() -> None:
    result = StepResult(status="failure", summary="x" * 10_000)
    failure = ReportedFailure(FailureClass.RATE_LIMITED, 30.0)
    message = encode_termination_message(result, full_size=10_000, failure=failure)
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert reported_failure(message) == failure
    decoded = decode_termination_message(message)
    assert decoded.status == "failure" and decoded.truncated
    # A message without a failure has no such keys, and an old reader ignores them.
    plain = encode_termination_message(result, full_size=10)
    assert "failureClass" not in json.loads(plain)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_input_gives_a_class_or_none_and_never_raises(text: str | bytes) -> None:
    found = reported_failure(text)
    assert found.failure_class is None or isinstance(found.failure_class, FailureClass)
    seconds = found.retry_after_seconds
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER_SECONDS


@settings(max_examples=100, deadline=None)
@given(
    failure_class=st.sampled_from(list(FailureClass)),
    seconds=st.one_of(st.none(), st.floats(0, MAX_RETRY_AFTER_SECONDS)),
    summary=st.text(max_size=6000),
)
def test_the_class_survives_the_round_trip(
    failure_class: FailureClass, seconds: float | None, summary: str
) -> None:
    failure = ReportedFailure(failure_class, seconds)
    message = encode_termination_message(
        StepResult(status="failure", summary=summary), full_size=len(summary), failure=failure
    )
    assert reported_failure(message) == failure


def test_the_documented_classes_are_the_enum() -> None:
    """docs/writing-agents.md's table of failure classes lists exactly FailureClass."""
    text = (DOCS / "writing-agents.md").read_text()
    section = text[text.index("## Failure classes") : text.index("### Reporting a class")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert named == {c.value for c in FailureClass}
    metrics = (DOCS / "metrics.md").read_text()
    assert "`agentflow_step_attempt_failures_total` | counter | `namespace`, `agent`, `class`" in (
        metrics
    )
