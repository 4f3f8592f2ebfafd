"""The CEL environment of ``when``, ``repeat.until`` and ``accept``: one declaration of the
variables, their types and the values they have at runtime.

The types are declared here, from the status models where there is one (``Metrics`` is
derived from :class:`~agentflow.api.models.StepMetrics`), and the values an expression sees
at runtime are built from the same declaration (:func:`result_view`, :func:`step_view`,
:func:`activation`): a field is in the view exactly when it is declared, so the checker
(``agentflow.engine.expressions.check_expression``) and the evaluation cannot drift apart.
``docs/api.md`` is generated from it too (:func:`environment_markdown`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from agentflow.api.models import Repeat, Step, StepMetrics, StepResult, StepStatus


class ExpressionKind(StrEnum):
    """Where an expression is written; each kind has its own variables."""

    WHEN = "when"
    UNTIL = "repeat.until"
    ACCEPT = "accept"


@dataclass(frozen=True)
class CelType:
    """A CEL type: a scalar, ``list(element)``, ``map(string, element)`` or an object (a map
    whose keys are known: ``fields``)."""

    kind: str  # bool, int, uint, double, string, bytes, null, dyn, list, map, object
    element: CelType | None = None
    fields: tuple[CelField, ...] = ()
    name: str = ""  # an object's name in messages and docs

    def field(self, name: str) -> CelField | None:
        return next((f for f in self.fields if f.name == name), None)

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list({self.element})"
        if self.kind == "map":
            return f"map(string, {self.element})"
        if self.kind == "object":
            return self.name or "object"
        return self.kind


@dataclass(frozen=True)
class CelField:
    """A field of an object; ``optional`` ones are there only when the agent reported them
    (test with ``has(...)``)."""

    name: str
    type: CelType
    description: str
    optional: bool = False


BOOL = CelType("bool")
INT = CelType("int")
UINT = CelType("uint")
DOUBLE = CelType("double")
STRING = CelType("string")
BYTES = CelType("bytes")
NULL = CelType("null")
DYN = CelType("dyn")


def list_of(element: CelType) -> CelType:
    return CelType("list", element=element)


def map_of(element: CelType) -> CelType:
    return CelType("map", element=element)


_SCALARS: dict[Any, CelType] = {bool: BOOL, int: INT, float: DOUBLE, str: STRING}


def _from_annotation(annotation: Any) -> tuple[CelType, bool]:
    """The CEL type of a model field's annotation, and whether the field may be absent."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _from_annotation(inner)[0], True
    if typing.get_origin(annotation) is dict and args[0] is str:
        return map_of(_from_annotation(args[1])[0]), False
    return _SCALARS[annotation], False


_METRIC_WORDS = {
    "extra": "further metrics the agent reported, by name (e.g. `extra.score`)",
}


def _metrics_type() -> CelType:
    fields = []
    for name, info in StepMetrics.model_fields.items():
        cel_type, optional = _from_annotation(info.annotation)
        alias = info.alias or name
        fields.append(
            CelField(
                alias,
                cel_type,
                _METRIC_WORDS.get(alias, f"the `{alias}` counter the agent reported"),
                optional=optional,
            )
        )
    return CelType("object", fields=tuple(fields), name="Metrics")


METRICS = _metrics_type()


def metrics_view(metrics: StepMetrics) -> dict[str, Any]:
    """``metrics`` as CEL sees it: the counters the agent reported, and ``extra``."""
    view: dict[str, Any] = metrics.model_dump(by_alias=True, exclude_none=True)
    return view


# The fields of a result (``result``, and each of ``steps``), with how each is read.
_ResultGetter = Callable[[StepResult | None, int], Any]
RESULT_FIELDS: tuple[tuple[CelField, _ResultGetter], ...] = (
    (
        CelField("summary", STRING, 'the agent\'s summary ("" without a result)'),
        lambda r, _: r.summary if r else "",
    ),
    (
        CelField("status", STRING, 'the status word the agent reported ("" when none)'),
        lambda r, _: (r.status or "") if r else "",
    ),
    (
        CelField("metrics", METRICS, "the counters the agent reported"),
        lambda r, _: metrics_view(r.metrics if r else StepMetrics()),
    ),
    (
        CelField("artifacts", list_of(STRING), "paths of the files the agent reported touching"),
        lambda r, _: [a.path for a in r.artifacts] if r else [],
    ),
    (
        CelField(
            "iteration",
            INT,
            "the iteration of a repeated step: 1 for one that is not, 0 for one that never ran",
        ),
        lambda _, iteration: iteration,
    ),
)
RESULT = CelType("object", fields=tuple(f for f, _ in RESULT_FIELDS), name="Result")
STEP = CelType(
    "object",
    fields=(
        CelField(
            "phase",
            STRING,
            "Succeeded, Cached, Skipped or Failed (a step that was skipped has no result)",
        ),
        *RESULT.fields,
    ),
    name="Step",
)
WORKFLOW = CelType(
    "object",
    fields=(
        CelField("name", STRING, "the Workflow's name"),
        CelField("namespace", STRING, "the Workflow's namespace"),
    ),
    name="Workflow",
)
# The keys of ``steps`` are step names, which the checker compares with the Workflow's.
STEPS = map_of(STEP)


def inputs_type(names: Collection[str]) -> CelType:
    """``inputs``: one string field per declared input (``spec.arguments``)."""
    fields = tuple(
        CelField(name, STRING, "the input's value (`value`, else `default`)")
        for name in sorted(names)
    )
    return CelType("object", fields=fields, name="Inputs")


@dataclass(frozen=True)
class Variable:
    name: str
    description: str
    example: str


VARIABLE_DOCS = {
    "steps": Variable(
        "steps",
        "the steps this one depends on (its upstream steps), by name; a name with a `-` is "
        'written `steps["my-step"]`',
        'steps["diff-analysis"].phase == "Succeeded" && size(steps.audit.artifacts) > 0',
    ),
    "inputs": Variable(
        "inputs",
        "the Workflow's inputs (`spec.arguments`), by name",
        'inputs.target == "prod"',
    ),
    "workflow": Variable("workflow", "the Workflow itself", 'workflow.namespace != "dev"'),
    "result": Variable(
        "result",
        "the report being judged (in `repeat.until`: this iteration's)",
        "has(result.metrics.extra.score) && result.metrics.extra.score >= 80.0",
    ),
}

VARIABLES: dict[ExpressionKind, tuple[str, ...]] = {
    ExpressionKind.WHEN: ("steps", "inputs", "workflow"),
    ExpressionKind.UNTIL: ("result", "steps", "inputs", "workflow"),
    ExpressionKind.ACCEPT: ("result", "steps", "inputs", "workflow"),
}


def environment(kind: ExpressionKind, inputs: Collection[str] = ()) -> dict[str, CelType]:
    """The variables an expression of ``kind`` may read, and their types, for a Workflow
    whose inputs are named ``inputs``."""
    types_ = {"steps": STEPS, "inputs": inputs_type(inputs), "workflow": WORKFLOW, "result": RESULT}
    return {name: types_[name] for name in VARIABLES[kind]}


def result_view(result: StepResult | None, iteration: int) -> dict[str, Any]:
    """A result as CEL sees it (``result``, and the result fields of each of ``steps``)."""
    return {f.name: get(result, iteration) for f, get in RESULT_FIELDS}


def step_view(status: StepStatus, with_result: bool) -> dict[str, Any]:
    """A step as CEL sees it in ``steps``; ``with_result`` False hides a skipped step's result."""
    return {
        "phase": str(status.phase),
        **result_view(status.result if with_result else None, status.iteration),
    }


def workflow_view(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace}


def activation(kind: ExpressionKind, **values: Any) -> dict[str, Any]:
    """The context an expression of ``kind`` is evaluated in: exactly its variables.

    Raises TypeError when a variable of the kind is missing or one it does not declare is
    given, so the runtime cannot offer what the checker does not know (or the reverse).
    """
    declared = set(VARIABLES[kind])
    if set(values) != declared:
        raise TypeError(f"{kind} takes {sorted(declared)}, got {sorted(values)}")
    return values


# --------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------

_KIND_WORDS = {
    ExpressionKind.WHEN: "`spec.steps[].when`: the step runs when it is true, else it is skipped",
    ExpressionKind.UNTIL: "`spec.steps[].repeat.until`: true ends the repetition",
    ExpressionKind.ACCEPT: "`spec.steps[].accept`: an attempt whose result makes it false failed",
}
# The model field each kind is written in: a kind is documented once its field exists.
_KIND_FIELDS: dict[ExpressionKind, tuple[type[BaseModel], str]] = {
    ExpressionKind.WHEN: (Step, "when"),
    ExpressionKind.UNTIL: (Repeat, "until"),
    ExpressionKind.ACCEPT: (Step, "accept"),
}


def documented_kinds() -> list[ExpressionKind]:
    """The kinds whose field is part of the API (``docs/api.md`` describes only these)."""
    return [k for k in ExpressionKind if _KIND_FIELDS[k][1] in _KIND_FIELDS[k][0].model_fields]


def _objects() -> list[CelType]:
    return [STEP, RESULT, METRICS, WORKFLOW]


def environment_markdown() -> str:
    """The section of ``docs/api.md`` on the CEL environment."""
    lines = [
        '<a id="cel-expressions"></a>',
        "",
        "## CEL expressions",
        "",
        "Conditions are [CEL](https://cel.dev) expressions that must evaluate to a bool. Each kind",
        "of expression sees its own variables, declared below. Every expression is type-checked",
        "against them before anything runs, by `agentflow validate` and by the operator, which",
        "fails the Workflow with a message naming the field before it creates a Job: an unknown",
        "variable, field, input or step (`steps` holds only the step's upstream steps), or an",
        "operation on values of the wrong type (`steps.a.summary > 3`), is an error, e.g.",
        "`spec.steps[1].when: steps.a.metrics has no field 'score' (...); a metric of the report's",
        "extra metrics is steps.a.metrics.extra.score`. Numbers of different types compare",
        "(`steps.a.metrics.extra.score >= 80`), but arithmetic needs one type",
        "(`double(steps.a.metrics.errors) + 0.5`). A field marked *optional* is there only when",
        "the agent reported it, and a `map` has only the keys it has: test with",
        "`has(steps.a.metrics.errors)` or `'score' in steps.a.metrics.extra` first, since reading",
        "a missing key fails the step when the expression runs.",
        "",
        "| Expression | Variables |",
        "|---|---|",
    ]
    for kind in documented_kinds():
        names = ", ".join(f"`{name}`" for name in VARIABLES[kind])
        lines.append(f"| {_KIND_WORDS[kind]} | {names} |")
    lines += ["", "| Variable | Type | Description | Example |", "|---|---|---|---|"]
    shown = {"steps": "map(string, [Step](#cel-step))", "result": "[Result](#cel-result)"}
    shown |= {"workflow": "[Workflow](#cel-workflow)", "inputs": "Inputs: one `string` each"}
    for name, variable in VARIABLE_DOCS.items():
        lines.append(
            f"| `{name}` | {shown[name]} | {variable.description} | `{variable.example}` |"
        )
    lines.append("")
    for obj in _objects():
        lines += [f'<a id="cel-{obj.name.lower()}"></a>', "", f"### CEL type {obj.name}", ""]
        lines += ["| Field | Type | Description |", "|---|---|---|"]
        for f in obj.fields:
            type_ = _type_link(f.type) + (", optional" if f.optional else "")
            lines.append(f"| `{f.name}` | {type_} | {f.description} |")
        lines.append("")
    return "\n".join(lines)


def _type_link(cel_type: CelType) -> str:
    if cel_type.kind == "object":
        return f"[{cel_type.name}](#cel-{cel_type.name.lower()})"
    return f"`{cel_type}`"


def describe_fields(cel_type: CelType) -> str:
    """The field names of an object type, for messages."""
    return ", ".join(f.name for f in cel_type.fields) or "none"


def field_names(cel_type: CelType) -> Mapping[str, CelField]:
    return {f.name: f for f in cel_type.fields}
