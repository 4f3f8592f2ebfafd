"""Prompt templates: ``{{ steps.<name>.summary }}`` and friends, strictly and in one pass.

References (whitespace inside the braces is ignored, nothing else is allowed):

- ``{{ steps.<name>.summary }}``, ``.status``, ``.phase``, ``.iteration``,
  ``.artifacts`` (paths joined with ", "), ``.metrics.<key>`` (camelCase: ``toolCalls``,
  ``inputTokens``... or an extra metric's key; a metric the step did not report is ""),
  ``.metrics.extra.<key>`` (an extra metric, as CEL reads it);
- ``{{ workflow.name }}``, ``{{ workflow.namespace }}``, ``{{ step.name }}``,
  ``{{ step.iteration }}``;
- ``{{ inputs.<name> }}``: the value of an input of ``spec.arguments``.  In agents' literal
  ``env`` values this is the only reference replaced (:func:`render_inputs`);
- ``{{ steps.<this step>.summary }}`` etc. inside a ``repeat``: the previous iteration's result
  ("" in the first iteration).

A step that was skipped has no result: its result fields render as "" while
``{{ steps.<name>.phase }}`` says ``Skipped``.  There are no expressions, filters or loops.
Rendering is a single pass: a value that itself contains ``{{ ... }}`` is inserted literally
and never rendered again.  ``\\{{`` writes a literal ``{{``.  Anything else between ``{{`` and
``}}``, or a ``{{`` without its ``}}``, is a :class:`TemplateError`.

A rendered prompt has at most :data:`MAX_RENDERED_PROMPT_BYTES` of UTF-8.  References repeat
freely, so a 16 KiB template over a result with 100 long artifact paths could otherwise render
to tens of megabytes; rendering stops (:class:`PromptTooLarge`) as soon as the next piece would
pass the limit, before the big string exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from agentflow.api.models import StepMetrics, StepResult

_TOKEN = re.compile(r"\\\{\{|\{\{(?P<ref>[^{}]*)\}\}|\{\{")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_METRIC_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

STEP_FIELDS = frozenset({"summary", "status", "phase", "iteration", "artifacts"})

# The prompt reaches the agent as the environment string ``AGENTFLOW_PROMPT=<prompt>``, and
# Linux's execve refuses any one environment string longer than MAX_ARG_STRLEN (128 KiB, its
# NUL included): a longer prompt could never start the agent.  1 KiB below that leaves room for
# the name.  The Job carries at most twice this (``children.literal`` doubles every ``$``), far
# below the API server's request limit.
MAX_RENDERED_PROMPT_BYTES = 127 * 1024
# An env value with its inputs in: room for one input of the largest size (4 KiB) in a literal
# of the largest size.  An agent has at most 128 env variables (its own and a step's override),
# so its rendered env stays within 1 MiB.
MAX_RENDERED_ENV_BYTES = 8 * 1024


class TemplateError(ValueError):
    """A prompt template that cannot be rendered; the message says why."""


class PromptTooLarge(TemplateError):
    """The rendered prompt would pass its byte limit; the message names the step and limit."""


@dataclass(frozen=True)
class PromptContext:
    """What a prompt may refer to besides step results.

    ``phases`` and ``iterations`` describe the steps the prompt may reference (a step named in
    neither them nor the results is an unknown reference).  The step being rendered may always
    refer to itself: its result in ``results`` is the previous iteration's.
    """

    workflow: str
    namespace: str
    step: str
    iteration: int = 1
    phases: Mapping[str, str] = field(default_factory=dict)
    iterations: Mapping[str, int] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """One ``{{ ... }}`` in a template."""

    text: str  # normalised: "steps.a.summary"
    step: str | None  # the step it reads from ``steps.<name>``, if any
    input: str | None = None  # the input it reads from ``inputs.<name>``, if any

    def __str__(self) -> str:
        return f"{{{{ {self.text} }}}}"


def _parse_reference(inner: str) -> Reference:
    text = inner.strip()
    parts = text.split(".")
    if parts == ["workflow", "name"] or parts == ["workflow", "namespace"]:
        return Reference(text, None)
    if parts == ["step", "name"] or parts == ["step", "iteration"]:
        return Reference(text, None)
    if len(parts) == 2 and parts[0] == "inputs" and _INPUT_NAME.match(parts[1]):
        return Reference(text, None, input=parts[1])
    if len(parts) >= 3 and parts[0] == "steps" and _NAME.match(parts[1]):
        if len(parts) == 3 and parts[2] in STEP_FIELDS:
            return Reference(text, parts[1])
        if len(parts) == 4 and parts[2] == "metrics" and _METRIC_KEY.match(parts[3]):
            return Reference(text, parts[1])
        if len(parts) == 5 and parts[2:4] == ["metrics", "extra"] and _METRIC_KEY.match(parts[4]):
            return Reference(text, parts[1])
    raise TemplateError(f"unknown reference {{{{ {text} }}}}")


def _tokens(template: str) -> Iterator[tuple[re.Match[str], Reference | None]]:
    """Each escape (reference None) and reference, in order; raises on a malformed one."""
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token == "\\{{":
            yield match, None
        elif match.group("ref") is None:
            excerpt = template[match.start() : match.start() + 40].split("\n", 1)[0]
            raise TemplateError(f"unterminated or malformed '{{{{' at {excerpt!r}")
        else:
            yield match, _parse_reference(match.group("ref"))


def template_references(template: str) -> list[Reference]:
    """Every reference in ``template``; raises TemplateError on a malformed one."""
    return [ref for _, ref in _tokens(template) if ref is not None]


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def metric_values(metrics: StepMetrics) -> dict[str, float | int]:
    """Reported metrics by camelCase key, extra metrics merged in (the named ones win)."""
    named = metrics.model_dump(by_alias=True, exclude_none=True, exclude={"extra"})
    return {**metrics.extra, **named}


def _step_value(ref: Reference, results: Mapping[str, StepResult], ctx: PromptContext) -> str:
    name = ref.step
    assert name is not None
    if name != ctx.step and name not in ctx.phases and name not in results:
        raise TemplateError(f"unknown reference {ref}")
    field_name = ref.text.split(".")[2]
    if field_name == "phase":
        return ctx.phases.get(name, "Running" if name == ctx.step else "")
    if field_name == "iteration":
        if name == ctx.step:
            return str(max(ctx.iteration - 1, 0))
        return str(ctx.iterations.get(name, 0))
    result = results.get(name)
    if result is None:
        return ""
    if field_name == "summary":
        return result.summary
    if field_name == "status":
        return result.status or ""
    if field_name == "artifacts":
        return ", ".join(a.path for a in result.artifacts)
    parts = ref.text.split(".")
    if len(parts) == 5:  # steps.<name>.metrics.extra.<key>, as CEL reads it
        value: float | int | None = result.metrics.extra.get(parts[4])
    else:
        value = metric_values(result.metrics).get(parts[3])
    return "" if value is None else _number(value)


def _input_value(ref: Reference, inputs: Mapping[str, str]) -> str:
    assert ref.input is not None
    value = inputs.get(ref.input)
    if value is None:
        raise TemplateError(f"unknown input in {ref}")
    return value


# In an env value only this reference is replaced: everything else, other ``{{ ... }}``
# included, is the agent's own text (a script report, a template of the agent's).
_INPUT_REFERENCE = re.compile(r"(\\?)\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def input_references(text: str) -> list[str]:
    """The input names of the ``{{ inputs.<name> }}`` in an env value (escaped ones left out)."""
    return [m.group(2) for m in _INPUT_REFERENCE.finditer(text) if not m.group(1)]


def render_inputs(
    template: str, inputs: Mapping[str, str], *, limit: int = MAX_RENDERED_ENV_BYTES
) -> str:
    """``template`` (an agent's literal ``env`` value) with each ``{{ inputs.<name> }}``
    replaced by the input's value, in one pass; ``\\{{ inputs.<name> }}`` writes the reference
    itself.  Any other text stays as written.  An unknown input, or a result over ``limit``
    bytes of UTF-8, is a TemplateError."""
    out: list[str] = []
    size = 0
    position = 0
    for match in _INPUT_REFERENCE.finditer(template):
        piece = template[position : match.start()]
        if match.group(1):
            piece += match.group(0)[1:]
        else:
            value = inputs.get(match.group(2))
            if value is None:
                raise TemplateError(f"unknown input in {{{{ inputs.{match.group(2)} }}}}")
            piece += value
        size += _utf8_size(piece)
        if size > limit:
            raise TemplateError(f"the rendered value is larger than {limit} bytes, its limit")
        out.append(piece)
        position = match.end()
    rest = template[position:]
    if size + _utf8_size(rest) > limit:
        raise TemplateError(f"the rendered value is larger than {limit} bytes, its limit")
    out.append(rest)
    return "".join(out)


def _utf8_size(text: str) -> int:
    # Lone surrogates (possible in decoded JSON) count as the 3 bytes they would take.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def render_prompt(
    template: str,
    results: Mapping[str, StepResult],
    context: PromptContext,
    *,
    limit: int = MAX_RENDERED_PROMPT_BYTES,
) -> str:
    """``template`` with its references replaced; raises TemplateError on an unknown one.

    Raises :class:`PromptTooLarge` as soon as the output would pass ``limit`` bytes of UTF-8:
    each piece is measured before it is kept, so no more than ``limit`` bytes and one piece
    (at most one result field) are ever held.
    """
    out: list[str] = []
    size = 0

    def keep(piece: str) -> None:
        nonlocal size
        size += _utf8_size(piece)
        if size > limit:
            raise PromptTooLarge(
                f"the rendered prompt of step {context.step} is larger than {limit} bytes, "
                "the limit for a rendered prompt: refer to fewer or shorter results"
            )
        out.append(piece)

    position = 0
    for match, ref in _tokens(template):
        keep(template[position : match.start()])
        position = match.end()
        if ref is None:
            keep("{{")
        elif ref.step is not None:
            keep(_step_value(ref, results, context))
        elif ref.input is not None:
            keep(_input_value(ref, context.inputs))
        elif ref.text == "workflow.name":
            keep(context.workflow)
        elif ref.text == "workflow.namespace":
            keep(context.namespace)
        elif ref.text == "step.name":
            keep(context.step)
        else:
            keep(str(context.iteration))
    keep(template[position:])
    return "".join(out)
