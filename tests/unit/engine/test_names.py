"""Job names: deterministic, DNS-1123 labels of at most 63 characters, injective."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engine import job_name

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DIGEST = re.compile(r"-[0-9a-f]{16}$")
names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?", fullmatch=True)
steps = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
numbers = st.integers(min_value=1, max_value=10_000)
# Short words joined by "-" or ".": the names whose plain join collides most easily.
words = st.lists(st.sampled_from(["a", "b", "c", "ab", "1", "x-y"]), min_size=2, max_size=6)
uids = st.uuids().map(str)
UID = "0f8e2d6c-5b1a-4e3f-8c7d-9a2b4c6d8e0f"


def test_names_read_workflow_step_run_iteration_attempt_then_a_digest() -> None:
    name = job_name("wf", "build", 1, 2, 3, uid=UID)
    assert name.startswith("wf-build-1-2-3-")
    assert DIGEST.search(name) and len(name) == len("wf-build-1-2-3-") + 16


def test_long_names_keep_the_numbers_and_the_digest() -> None:
    name = job_name(
        "a-very-long-workflow-name-for-the-payments-team", "integration-tests", 12, 3, 4, uid=UID
    )
    assert len(name) <= 63 and LABEL.match(name)
    assert name.startswith("a-very-long-workflow-name-for-")
    assert re.search(r"-12-3-4-[0-9a-f]{16}$", name)


def test_the_issue_pair_gets_two_names() -> None:
    # Workflow "a" step "b-c" and Workflow "a-b" step "c": both joined to "a-b-c-1-1-1" before.
    assert job_name("a", "b-c", 1, 1, 1, uid=UID) != job_name("a-b", "c", 1, 1, 1, uid=UID)


def test_names_that_differ_only_past_the_cut_stay_distinct() -> None:
    base = "w" * 250
    assert job_name(base + "x", "step", 1, 1, 1, uid=UID) != job_name(
        base + "y", "step", 1, 1, 1, uid=UID
    )


def test_a_dotted_workflow_name_becomes_a_label_without_colliding() -> None:
    dotted, dashed = (
        job_name("app.v2", "s", 1, 1, 1, uid=UID),
        job_name("app-v2", "s", 1, 1, 1, uid=UID),
    )
    assert LABEL.match(dotted) and dotted != dashed


@settings(max_examples=200, deadline=None)
@given(names, steps, numbers, numbers, numbers, uids)
def test_every_name_is_a_bounded_deterministic_label(
    workflow: str, step: str, run: int, iteration: int, attempt: int, uid: str
) -> None:
    name = job_name(workflow, step, run, iteration, attempt, uid=uid)
    assert len(name) <= 63
    assert LABEL.match(name), name
    assert DIGEST.search(name), name
    assert name == job_name(workflow, step, run, iteration, attempt, uid=uid)


@settings(max_examples=300, deadline=None)
@given(words, st.sampled_from(["-", "."]), numbers, numbers, numbers)
def test_every_split_of_a_hyphenated_name_into_workflow_and_step_gets_its_own_name(
    parts: list[str], joiner: str, run: int, iteration: int, attempt: int
) -> None:
    """The same words, split at every point into a workflow and a step name (and joined by
    "-" or "." in the workflow): all those Workflows' Jobs have distinct names."""
    pairs = {
        (sep.join(parts[:cut]), "-".join(parts[cut:]))
        for cut in range(1, len(parts))
        for sep in ("-", joiner)
    }
    produced = {job_name(wf, step, run, iteration, attempt, uid=UID) for wf, step in pairs}
    assert len(produced) == len(pairs), pairs


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(names, steps, numbers, numbers, numbers), min_size=2, max_size=20, unique=True
    )
)
def test_distinct_coordinates_get_distinct_names(
    keys: list[tuple[str, str, int, int, int]],
) -> None:
    produced = {job_name(*key, uid=UID) for key in keys}
    assert len(produced) == len(keys)


@settings(max_examples=100, deadline=None)
@given(
    names,
    steps,
    st.lists(st.tuples(numbers, numbers, numbers), min_size=2, max_size=20, unique=True),
)
def test_distinct_runs_iterations_and_attempts_get_distinct_names(
    workflow: str, step: str, keys: list[tuple[int, int, int]]
) -> None:
    produced = {job_name(workflow, step, *key, uid=UID) for key in keys}
    assert len(produced) == len(keys)


def test_a_workflow_made_again_under_its_name_gets_other_job_names() -> None:
    # The Jobs of the Workflow deleted before are still there until the garbage collector
    # removes them; the new Workflow (another uid) must not meet them under its own names.
    before = job_name("wf", "s", 1, 1, 1, uid=UID)
    again = job_name("wf", "s", 1, 1, 1, uid="3a9d7e51-2c4b-4f60-b8e1-7d0c5a2f9e36")
    assert before != again
    assert before.rsplit("-", 1)[0] == again.rsplit("-", 1)[0]  # the readable part is the same


@settings(max_examples=200, deadline=None)
@given(names, steps, numbers, st.lists(uids, min_size=2, max_size=10, unique=True))
def test_distinct_workflow_uids_get_distinct_names(
    workflow: str, step: str, run: int, keys: list[str]
) -> None:
    produced = {job_name(workflow, step, run, 1, 1, uid=uid) for uid in keys}
    assert len(produced) == len(keys)
