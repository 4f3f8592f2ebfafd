"""Checks a WorkflowSpec beyond its schema: references between steps, agents and templates."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Sequence

from pydantic import ValidationError

from agentflow.api.celenv import ExpressionKind
from agentflow.api.models import EnvVar, WorkflowSpec
from agentflow.engine.expressions import check_expression
from agentflow.engine.graph import Ancestors, find_cycle, step_dependencies
from agentflow.engine.templating import TemplateError, input_references, template_references


def field_path(loc: Sequence[int | str]) -> str:
    """``('spec', 'steps', 1, 'dependsOn')`` as ``spec.steps[1].dependsOn``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "(" in part:
            continue  # pydantic's tag for a validator or union member, not a field
        else:
            out += f".{part}" if out else part
    return out


def model_error_messages(error: ValidationError) -> list[str]:
    """One message per error of a whole object's validation, naming the field by its path
    from the object's root (``metadata.name``, ``spec.steps[0].when``).

    A message that already starts with its field's path (a validator of ``metadata`` that
    names ``metadata.name``) is not prefixed with it again.
    """
    messages = []
    for item in error.errors():
        message = str(item["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        path = field_path(item["loc"])
        messages.append(f"{path}: {message}" if path and not message.startswith(path) else message)
    return messages


def validate_workflow(spec: WorkflowSpec) -> list[str]:
    """Every problem with ``spec``, one message each, naming the field.

    Unknown or duplicate ``dependsOn`` entries, dependency cycles, undeclared agents, CEL
    (``when``, ``accept``, ``repeat.until``) that does not compile, reads unknown variables,
    fields, inputs or non-upstream steps, or does not type-check against its kind's environment
    (``agentflow.api.celenv``), prompt references that are malformed, unknown or not upstream,
    and ``{{ inputs.<name> }}`` of inputs that are not declared (in prompts and agents' env
    values).  A step may refer to itself only inside a ``repeat`` (its previous iteration).
    """
    problems: list[str] = []
    inputs = {p.name for p in spec.arguments}
    for i, agent in enumerate(spec.agents):
        problems.extend(_env_problems(f"spec.agents[{i}]", agent.env, inputs))
    for i, step in enumerate(spec.steps):
        if step.override is not None:
            problems.extend(_env_problems(f"spec.steps[{i}].override", step.override.env, inputs))
    names = [s.name for s in spec.steps]
    known = set(names)
    agents = [a.name for a in spec.agents]
    declared = ", ".join(agents) if agents else "none"
    for i, step in enumerate(spec.steps):
        seen: set[str] = set()
        for dep in step.depends_on:
            if dep in seen:
                problems.append(f"spec.steps[{i}].dependsOn: duplicate step {dep!r}")
            elif dep not in known:
                problems.append(f"spec.steps[{i}].dependsOn: unknown step {dep!r}")
            seen.add(dep)
        if step.agent not in agents:
            problems.append(
                f"spec.steps[{i}].agent: unknown agent {step.agent!r} (declared: {declared})"
            )

    deps = step_dependencies(spec)
    cycle = find_cycle(deps)
    if cycle is not None:
        problems.append(f"spec.steps: dependency cycle {' -> '.join(cycle)}")
    ancestors = Ancestors(deps)

    for i, step in enumerate(spec.steps):
        name = step.name

        if step.when is not None:
            found, referenced = check_expression(step.when, ExpressionKind.WHEN, inputs=inputs)
            problems.extend(f"spec.steps[{i}].when: {p}" for p in found)
            problems.extend(_not_upstream(i, "when", referenced, known, ancestors, name))
        if step.accept is not None:
            found, referenced = check_expression(step.accept, ExpressionKind.ACCEPT, inputs=inputs)
            problems.extend(f"spec.steps[{i}].accept: {p}" for p in found)
            problems.extend(_not_upstream(i, "accept", referenced, known, ancestors, name))
        if step.repeat is not None:
            found, referenced = check_expression(
                step.repeat.until, ExpressionKind.UNTIL, inputs=inputs
            )
            problems.extend(f"spec.steps[{i}].repeat.until: {p}" for p in found)
            problems.extend(_not_upstream(i, "repeat.until", referenced, known, ancestors, name))
        try:
            refs = template_references(step.prompt)
        except TemplateError as e:
            problems.append(f"spec.steps[{i}].prompt: {e}")
            continue
        reported: set[str] = set()
        unknown_inputs: set[str] = set()
        for ref in refs:
            if ref.input is not None and ref.input not in inputs | unknown_inputs:
                problems.append(f"spec.steps[{i}].prompt: {_unknown_input(ref.input, inputs)}")
                unknown_inputs.add(ref.input)
            other = ref.step
            if other is None or other in reported:
                continue
            if other == name and step.repeat is not None:
                continue
            if other not in known:
                problems.append(f"spec.steps[{i}].prompt: unknown reference {ref}")
            elif not ancestors.contains(name, other):
                problems.append(
                    f"spec.steps[{i}].prompt: references step {other!r} "
                    "which is not an upstream dependency"
                )
            reported.add(other)
    return problems


def _unknown_input(name: str, inputs: Collection[str]) -> str:
    declared = ", ".join(sorted(inputs)) or "none"
    return f"unknown input {{{{ inputs.{name} }}}} (declared in spec.arguments: {declared})"


def _env_problems(field: str, env: Sequence[EnvVar], inputs: Collection[str]) -> list[str]:
    """References to undeclared inputs in literal env values."""
    problems: list[str] = []
    for j, var in enumerate(env):
        if var.value is None:
            continue
        for name in dict.fromkeys(input_references(var.value)):
            if name not in inputs:
                problems.append(f"{field}.env[{j}].value: {_unknown_input(name, inputs)}")
    return problems


def _not_upstream(
    index: int,
    field: str,
    referenced: set[str],
    known: set[str],
    ancestors: Ancestors,
    step: str,
) -> list[str]:
    problems = []
    for name in sorted(referenced):
        if name not in known:
            problems.append(f"spec.steps[{index}].{field}: unknown step {name!r}")
        elif not ancestors.contains(step, name):
            problems.append(
                f"spec.steps[{index}].{field}: references step {name!r} "
                "which is not an upstream dependency"
            )
    return problems


def secret_references_not_allowed(spec: WorkflowSpec, allowed: Collection[str]) -> list[str]:
    """Every Secret reference of ``spec`` whose name matches none of ``allowed``, naming the
    field and the Secret.

    ``allowed`` holds Secret names or ``fnmatch`` patterns (``llm-*``); an empty collection
    allows no reference.  Every declared agent's env and every step's ``override.env`` is
    checked, used or not: a fallback may run any declared agent.
    """
    problems: list[str] = []

    def check(field: str, env: list[EnvVar]) -> None:
        for j, var in enumerate(env):
            if var.value_from is None:
                continue
            name = var.value_from.secret_key_ref.name
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
                problems.append(
                    f"{field}.env[{j}].valueFrom.secretKeyRef.name: Secret {name!r} is not "
                    f"one the operator allows agents to reference "
                    f"(allowed: {', '.join(allowed) or 'none'})"
                )

    for i, agent in enumerate(spec.agents):
        check(f"spec.agents[{i}]", agent.env)
    for i, step in enumerate(spec.steps):
        if step.override is not None:
            check(f"spec.steps[{i}].override", step.override.env)
    return problems
