"""Provider concurrency limits: slots granted first come first served, across Workflows."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.api.models import AgentTemplate, EnvVar, Provider, StepPhase
from agentflow.engine.types import JobState, Limits
from agentflow.engine.usage import (
    ConcurrencyGrant,
    ConcurrencyRule,
    QueueKey,
    Waiter,
    matching_rule,
)
from tests.support.world import T0, World, creates, step, workflow

RULE = ConcurrencyRule(name="llm", max=2, provider="anthropic")


def _agents() -> list[AgentTemplate]:
    return [
        AgentTemplate(name="a", provider=Provider.ANTHROPIC, model="m"),
        AgentTemplate(name="free", provider=Provider.SCRIPT),
    ]


def _world(steps: list[object], name: str = "wf", **spec: object) -> World:
    wf = workflow(steps, agents=_agents(), name=name, uid=f"uid-{name}", **spec)  # type: ignore[arg-type]
    return World(wf)


def _grant(free: int, ahead: list[QueueKey] | None = None) -> Limits:
    return Limits(
        concurrency=ConcurrencyGrant(
            rules=(RULE,), free={"llm": free}, queue={"llm": sorted(ahead or [])}
        )
    )


def test_only_the_free_slots_start_and_the_rest_wait_pending_naming_the_limit() -> None:
    w = _world([step(n, "a") for n in ("x", "y", "z")] + [step("s", "free")], strategy="Parallel")
    w.limits = _grant(2)
    p = w.plan()
    started = creates(p)
    assert sorted(c.step for c in started) == ["s", "x", "y"]
    assert {c.step: c.concurrency_limit for c in started} == {"x": "llm", "y": "llm", "s": None}
    z = w.step_status("z")
    assert z.phase is StepPhase.PENDING
    assert z.message == "waiting: concurrency limit llm reached (2 at once)"
    assert z.attempts == [] and z.started_at is None
    assert p.waiters == [Waiter(limit="llm", step="z", since=T0)]
    assert "concurrency limit llm" in (w.wf.status.message if w.wf.status else "")
    assert [a.concurrency_limit for a in w.step_status("x").attempts] == ["llm"]
    # Nothing free any more (the operator counts the two Jobs): z still waits, nothing doubles.
    w.limits = _grant(0)
    assert creates(w.plan()) == []
    w.succeed("x")
    w.limits = _grant(1)
    p = w.plan()
    assert [c.step for c in creates(p)] == ["z"]
    assert p.waiters == []


def test_an_earlier_waiter_of_another_workflow_is_served_first() -> None:
    w = _world([step("x", "a")])
    w.tick(10)  # the run starts at T0 + 10
    earlier: QueueKey = (T0, "team", "other", "s")
    w.limits = _grant(1, [earlier])
    p = w.plan()
    assert creates(p) == []
    assert p.waiters == [Waiter("llm", "x", T0 + timedelta(seconds=10))]
    # With two free slots, the earlier waiter's and ours.
    w.limits = _grant(2, [earlier])
    assert [c.step for c in creates(w.plan())] == ["x"]


def test_a_later_waiter_of_another_workflow_does_not_hold_us_back() -> None:
    w = _world([step("x", "a")])
    later: QueueKey = (T0 + timedelta(seconds=5), "team", "other", "s")
    w.limits = _grant(1, [later])
    assert [c.step for c in creates(w.plan())] == ["x"]


def test_same_instant_waiters_are_ordered_by_namespace_name_and_step() -> None:
    w = _world([step("x", "a")], name="b-wf")
    w.limits = _grant(1, [(T0, "team", "a-wf", "x")])
    assert creates(w.plan()) == []
    w2 = _world([step("x", "a")], name="a-wf")
    w2.limits = _grant(1, [(T0, "team", "b-wf", "x")])
    assert [c.step for c in creates(w2.plan())] == ["x"]


def test_a_retry_waits_for_a_slot_while_its_step_stays_running() -> None:
    w = _world([step("x", "a", retries={"limit": 1, "backoffSeconds": 0})])
    w.limits = _grant(1)
    w.plan()
    w.fail("x")
    w.limits = _grant(0)
    p = w.plan()
    x = w.step_status("x")
    assert x.phase is StepPhase.RUNNING and creates(p) == []
    assert x.message == "waiting: concurrency limit llm reached (2 at once)"
    assert [wt.step for wt in p.waiters] == ["x"]
    w.limits = _grant(1)
    assert [c.attempt for c in creates(w.plan())] == [2]


def test_cached_steps_take_no_slot() -> None:
    w = _world([step("x", "a")])
    w.limits = _grant(1)
    w.plan()
    w.succeed("x")
    w.plan()
    assert w.phase == "Succeeded"
    w.wf = w.wf.model_copy(
        update={
            "metadata": w.wf.metadata.model_copy(
                update={"annotations": {"agentflow.dev/rerun": "1"}}
            )
        }
    )
    w.limits = _grant(0)
    p = w.plan()
    assert w.phases() == {"x": "Cached"} and p.waiters == []


def test_rules_match_provider_model_and_secret_patterns_first_match_wins() -> None:
    key = EnvVar.model_validate(
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "team-openai", "key": "k"}}}
    )
    rules = (
        ConcurrencyRule(name="opus", max=1, provider="anthropic", model="*opus*"),
        ConcurrencyRule(name="anthropic", max=4, provider="anthropic"),
        ConcurrencyRule(name="openai-key", max=2, secret="team-*"),
    )
    opus = AgentTemplate(name="o", provider=Provider.ANTHROPIC, model="claude-opus-4")
    sonnet = AgentTemplate(name="s", provider=Provider.ANTHROPIC, model="claude-sonnet-4")
    keyed = AgentTemplate(name="k", provider=Provider.OPENAI, env=[key])
    plain = AgentTemplate(name="p", provider=Provider.OPENAI)
    assert [
        getattr(matching_rule(rules, a), "name", None) for a in (opus, sonnet, keyed, plain)
    ] == [
        "opus",
        "anthropic",
        "openai-key",
        None,
    ]


# ---- many Workflows, one operator: the property ----------------------------------------------


class Operator:
    """What the controller does around the plan, in memory: count the limit's running Jobs,
    keep each Workflow's waiters, and hand every pass the grant."""

    def __init__(self, worlds: list[World], rule: ConcurrencyRule) -> None:
        self.worlds = worlds
        self.rule = rule
        self.waiters: dict[str, list[QueueKey]] = {}
        self.max_seen = 0
        self.started: list[str] = []  # Workflow names, in the order their attempts started

    def running(self) -> int:
        return sum(1 for w in self.worlds for j in w.jobs.values() if j.state is JobState.ACTIVE)

    def reconcile(self, w: World) -> None:
        name = w.wf.metadata.name
        queue = sorted(p for places in self.waiters.values() for p in places)
        free = max(0, self.rule.max - self.running())
        w.limits = Limits(
            concurrency=ConcurrencyGrant(
                rules=(self.rule,),
                free={self.rule.name: free},
                queue={self.rule.name: queue},
                own={self.rule.name: self.waiters.get(name, [])},
            )
        )
        p = w.plan()
        self.waiters[name] = [(wt.since, "team", name, wt.step) for wt in p.waiters]
        self.started.extend(name for _ in creates(p))
        self.max_seen = max(self.max_seen, self.running())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=3),
    st.lists(st.integers(min_value=1, max_value=3), min_size=2, max_size=8),
    st.randoms(use_true_random=False),
)
def test_many_workflows_never_exceed_the_limit_and_all_finish(
    limit: int, sizes: list[int], rnd: object
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    rule = ConcurrencyRule(name="llm", max=limit, provider="anthropic")
    worlds = []
    for i, size in enumerate(sizes):
        w = _world([step(f"s{j}", "a") for j in range(size)], name=f"wf-{i}", strategy="Parallel")
        w.now = T0 + timedelta(seconds=i)  # created one after the other
        worlds.append(w)
    op = Operator(worlds, rule)
    for w in worlds:
        op.reconcile(w)
    for _ in range(500):
        if all(w.phase == "Succeeded" for w in worlds):
            break
        w = rnd.choice(worlds)
        active = w.active()
        if active and rnd.random() < 0.5:
            w.succeed(rnd.choice(active).step)
        for other in worlds:
            other.now = max(other.now, w.now) + timedelta(seconds=1)
        op.reconcile(w)
        assert op.running() <= limit
    # Everyone finishes: a waiter's place only moves forward, so none starves.
    for _ in range(200):
        if all(w.phase == "Succeeded" for w in worlds):
            break
        for w in worlds:
            for job in w.active():
                w.succeed(job.step)
            op.reconcile(w)
            assert op.running() <= limit
    assert [w.phase for w in worlds] == ["Succeeded"] * len(worlds)
    assert op.max_seen <= limit


def test_waiters_start_in_the_order_they_became_ready_whoever_plans_first() -> None:
    """Four Workflows created one after the other against a limit of one, planned in reverse
    order each round: their steps start oldest first, one at a time."""
    rule = ConcurrencyRule(name="llm", max=1, provider="anthropic")
    worlds = []
    for i in range(4):
        w = _world([step("x", "a")], name=f"wf-{i}")
        w.now = T0 + timedelta(seconds=i)
        worlds.append(w)
    op = Operator(worlds, rule)
    for w in worlds:  # each starts its run (wf-0 takes the slot), the rest wait
        op.reconcile(w)
    for _ in range(len(worlds)):
        for w in worlds:
            w.tick(10)
            for job in w.active():
                w.succeed(job.step)
        for w in reversed(worlds):
            op.reconcile(w)
        for w in reversed(worlds):
            op.reconcile(w)
    assert op.started == ["wf-0", "wf-1", "wf-2", "wf-3"]
    assert [w.phase for w in worlds] == ["Succeeded"] * 4
