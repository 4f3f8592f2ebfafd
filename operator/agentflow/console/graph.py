"""A Workflow's step graph as Mermaid or Graphviz DOT text.

Edges are the effective dependencies (``engine.step_dependencies``: for Sequential the previous
step too).  A conditional step is drawn dashed with its ``when``; a repeated step is drawn
doubled with its ``until`` and iteration bound.
"""

from __future__ import annotations

from enum import StrEnum

from agentflow import engine
from agentflow.api.models import Step, Workflow


class GraphFormat(StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"


def _annotations(step: Step) -> list[str]:
    lines = [f"agent: {step.agent}"]
    if step.when is not None:
        lines.append(f"when: {step.when}")
    if step.repeat is not None:
        lines.append(f"repeat until: {step.repeat.until} (max {step.repeat.max_iterations})")
    return lines


def _mermaid_text(text: str) -> str:
    # Mermaid entity codes: '#quot;' and friends survive its parser inside a quoted label.
    return (
        text.replace("#", "#35;")
        .replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
    )


def _mermaid_id(name: str) -> str:
    # Step names are DNS labels (no "_"), so this cannot collide; "-" would read as an edge.
    return "s_" + name.replace("-", "_")


def mermaid(workflow: Workflow) -> str:
    spec = workflow.spec
    lines = [
        "flowchart TD",
        f"    %% Workflow {workflow.metadata.name} (strategy {spec.strategy.value})",
    ]
    conditional: list[str] = []
    repeated: list[str] = []
    for step in spec.steps:
        node = _mermaid_id(step.name)
        label = "<br/>".join(_mermaid_text(t) for t in [step.name, *_annotations(step)])
        if step.repeat is not None:
            lines.append(f'    {node}[["{label}"]]')
            repeated.append(node)
        elif step.when is not None:
            lines.append(f'    {node}{{{{"{label}"}}}}')
        else:
            lines.append(f'    {node}["{label}"]')
        if step.when is not None:
            conditional.append(node)
    for name, deps in engine.step_dependencies(spec).items():
        lines.extend(f"    {_mermaid_id(dep)} --> {_mermaid_id(name)}" for dep in deps)
    if conditional:
        lines.append("    classDef conditional stroke-dasharray: 5 5")
        lines.append(f"    class {','.join(conditional)} conditional")
    if repeated:
        lines.append("    classDef repeated stroke-width: 3px")
        lines.append(f"    class {','.join(repeated)} repeated")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot(workflow: Workflow) -> str:
    spec = workflow.spec
    lines = [
        f'digraph "{_dot_text(workflow.metadata.name)}" {{',
        f'    label="{_dot_text(workflow.metadata.name)} (strategy {spec.strategy.value})";',
        "    rankdir=TB;",
        "    node [shape=box];",
    ]
    for step in spec.steps:
        label = "\\n".join(_dot_text(t) for t in [step.name, *_annotations(step)])
        attributes = [f'label="{label}"']
        if step.when is not None:
            attributes.append("style=dashed")
        if step.repeat is not None:
            attributes.append("peripheries=2")
        lines.append(f'    "{step.name}" [{", ".join(attributes)}];')
    for name, deps in engine.step_dependencies(spec).items():
        lines.extend(f'    "{dep}" -> "{name}";' for dep in deps)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(workflow: Workflow, fmt: GraphFormat) -> str:
    return mermaid(workflow) if fmt is GraphFormat.MERMAID else dot(workflow)
