"""The Kubernetes Job for one step attempt, built as plain data (pure; no API calls).

Security posture of every step pod: it passes the ``restricted`` Pod Security Standard
(non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp, read-only
root filesystem with an emptyDir for scratch) and gets no service-account token.  The prompt
and the context reach the agent as environment variables: data, never a shell command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentflow.api.models import DEFAULT_AGENT_IMAGE, EnvVar, Provider
from agentflow.engine.types import (
    LABEL_AGENT,
    LABEL_ATTEMPT,
    LABEL_ITERATION,
    LABEL_RUN,
    LABEL_STEP,
    LABEL_WORKFLOW,
    CreateJob,
)

CONTAINER_NAME = "agent"
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/tmp"
# Env names the operator sets; agent env entries may not override them.
RESERVED_ENV_PREFIX = "AGENTFLOW_"
RUNNER_REPOSITORY = DEFAULT_AGENT_IMAGE.rsplit(":", 1)[0]


@dataclass(frozen=True)
class WorkflowRef:
    name: str
    namespace: str
    uid: str


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
    if agent.provider is not None:
        env.append({"name": "AGENTFLOW_PROVIDER", "value": Provider(agent.provider).value})
    if agent.model is not None:
        env.append({"name": "AGENTFLOW_MODEL", "value": literal(agent.model)})
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
            "ownerReferences": [
                {
                    "apiVersion": "agentflow.dev/v1alpha1",
                    "kind": "Workflow",
                    "name": workflow.name,
                    "uid": workflow.uid,
                    "controller": True,
                }
            ],
        },
        "spec": job_spec,
    }
