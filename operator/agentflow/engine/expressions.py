"""CEL for ``when`` and ``repeat.until``: compiling (cached), checking and evaluating.

``when`` sees ``steps`` (the step's upstream steps by name) and ``workflow`` (name,
namespace); ``until`` sees ``result`` (this iteration's result) as well.  Each step is a map
``{phase, summary, status, metrics, artifacts, iteration}``; ``metrics`` has only the metrics
the step reported (test with ``has(steps.a.metrics.errors)``), extra metrics merged in.  Step
names with a ``-`` must be written ``steps["my-step"]``: in CEL ``steps.my-step`` is a
subtraction.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import cel

from agentflow.api.models import StepResult, StepStatus
from agentflow.engine.templating import metric_values

WHEN_VARIABLES = frozenset({"steps", "workflow"})
UNTIL_VARIABLES = frozenset({"steps", "workflow", "result"})

# steps.name or steps["name"] / steps['name']
_STEP_REFERENCE = re.compile(
    r"\bsteps\s*(?:\.\s*(?P<attr>[A-Za-z_][A-Za-z0-9_]*)|\[\s*(?P<q>[\"'])(?P<key>[^\"']*)(?P=q)\s*\])"
)
# Variables that macros bind: list.exists(a, ...), map(x, ...), cel.bind(v, ...)...
_MACRO_VARIABLE = re.compile(
    r"\b(?:all|exists|exists_one|map|filter|bind|transformList|transformMap)\s*\(\s*"
    r"(?P<var>[A-Za-z_][A-Za-z0-9_]*)\s*,(?:\s*(?P<var2>[A-Za-z_][A-Za-z0-9_]*)\s*,)?"
)
_HYPHENATED = re.compile(r"\bsteps\s*\.\s*[a-z0-9]+-[a-z0-9]")
_MACRO_CALL = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter|transformList|transformMap)\s*\("
)
# Comprehension macros nest multiplicatively: with expressions capped at 1,024 characters,
# two levels stay in the tens of thousands of iterations, a few more would run for minutes
# on the operator's event loop.
MAX_MACRO_NESTING = 2


def macro_nesting(expression: str) -> int:
    """How deeply comprehension macros (all, exists, map, ...) nest in ``expression``."""
    deepest = 0
    open_macros: list[int] = []  # parenthesis depth at which each open macro call started
    depth = 0
    quote: str | None = None
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
            if _MACRO_CALL.fullmatch(expression, max(expression.rfind(".", 0, i + 1), 0), i + 1):
                open_macros.append(depth)
                deepest = max(deepest, len(open_macros))
        elif ch == ")":
            if open_macros and open_macros[-1] == depth:
                open_macros.pop()
            depth -= 1
        i += 1
    return deepest


class ExpressionError(ValueError):
    """A CEL expression that does not compile or evaluate; the message says why."""


@functools.lru_cache(maxsize=2048)
def _compile(expression: str) -> Any:
    return cel.compile(expression)


def compile_expression(expression: str) -> Any:
    """The compiled program (cached by expression text); raises ExpressionError."""
    try:
        return _compile(expression)
    except Exception as e:  # the bindings raise ValueError; be safe with anything else
        raise ExpressionError(_first_line(str(e))) from None


def _first_line(message: str) -> str:
    # Parser messages repeat the expression with a caret on the next lines.
    prefix = "Failed to parse expression "
    if message.startswith(prefix):
        message = message.split(": ", 1)[-1]
    return message.split("\n", 1)[0].strip()


def check_expression(expression: str, variables: frozenset[str]) -> tuple[list[str], set[str]]:
    """Problems with ``expression`` and the step names it reads through ``steps``."""
    try:
        program = compile_expression(expression)
    except ExpressionError as e:
        return [f"invalid CEL: {e}"], set()
    if _HYPHENATED.search(expression):
        # Reading further would report the name's first half as an unknown step.
        return ['a step name with "-" must be written steps["name"] in CEL'], set()
    problems: list[str] = []
    if macro_nesting(expression) > MAX_MACRO_NESTING:
        problems.append(
            f"macros such as all/exists/map nest more than {MAX_MACRO_NESTING} deep; "
            "the cost of evaluating it would be unbounded"
        )
    bound: set[str] = set()
    for match in _MACRO_VARIABLE.finditer(expression):
        bound.update(v for v in match.group("var", "var2") if v)
    unknown = sorted(set(program.variables()) - variables - bound)
    if unknown:
        allowed = ", ".join(sorted(variables))
        problems.append(f"unknown variable {unknown[0]!r} (available: {allowed})")
    steps = {m.group("attr") or m.group("key") for m in _STEP_REFERENCE.finditer(expression)}
    return problems, steps


def evaluate_bool(expression: str, context: dict[str, Any]) -> bool:
    """The value of a boolean expression; raises ExpressionError."""
    program = compile_expression(expression)
    try:
        value = program.execute(context)
    except Exception as e:  # KeyError for a missing key, RuntimeError, TypeError...
        detail = f"no such key {e}" if isinstance(e, KeyError) else _first_line(str(e))
        raise ExpressionError(f"evaluation failed: {detail}") from None
    if not isinstance(value, bool):
        raise ExpressionError(f"expected a bool, got {type(value).__name__} {value!r}")
    return value


def result_view(result: StepResult | None, iteration: int) -> dict[str, Any]:
    """A step result as CEL sees it (also the ``result`` of ``until``)."""
    if result is None:
        return {"summary": "", "status": "", "metrics": {}, "artifacts": [], "iteration": iteration}
    return {
        "summary": result.summary,
        "status": result.status or "",
        "metrics": metric_values(result.metrics),
        "artifacts": [a.path for a in result.artifacts],
        "iteration": iteration,
    }


def step_view(status: StepStatus, with_result: bool) -> dict[str, Any]:
    """A step as CEL sees it in ``steps``; ``with_result`` False hides a skipped step's result."""
    view = result_view(status.result if with_result else None, status.iteration)
    view["phase"] = str(status.phase)
    return view
