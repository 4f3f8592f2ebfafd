"""The container a step's attempt runs: its agent template with the step's override merged."""

from __future__ import annotations

from collections.abc import Mapping

from agentflow.api.models import DEFAULT_AGENT_IMAGE, AgentTemplate, EnvVar, Step, WorkflowSpec
from agentflow.engine.templating import TemplateError, render_inputs


def _merge_env(base: list[EnvVar], changes: list[EnvVar]) -> list[EnvVar]:
    by_name = {env.name: env for env in changes}
    merged = [by_name.pop(env.name, env) for env in base]
    merged.extend(env for env in changes if env.name in by_name)
    return merged


def resolve_agent(spec: WorkflowSpec, step: Step, agent: str | None = None) -> AgentTemplate:
    """The resolved template of ``agent`` (default: the step's own agent) for ``step``.

    The step's ``override`` applies to its own agent only: a fallback agent runs as declared,
    because an image or model chosen for one agent means nothing for another.  The image
    defaults to the project's agent runner.  Raises KeyError for an undeclared agent.
    """
    name = agent or step.agent
    template = next((a for a in spec.agents if a.name == name), None)
    if template is None:
        raise KeyError(name)
    override = step.override if name == step.agent else None
    if override is None:
        if template.image is not None:
            return template
        return template.model_copy(update={"image": DEFAULT_AGENT_IMAGE})
    return template.model_copy(
        update={
            "image": override.image or template.image or DEFAULT_AGENT_IMAGE,
            "model": override.model if override.model is not None else template.model,
            "args": override.args if override.args is not None else template.args,
            "env": _merge_env(template.env, override.env),
            "resources": override.resources or template.resources,
        }
    )


def with_inputs(agent: AgentTemplate, inputs: Mapping[str, str]) -> AgentTemplate:
    """``agent`` with ``{{ inputs.<name> }}`` in its literal env values replaced (the rest of
    a value stays as written).

    Raises TemplateError (naming the variable) for an input validation would have refused.
    """
    if not any(var.value is not None and "{{" in var.value for var in agent.env):
        return agent
    env = []
    for var in agent.env:
        if var.value is None:
            env.append(var)
            continue
        try:
            env.append(var.model_copy(update={"value": render_inputs(var.value, inputs)}))
        except TemplateError as e:
            raise TemplateError(f"env {var.name}: {e}") from None
    return agent.model_copy(update={"env": env})
