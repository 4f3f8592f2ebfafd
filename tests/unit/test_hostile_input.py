"""Hostile documents and agent reports: every one is judged, none breaks anything.

Generated Workflows and AgentFallbackPolicies, valid and broken (unknown fields, wrong types,
huge and unicode strings, dependency cycles, unknown references, bad CEL, bad template
syntax), go through every gate a real document passes:

- the CRD's ``openAPIV3Schema`` with its CEL rules (the API server's verdict, as in
  ``test_examples_schema``);
- the pydantic models, both as the operator reads an object (lax) and as the API server would
  type-check it (strict JSON);
- the core: ``validate_workflow`` / ``validate_policy``, then ``plan`` driven to the end with
  simulated Jobs whose termination messages are themselves hostile.

Each document is either accepted and its Workflow reaches a terminal phase, or rejected with
messages that are non-empty and name a field.  Nothing raises except the models'
``ValidationError``.  Every Job the plan asks for is built by ``build_step_job`` and checked:
the prompt travels as data, the agent's template decides image, command and env names.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentflow.api.models import (
    AgentFallbackPolicy,
    Workflow,
    WorkflowPhase,
)
from agentflow.children import WorkflowRef, build_step_job
from agentflow.controller import resolve_fallback_policy
from agentflow.engine import resolve_policy, validate_policy
from agentflow.engine.types import CreateJob, FallbackPolicy
from agentflow.report import TERMINATION_MESSAGE_LIMIT, decode_termination_message
from agentflow_devcluster.images import expand_references
from tests.support.crd_schema import crd_errors
from tests.support.generated import (
    FIELD_NAMES,
    HEALTH,
    JSON_VALUES,
    TERMINATION_MESSAGES,
    assert_clear,
    check_job,
    judge_workflow,
    leaves,
    model_errors,
    mutations,
    names_a_field,
    policy_specs,
    run_to_the_end,
    workflow_document,
    workflow_specs,
)
from tests.support.world import World


@settings(max_examples=250, deadline=None, suppress_health_check=HEALTH)
@given(
    data=st.data(),
    spec=workflow_specs(),
    seed=st.integers(0, 2**32 - 1),
    messages=st.lists(TERMINATION_MESSAGES, min_size=1, max_size=4),
)
def test_every_workflow_is_either_rejected_clearly_or_runs_to_a_terminal_phase(
    data: st.DataObject, spec: dict[str, Any], seed: int, messages: list[str | None]
) -> None:
    kind, mutated = data.draw(mutations(spec))
    doc = workflow_document(mutated)
    verdict = judge_workflow(doc)
    event(f"mutation {kind}")

    if kind == "unknown-field":
        # No pod field (or any other) can be smuggled in: both the CRD and the models say no.
        assert verdict.crd and verdict.strict and verdict.lax, verdict
    if verdict.crd:
        assert_clear(verdict.crd, "CRD")
        # Whatever the API server rejects, the operator's models or core reject too.
        assert verdict.strict or verdict.core, f"only the CRD rejects: {verdict.crd}"
    if verdict.strict:
        assert_clear(verdict.strict, "models")
    if verdict.workflow is None:
        event("rejected by the models")
        assert_clear(verdict.lax, "models (lax)")
        return
    if verdict.core:
        assert_clear(verdict.core, "core")
        assert all(p.startswith("spec.") for p in verdict.core), verdict.core
    if verdict.crd:
        return  # the API server never stores it: nothing for the operator to run
    outcome = run_to_the_end(verdict.workflow, FallbackPolicy(), seed, messages)
    event(f"{'invalid' if verdict.core else 'valid'}: {outcome.phase}")
    if verdict.core:
        assert outcome.phase is WorkflowPhase.FAILED
        assert outcome.jobs == 0
        assert verdict.core[0] in outcome.message
    # A Workflow's status stays small whatever its agents report (the etcd limit is 1.5 MiB).
    assert outcome.status_bytes < 12 * 1024 * len(verdict.workflow.spec.steps) + 8 * 1024


@settings(max_examples=120, deadline=None, suppress_health_check=HEALTH)
@given(
    data=st.data(),
    spec=workflow_specs(hostile=False),
    policy=policy_specs(),
    seed=st.integers(0, 2**32 - 1),
    messages=st.lists(TERMINATION_MESSAGES, min_size=1, max_size=3),
)
def test_every_fallback_policy_is_either_rejected_clearly_or_applied(
    data: st.DataObject,
    spec: dict[str, Any],
    policy: dict[str, Any],
    seed: int,
    messages: list[str | None],
) -> None:
    verdict = judge_workflow(workflow_document(spec))
    assume(verdict.workflow is not None and not verdict.core and not verdict.crd)
    assert verdict.workflow is not None
    kind, mutated = data.draw(policy_mutations(policy))
    event(f"mutation {kind}")
    doc = {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "AgentFallbackPolicy",
        "metadata": {"name": "hostile"},
        "spec": mutated,
    }
    crd = crd_errors(doc)
    if kind == "unknown-field":
        assert crd, "the CRD accepted an unknown field"
    try:
        parsed = AgentFallbackPolicy.model_validate(doc)
    except ValidationError as error:
        assert_clear(model_errors(error), "policy models")
    else:
        assert kind != "unknown-field", "the models accepted an unknown field"
        problems = validate_policy(parsed.spec)
        if problems:
            assert_clear(problems, "policy core")
        if crd:
            assert_clear(crd, "policy CRD")
            assert problems, f"only the CRD rejects the policy: {crd}"
        assert (resolve_policy(parsed.spec, "hostile").error is None) == (not problems)
    # The operator resolves the policy from what its index holds, whatever that is.
    resolved = resolve_fallback_policy("hostile", {"hostile": mutated})
    outcome = run_to_the_end(verdict.workflow, resolved, seed, messages)
    event(f"policy {'invalid' if resolved.error else 'valid'}: {outcome.phase}")
    if resolved.error:
        assert outcome.phase is WorkflowPhase.FAILED and outcome.jobs == 0
        assert "hostile" in outcome.message


@st.composite
def policy_mutations(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = json.loads(json.dumps(spec))
    kind = draw(
        st.sampled_from(["none", "loop", "self", "critical-skip", "wrong-type", "unknown-field"])
    )
    rules = spec["rules"]
    if kind == "loop":
        spec["rules"] = [
            {"agent": "coder", "fallback": "reviewer"},
            {"agent": "reviewer", "fallback": "tester"},
            {"agent": "tester", "fallback": "coder"},
        ]
    elif kind == "self":
        spec["rules"] = [{"agent": "coder", "fallback": "coder"}]
    elif kind == "critical-skip":
        spec["default"] = {"criticality": "critical", "skipIfUnavailable": True}
    elif kind == "wrong-type" and leaves(spec):
        container, key = draw(st.sampled_from(leaves(spec)))
        container[key] = draw(JSON_VALUES)
    elif kind == "unknown-field":
        target = draw(st.sampled_from([spec, *rules]))
        target["podSpecPatch"] = draw(JSON_VALUES)
    return kind, spec


@settings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(TERMINATION_MESSAGES)
def test_a_termination_message_never_breaks_decoding_and_stays_bounded(
    message: str | None,
) -> None:
    result = decode_termination_message(message)
    wire = json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert len(wire.encode()) <= 12 * 1024
    if message is not None and len(message.encode("utf-8", "replace")) > TERMINATION_MESSAGE_LIMIT:
        assert result.truncated  # more than a termination message holds: read the log


# --------------------------------------------------------------------------------------------
# Specific hostile cases
# --------------------------------------------------------------------------------------------


def test_a_result_that_contains_template_syntax_is_inserted_literally() -> None:
    spec = {
        "agents": [{"name": "coder"}],
        "steps": [
            {"name": "s0", "agent": "coder", "prompt": "first"},
            {"name": "s1", "agent": "coder", "prompt": "got: {{ steps.s0.summary }}"},
        ],
    }
    wf = Workflow.model_validate(workflow_document(spec))
    w = World(wf)
    w.plan()
    hostile = "{{ steps.s1.summary }} {{ workflow.namespace }} \\{{ $(AGENTFLOW_STEP) `id`"
    w.succeed("s0", summary=hostile)
    p = w.plan()
    (create,) = [a for a in p.actions if isinstance(a, CreateJob)]
    assert create.prompt == f"got: {hostile}"
    check_job(create, wf)


def _kubelet_env(env: list[dict[str, Any]]) -> dict[str, str]:
    """What a container sees: literal values with ``$(VAR)`` expanded, in order."""
    seen: dict[str, str] = {}
    for entry in env:
        if "value" in entry:
            seen[entry["name"]] = expand_references(entry["value"], seen)
    return seen


def test_the_prompt_reaches_the_container_exactly_even_with_dollar_references() -> None:
    spec = {
        "agents": [{"name": "coder"}],
        "steps": [{"name": "s0", "agent": "coder", "prompt": "cost $(AGENTFLOW_STEP) $$ $x"}],
    }
    wf = Workflow.model_validate(workflow_document(spec))
    (create,) = [a for a in World(wf).plan().actions if isinstance(a, CreateJob)]
    manifest = build_step_job(WorkflowRef("hostile", "team", "u-1"), create)
    env = _kubelet_env(manifest["spec"]["template"]["spec"]["containers"][0]["env"])
    assert env["AGENTFLOW_PROMPT"] == "cost $(AGENTFLOW_STEP) $$ $x"


_PLAN_ONE = textwrap.dedent(
    """
    import json, sys
    from agentflow.api.models import Workflow
    from agentflow.engine import plan
    from agentflow.engine.types import FallbackPolicy
    from agentflow.engine.types import no_cache
    from datetime import UTC, datetime

    wf = Workflow.model_validate({
        "metadata": {"name": "slow", "namespace": "team"},
        "spec": {
            "agents": [{"name": "a"}],
            "steps": [{"name": "s", "agent": "a", "when": sys.argv[1]}],
        },
    })
    p = plan(wf, FallbackPolicy(), [], no_cache, datetime.now(UTC))
    ready = [c.message for c in p.status.conditions if c.type == "Ready"]
    print(json.dumps({"phase": str(p.status.phase), "ready": ready[0]}))
    """
)
_ITEMS = "[" + ",".join(str(i) for i in range(30)) + "]"
_NESTED = "".join(f"{_ITEMS}.all(v{d}, " for d in range(6)) + "true" + ")" * 6
# Compiling a regular expression near the library's size limit takes about 0.1 s, every time.
_REGEX = '!"x".matches("\\\\w{200}")'


@pytest.mark.parametrize(
    ("when", "verdict"),
    [
        (_NESTED, "nest more than 2 deep"),
        ("'''it's''' != '' && " + _NESTED, "nest more than 2 deep"),
        ('r"\\" != "" && ' + _NESTED, "nest more than 2 deep"),
        ('br"\\" != b"" && ' + _NESTED, "nest more than 2 deep"),
        ('true // "\n && ' + _NESTED, "nest more than 2 deep"),
        # Within the nesting bound, or with no macro at all: only the time budget stops these.
        (f"[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, {_REGEX}))", "longer than"),
        (" && ".join([_REGEX] * 30), "longer than"),
    ],
    ids=["nested", "triple-quoted", "raw", "raw-bytes", "comment", "regex-x100", "regex-x30"],
)
def test_a_costly_when_expression_is_rejected_or_cut_short(when: str, verdict: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PLAN_ONE, when],
            timeout=5,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("planning one Workflow with a costly `when` took over 5 s")
    outcome = json.loads(done.stdout)
    assert outcome["phase"] == "Failed", outcome
    assert "spec.steps[0].when: " in outcome["ready"], outcome
    assert verdict in outcome["ready"], outcome


@pytest.mark.parametrize(
    "name",
    ["ステップ", "a" * 41, "-lead", "UPPER", "a_b", "", "a\u200bb", "😀"],
)
def test_a_bad_step_name_is_rejected_by_both_the_crd_and_the_models(name: str) -> None:
    doc = workflow_document({"agents": [{"name": "c"}], "steps": [{"name": name, "agent": "c"}]})
    verdict = judge_workflow(doc)
    assert_clear(verdict.crd, "CRD")
    assert any("spec.steps.0.name" in m for m in verdict.crd), verdict.crd
    assert verdict.workflow is None
    assert any(m.startswith("spec.steps.0.name") for m in verdict.lax), verdict.lax


def test_names_a_field_is_not_trivially_true() -> None:
    assert not names_a_field("something went wrong")
    assert not names_a_field("")
    assert names_a_field("spec.steps[0].when: invalid CEL")
    assert all(c in string.ascii_letters for c in "".join(FIELD_NAMES))
