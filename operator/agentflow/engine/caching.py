"""Content-addressed keys for step results."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from agentflow.api.models import AgentTemplate, Step, StepResult, WorkflowSpec
from agentflow.report import decode_termination_message, encode_termination_message

# Bump when the meaning of a key's inputs changes, so old entries stop matching.
CACHE_KEY_VERSION = "agentflow.dev/cache-key/v1"
# What an output ConfigMap's name may be (a DNS subdomain).
_CONFIGMAP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _agent_identity(agent: AgentTemplate) -> dict[str, Any]:
    """What decides an agent's output: never a secret's value, which the spec never holds."""
    env: list[dict[str, Any]] = []
    for var in sorted(agent.env, key=lambda v: v.name):
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            env.append({"name": var.name, "secretKeyRef": {"name": ref.name, "key": ref.key}})
        else:
            env.append({"name": var.name, "value": var.value})
    return {
        "image": agent.image,
        "command": agent.command,
        "args": agent.args,
        "provider": str(agent.provider) if agent.provider is not None else None,
        "model": agent.model,
        "env": env,
    }


def cache_key(
    agent: AgentTemplate,
    prompt: str,
    upstream_digests: Mapping[str, str],
    iteration: int,
    *,
    inputs: Mapping[str, str] | None = None,
) -> str:
    """``sha256:<hex>`` of the canonical JSON of everything that decides a step's result.

    That is the resolved agent container (image, command, args, provider, model, env names with
    their literal values, inputs rendered in, or Secret references by name and key), the
    rendered prompt, the upstream digests sorted by step name, the iteration, the Workflow's
    inputs (``spec.arguments``: every one, by name, whether the step reads it or not) and
    :data:`CACHE_KEY_VERSION`.  The agent's name and resources are left out: they do not change
    what it produces.  A Workflow without inputs has the key it had before inputs existed.
    """
    document: dict[str, Any] = {
        "version": CACHE_KEY_VERSION,
        "agent": _agent_identity(agent),
        "prompt": prompt,
        "upstream": sorted(upstream_digests.items()),
        "iteration": iteration,
    }
    if inputs:
        document["inputs"] = sorted(inputs.items())
    return _sha256(json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def result_digest(result: StepResult) -> str:
    """The report's digest when the runner computed one, else a digest of the summary."""
    return result.digest or _sha256(result.summary)


def bounded_result(result: StepResult, full_size: int = 0) -> StepResult:
    """``result`` cut to the bounds of a fresh one, for a result read back from the cache.

    A fresh result reaches the status only through a termination message
    (:func:`~agentflow.report.decode_termination_message` of at most 4096 bytes, which also
    caps the summary, the artifacts and the metrics), so a cached one takes the same way: it
    is encoded as the runner would and decoded as the operator does.  A cache entry is a
    ConfigMap of up to 1 MiB that anyone allowed to write ConfigMaps in the namespace can
    edit; unbounded, one would grow the Workflow's status (and the prompts that quote it) past
    what etcd stores.  A result that was cut says ``truncated``; ``outputRef`` is kept when it
    can be a ConfigMap's name.  A result the operator stored itself comes back unchanged.
    ``full_size`` is the size of the report it was parsed from (a report read from a pod log),
    as the runner passes it: a larger one than a termination message holds says ``truncated``.
    """
    bounded = decode_termination_message(encode_termination_message(result, full_size=full_size))
    ref = result.output_ref
    return bounded.model_copy(
        update={"output_ref": ref if ref is not None and _CONFIGMAP_NAME.match(ref) else None}
    )


def caching_enabled(spec: WorkflowSpec, step: Step) -> bool:
    """Whether ``step``'s results are looked up in and written to the cache.

    ``cache.enabled`` when the step sets it; unset, caching is on, except in a Workflow with a
    ``workspace``: a result from the cache comes with no files, so a later step that reads the
    files the step writes would not find them.  Such a step opts in with ``enabled: true``
    (for a step whose only product is its report).
    """
    enabled = step.cache.enabled if step.cache is not None else None
    if enabled is not None:
        return enabled
    return spec.workspace is None
