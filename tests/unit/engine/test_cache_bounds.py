"""A cached result is cut to the bounds of a fresh one, and one the operator stored itself (a
fresh result) comes back from the cache unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.api.models import Artifact, StepMetrics, StepResult
from agentflow.engine.caching import bounded_result
from agentflow.report import (
    MAX_ARTIFACTS,
    MAX_SUMMARY_CHARS,
    TERMINATION_MESSAGE_LIMIT,
    decode_termination_message,
    encode_termination_message,
)

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6_000)
results = st.builds(
    StepResult,
    status=st.none() | st.sampled_from(["success", "failure", "s" * 200]),
    summary=text,
    artifacts=st.lists(
        st.builds(
            Artifact,
            path=st.text("abc/._-", min_size=1, max_size=80),
            action=st.sampled_from(["created", "modified", "deleted"]),
        ),
        max_size=300,
    ),
    metrics=st.builds(
        StepMetrics,
        tool_calls=st.none() | st.integers(0, 2**63 - 1),
        extra=st.dictionaries(st.text("abcxyz", min_size=1, max_size=8), st.floats(-1e9, 1e9)),
    ),
    digest=st.none() | st.just("sha256:" + "0" * 64),
    truncated=st.booleans(),
    output_ref=st.none() | st.just("wf-s-1-1-1-0123456789abcdef-output"),
)


@settings(max_examples=150, deadline=None)
@given(results)
def test_any_cached_result_is_within_a_fresh_results_bounds(result: StepResult) -> None:
    bounded = bounded_result(result)
    assert len(bounded.summary) <= MAX_SUMMARY_CHARS
    assert len(bounded.artifacts) <= MAX_ARTIFACTS
    size = len(bounded.model_dump_json(exclude={"output_ref"}, exclude_none=True).encode())
    assert size <= 2 * TERMINATION_MESSAGE_LIMIT  # the wire form is at most 4096 bytes
    assert bounded.output_ref == result.output_ref
    assert bounded_result(bounded) == bounded


@settings(max_examples=150, deadline=None)
@given(results)
def test_a_result_the_operator_stored_comes_back_unchanged(result: StepResult) -> None:
    # What the operator caches is a result decoded from a termination message.
    fresh = decode_termination_message(encode_termination_message(result, full_size=100))
    fresh = fresh.model_copy(update={"output_ref": result.output_ref})
    assert bounded_result(fresh) == fresh
