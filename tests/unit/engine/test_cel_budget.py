"""The operator's CEL time: a token bucket of CEL seconds per namespace, on a fake clock.

Before it, every pass had a CEL budget of its own, so N Workflows of costly conditions cost N
pass budgets of event loop per round of passes, whatever their namespace.
"""

from __future__ import annotations

import time

import pytest

from agentflow.api.models import StepPhase
from agentflow.engine.expressions import (
    CEL_RETRY_SECONDS,
    CEL_SAVINGS_SECONDS,
    EVALUATION_BUDGET_SECONDS,
    NAMESPACE_CEL_SHARE,
    PASS_BUDGET_SECONDS,
    TOTAL_CEL_SHARE,
    CelTime,
    evaluate_bool,
)
from agentflow.engine.planner import WAITING_CEL_TIME, plan
from tests.support.world import World, creates, step, workflow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_an_idle_namespace_has_its_savings_and_a_pass_gets_at_most_a_pass_budget(
    clock: FakeClock,
) -> None:
    cel = CelTime(clock)
    assert cel.balance("a") == CEL_SAVINGS_SECONDS
    budget = cel.pass_budget("a")
    assert budget.seconds == PASS_BUDGET_SECONDS
    budget.charge(0.3)
    assert budget.seconds == pytest.approx(PASS_BUDGET_SECONDS - 0.3)
    assert cel.balance("a") == pytest.approx(CEL_SAVINGS_SECONDS - 0.3)
    assert cel.balance("b") == CEL_SAVINGS_SECONDS  # another namespace's is its own


def test_no_time_is_given_until_a_whole_expression_fits_and_then_at_the_namespace_share(
    clock: FakeClock,
) -> None:
    cel = CelTime(clock)
    cel.charge("a", CEL_SAVINGS_SECONDS - 0.2)  # 0.2 s left: less than one expression may take
    assert cel.pass_budget("a").spent
    wait = (EVALUATION_BUDGET_SECONDS - 0.2) / NAMESPACE_CEL_SHARE
    assert cel.seconds_until_available("a") == pytest.approx(wait)
    clock.now += wait * 0.99
    assert cel.pass_budget("a").spent
    clock.now += wait * 0.02
    budget = cel.pass_budget("a")
    assert budget.seconds == pytest.approx(
        EVALUATION_BUDGET_SECONDS + 0.01 * wait * NAMESPACE_CEL_SHARE
    )


def test_savings_refill_to_their_cap_and_a_full_namespace_is_forgotten(clock: FakeClock) -> None:
    cel = CelTime(clock)
    cel.charge("a", 1.0)
    clock.now += 5.0
    assert cel.balance("a") == pytest.approx(CEL_SAVINGS_SECONDS - 1.0 + 5.0 * NAMESPACE_CEL_SHARE)
    clock.now += 3600.0
    assert cel.balance("a") == CEL_SAVINGS_SECONDS
    assert cel.rate() == NAMESPACE_CEL_SHARE  # nobody is spending: nothing is kept
    assert cel._balances == {}


def test_an_overspent_pass_leaves_a_debt_paid_before_the_next_grant(clock: FakeClock) -> None:
    cel = CelTime(clock)
    cel.charge("a", CEL_SAVINGS_SECONDS + 1.0)  # e.g. an until given its whole budget
    assert cel.balance("a") == pytest.approx(-1.0)
    assert cel.pass_budget("a").spent
    missing = EVALUATION_BUDGET_SECONDS + 1.0
    assert cel.seconds_until_available("a") == pytest.approx(missing / NAMESPACE_CEL_SHARE)
    clock.now += missing / NAMESPACE_CEL_SHARE - 0.1
    assert cel.pass_budget("a").spent
    clock.now += 0.2
    assert not cel.pass_budget("a").spent


def test_many_spending_namespaces_share_the_total_and_a_thrifty_one_keeps_its_savings(
    clock: FakeClock,
) -> None:
    cel = CelTime(clock)
    spenders = [f"hostile-{i}" for i in range(20)]
    for namespace in spenders:
        cel.charge(namespace, CEL_SAVINGS_SECONDS)
    share = TOTAL_CEL_SHARE / len(spenders)
    assert share < NAMESPACE_CEL_SHARE
    assert cel.rate() == pytest.approx(share)
    clock.now += 10.0
    gained = sum(cel.balance(namespace) for namespace in spenders)
    assert gained == pytest.approx(TOTAL_CEL_SHARE * 10.0)  # the total, not 20 shares
    # A namespace that spent nothing is given its pass at once, whatever the others spend.
    assert cel.pass_budget("quiet").seconds == PASS_BUDGET_SECONDS
    # The retry waits for the slower refill, within bounds.
    assert cel.seconds_until_available(spenders[0]) == pytest.approx(
        min(CEL_RETRY_SECONDS[1], (EVALUATION_BUDGET_SECONDS - share * 10.0) / share)
    )


def test_a_retry_is_at_least_a_second_away_when_only_the_pass_ran_out(clock: FakeClock) -> None:
    cel = CelTime(clock)
    budget = cel.pass_budget("a")
    budget.charge(PASS_BUDGET_SECONDS)
    assert budget.spent and not cel.pass_budget("a").spent
    assert budget.retry_seconds == CEL_RETRY_SECONDS[0]


def test_passes_of_many_workflows_in_a_namespace_spend_only_its_cel_time(clock: FakeClock) -> None:
    # Three Workflows of 40 distinct conditions of about 0.04 s each: 4.8 s of CEL, 1.6 s per
    # Workflow.  With a pass budget of their own, three passes would spend about 3 s; drawn from
    # the namespace, they stop once its savings (2 s) are spent, until time refills them.
    worlds = [
        World(
            workflow(
                [step(f"s{i}", when=f'!"w{n}x{i}".matches("\\\\w{{100}}")') for i in range(40)],
                strategy="Parallel",
                name=f"wf{n}",
            )
        )
        for n in range(3)
    ]
    cel = CelTime(clock)
    assert evaluate_bool("true", {})  # the worker's start is not what is measured

    def one_round() -> tuple[float, int]:
        before, started = time.monotonic(), 0
        for w in worlds:
            p = plan(w.wf, w.policy, w.observed(), w.cache.get, w.now, w.limits,
                     cel.pass_budget("tenant"))  # fmt: skip
            w.apply(p)
            started += len(creates(p))
        return time.monotonic() - before, started

    spent, started = one_round()
    again, more = one_round()
    assert spent + again < CEL_SAVINGS_SECONDS + EVALUATION_BUDGET_SECONDS + 1.0, (spent, again)
    assert 0 < started + more < 120, (started, more)
    for w in worlds:
        pending = [s for s in w.wf.spec.steps if w.step_status(s.name).phase is StepPhase.PENDING]
        if pending:
            assert w.wf.status is not None and WAITING_CEL_TIME in w.wf.status.message
            assert w.last is not None and w.last.requeue_after is not None
            assert w.last.requeue_after >= CEL_RETRY_SECONDS[0]
    assert cel.pass_budget("tenant").spent
    assert not cel.pass_budget("other").spent

    # Time refills the namespace, and the conditions are judged to the end: nothing failed.
    for _ in range(60):
        if sum(len(w.created) for w in worlds) == 120:
            break
        clock.now += 60.0
        one_round()
    assert all(w.step_status(f"s{i}").phase is StepPhase.RUNNING for w in worlds for i in range(40))


def test_a_retry_is_at_most_the_upper_bound_however_slow_the_refill(clock: FakeClock) -> None:
    cel = CelTime(clock)
    for i in range(200):  # 200 namespaces spending: each refills at 0.0025 s per second
        cel.charge(f"ns-{i}", CEL_SAVINGS_SECONDS)
    assert cel.seconds_until_available("ns-0") == CEL_RETRY_SECONDS[1]
