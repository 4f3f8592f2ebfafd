"""The objects the operator makes for a Workflow, as plain data (pure; no API calls): the step
Jobs, the output ConfigMaps that keep full reports, and the cache ConfigMaps; their names, the
labels and annotations that mark them, and the owner reference.  The operator builds them and
the CLI reads them through this one module.

Security posture of every step pod: it passes the ``restricted`` Pod Security Standard
(non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp, read-only
root filesystem with an emptyDir for scratch) and gets no service-account token.  The prompt
and the context reach the agent as environment variables: data, never a shell command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agentflow.api.models import (
    API_VERSION,
    DEFAULT_AGENT_IMAGE,
    WORKSPACE_PATH,
    EnvVar,
    Provider,
    StepResult,
    WorkspaceClaimTemplate,
)
from agentflow.engine.caching import bounded_result
from agentflow.engine.names import (
    cache_configmap_name,
    output_configmap_name,
    workspace_claim_name,
)
from agentflow.engine.types import (
    ANNOTATION_RERUN,
    ANNOTATION_RETRY,
    LABEL_AGENT,
    LABEL_ATTEMPT,
    LABEL_CACHE,
    LABEL_ITERATION,
    LABEL_LIMIT,
    LABEL_OUTPUT,
    LABEL_RUN,
    LABEL_STEP,
    LABEL_WORKFLOW,
    CacheEntry,
    CreateJob,
    WriteCache,
)

# The labels and annotations are defined with the engine's data (the planner reads the rerun
# and retry annotations); they are named here for everyone who makes or reads child objects.
__all__ = [
    "ANNOTATION_RERUN",
    "ANNOTATION_RETRY",
    "LABEL_AGENT",
    "LABEL_ATTEMPT",
    "LABEL_CACHE",
    "LABEL_ITERATION",
    "LABEL_LIMIT",
    "LABEL_OUTPUT",
    "LABEL_RUN",
    "LABEL_STEP",
    "LABEL_WORKFLOW",
    "cache_configmap_name",
    "output_configmap_name",
    "workspace_claim_name",
]

CONTAINER_NAME = "agent"
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/tmp"
WORKSPACE_VOLUME = "workspace"
# Set in every step pod of a Workflow with a workspace: where it is (the container's working
# directory too).  The runner's command provider runs there and its artifacts are relative to it.
WORKSPACE_ENV = "AGENTFLOW_WORKSPACE"
# The label on a workspace claim the operator makes: the Workflow's name (the admission policy
# checks it against the claim's ownerReference).
LABEL_WORKSPACE = "agentflow.dev/workspace"
# Env names the operator sets; agent env entries may not override them.
RESERVED_ENV_PREFIX = "AGENTFLOW_"
RUNNER_REPOSITORY = DEFAULT_AGENT_IMAGE.rsplit(":", 1)[0]
# What is left of the Workflow's budget, in tokens: the runner's max-tokens bound.
BUDGET_MAX_TOKENS_ENV = "AGENTFLOW_BUDGET_MAX_TOKENS"


@dataclass(frozen=True)
class WorkflowRef:
    name: str
    namespace: str
    uid: str


def owner_reference(workflow: WorkflowRef) -> dict[str, Any]:
    """The controller reference that makes a child the Workflow's: the garbage collector
    deletes it with the Workflow, and the operator takes a child for the Workflow's only
    through it (the uid), never through its name or labels."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "name": workflow.name,
        "uid": workflow.uid,
        "controller": True,
    }


@dataclass(frozen=True)
class JobSettings:
    """Operator-wide settings for step Jobs (from the command line / Helm values)."""

    ttl_seconds_after_finished: int = 3600
    service_account_name: str | None = None
    run_as_user: int = 65532


def literal(value: str) -> str:
    """An env value the kubelet passes through unchanged.

    The kubelet expands ``$(NAME)`` in env values and reduces ``$$`` to ``$``; doubling every
    ``$`` keeps operator-set data (prompts, names) exactly as written, so a prompt cannot pull
    another variable, such as an API key, into itself.
    """
    return value.replace("$", "$$")


def _env_entry(var: EnvVar) -> dict[str, Any]:
    if var.value_from is not None:
        ref = var.value_from.secret_key_ref
        return {"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    return {"name": var.name, "value": var.value}


def step_env(workflow: WorkflowRef, action: CreateJob) -> list[dict[str, Any]]:
    agent = action.agent
    env: list[dict[str, Any]] = [
        {"name": "AGENTFLOW_WORKFLOW", "value": workflow.name},
        {"name": "AGENTFLOW_NAMESPACE", "value": workflow.namespace},
        {"name": "AGENTFLOW_STEP", "value": action.step},
        {"name": "AGENTFLOW_RUN", "value": str(action.run)},
        {"name": "AGENTFLOW_ITERATION", "value": str(action.iteration)},
        {"name": "AGENTFLOW_ATTEMPT", "value": str(action.attempt)},
        {"name": "AGENTFLOW_AGENT", "value": agent.name},
        {"name": "AGENTFLOW_PROMPT", "value": literal(action.prompt)},
    ]
    if action.workspace_claim is not None:
        env.append({"name": WORKSPACE_ENV, "value": WORKSPACE_PATH})
    if agent.provider is not None:
        env.append({"name": "AGENTFLOW_PROVIDER", "value": Provider(agent.provider).value})
    if agent.model is not None:
        env.append({"name": "AGENTFLOW_MODEL", "value": literal(agent.model)})
    if action.max_tokens is not None:
        env.append({"name": BUDGET_MAX_TOKENS_ENV, "value": str(action.max_tokens)})
    reserved = {e["name"] for e in env}
    # The agent's own env comes after, minus anything that would shadow the operator's values.
    env.extend(_env_entry(v) for v in agent.env if v.name not in reserved)
    return env


def build_step_job(
    workflow: WorkflowRef, action: CreateJob, settings: JobSettings | None = None
) -> dict[str, Any]:
    """The Job manifest for ``action``, owned by the Workflow (garbage-collected with it)."""
    settings = settings or JobSettings()
    agent = action.agent
    labels = {
        LABEL_WORKFLOW: workflow.name,
        LABEL_STEP: action.step,
        LABEL_RUN: str(action.run),
        LABEL_ITERATION: str(action.iteration),
        LABEL_ATTEMPT: str(action.attempt),
        LABEL_AGENT: agent.name,
    }
    if action.concurrency_limit is not None:
        # The operator counts the running Jobs of each concurrency limit by this label.
        labels[LABEL_LIMIT] = action.concurrency_limit
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": agent.image or DEFAULT_AGENT_IMAGE,
        "env": step_env(workflow, action),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}],
    }
    if agent.command:
        container["command"] = list(agent.command)
    if agent.args:
        container["args"] = list(agent.args)
    if agent.resources is not None:
        resources = {
            k: v
            for k, v in (("requests", agent.resources.requests), ("limits", agent.resources.limits))
            if v
        }
        if resources:
            container["resources"] = resources

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if action.workspace_claim is not None:
        # The shared directory, writable by the step's user through fsGroup, and the agent's
        # working directory (an image's own WORKDIR is replaced).
        container["volumeMounts"].append({"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_PATH})
        container["workingDir"] = WORKSPACE_PATH
        pod_spec["volumes"].append(
            {
                "name": WORKSPACE_VOLUME,
                "persistentVolumeClaim": {"claimName": action.workspace_claim},
            }
        )
    if settings.service_account_name:
        pod_spec["serviceAccountName"] = settings.service_account_name

    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # retries are the operator's, so each attempt is exactly one pod
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if action.timeout_seconds is not None:
        job_spec["activeDeadlineSeconds"] = action.timeout_seconds

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": action.job_name,
            "namespace": workflow.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(workflow)],
        },
        "spec": job_spec,
    }


def workspace_claim(
    workflow: WorkflowRef, name: str, template: WorkspaceClaimTemplate
) -> dict[str, Any]:
    """The PersistentVolumeClaim of a Workflow's ``spec.workspace.volumeClaimTemplate``, owned
    by the Workflow: the garbage collector deletes it (and, under the usual ``Delete`` reclaim
    policy of a provisioned volume, its files) with the Workflow."""
    spec: dict[str, Any] = {
        "accessModes": [str(m) for m in template.access_modes],
        "volumeMode": template.volume_mode,
        "resources": {"requests": {"storage": template.storage}},
    }
    if template.storage_class_name is not None:
        spec["storageClassName"] = template.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": workflow.namespace,
            "labels": {LABEL_WORKFLOW: workflow.name, LABEL_WORKSPACE: workflow.name},
            "ownerReferences": [owner_reference(workflow)],
        },
        "spec": spec,
    }


def owned_by(meta: Mapping[str, Any], uid: str) -> bool:
    """Whether ``meta`` (an object's metadata) has an ownerReference to the object ``uid``."""
    return bool(uid) and any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])


# The label the Job controller puts on a Job's pods.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def job_pods_selector(job_name: str) -> str:
    return f"{JOB_NAME_LABEL}={job_name}"


def job_log_pod(pods: Sequence[Mapping[str, Any]], job_uid: str | None) -> str | None:
    """The name of the pod whose log is the Job's, among the pods carrying its name's label.

    The pod must be the Job's by its ownerReference (the Job's ``uid``), not only by the label:
    a pod left from another Job of the same name is not this one's.  With ``backoffLimit: 0``
    a Job has one pod; should there be more, the newest is the one that ran last.  Without a
    uid (the Job itself is gone) any pod under the label counts.
    """
    owned = [
        p
        for p in pods
        if job_uid is None
        or any(
            o.get("uid") == job_uid for o in (p.get("metadata") or {}).get("ownerReferences") or []
        )
    ]
    if not owned:
        return None
    newest = max(owned, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    name: str = newest["metadata"]["name"]
    return name


# ---- output ConfigMaps: full reports --------------------------------------------------

OUTPUT_DATA_KEY = "report"


def output_configmap(wf: WorkflowRef, job_name: str, step: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": output_configmap_name(job_name),
            "namespace": wf.namespace,
            "labels": {LABEL_OUTPUT: wf.name, LABEL_WORKFLOW: wf.name, LABEL_STEP: step},
            "ownerReferences": [owner_reference(wf)],
        },
        "data": {OUTPUT_DATA_KEY: text},
    }


# ---- cache ConfigMaps ------------------------------------------------------------

CACHE_KEY_ANNOTATION = "agentflow.dev/cache-key"
CACHE_EXPIRES_ANNOTATION = "agentflow.dev/expires-at"
CACHE_CREATED_ANNOTATION = "agentflow.dev/created-at"
CACHE_DATA_KEY = "result.json"


def is_cache_configmap(cm: Mapping[str, Any]) -> bool:
    """Whether ``cm`` is a cache entry the operator wrote, as opposed to any ConfigMap that
    carries the cache label.

    An entry's name is the one its key annotation gives (:func:`cache_configmap_name`: 40 hex
    digits of the key's SHA-256), which no ConfigMap made for anything else has by accident;
    entries of every earlier version have it too.  A label alone is what a user's own
    ConfigMaps (a kustomize ``commonLabels``, a copy) may carry: the operator neither reads
    those nor deletes them.  Cache entries belong to no Workflow (they outlive it), so an
    ownerReference cannot mark them.
    """
    meta = cm.get("metadata") or {}
    key = (meta.get("annotations") or {}).get(CACHE_KEY_ANNOTATION)
    return isinstance(key, str) and meta.get("name") == cache_configmap_name(key)


def _aware(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def cache_entry_from_configmap(cm: Mapping[str, Any]) -> CacheEntry | None:
    """The entry in an operator's cache ConfigMap, its result cut to a fresh result's bounds;
    None for a ConfigMap that is not one (:func:`is_cache_configmap`) or does not parse."""
    if not is_cache_configmap(cm):
        return None
    meta = cm.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    try:
        result = StepResult.model_validate_json((cm.get("data") or {})[CACHE_DATA_KEY])
        return CacheEntry(
            key=annotations[CACHE_KEY_ANNOTATION],
            result=bounded_result(result),
            created_at=_aware(annotations[CACHE_CREATED_ANNOTATION]),
            expires_at=_aware(annotations[CACHE_EXPIRES_ANNOTATION]),
        )
    except (KeyError, TypeError, ValueError, ValidationError):
        return None


def cache_configmap_to_sweep(cm: Mapping[str, Any], now: datetime) -> bool:
    """Whether the expiry sweep deletes ``cm``: an operator's entry that expired or that no
    longer parses.  Any other ConfigMap carrying the cache label is left alone."""
    if not is_cache_configmap(cm):
        return False
    entry = cache_entry_from_configmap(cm)
    return entry is None or entry.expires_at <= now


def cache_configmap(namespace: str, action: WriteCache, now: datetime) -> dict[str, Any]:
    expires = now + timedelta(seconds=action.ttl_seconds)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cache_configmap_name(action.key),
            "namespace": namespace,
            "labels": {LABEL_CACHE: "true", LABEL_STEP: action.step},
            "annotations": {
                CACHE_KEY_ANNOTATION: action.key,
                CACHE_CREATED_ANNOTATION: now.isoformat(),
                CACHE_EXPIRES_ANNOTATION: expires.isoformat(),
            },
        },
        "data": {CACHE_DATA_KEY: action.result.model_dump_json(by_alias=True, exclude_none=True)},
    }
