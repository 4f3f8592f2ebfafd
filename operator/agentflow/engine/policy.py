"""AgentFallbackPolicy: validation and resolution into the rules the plan applies."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from agentflow.api.models import AgentFallbackPolicySpec, Criticality, FailureRule
from agentflow.engine.failures import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_WAIT_SECONDS,
    ClassRule,
)
from agentflow.engine.types import FallbackPolicy, PolicyRule


def validate_policy(spec: AgentFallbackPolicySpec) -> list[str]:
    """Every problem with a policy, one message each naming the field.

    A fallback equal to its own agent, a critical agent allowed to be skipped, and a chain of
    rules that loops (``a -> b -> a``).  The default rule may name any fallback: an agent that
    falls back to itself through the default simply has no further fallback.
    """
    problems: list[str] = []
    for i, rule in enumerate(spec.rules):
        if rule.fallback == rule.agent:
            problems.append(
                f"spec.rules[{i}].fallback: agent {rule.agent!r} cannot fall back to itself"
            )
        if rule.criticality is Criticality.CRITICAL and rule.skip_if_unavailable:
            problems.append(
                f"spec.rules[{i}].skipIfUnavailable: agent {rule.agent!r} is critical "
                "and cannot be skipped"
            )
    default = spec.default
    critical_default = default is not None and default.criticality is Criticality.CRITICAL
    if critical_default and default is not None and default.skip_if_unavailable:
        problems.append("spec.default.skipIfUnavailable: a critical default cannot be skipped")
    problems.extend(_chain_loops(spec))
    return problems


def _chain_loops(spec: AgentFallbackPolicySpec) -> list[str]:
    edges = {r.agent: r.fallback for r in spec.rules if r.fallback and r.fallback != r.agent}
    loops: list[str] = []
    seen_in_loop: set[str] = set()
    for start in sorted(edges):
        path: list[str] = []
        current: str | None = start
        while current is not None and current in edges and current not in path:
            path.append(current)
            current = edges[current]
        if current is None or current not in path:
            continue
        cycle = path[path.index(current) :]
        if seen_in_loop.intersection(cycle):
            continue
        seen_in_loop.update(cycle)
        # Start the message at the alphabetically first agent so it is stable.
        first = cycle.index(min(cycle))
        cycle = cycle[first:] + cycle[:first]
        loops.append(f"spec.rules: fallback chain loops: {' -> '.join([*cycle, cycle[0]])}")
    return loops


def _class_rule(entry: FailureRule) -> ClassRule:
    return ClassRule(
        classes=tuple(entry.classes),
        action=entry.action,
        max_wait_seconds=(
            DEFAULT_MAX_WAIT_SECONDS if entry.max_wait_seconds is None else entry.max_wait_seconds
        ),
        counts_against_attempts=bool(entry.counts_against_attempts),
        max_retries=DEFAULT_MAX_RETRIES if entry.max_retries is None else entry.max_retries,
    )


def _rule(
    fallback: str | None,
    criticality: Criticality,
    skip: bool,
    max_attempts: int,
    on_failure: list[FailureRule],
) -> PolicyRule:
    return PolicyRule(
        fallback=fallback,
        criticality=str(criticality),
        skip_if_unavailable=skip,
        max_attempts=max_attempts,
        on_failure=tuple(_class_rule(entry) for entry in on_failure),
    )


def resolve_policy(spec: AgentFallbackPolicySpec | None, name: str | None) -> FallbackPolicy:
    """The rules in force.

    No spec and no name: the built-in default (no fallback, medium, not skippable, one
    attempt).  No spec but a name: the referenced policy is missing, an error.  An invalid
    spec: ``FallbackPolicy(error=...)`` with the first problem (and how many more).
    """
    if spec is None:
        if name is None:
            return FallbackPolicy()
        return FallbackPolicy(name=name, error=f"fallback policy {name!r} not found")
    problems = validate_policy(spec)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        label = f"fallback policy {name!r}" if name else "fallback policy"
        return FallbackPolicy(name=name, error=f"{label} is invalid: {problems[0]}{more}")
    rules = {
        r.agent: _rule(
            r.fallback, r.criticality, r.skip_if_unavailable, r.max_attempts, r.on_failure
        )
        for r in spec.rules
    }
    default = (
        _rule(
            spec.default.fallback,
            spec.default.criticality,
            spec.default.skip_if_unavailable,
            spec.default.max_attempts,
            spec.default.on_failure,
        )
        if spec.default is not None
        else PolicyRule()
    )
    return FallbackPolicy(rules=rules, default=default, name=name)


def undeclared_fallbacks(
    policy: FallbackPolicy, step_agents: Iterable[str], declared: Collection[str]
) -> list[tuple[str, str]]:
    """The fallback agents ``policy`` would run that are not ``declared``, each once, as
    ``(fallback, agent it stands in for)``: the chain of each of the steps' agents is followed
    through declared agents until it ends, loops, or reaches an undeclared one."""
    found: list[tuple[str, str]] = []
    for agent in dict.fromkeys(step_agents):
        visited = {agent}
        current = agent
        while True:
            fallback = policy.rule_for(current).fallback
            if fallback is None or fallback in visited:
                break
            if fallback not in declared:
                if (fallback, current) not in found:
                    found.append((fallback, current))
                break
            visited.add(fallback)
            current = fallback
    return found
