"""The example files validate, and the CRD schemas agree with the models about what is valid.

Two verdicts are compared on every document:

- the CRD's, as the API server would give it: the generated ``openAPIV3Schema`` checked with
  ``jsonschema`` after API-server defaulting, with unknown fields rejected (kubectl's default
  strict field validation), ``x-kubernetes-list-type`` uniqueness and the
  ``x-kubernetes-validations`` CEL rules evaluated with the ``cel`` library;
- the operator's: the pydantic model plus the engine's checks beyond the schema
  (``validate_workflow`` / ``validate_policy``).

The CRD may accept less than the operator never: whatever it rejects the operator rejects too.
A few things only the operator can see (dependency cycles, CEL inside ``when``) are listed as
such below.  With a control plane available, the same documents go to the real API server.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel
import jsonschema
import pytest
import yaml
from jsonschema.exceptions import ValidationError
from pydantic import ValidationError as ModelError

from agentflow.api.crdgen import KINDS, custom_resource_definition
from agentflow.api.models import AgentFallbackPolicy, Workflow
from agentflow.engine import validate_policy, validate_workflow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "workflows"
CRDS = REPO / "crds"
AGENTFLOW_KINDS = {"Workflow", "AgentFallbackPolicy"}


# --------------------------------------------------------------------------------------------
# The CRD's verdict
# --------------------------------------------------------------------------------------------


def _sets_contains(container: list[Any], items: list[Any]) -> bool:
    """Kubernetes' ``sets.contains(list, sublist)``: every element of sublist is in list."""
    return all(item in container for item in items)


def _json_schema(node: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAPI v3 node as JSON Schema: nullable as a type, unknown fields rejected."""
    out = dict(node)
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: _json_schema(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    if isinstance(node.get("items"), Mapping):
        out["items"] = _json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _json_schema(node["additionalProperties"])
    return out


def _apply_defaults(node: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it before validation."""
    if isinstance(value, dict) and "properties" in node:
        for name, prop in node["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = _apply_defaults(prop, value[name])
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), Mapping):
        for key in value:
            value[key] = _apply_defaults(node["additionalProperties"], value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [_apply_defaults(node["items"], item) for item in value]
    return value


def _cel_rules(
    validator: Any, rules: list[dict[str, str]], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    context = cel.Context()
    context.add_function("sets.contains", _sets_contains)
    context.add_variable("self", instance)
    for rule in rules:
        try:
            result = cel.evaluate(rule["rule"], context)
        except Exception as error:  # the API server reports a failing rule as invalid too
            yield ValidationError(f"{rule['message']} (rule error: {error})")
            continue
        if result is not True:
            yield ValidationError(rule["message"])


def _list_type(
    validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
    elif list_type == "set":
        seen = [json.dumps(item, sort_keys=True) for item in instance]
    else:
        return
    duplicates = sorted({repr(key) for key in seen if seen.count(key) > 1})
    if duplicates:
        yield ValidationError(f"Duplicate value: {', '.join(duplicates)}")


KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-type": _list_type},
)


@dataclass
class CrdSchema:
    schema: Mapping[str, Any]
    validator: Any = field(init=False)

    def __post_init__(self) -> None:
        self.validator = KubernetesValidator(_json_schema(self.schema))

    def errors(self, document: Mapping[str, Any]) -> list[str]:
        defaulted = _apply_defaults(self.schema, copy.deepcopy(dict(document)))
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in self.validator.iter_errors(defaulted)
        ]


SCHEMAS = {
    info.kind: CrdSchema(
        custom_resource_definition(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    )
    for info in KINDS
}


def crd_errors(document: Mapping[str, Any]) -> list[str]:
    return SCHEMAS[document["kind"]].errors(document)


# --------------------------------------------------------------------------------------------
# The operator's verdict
# --------------------------------------------------------------------------------------------


def operator_errors(document: Mapping[str, Any]) -> list[str]:
    try:
        if document["kind"] == "Workflow":
            return validate_workflow(Workflow.model_validate(document).spec)
        return validate_policy(AgentFallbackPolicy.model_validate(document).spec)
    except ModelError as error:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]


# --------------------------------------------------------------------------------------------
# The example files
# --------------------------------------------------------------------------------------------


def example_files() -> list[Path]:
    return sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*.yml")])


def test_examples_include_a_workflow_and_a_policy() -> None:
    kinds = {
        doc.get("kind")
        for path in example_files()
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict)
    }
    assert {"Workflow", "AgentFallbackPolicy"} <= kinds, f"kinds in {EXAMPLES}: {kinds}"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_is_valid_for_the_crd_and_the_operator(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    ours = [doc for doc in documents if doc.get("kind") in AGENTFLOW_KINDS]
    assert ours, f"{path.name} holds no Workflow or AgentFallbackPolicy"
    for doc in ours:
        where = f"{path.name}: {doc['kind']} {doc.get('metadata', {}).get('name')}"
        assert doc["apiVersion"] == "agentflow.dev/v1alpha1", where
        assert crd_errors(doc) == [], where
        assert operator_errors(doc) == [], where


# --------------------------------------------------------------------------------------------
# Inline documents: both verdicts, and the reason when they differ
# --------------------------------------------------------------------------------------------


def workflow(**spec: Any) -> dict[str, Any]:
    spec.setdefault("agents", [{"name": "coder"}])
    spec.setdefault("steps", [{"name": "plan", "agent": "coder"}])
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "example"},
        "spec": spec,
    }


def policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "AgentFallbackPolicy",
        "metadata": {"name": "example"},
        "spec": spec,
    }


def steps(*pairs: tuple[str, list[str]]) -> list[dict[str, Any]]:
    return [{"name": n, "agent": "coder", "dependsOn": deps} for n, deps in pairs]


@dataclass(frozen=True)
class Case:
    id: str
    document: dict[str, Any]
    # None: valid; otherwise a text the CRD's error must contain.
    crd_error: str | None
    operator_valid: bool


CASES = [
    Case("minimal", workflow(), None, True),
    Case(
        "dag",
        workflow(strategy="DAG", steps=steps(("a", []), ("b", ["a"]), ("c", ["a", "b"]))),
        None,
        True,
    ),
    Case(
        "full-agent",
        workflow(
            agents=[
                {
                    "name": "coder",
                    "image": "example.test/agent:1",
                    "command": ["run"],
                    "env": [
                        {"name": "MODE", "value": "fast"},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
                    ],
                    "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
                }
            ],
            steps=[
                {
                    "name": "plan",
                    "agent": "coder",
                    "retries": {"limit": 2, "backoffFactor": 1.5},
                    "cache": {"ttlSeconds": 60},
                    "timeoutSeconds": 600,
                }
            ],
        ),
        None,
        True,
    ),
    Case("policy", policy(rules=[{"agent": "a", "fallback": "b"}]), None, True),
    Case("policy-default", policy(default={"criticality": "low"}), None, True),
    # Rejected by both.
    Case("no-steps", workflow(steps=[]), "should be non-empty", False),
    Case("step-name-pattern", workflow(steps=[{"name": "Plan", "agent": "coder"}]), "match", False),
    Case(
        "step-name-too-long",
        workflow(steps=[{"name": "x" * 41, "agent": "coder"}]),
        "is too long",
        False,
    ),
    Case(
        "name-too-long-for-a-label",
        {**workflow(), "metadata": {"name": "w" * 64}},
        "agentflow.dev/workflow label",
        False,
    ),
    Case("bad-strategy", workflow(strategy="Random"), "is not one of", False),
    Case("parallelism-zero", workflow(parallelism=0), "less than the minimum", False),
    Case("unknown-field", workflow(colour="red"), "Additional properties", False),
    Case(
        "missing-agent-field",
        workflow(steps=[{"name": "plan"}]),
        "'agent' is a required property",
        False,
    ),
    Case(
        "duplicate-step",
        workflow(steps=[{"name": "a", "agent": "coder"}, {"name": "a", "agent": "coder"}]),
        "Duplicate value",
        False,
    ),
    Case(
        "duplicate-agent",
        workflow(agents=[{"name": "coder"}, {"name": "coder"}]),
        "Duplicate value",
        False,
    ),
    Case(
        "duplicate-dependency",
        workflow(steps=steps(("a", []), ("b", ["a", "a"]))),
        "Duplicate value",
        False,
    ),
    Case(
        "unknown-dependency",
        workflow(steps=steps(("a", []), ("b", ["nope"]))),
        "dependsOn must be a step",
        False,
    ),
    Case(
        "self-dependency",
        workflow(steps=steps(("a", ["a"]))),
        "must not list itself in dependsOn",
        False,
    ),
    Case(
        "undeclared-agent",
        workflow(steps=[{"name": "plan", "agent": "stranger"}]),
        "must be declared in spec.agents",
        False,
    ),
    Case("no-agents", workflow(agents=[]), "must be declared in spec.agents", False),
    Case(
        "env-without-value",
        workflow(agents=[{"name": "coder", "env": [{"name": "A"}]}]),
        "exactly one of value or valueFrom",
        False,
    ),
    Case(
        "env-with-both",
        workflow(
            agents=[
                {
                    "name": "coder",
                    "env": [
                        {
                            "name": "A",
                            "value": "x",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        }
                    ],
                }
            ]
        ),
        "exactly one of value or valueFrom",
        False,
    ),
    Case(
        "bad-quantity",
        workflow(agents=[{"name": "coder", "resources": {"limits": {"cpu": "lots"}}}]),
        "does not match",
        False,
    ),
    Case("fallback-to-itself", policy(rules=[{"agent": "a", "fallback": "a"}]), "differ", False),
    Case(
        "critical-skipped",
        policy(rules=[{"agent": "a", "criticality": "critical", "skipIfUnavailable": True}]),
        "skipIfUnavailable must be false",
        False,
    ),
    Case(
        "critical-default-skipped",
        policy(default={"criticality": "critical", "skipIfUnavailable": True}),
        "skipIfUnavailable must be false",
        False,
    ),
    Case(
        "duplicate-rule",
        policy(rules=[{"agent": "a"}, {"agent": "a", "fallback": "b"}]),
        "Duplicate value",
        False,
    ),
    Case("max-attempts", policy(rules=[{"agent": "a", "maxAttempts": 11}]), "maximum", False),
    # Only the operator can tell: these need a graph search or a CEL compiler, which a
    # validation rule cannot run within the API server's cost budget.
    Case(
        "dependency-cycle",
        workflow(strategy="DAG", steps=steps(("a", ["b"]), ("b", ["a"]))),
        None,
        False,
    ),
    Case(
        "when-does-not-compile",
        workflow(steps=[{"name": "plan", "agent": "coder", "when": "result.("}]),
        None,
        False,
    ),
    Case(
        "fallback-loop",
        policy(rules=[{"agent": "a", "fallback": "b"}, {"agent": "b", "fallback": "a"}]),
        None,
        False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_crd_and_operator_verdicts(case: Case) -> None:
    crd = crd_errors(case.document)
    operator = operator_errors(case.document)
    if case.crd_error is None:
        assert crd == []
    else:
        assert any(case.crd_error in e for e in crd), crd
    assert (operator == []) is case.operator_valid, operator
    # The CRD never rejects what the operator would run.
    assert not crd or operator


def test_cases_cover_every_cel_rule() -> None:
    messages = {
        rule["message"]
        for info in KINDS
        for rule in _rules(custom_resource_definition(info)["spec"]["versions"][0]["schema"])
    }
    failed = " ".join(e for case in CASES for e in crd_errors(case.document))
    assert [m for m in messages if m not in failed] == []


def _rules(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, Mapping):
        yield from node.get("x-kubernetes-validations", [])
        for value in node.values():
            yield from _rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _rules(value)


# --------------------------------------------------------------------------------------------
# The same documents on the real API server (integration: needs the local control plane)
# --------------------------------------------------------------------------------------------


def test_api_server_agrees_with_the_crd_verdicts(
    kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str
) -> None:
    installed = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert installed.returncode == 0, installed.stderr
    for crd in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        ready = kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        assert ready.returncode == 0, ready.stderr
    rule_messages = {
        rule["message"]
        for info in KINDS
        for rule in _rules(custom_resource_definition(info)["spec"]["versions"][0]["schema"])
    }
    for case in CASES:
        applied = kubectl(
            "create",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(case.document),
        )
        if case.crd_error is None:
            assert applied.returncode == 0, f"{case.id}: {applied.stderr}"
        else:
            assert applied.returncode != 0, f"{case.id}: the API server accepted it"
            # A CEL rule's message reaches the user unchanged.
            for message in rule_messages:
                if case.crd_error in message:
                    assert message in applied.stderr, f"{case.id}: {applied.stderr}"
