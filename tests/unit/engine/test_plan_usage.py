"""Tokens, cost and budgets: usage from the attempts' reports, priced by the price table."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.api.models import (
    AgentTemplate,
    Budget,
    Provider,
    Step,
    StepMetrics,
    StepPhase,
    Usage,
    WorkflowPhase,
)
from agentflow.engine.types import BudgetExceeded, Limits, UsageRecorded
from agentflow.engine.usage import (
    Price,
    PriceTable,
    amount_text,
    attempt_usage,
    budget_reached,
    remaining_tokens,
)
from tests.support.world import World, creates, events, step, workflow

PRICES = PriceTable(
    prices={
        ("anthropic", "big"): Price(Decimal("3"), Decimal("15")),
        ("openai", "*"): Price(Decimal("0.15"), Decimal("0.6")),
    },
    currency="USD",
)


def _agents() -> list[AgentTemplate]:
    return [
        AgentTemplate(name="a", provider=Provider.ANTHROPIC, model="big"),
        AgentTemplate(name="b", provider=Provider.SCRIPT, model="unpriced"),
        AgentTemplate(name="c", provider=Provider.OPENAI, model="any-model"),
    ]


def _world(steps: list[Step], budget: dict[str, object] | None = None, **spec: object) -> World:
    if budget is not None:
        spec["budget"] = budget
    return World(workflow(steps, agents=_agents(), **spec), limits=Limits(prices=PRICES))


def _tokens(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o}


def test_usage_of_attempts_steps_and_the_run_with_cost_when_priced() -> None:
    w = _world([step("x", "a"), step("y", "b"), step("z", "c")], strategy="Parallel")
    w.plan()
    w.succeed("x", metrics=_tokens(1000, 200))
    w.succeed("y", metrics=_tokens(50, 5))
    w.succeed("z", metrics=_tokens(2_000_000, 1_000_000))
    p = w.plan()
    assert w.phase == "Succeeded"
    x = w.step_status("x")
    # 1000 * 3 / 1e6 + 200 * 15 / 1e6 = 0.003 + 0.003
    assert x.attempts[0].usage == Usage(input_tokens=1000, output_tokens=200, cost="0.006")
    assert x.usage == x.attempts[0].usage
    y = w.step_status("y")
    assert y.usage == Usage(input_tokens=50, output_tokens=5, cost=None, unpriced_tokens=55)
    usage = w.wf.status.usage if w.wf.status else None
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (2_001_050, 1_000_205)
    assert usage.total_tokens == 3_001_255
    # 0.006 + (2e6 * 0.15 + 1e6 * 0.6) / 1e6 = 0.006 + 0.9
    assert usage.cost == "0.906"
    assert usage.unpriced_tokens == 55
    assert usage.currency == "USD"
    assert [(a.agent, a.cost) for a in usage.agents] == [("a", "0.006"), ("b", None), ("c", "0.9")]
    recorded = [f for f in p.facts if isinstance(f, UsageRecorded)]
    assert sorted((f.agent, f.cost) for f in recorded) == [
        ("a", Decimal("0.006")),
        ("b", None),
        ("c", Decimal("0.9")),
    ]


def test_planning_again_counts_nothing_twice() -> None:
    w = _world([step("x", "a")])
    w.plan()
    w.succeed("x", metrics=_tokens(10, 10))
    w.plan()
    before = w.wf.status.usage if w.wf.status else None
    p = w.plan()
    assert (w.wf.status.usage if w.wf.status else None) == before
    assert not [f for f in p.facts if isinstance(f, UsageRecorded)]


def test_without_a_price_table_tokens_count_without_cost() -> None:
    w = _world([step("x", "a")])
    w.limits = Limits()
    w.plan()
    w.succeed("x", metrics=_tokens(10, 20))
    w.plan()
    usage = w.wf.status.usage if w.wf.status else None
    assert usage is not None
    assert (usage.total_tokens, usage.cost, usage.unpriced_tokens, usage.currency) == (
        30,
        None,
        30,
        None,
    )


def test_no_tokens_reported_no_usage() -> None:
    w = _world([step("x", "a")])
    w.plan()
    w.succeed("x")
    w.plan()
    assert w.wf.status is not None and w.wf.status.usage is None
    assert w.step_status("x").usage is None


def test_token_budget_stops_new_steps_then_fails_with_budget_exceeded() -> None:
    w = _world(
        [step("x", "b"), step("y", "b"), step("z", "b")],
        budget={"maxTokens": 100},
    )
    w.plan()
    w.succeed("x", metrics=_tokens(60, 50))
    p = w.plan()
    assert w.phase == "Failed"
    assert creates(p) == []
    status = w.wf.status
    assert status is not None
    stalled = status.condition("Stalled")
    assert stalled is not None and stalled.reason == "BudgetExceeded"
    assert "110 tokens used, spec.budget.maxTokens is 100" in (status.message or "")
    assert status.usage is not None and status.usage.budget_exceeded == "maxTokens"
    assert [f for f in p.facts if isinstance(f, BudgetExceeded)] == [BudgetExceeded("maxTokens")]
    assert events(p, "BudgetExceeded")
    # The steps left never started.
    assert w.phases() == {"x": "Succeeded", "y": "Pending", "z": "Pending"}


def test_running_steps_finish_before_the_budget_fails_the_workflow() -> None:
    w = _world(
        [step("x", "b"), step("y", "b"), step("later", "b", depends_on=["x", "y"])],
        budget={"maxTokens": 100},
        strategy="DAG",
    )
    w.plan()
    w.succeed("x", metrics=_tokens(100, 0))
    p = w.plan()
    assert w.phase == "Running"
    assert creates(p) == []
    assert "budget reached (maxTokens)" in (w.wf.status.message if w.wf.status else "")
    w.succeed("y", metrics=_tokens(5, 5))
    p = w.plan()
    assert w.phase == "Failed"
    assert w.phases() == {"x": "Succeeded", "y": "Succeeded", "later": "Pending"}
    # Reported once, when it was first reached.
    assert not [f for f in p.facts if isinstance(f, BudgetExceeded)]


def test_cost_budget_and_the_remaining_budget_reaches_the_agent() -> None:
    w = _world([step("x", "a"), step("y", "a")], budget={"maxCost": "0.03", "maxTokens": 5000})
    p = w.plan()
    # Nothing used: maxTokens left 5000; cost 0.03 at 15 per million output tokens: 2000 tokens.
    assert [c.max_tokens for c in creates(p)] == [2000]
    w.succeed("x", metrics=_tokens(1000, 1000))  # 0.003 + 0.015 = 0.018
    p = w.plan()
    # Left: 3000 tokens; 0.012 at 15 per million: 800 tokens.
    assert [c.max_tokens for c in creates(p)] == [800]
    w.succeed("y", metrics=_tokens(0, 800))  # + 0.012 = 0.03: reached, but nothing is left
    p = w.plan()
    assert w.phase == "Succeeded"
    assert w.wf.status is not None and w.wf.status.usage is not None
    assert w.wf.status.usage.cost == "0.03"
    # Nothing was stopped: no BudgetExceeded.
    assert w.wf.status.usage.budget_exceeded is None
    assert not events(p, "BudgetExceeded")
    assert not [f for f in p.facts if isinstance(f, BudgetExceeded)]


def test_cost_budget_reached_fails_the_workflow() -> None:
    w = _world([step("x", "a"), step("y", "a")], budget={"maxCost": "0.01"})
    w.plan()
    w.succeed("x", metrics=_tokens(0, 1000))  # 0.015
    w.plan()
    assert w.phase == "Failed"
    status = w.wf.status
    assert status is not None and status.usage is not None
    assert status.usage.budget_exceeded == "maxCost"
    assert "cost 0.015 USD, spec.budget.maxCost is 0.01 USD" in (status.message or "")


def test_without_a_budget_no_max_tokens_bound() -> None:
    w = _world([step("x", "a")])
    assert [c.max_tokens for c in creates(w.plan())] == [None]


def test_a_retried_step_sums_its_attempts() -> None:
    w = _world([step("x", "b", retries={"limit": 1, "backoffSeconds": 0})])
    w.plan()
    w.fail("x")
    w.plan()
    w.succeed("x", metrics=_tokens(7, 3))
    w.plan()
    x = w.step_status("x")
    assert [a.usage for a in x.attempts] == [
        None,
        Usage(input_tokens=7, output_tokens=3, unpriced_tokens=10),
    ]
    assert x.usage == Usage(input_tokens=7, output_tokens=3, unpriced_tokens=10)


# ---- pure functions -------------------------------------------------------------------------


def test_wildcard_model_and_unknown_models() -> None:
    assert PRICES.price("openai", "gpt-x") == Price(Decimal("0.15"), Decimal("0.6"))
    assert PRICES.price("anthropic", "small") is None
    assert PRICES.price(None, "big") is None


def test_amount_text_is_fixed_point_without_trailing_zeros() -> None:
    assert amount_text(Decimal("1.2300")) == "1.23"
    assert amount_text(Decimal("1E-7")) == "0.0000001"
    assert amount_text(Decimal("0")) == "0"
    assert amount_text(Decimal("100")) == "100"


def test_budget_reached_by_tokens_or_cost() -> None:
    budget = Budget(max_tokens=10, max_cost="1")
    assert budget_reached(budget, Usage(input_tokens=5, output_tokens=4)) is None
    assert budget_reached(budget, Usage(input_tokens=5, output_tokens=5)) == "maxTokens"
    assert budget_reached(budget, Usage(input_tokens=1, cost="1.0")) == "maxCost"
    assert budget_reached(None, Usage(input_tokens=100)) is None


def test_remaining_tokens_is_never_below_one() -> None:
    budget = Budget(max_tokens=10)
    assert remaining_tokens(budget, Usage(input_tokens=9), None) == 1
    assert remaining_tokens(Budget(max_cost="0"), None, Price(Decimal(1), Decimal(1))) == 1
    assert remaining_tokens(Budget(max_cost="1"), None, None) is None


_amounts = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False)
_tokens_st = st.integers(min_value=0, max_value=10**9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_tokens_st, _tokens_st), min_size=1, max_size=8),
    _amounts,
    _amounts,
)
def test_the_runs_cost_is_the_exact_sum_of_the_attempts_costs(
    tokens: list[tuple[int, int]], per_in: Decimal, per_out: Decimal
) -> None:
    """Whatever the prices and tokens: the status's decimal strings add up exactly, as the
    same arithmetic on Decimals says (no float ever touches them)."""
    prices = PriceTable(prices={("anthropic", "m"): Price(per_in, per_out)})
    agent = AgentTemplate(name="a", provider=Provider.ANTHROPIC, model="m")
    usages = [
        attempt_usage(StepMetrics(input_tokens=i, output_tokens=o), agent, prices)
        for i, o in tokens
    ]
    from agentflow.engine.usage import sum_usage

    total = sum_usage(usages)
    expected_in = sum(i for i, _ in tokens)
    expected_out = sum(o for _, o in tokens)
    if expected_in + expected_out == 0:
        assert total is None
        return
    assert total is not None
    assert (total.input_tokens, total.output_tokens) == (expected_in, expected_out)
    exact = (per_in * expected_in + per_out * expected_out) / Decimal(1_000_000)
    assert total.cost is not None and Decimal(total.cost) == exact


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_tokens_st, _tokens_st), min_size=1, max_size=5))
def test_usage_of_a_model_without_price_never_has_a_cost(tokens: list[tuple[int, int]]) -> None:
    agent = AgentTemplate(name="a", provider=Provider.OPENAI, model="m")
    for i, o in tokens:
        usage = attempt_usage(StepMetrics(input_tokens=i, output_tokens=o), agent, PriceTable())
        if i + o:
            assert usage is not None and usage.cost is None and usage.unpriced_tokens == i + o
        else:
            assert usage is None


def test_the_budget_fact_is_kept_in_status_across_passes() -> None:
    w = _world([step("x", "b"), step("y", "b")], budget={"maxTokens": 1})
    w.plan()
    w.succeed("x", metrics=_tokens(1, 0))
    w.plan()
    assert w.phase == "Failed"
    # A terminal Workflow planned again changes nothing.
    p = w.plan()
    assert p.actions == [] and w.phase == WorkflowPhase.FAILED.value
    assert w.step_status("y").phase is StepPhase.PENDING


def test_a_new_run_starts_with_its_own_usage_and_budget() -> None:
    w = _world([step("x", "b", cache={"enabled": False}), step("y", "b")], budget={"maxTokens": 5})
    w.plan()
    w.succeed("x", metrics=_tokens(5, 0))
    w.plan()
    assert w.phase == "Failed"
    meta = w.wf.metadata.model_copy(update={"annotations": {"agentflow.dev/rerun": "again"}})
    w.wf = w.wf.model_copy(update={"metadata": meta})
    p = w.plan()
    assert w.phase == "Running" and w.wf.status is not None
    assert w.wf.status.usage is None  # run 2 has used nothing yet
    assert [c.max_tokens for c in creates(p)] == [5]
    w.succeed("x", metrics=_tokens(0, 9))
    p = w.plan()
    assert w.phase == "Failed"
    assert [f for f in p.facts if isinstance(f, BudgetExceeded)] == [BudgetExceeded("maxTokens")]
