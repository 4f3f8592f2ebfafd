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

import json
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError as ModelError

from agentflow.api.crdgen import KINDS, custom_resource_definition
from agentflow.api.models import AgentFallbackPolicy, Workflow
from agentflow.engine import validate_policy, validate_workflow
from tests.support.crd_schema import AGENTFLOW_KINDS, CRDS, EXAMPLES, crd_errors

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
    Case(
        "inputs",
        workflow(arguments=[{"name": "a", "value": "1"}, {"name": "b_2", "default": ""}]),
        None,
        True,
    ),
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
    Case(
        "input-without-value-or-default",
        workflow(arguments=[{"name": "target", "description": "x"}]),
        "is required: set its value",
        False,
    ),
    Case(
        "input-named-a-cel-word",
        workflow(arguments=[{"name": "in", "default": "x"}]),
        "named after a word CEL reserves",
        False,
    ),
    Case(
        "duplicate-input",
        workflow(arguments=[{"name": "a", "default": "1"}, {"name": "a", "value": "2"}]),
        "Duplicate value",
        False,
    ),
    Case(
        "input-name-pattern",
        workflow(arguments=[{"name": "with-dash", "default": "1"}]),
        "does not match",
        False,
    ),
    Case(
        "when-reads-an-undeclared-input",
        workflow(steps=[{"name": "plan", "agent": "coder", "when": "inputs.ghost == 'x'"}]),
        None,
        False,
    ),
    Case("budget", workflow(budget={"maxTokens": 5000, "maxCost": "0.25"}), None, True),
    Case("budget-empty", workflow(budget={}), "budget: set maxTokens, maxCost or both", False),
    Case("budget-cost-pattern", workflow(budget={"maxCost": "1e3"}), "does not match", False),
    Case("budget-tokens-zero", workflow(budget={"maxTokens": 0}), "minimum", False),
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
    # Workspaces.
    Case(
        "workspace-template",
        workflow(workspace={"volumeClaimTemplate": {"storage": "1Gi"}}),
        None,
        True,
    ),
    Case("workspace-claim", workflow(workspace={"claimName": "shared"}), None, True),
    Case(
        "workspace-rwx-parallel",
        workflow(
            strategy="Parallel",
            workspace={"volumeClaimTemplate": {"storage": "1Gi", "accessModes": ["ReadWriteMany"]}},
        ),
        None,
        True,
    ),
    Case(
        "workspace-rwo-dag-one-at-a-time",
        workflow(
            strategy="DAG",
            parallelism=1,
            workspace={"volumeClaimTemplate": {"storage": "1Gi"}},
        ),
        None,
        True,
    ),
    Case(
        "workspace-parallel-existing-claim",
        workflow(strategy="Parallel", workspace={"claimName": "shared"}),
        None,
        True,
    ),
    Case(
        "workspace-both",
        workflow(workspace={"claimName": "shared", "volumeClaimTemplate": {"storage": "1Gi"}}),
        "set exactly one of volumeClaimTemplate or claimName",
        False,
    ),
    Case(
        "workspace-neither",
        workflow(workspace={}),
        "set exactly one of volumeClaimTemplate or claimName",
        False,
    ),
    Case(
        "workspace-rwo-parallel",
        workflow(strategy="Parallel", workspace={"volumeClaimTemplate": {"storage": "1Gi"}}),
        "ReadWriteOnce and ReadWriteOncePod claims cannot serve steps that run at once",
        False,
    ),
    Case(
        "workspace-rwop-dag",
        workflow(
            strategy="DAG",
            parallelism=2,
            workspace={
                "volumeClaimTemplate": {
                    "storage": "1Gi",
                    "accessModes": ["ReadWriteMany", "ReadWriteOncePod"],
                }
            },
        ),
        "ReadWriteOnce and ReadWriteOncePod claims cannot serve steps that run at once",
        False,
    ),
    Case(
        "workspace-no-size",
        workflow(workspace={"volumeClaimTemplate": {}}),
        "'storage' is a required property",
        False,
    ),
    Case(
        "workspace-block-mode",
        workflow(workspace={"volumeClaimTemplate": {"storage": "1Gi", "volumeMode": "Block"}}),
        "is not one of",
        False,
    ),
    Case(
        "workspace-bad-access-mode",
        workflow(workspace={"volumeClaimTemplate": {"storage": "1Gi", "accessModes": ["RWX"]}}),
        "is not one of",
        False,
    ),
    Case(
        "workspace-bad-claim-name",
        workflow(workspace={"claimName": "Not_A_Name"}),
        "does not match",
        False,
    ),
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
        "accept-does-not-compile",
        workflow(steps=[{"name": "plan", "agent": "coder", "accept": "result.("}]),
        None,
        False,
    ),
    Case(
        "accept-and-on-failure",
        workflow(
            steps=[{"name": "plan", "agent": "coder", "accept": "result.metrics.extra.score > 1"}]
        ),
        None,
        True,
    ),
    Case(
        "on-failure-every-setting",
        policy(
            rules=[
                {
                    "agent": "a",
                    "fallback": "b",
                    "onFailure": [
                        {
                            "classes": ["RateLimited", "Overloaded"],
                            "action": "RetrySameAgent",
                            "maxWaitSeconds": 120,
                            "countsAgainstAttempts": False,
                            "maxRetries": 3,
                        },
                        {"classes": ["AuthFailed", "QualityGateFailed"], "action": "Fallback"},
                        {"classes": ["InvalidRequest"], "action": "Fail"},
                    ],
                }
            ]
        ),
        None,
        True,
    ),
    Case(
        "on-failure-class-twice",
        policy(
            default={
                "onFailure": [
                    {"classes": ["RateLimited"], "action": "Fallback"},
                    {"classes": ["Timeout", "RateLimited"], "action": "Fail"},
                ]
            }
        ),
        "a failure class may appear in one onFailure entry only",
        False,
    ),
    Case(
        "on-failure-retry-settings-without-retry",
        policy(
            default={"onFailure": [{"classes": ["Timeout"], "action": "Fail", "maxRetries": 2}]}
        ),
        "apply only to action RetrySameAgent",
        False,
    ),
    Case(
        "on-failure-unknown-class",
        policy(default={"onFailure": [{"classes": ["Slow"], "action": "Fail"}]}),
        "'Slow' is not one of",
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
    rules = [
        rule
        for info in KINDS
        for rule in _rules(custom_resource_definition(info)["spec"]["versions"][0]["schema"])
    ]
    # A rule with a messageExpression is answered with its value instead (checked below).
    rule_messages = {rule["message"] for rule in rules if "messageExpression" not in rule}
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
            if case.id == "input-without-value-or-default":
                assert "spec.arguments[0]: Invalid value: input target is required" in (
                    applied.stderr
                )
