"""Job names: deterministic, DNS-1123 labels of at most 63 characters, distinct."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engine import job_name

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?", fullmatch=True)
steps = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
numbers = st.integers(min_value=1, max_value=10_000)


def test_short_names_are_plain() -> None:
    assert job_name("wf", "build", 1, 2, 3) == "wf-build-1-2-3"


def test_long_names_are_truncated_with_a_hash() -> None:
    name = job_name(
        "a-very-long-workflow-name-for-the-payments-team", "integration-tests", 12, 3, 4
    )
    assert len(name) <= 63 and LABEL.match(name)
    assert name.startswith("a-very-long-workflow-name-for-the-payments-team-integ")
    assert re.search(r"-[0-9a-f]{8}$", name)


def test_names_that_differ_only_past_the_cut_stay_distinct() -> None:
    base = "w" * 50
    assert job_name(base, "step", 1, 1, 1) != job_name(base, "step", 1, 1, 2)


def test_a_dotted_workflow_name_becomes_a_label_without_colliding() -> None:
    dotted, dashed = job_name("app.v2", "s", 1, 1, 1), job_name("app-v2", "s", 1, 1, 1)
    assert LABEL.match(dotted) and dotted != dashed


@settings(max_examples=200, deadline=None)
@given(names, steps, numbers, numbers, numbers)
def test_every_name_is_a_bounded_deterministic_label(
    workflow: str, step: str, run: int, iteration: int, attempt: int
) -> None:
    name = job_name(workflow, step, run, iteration, attempt)
    assert len(name) <= 63
    assert LABEL.match(name), name
    assert name == job_name(workflow, step, run, iteration, attempt)


@settings(max_examples=100, deadline=None)
@given(
    names,
    steps,
    st.lists(st.tuples(numbers, numbers, numbers), min_size=2, max_size=20, unique=True),
)
def test_distinct_runs_iterations_and_attempts_get_distinct_names(
    workflow: str, step: str, keys: list[tuple[int, int, int]]
) -> None:
    produced = {job_name(workflow, step, *key) for key in keys}
    assert len(produced) == len(keys)
