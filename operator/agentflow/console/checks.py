"""Offline validation of agentflow resources, the way the operator would judge them.

Three layers, each message naming the file, the resource (``Kind/name``) and the field in the
camelCase of the wire format:

1. the pydantic models (the schema, bounds, unique names);
2. the engine's checks (dependency cycles, unknown references, CEL, prompt templates,
   fallback chains that loop);
3. across documents: a Workflow's ``fallbackPolicyRef`` must be among the documents, and the
   fallback agents of the policy a Workflow uses must be declared in that Workflow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from agentflow import engine
from agentflow.api.models import (
    API_VERSION,
    GROUP,
    AgentFallbackPolicy,
    Workflow,
)
from agentflow.console.documents import Document

WORKFLOW = "Workflow"
POLICY = "AgentFallbackPolicy"
# The policy a Workflow without fallbackPolicyRef uses, when the namespace has one.
DEFAULT_POLICY = "default"


@dataclass
class Report:
    """What validation found, in document order."""

    valid: list[str] = field(default_factory=list)  # "path: Kind/name" of resources without errors
    invalid: list[str] = field(default_factory=list)  # the same, of resources with errors
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workflows: list[tuple[Document, Workflow]] = field(default_factory=list)
    policies: list[tuple[Document, AgentFallbackPolicy]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _schema_problems(doc: Document) -> list[str]:
    api_version = doc.body.get("apiVersion")
    if api_version is None:
        return [f"apiVersion: missing (expected {API_VERSION})"]
    if api_version != API_VERSION:
        return [f"apiVersion: {api_version!r} is not served (expected {API_VERSION})"]
    return []


def _is_ours(doc: Document) -> bool:
    """A document of this API group, or one of our kinds without an apiVersion."""
    api_version = doc.body.get("apiVersion")
    if api_version is None:
        return doc.kind in (WORKFLOW, POLICY)
    return str(api_version).split("/", 1)[0] == GROUP


def _check_workflow(doc: Document, report: Report) -> list[str]:
    problems = _schema_problems(doc)
    if problems:
        return problems
    body = doc.body
    meta = body.get("metadata")
    generate = meta.get("generateName") if isinstance(meta, dict) else None
    if isinstance(meta, dict) and not meta.get("name") and isinstance(generate, str):
        # The API server appends five characters to generateName.
        body = {**body, "metadata": {**meta, "name": generate + "xxxxx"}}
        body["metadata"].pop("generateName")
    try:
        # Strict, as the API server is: "5" is not an integer, "yes" is not a boolean.
        workflow = Workflow.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as e:
        return engine.model_error_messages(e)
    report.workflows.append((doc, workflow))
    return engine.validate_workflow(workflow.spec)


def _check_policy(doc: Document, report: Report) -> list[str]:
    problems = _schema_problems(doc)
    if problems:
        return problems
    try:
        policy = AgentFallbackPolicy.model_validate_json(json.dumps(doc.body), strict=True)
    except ValidationError as e:
        return engine.model_error_messages(e)
    report.policies.append((doc, policy))
    return engine.validate_policy(policy.spec)


def _undeclared_fallbacks(workflow: Workflow, policy: AgentFallbackPolicy) -> list[str]:
    """Fallback agents the policy would run for this Workflow that it does not declare."""
    resolved = engine.resolve_policy(policy.spec, policy.metadata.name)
    declared = {a.name for a in workflow.spec.agents}
    steps = (s.agent for s in workflow.spec.steps)
    return [
        f"spec.agents: fallback agent {fallback!r} of agent {agent!r} "
        f"(AgentFallbackPolicy/{policy.metadata.name}) is not declared"
        for fallback, agent in engine.undeclared_fallbacks(resolved, steps, declared)
    ]


def _cross_document(report: Report, require_policy_refs: bool) -> dict[int, list[str]]:
    """Problems between documents, keyed by ``id()`` of the Workflow's document."""
    policies = {
        (doc.namespace, policy.metadata.name): policy
        for doc, policy in report.policies
        if not engine.validate_policy(policy.spec)  # an invalid policy is reported on its own
    }
    defined = {(doc.namespace, policy.metadata.name) for doc, policy in report.policies}
    found: dict[int, list[str]] = {}
    for doc, workflow in report.workflows:
        problems: list[str] = []
        ref = workflow.spec.fallback_policy_ref
        name = ref.name if ref is not None else DEFAULT_POLICY
        if ref is not None and (doc.namespace, name) not in defined and require_policy_refs:
            problems.append(
                f"spec.fallbackPolicyRef.name: AgentFallbackPolicy {name!r} is not defined "
                "in the given files"
            )
        policy = policies.get((doc.namespace, name))
        if policy is not None:
            problems.extend(_undeclared_fallbacks(workflow, policy))
        if problems:
            found[id(doc)] = problems
    return found


def validate_documents(documents: Sequence[Document], require_policy_refs: bool = True) -> Report:
    """Validate every agentflow resource among ``documents``; other kinds become notes.

    ``require_policy_refs``: a ``fallbackPolicyRef`` must name a policy among the documents
    (``agentflow validate``); ``submit`` turns it off, the policy may already be in the cluster.
    """
    report = Report()
    own: list[tuple[Document, list[str]]] = []
    for doc in documents:
        if not _is_ours(doc):
            report.notes.append(f"{doc.path}: {doc.label}: skipped (not an agentflow resource)")
        elif doc.kind == WORKFLOW:
            own.append((doc, _check_workflow(doc, report)))
        elif doc.kind == POLICY:
            own.append((doc, _check_policy(doc, report)))
        else:
            own.append((doc, [f"kind: unknown kind {doc.kind!r} in {GROUP}"]))
    cross = _cross_document(report, require_policy_refs)
    for doc, problems in own:
        problems = problems + cross.get(id(doc), [])
        if problems:
            report.invalid.append(f"{doc.path}: {doc.label}")
            report.errors.extend(f"{doc.path}: {doc.label}: {p}" for p in problems)
        else:
            report.valid.append(f"{doc.path}: {doc.label}")
    return report
