"""Tokens, their cost, budgets and provider concurrency limits: plain data and pure functions.

Prices come from the operator's price table (``OperatorConfig.prices``), per provider and
model, per million input and output tokens, as decimals: nothing here knows a price of its
own.  A model the table does not have counts its tokens without a cost (``unpricedTokens``).
Amounts are :class:`decimal.Decimal` throughout and reach the status as decimal strings, so no
float rounding touches them.

A concurrency limit (``OperatorConfig.concurrency_limits``) bounds how many step attempts whose
agent matches it (provider, model, Secret) run at once across every Workflow the operator
serves.  An attempt counts against the first limit it matches.  The operator counts the
running Jobs of each limit from the Jobs it observes (they carry the limit's label) and hands
the plan a :class:`ConcurrencyGrant`: the slots free now and the other Workflows' waiters, in
their order.  The plan starts a waiting attempt only when fewer than the free slots are taken
by waiters ahead of it, so the waiters are served first come, first served.
"""

from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from agentflow.api.models import (
    AgentTemplate,
    AgentUsage,
    Attempt,
    Budget,
    StepMetrics,
    StepStatus,
    Usage,
    WorkflowUsage,
)

MILLION = Decimal(1_000_000)


# ---- prices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """What a million tokens of one model cost."""

    input_per_million: Decimal
    output_per_million: Decimal


@dataclass(frozen=True)
class PriceTable:
    """Prices by (provider, model); ``model`` ``*`` stands for every model of the provider.

    The provider of an agent without one (a custom image) is ``""``: such an agent is priced
    by its model alone, under provider ``""``.
    """

    prices: Mapping[tuple[str, str], Price] = field(default_factory=dict)
    currency: str | None = None

    def price(self, provider: str | None, model: str | None) -> Price | None:
        key = (provider or "", model or "")
        found = self.prices.get(key)
        if found is None and model:
            found = self.prices.get((provider or "", "*"))
        return found


NO_PRICES = PriceTable()


def decimal(text: str) -> Decimal:
    """``text`` (a decimal string the schema or the config has checked) as a Decimal."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative decimal number")
    return value


def amount_text(value: Decimal) -> str:
    """A Decimal as the status writes it: fixed-point, no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def cost_of(price: Price, input_tokens: int, output_tokens: int) -> Decimal:
    """The exact cost of the tokens at ``price`` (no rounding: the product is a finite decimal)."""
    return (
        price.input_per_million * input_tokens + price.output_per_million * output_tokens
    ) / MILLION


def attempt_usage(
    metrics: StepMetrics | None, agent: AgentTemplate, prices: PriceTable
) -> Usage | None:
    """The usage of an attempt whose agent (resolved) reported ``metrics``; None when it
    reported no tokens."""
    if metrics is None:
        return None
    tokens_in = max(0, metrics.input_tokens or 0)
    tokens_out = max(0, metrics.output_tokens or 0)
    if not tokens_in and not tokens_out:
        return None
    price = prices.price(agent.provider.value if agent.provider else None, agent.model)
    if price is None:
        return Usage(
            input_tokens=tokens_in, output_tokens=tokens_out, unpriced_tokens=tokens_in + tokens_out
        )
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost=amount_text(cost_of(price, tokens_in, tokens_out)),
    )


@dataclass
class _Tally:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal | None = None
    unpriced_tokens: int = 0

    def add(self, usage: Usage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.unpriced_tokens += usage.unpriced_tokens
        if usage.cost is not None:
            self.cost = (self.cost or Decimal(0)) + decimal(usage.cost)

    def fields(self) -> dict[str, object]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": None if self.cost is None else amount_text(self.cost),
            "unpriced_tokens": self.unpriced_tokens,
        }


def sum_usage(usages: Iterable[Usage | None]) -> Usage | None:
    """The sum of ``usages``; None when there is none."""
    tally = _Tally()
    seen = False
    for usage in usages:
        if usage is not None:
            tally.add(usage)
            seen = True
    return Usage.model_validate(tally.fields()) if seen else None


def step_usage(step: StepStatus) -> Usage | None:
    return sum_usage(a.usage for a in step.attempts)


def workflow_usage(
    steps: Sequence[StepStatus], currency: str | None, budget_exceeded: str | None = None
) -> WorkflowUsage | None:
    """The run's usage from its steps' attempts: in total and by agent (agents sorted)."""
    total = _Tally()
    by_agent: dict[str, _Tally] = {}
    seen = False
    for step in steps:
        for attempt in step.attempts:
            if attempt.usage is None:
                continue
            seen = True
            total.add(attempt.usage)
            by_agent.setdefault(attempt.agent, _Tally()).add(attempt.usage)
    if not seen and budget_exceeded is None:
        return None
    agents = [
        AgentUsage.model_validate({"agent": name, **tally.fields()})
        for name, tally in sorted(by_agent.items())
    ]
    return WorkflowUsage.model_validate(
        {
            **total.fields(),
            "total_tokens": total.input_tokens + total.output_tokens,
            "currency": currency,
            "agents": agents,
            "budget_exceeded": budget_exceeded,
        }
    )


def budget_reached(budget: Budget | None, usage: Usage | None) -> str | None:
    """Which bound of ``budget`` the usage has reached (``maxTokens``, ``maxCost``), or None."""
    if budget is None or usage is None:
        return None
    tokens = usage.input_tokens + usage.output_tokens
    if budget.max_tokens is not None and tokens >= budget.max_tokens:
        return "maxTokens"
    cost, bound = usage.cost, budget.max_cost
    if bound is not None and cost is not None and decimal(cost) >= decimal(bound):
        return "maxCost"
    return None


def remaining_tokens(budget: Budget | None, usage: Usage | None, price: Price | None) -> int | None:
    """The max-tokens bound for an attempt's agent: what is left of ``maxTokens``, and of
    ``maxCost`` at the agent's output price (when it has one); None when nothing bounds it."""
    if budget is None:
        return None
    bounds: list[int] = []
    used = (usage.input_tokens + usage.output_tokens) if usage is not None else 0
    if budget.max_tokens is not None:
        bounds.append(max(1, budget.max_tokens - used))
    if budget.max_cost is not None and price is not None and price.output_per_million > 0:
        spent = decimal(usage.cost) if usage is not None and usage.cost is not None else Decimal(0)
        left = max(Decimal(0), decimal(budget.max_cost) - spent)
        tokens = (left * MILLION / price.output_per_million).to_integral_value(ROUND_FLOOR)
        bounds.append(max(1, int(tokens)))
    return min(bounds) if bounds else None


# ---- concurrency limits ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConcurrencyRule:
    """A limit on the step attempts that run at once: those whose agent matches every field
    that is set (``model`` and ``secret`` may be fnmatch patterns)."""

    name: str
    max: int
    provider: str | None = None
    model: str | None = None
    secret: str | None = None

    def matches(self, agent: AgentTemplate) -> bool:
        provider = agent.provider.value if agent.provider is not None else None
        if self.provider is not None and provider != self.provider:
            return False
        if self.model is not None and not fnmatch.fnmatchcase(agent.model or "", self.model):
            return False
        if self.secret is not None:
            secrets = [
                e.value_from.secret_key_ref.name for e in agent.env if e.value_from is not None
            ]
            if not any(fnmatch.fnmatchcase(s, self.secret) for s in secrets):
                return False
        return True


def matching_rule(rules: Sequence[ConcurrencyRule], agent: AgentTemplate) -> ConcurrencyRule | None:
    """The first of ``rules`` that ``agent`` matches: the one its attempts count against."""
    return next((r for r in rules if r.matches(agent)), None)


# A waiter's place in the queue of a limit: since when it waits, then who it is (a stable order
# for waiters of the same instant).
QueueKey = tuple[datetime, str, str, str]  # (since, namespace, workflow, step)


@dataclass(frozen=True)
class Waiter:
    """A step attempt of this Workflow that waits for a slot of ``limit``."""

    limit: str
    step: str
    since: datetime


@dataclass(frozen=True)
class ConcurrencyGrant:
    """What the plan may start under the operator's concurrency limits.

    ``free`` is each limit's slots not taken by running Jobs (cluster-wide, from the observed
    Jobs).  ``queue`` is every waiter of each limit, sorted, this Workflow's own included (as its
    previous pass left them); ``own`` is this Workflow's part of it, which does not count as
    ahead of it.  A limit missing from ``free`` has all its slots free.
    """

    rules: tuple[ConcurrencyRule, ...] = ()
    free: Mapping[str, int] = field(default_factory=dict)
    queue: Mapping[str, Sequence[QueueKey]] = field(default_factory=dict)
    own: Mapping[str, Sequence[QueueKey]] = field(default_factory=dict)

    def waiters_before(self, limit: str, key: QueueKey) -> int:
        """The other Workflows' waiters of ``limit`` whose place is before ``key``."""
        before = bisect.bisect_left(self.queue.get(limit, ()), key)
        return before - sum(1 for place in self.own.get(limit, ()) if place < key)

    def free_slots(self, limit: str) -> int:
        rule = next((r for r in self.rules if r.name == limit), None)
        return self.free.get(limit, rule.max if rule else 0)


NO_LIMITS = ConcurrencyGrant()


def last_finished(attempts: Sequence[Attempt]) -> datetime | None:
    return max((a.finished_at for a in attempts if a.finished_at is not None), default=None)
