"""The Event aggregator (pure, over times the tests pass in) and its asyncio recorder."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.events import (
    MAX_GROUPS,
    MESSAGE_LIMIT,
    NORMAL_BURST,
    NORMAL_PERIOD_SECONDS,
    WARNING_BURST,
    WARNING_PERIOD_SECONDS,
    EventAggregator,
    EventRecorder,
    EventSender,
    Post,
    event_manifest,
)
from agentflow.workqueue import WorkQueue


def workflow(name: str = "wf", uid: str = "u1", namespace: str = "ns") -> dict[str, Any]:
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 3},
        "spec": {"steps": []},
        "status": {"phase": "Running"},
    }


WF = workflow()


def test_a_burst_is_posted_at_once_and_the_rest_held_until_a_token_is_due() -> None:
    agg = EventAggregator()
    posts = [agg.record(WF, "Normal", "StepStarted", f"step {s} started", 0.0) for s in "ab"]
    assert [[p.message for p in ps] for ps in posts] == [["step a started"], ["step b started"]]
    # Only the object's identity is kept, not its spec or status.
    assert posts[0][0].body == {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf", "namespace": "ns", "uid": "u1"},
    }
    assert agg.record(WF, "Normal", "StepStarted", "step c started", 1.0) == []
    assert agg.record(WF, "Normal", "StepStarted", "step d started", 2.0) == []
    assert agg.due() == NORMAL_PERIOD_SECONDS
    assert agg.flush(NORMAL_PERIOD_SECONDS - 0.5) == []
    [merged] = agg.flush(NORMAL_PERIOD_SECONDS)
    assert merged.reason == "StepStarted" and merged.type == "Normal" and merged.count == 2
    assert merged.message == "(2 events) step c started; step d started"
    assert agg.due() is None


def test_held_events_merge_per_reason_and_keep_their_reason() -> None:
    agg = EventAggregator()
    for s in "ab":
        agg.record(WF, "Normal", "StepStarted", f"step {s} started", 0.0)
    for t, s in enumerate("bcd", start=1):
        assert agg.record(WF, "Normal", "StepSucceeded", f"step {s} succeeded", t) == []
        assert agg.record(WF, "Normal", "StepStarted", f"step {s}x started", t) == []
    posts = agg.flush(NORMAL_PERIOD_SECONDS)
    assert [(p.reason, p.count) for p in posts] == [("StepSucceeded", 3), ("StepStarted", 3)]
    assert posts[0].message == ("(3 events) step b succeeded; step c succeeded; step d succeeded")
    # Two Events took two tokens: the bucket is in debt, so the next flush is further off.
    agg.record(WF, "Normal", "StepStarted", "step e started", 11.0)
    due = agg.due()
    assert due == pytest.approx(NORMAL_PERIOD_SECONDS * 3)


def test_an_event_after_a_quiet_period_is_posted_at_once() -> None:
    agg = EventAggregator()
    for t in range(5):
        agg.record(WF, "Normal", "StepStarted", f"m{t}", float(t))
    agg.flush(NORMAL_PERIOD_SECONDS)
    later = 100 * NORMAL_PERIOD_SECONDS
    assert [p.message for p in agg.record(WF, "Normal", "StepStarted", "late", later)] == ["late"]


def test_warnings_have_their_own_bucket_and_never_wait_behind_normal_events() -> None:
    agg = EventAggregator()
    for t in range(NORMAL_BURST + 3):
        agg.record(WF, "Normal", "StepStarted", f"normal {t}", 0.0)
    posted = [agg.record(WF, "Warning", "StepRetrying", f"w{t}", 0.0) for t in range(5)]
    assert all(len(p) == 1 for p in posted[:WARNING_BURST])
    assert agg.record(WF, "Warning", "StepRetrying", "one too many", 0.0) == []


def test_workflows_have_buckets_of_their_own() -> None:
    agg = EventAggregator()
    other = workflow("other", "u2")
    for t in range(NORMAL_BURST):
        agg.record(WF, "Normal", "StepStarted", f"m{t}", 0.0)
    assert agg.record(WF, "Normal", "StepStarted", "held", 0.0) == []
    assert len(agg.record(other, "Normal", "StepStarted", "posted", 0.0)) == 1
    # A Workflow deleted and created again under its name is another object (another uid).
    assert len(agg.record(workflow(uid="u3"), "Normal", "StepStarted", "posted", 0.0)) == 1


def test_a_finishing_event_flushes_everything_held_for_its_workflow() -> None:
    agg = EventAggregator()
    other = workflow("other", "u2")
    for t in range(NORMAL_BURST + 1):
        agg.record(WF, "Normal", "StepStarted", f"m{t}", 0.0)
        agg.record(other, "Normal", "StepStarted", f"o{t}", 0.0)
    for t in range(WARNING_BURST + 1):
        agg.record(WF, "Warning", "StepRetrying", f"w{t}", 0.0)
    posts = agg.record(WF, "Normal", "WorkflowSucceeded", "workflow succeeded: 3/3", 1.0)
    assert sorted((p.type, p.reason, p.message) for p in posts) == [
        ("Normal", "StepStarted", "m2"),
        ("Normal", "WorkflowSucceeded", "workflow succeeded: 3/3"),
        ("Warning", "StepRetrying", "w5"),
    ]
    # The other Workflow's held Event waits for its own token.
    assert [p.message for p in agg.flush_all()] == ["o2"]


def test_forget_drops_what_a_deleted_workflow_holds() -> None:
    agg = EventAggregator()
    for t in range(NORMAL_BURST + 2):
        agg.record(WF, "Normal", "StepStarted", f"m{t}", 0.0)
    assert agg.forget("ns", "wf") == 2
    assert agg.buckets == {} and agg.due() is None and agg.flush_all() == []


def test_idle_buckets_that_filled_up_again_are_dropped() -> None:
    agg = EventAggregator()
    agg.record(WF, "Normal", "StepStarted", "m", 0.0)
    agg.flush(1.0)
    assert agg.buckets  # not full yet
    agg.flush(NORMAL_PERIOD_SECONDS * NORMAL_BURST)
    assert agg.buckets == {}


def test_merged_messages_stay_within_the_limit_and_split_into_more_events() -> None:
    agg = EventAggregator()
    for _ in range(NORMAL_BURST):
        agg.record(WF, "Normal", "StepFailed", "x", 0.0)
    long = [f"<{i}>" + "y" * 300 for i in range(10)]
    for m in long:
        assert agg.record(WF, "Normal", "StepFailed", m, 1.0) == []
    posts = agg.flush_all()
    assert all(len(p.message) <= MESSAGE_LIMIT for p in posts)
    assert len(posts) > 1 and {p.reason for p in posts} == {"StepFailed"}
    assert sum(p.count for p in posts) == len(long)
    text = " ".join(p.message for p in posts)
    assert all(text.count(m) == 1 for m in long)


def test_past_the_group_limit_messages_are_counted_not_lost_count() -> None:
    agg = EventAggregator()
    for _ in range(NORMAL_BURST):
        agg.record(WF, "Normal", "StepFailed", "x", 0.0)
    n = MAX_GROUPS * 4 + 5
    for i in range(n):
        agg.record(WF, "Normal", "StepFailed", f"<{i}>" + "z" * 500, 1.0)
    posts = agg.flush_all()
    assert len(posts) == MAX_GROUPS
    assert sum(p.count for p in posts) == n
    assert all(len(p.message) <= MESSAGE_LIMIT for p in posts)
    assert re.search(r"\(and \d+ more\)$", posts[-1].message)


def test_the_manifest_is_an_event_about_the_workflow() -> None:
    post = Post(
        EventAggregator().record(WF, "Normal", "StepStarted", "m", 0.0)[0].body,
        "Normal",
        "StepStarted",
        "m" * 2000,
    )
    manifest = event_manifest(post, datetime(2026, 1, 1, tzinfo=UTC))
    assert manifest["metadata"]["namespace"] == "ns"
    assert manifest["involvedObject"] == {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "name": "wf",
        "namespace": "ns",
        "uid": "u1",
    }
    assert manifest["reason"] == "StepStarted" and len(manifest["message"]) == MESSAGE_LIMIT
    assert manifest["source"] == {"component": "agentflow-operator"}


# ---- properties --------------------------------------------------------------------------

REASONS = ["StepStarted", "StepSucceeded", "StepRetrying", "StepFailed"]
recorded = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # workflow
        st.sampled_from(["Normal", "Warning"]),
        st.sampled_from(REASONS),
        st.floats(min_value=0.0, max_value=7.0),  # seconds since the previous Event
        st.integers(min_value=0, max_value=60),  # extra length of the message
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(recorded)
def test_every_recorded_event_is_in_exactly_one_posted_event_and_posts_are_bounded(
    events: list[tuple[str, str, str, float, int]],
) -> None:
    agg = EventAggregator()
    now = 0.0
    posted: list[tuple[float, Post]] = []
    sent: dict[str, tuple[str, str, str]] = {}
    for i, (name, type_, reason, gap, extra) in enumerate(events):
        # The recorder's timer: whatever falls due before the next Event is flushed then.
        while (due := agg.due()) is not None and due <= now + gap:
            posted += [(due, p) for p in agg.flush(due)]
        now += gap
        message = f"<{i}>" + "m" * extra
        sent[message] = (name, type_, reason)
        posted += [(now, p) for p in agg.record(workflow(name, name), type_, reason, message, now)]
    end = now
    posted += [(end, p) for p in agg.flush_all()]

    # Nothing is lost, nothing doubled: every message in one Event, of its own reason and type.
    found: dict[str, int] = defaultdict(int)
    for _, post in posted:
        assert len(post.message) <= MESSAGE_LIMIT
        inside = re.findall(r"<(\d+)>", post.message)
        assert len(inside) == post.count
        for i in inside:
            message = next(m for m in sent if m.startswith(f"<{i}>"))
            assert message in post.message
            name, type_, reason = sent[message]
            assert (post.body["metadata"]["name"], post.type, post.reason) == (name, type_, reason)
            found[message] += 1
    assert found == dict.fromkeys(sent, 1)

    # Per Workflow and type, in any window: at most the burst, one per period, and the groups
    # held at once (a flush posts each as one Event, leaving the bucket in debt).
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for at, post in posted:
        if at < end or not events:
            times[(post.body["metadata"]["name"], post.type)].append(at)
    for (_, type_), ts in times.items():
        burst = NORMAL_BURST if type_ == "Normal" else WARNING_BURST
        for first in range(len(ts)):
            for last in range(first, len(ts)):
                window = ts[last] - ts[first]
                assert last - first + 1 <= burst + window / NORMAL_PERIOD_SECONDS + MAX_GROUPS


# ---- the recorder ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_recorder_posts_held_events_when_its_timer_fires() -> None:
    sent: list[tuple[str, str, str]] = []
    created: list[dict[str, Any]] = []

    flushed = asyncio.Event()

    def poster(body: Any, type_: str, reason: str, message: str) -> None:
        sent.append((type_, reason, message))
        if len(sent) == 2:
            flushed.set()

    async def create(manifest: dict[str, Any]) -> None:
        created.append(manifest)

    async def run() -> int:
        clock = Clock()
        period = 0.01
        agg = EventAggregator(
            burst={"Normal": 1, "Warning": 1}, period={"Normal": period, "Warning": period}
        )
        recorder = EventRecorder(poster, agg, clock)
        recorder.post(WF, "Normal", "StepStarted", "a")
        recorder.post(WF, "Normal", "StepStarted", "b")
        recorder.post(WF, "Normal", "StepStarted", "c")
        assert sent == [("Normal", "StepStarted", "a")]
        assert recorder._timer is not None  # one timer for the whole recorder
        clock.now = period
        await flushed.wait()  # the timer fires (pytest-timeout ends a test that hangs)
        assert sent[1] == ("Normal", "StepStarted", "(2 events) b; c")
        recorder.post(WF, "Normal", "StepStarted", "d")  # in debt: held
        recorder.post(workflow("gone", "u9"), "Normal", "StepStarted", "x")
        recorder.post(workflow("gone", "u9"), "Normal", "StepStarted", "dropped")
        recorder.forget("ns", "gone")
        return await recorder.close(create)

    assert asyncio.run(run()) == 1
    assert [m["message"] for m in created] == ["d"]
    assert ("Normal", "StepStarted", "x") in sent
    assert all("dropped" not in m for _, _, m in sent)


def test_the_cleanup_handler_posts_what_is_held_through_the_operators_client() -> None:
    import kopf

    from agentflow import handlers

    created: list[dict[str, Any]] = []

    async def create(manifest: dict[str, Any]) -> None:
        created.append(manifest)

    async def close() -> None:  # the client's connections go last, after what it sends
        created.append({"reason": "closed", "message": ""})

    recorder = EventRecorder(lambda *_: None, clock=Clock())
    for s in "abc":
        recorder.post(WF, "Normal", "StepStarted", f"step {s} started")
    memo = kopf.Memo()
    memo.runtime = SimpleNamespace(
        events=recorder, kube=SimpleNamespace(create_event=create, close=close), queue=WorkQueue()
    )
    asyncio.run(handlers.cleanup(memo))
    assert [(m["reason"], m["message"]) for m in created] == [
        ("StepStarted", "step c started"),
        ("closed", ""),
    ]


def test_the_numbers_the_runbook_gives() -> None:
    assert (NORMAL_BURST, NORMAL_PERIOD_SECONDS) == (2, 10.0)
    assert (WARNING_BURST, WARNING_PERIOD_SECONDS) == (5, 10.0)


def test_a_chain_of_20_second_steps_gets_every_event_on_its_own() -> None:
    agg = EventAggregator()
    posted = agg.record(WF, "Normal", "WorkflowStarted", "workflow started", 0.0)
    posted += agg.record(WF, "Normal", "StepStarted", "step 0 started", 0.0)
    for i in range(1, 10):
        now = 20.0 * i
        posted += agg.record(WF, "Normal", "StepSucceeded", f"step {i - 1} succeeded", now)
        posted += agg.record(WF, "Normal", "StepStarted", f"step {i} started", now)
    assert len(posted) == 20 and all(p.count == 1 for p in posted)


def test_a_fast_chain_gets_about_one_event_per_reason_every_period() -> None:
    agg = EventAggregator()
    posted = agg.record(WF, "Normal", "WorkflowStarted", "workflow started", 0.0)
    posted += agg.record(WF, "Normal", "StepStarted", "step 0 started", 0.0)
    for i in range(1, 10):  # a step every 0.7 s
        now = 0.7 * i
        posted += agg.flush(now)
        posted += agg.record(WF, "Normal", "StepSucceeded", f"step {i - 1} succeeded", now)
        posted += agg.record(WF, "Normal", "StepStarted", f"step {i} started", now)
    posted += agg.record(WF, "Normal", "StepSucceeded", "step 9 succeeded", 7.0)
    posted += agg.record(WF, "Normal", "WorkflowSucceeded", "workflow succeeded: 10/10", 7.0)
    # 22 Events recorded, 5 posted: two at once, the other three when the Workflow finished.
    assert [(p.reason, p.count) for p in posted] == [
        ("WorkflowStarted", 1),
        ("StepStarted", 1),
        ("StepSucceeded", 10),
        ("StepStarted", 9),
        ("WorkflowSucceeded", 1),
    ]
    assert agg.due() is None


def test_the_sender_posts_in_order_through_the_client_and_outlives_a_failed_post() -> None:
    posted: list[str] = []
    types: list[str] = []

    async def create(manifest: dict[str, Any]) -> None:
        if manifest["reason"] == "Broken":
            raise RuntimeError("the API server said no")
        posted.append(manifest["message"])

    async def scenario() -> None:
        sender = EventSender(
            create, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC), count=types.append
        )
        task = asyncio.create_task(sender.run())
        for reason, message in [("A", "one"), ("Broken", "lost"), ("A", "two")]:
            sender.post(workflow(), "Normal", reason, message)
        async with asyncio.timeout(2):
            while len(posted) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        task.cancel()
        sender.post(workflow(), "Warning", "A", "three")  # queued as the operator stops
        assert len(sender) == 1
        assert await sender.close() == 1

    asyncio.run(scenario())
    assert posted == ["one", "two", "three"]
    assert types == ["Normal", "Normal", "Warning"]  # counted as posted; the failed one is not
