"""validate_policy and resolve_policy."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.api.models import AgentFallbackPolicySpec
from agentflow.engine import resolve_policy, validate_policy
from agentflow.engine.types import FallbackPolicy, PolicyRule


def policy_spec(
    *rules: dict[str, Any], default: dict[str, Any] | None = None
) -> AgentFallbackPolicySpec:
    return AgentFallbackPolicySpec.model_validate({"rules": list(rules), "default": default})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (policy_spec({"agent": "a", "fallback": "b"}, {"agent": "b", "fallback": "c"}), []),
        (
            policy_spec({"agent": "a", "fallback": "b"}, {"agent": "b", "fallback": "a"}),
            ["spec.rules: fallback chain loops: a -> b -> a"],
        ),
        (
            policy_spec(
                {"agent": "c", "fallback": "a"},
                {"agent": "a", "fallback": "b"},
                {"agent": "b", "fallback": "c"},
                {"agent": "x", "fallback": "a"},  # leads into the loop; reported once
            ),
            ["spec.rules: fallback chain loops: a -> b -> c -> a"],
        ),
        (
            policy_spec({"agent": "a", "fallback": "a"}),
            ["spec.rules[0].fallback: agent 'a' cannot fall back to itself"],
        ),
        (
            policy_spec({"agent": "a", "criticality": "critical", "skipIfUnavailable": True}),
            ["spec.rules[0].skipIfUnavailable: agent 'a' is critical and cannot be skipped"],
        ),
        (
            policy_spec(default={"criticality": "critical", "skipIfUnavailable": True}),
            ["spec.default.skipIfUnavailable: a critical default cannot be skipped"],
        ),
        # Falling back to an agent that has no rule, with a default fallback: not a loop.
        (policy_spec({"agent": "a", "fallback": "b"}, default={"fallback": "a"}), []),
    ],
)
def test_validate_policy(spec: AgentFallbackPolicySpec, expected: list[str]) -> None:
    assert validate_policy(spec) == expected


def test_resolve_without_a_policy_is_the_builtin_default() -> None:
    resolved = resolve_policy(None, None)
    assert resolved == FallbackPolicy()
    assert resolved.rule_for("anything") == PolicyRule(
        fallback=None, criticality="medium", skip_if_unavailable=False, max_attempts=1
    )


def test_resolve_a_named_but_missing_policy_is_an_error() -> None:
    resolved = resolve_policy(None, "strict")
    assert resolved.error == "fallback policy 'strict' not found"


def test_resolve_rules_and_default() -> None:
    resolved = resolve_policy(
        policy_spec(
            {"agent": "a", "fallback": "b", "criticality": "high", "maxAttempts": 3},
            default={"skipIfUnavailable": True, "criticality": "low"},
        ),
        "p",
    )
    assert resolved.error is None and resolved.name == "p"
    assert resolved.rule_for("a") == PolicyRule(
        fallback="b", criticality="high", skip_if_unavailable=False, max_attempts=3
    )
    assert resolved.rule_for("other") == PolicyRule(
        fallback=None, criticality="low", skip_if_unavailable=True, max_attempts=1
    )


def test_resolve_an_invalid_policy_carries_the_first_problem_and_the_count() -> None:
    resolved = resolve_policy(
        policy_spec(
            {"agent": "a", "fallback": "a"},
            {"agent": "b", "criticality": "critical", "skipIfUnavailable": True},
        ),
        "bad",
    )
    assert resolved.error == (
        "fallback policy 'bad' is invalid: spec.rules[0].fallback: agent 'a' cannot fall back "
        "to itself (and 1 more)"
    )
    assert resolved.rules == {}
