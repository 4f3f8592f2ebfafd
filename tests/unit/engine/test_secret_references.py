"""The operator's allow-list of Secrets agents may reference (``--allowed-secrets``)."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.api.models import AgentTemplate, ConditionType, WorkflowPhase, WorkflowSpec
from agentflow.engine import plan
from agentflow.engine.types import FallbackPolicy, Limits
from agentflow.engine.validation import secret_references_not_allowed
from tests.support.world import T0, creates, step, workflow


def secret_env(name: str, secret: str, key: str = "k") -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def agent(name: str, *secrets: str, literal: bool = False) -> AgentTemplate:
    env: list[dict[str, Any]] = [secret_env(f"V{i}", s) for i, s in enumerate(secrets)]
    if literal:
        env.insert(0, {"name": "PLAIN", "value": "default-token-abcde"})
    return AgentTemplate.model_validate({"name": name, "env": env})


def spec_with(agents: list[AgentTemplate], **step_fields: Any) -> WorkflowSpec:
    return workflow([step("s", agent=agents[0].name, **step_fields)], agents=agents).spec


def test_names_and_patterns_on_the_list_are_allowed() -> None:
    spec = spec_with([agent("a", "llm-keys", "github-token", literal=True)])
    assert secret_references_not_allowed(spec, ["llm-*", "github-token"]) == []


def test_a_reference_off_the_list_is_named_by_field_and_secret() -> None:
    spec = spec_with([agent("a", "llm-keys"), agent("b", "llm-keys", "default-token-x7k2p")])
    [problem] = secret_references_not_allowed(spec, ["llm-*"])
    assert problem.startswith(
        "spec.agents[1].env[1].valueFrom.secretKeyRef.name: Secret 'default-token-x7k2p' is not"
    )
    assert "(allowed: llm-*)" in problem


def test_a_steps_override_env_is_checked_too() -> None:
    spec = spec_with(
        [agent("a")], override={"env": [{"name": "X", "value": "x"}, secret_env("T", "sa-token")]}
    )
    assert secret_references_not_allowed(spec, ["llm-*"]) == [
        "spec.steps[0].override.env[1].valueFrom.secretKeyRef.name: Secret 'sa-token' is not "
        "one the operator allows agents to reference (allowed: llm-*)"
    ]


def test_an_empty_list_allows_no_reference_and_patterns_match_whole_names() -> None:
    spec = spec_with([agent("a", "llm-keys")])
    [problem] = secret_references_not_allowed(spec, [])
    assert "(allowed: none)" in problem
    assert secret_references_not_allowed(spec, ["llm"]) != []  # not a prefix match
    assert secret_references_not_allowed(spec, ["LLM-*"]) != []  # case matters


@pytest.mark.parametrize(("allowed", "fails"), [(None, False), (("llm-*",), True)])
def test_with_the_switch_on_the_workflow_fails_before_any_job(
    allowed: tuple[str, ...] | None, fails: bool
) -> None:
    wf = workflow([step("s", agent="a")], agents=[agent("a", "default-token-x7k2p")])
    p = plan(wf, FallbackPolicy(), [], lambda _k: None, T0, Limits(allowed_secrets=allowed))
    if not fails:  # switched off (the default): any Secret of the namespace
        assert len(creates(p)) == 1
        return
    assert creates(p) == []
    assert p.status.phase is WorkflowPhase.FAILED
    assert p.status.message is not None
    assert p.status.message.startswith(
        "spec.agents[0].env[0].valueFrom.secretKeyRef.name: Secret 'default-token-x7k2p'"
    )
    stalled = p.status.condition(ConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "SecretNotAllowed")
    assert "spec.agents[0].env[0].valueFrom.secretKeyRef.name" in stalled.message
