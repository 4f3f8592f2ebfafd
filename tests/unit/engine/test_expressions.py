"""CEL checks judge the parsed expression, and evaluation is stopped at its budget.

The old check scanned the text for parentheses and quotes; a string literal in a form it did
not know (triple quotes, raw strings, a comment) hid any number of nested macros from it.
"""

from __future__ import annotations

import math
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.api.models import MAX_STEPS, StepPhase
from agentflow.engine.expressions import (
    EVALUATION_BUDGET_SECONDS,
    MAX_MACRO_NESTING,
    PASS_BUDGET_SECONDS,
    UNTIL_VARIABLES,
    WHEN_VARIABLES,
    WORKER_MEMORY_BYTES,
    ExpressionError,
    check_expression,
    evaluate_bool,
    macro_nesting,
    tokenize,
)
from tests.support.world import World, creates, step, workflow

LIST = "[0, 1, 2]"


def nested(depth: int) -> str:
    """``depth`` comprehension macros, each inside the previous one's predicate."""
    return "".join(f"{LIST}.all(v{d}, " for d in range(depth)) + "true" + ")" * depth


# Each of these once made the rest of the expression look like the inside of a string.
HIDING_LITERALS = [
    "'''it's'''",
    '"""say "hi" """',
    'r"\\"',
    "r'\\'",
    'R"\\\\"',
    'br"\\"',
    '"\\""',
    "'\\''",
    '"\\x22"',
    '"(("',
    '")"',
]


@pytest.mark.parametrize("literal", HIDING_LITERALS)
def test_a_string_literal_cannot_hide_nested_macros(literal: str) -> None:
    expression = f"{literal} != '' && {nested(3)}"
    cel.compile(expression)  # it is CEL, and the library runs all three levels
    assert macro_nesting(expression) == 3
    problems, _ = check_expression(expression, WHEN_VARIABLES)
    assert problems and "nest more than 2 deep (3)" in problems[0], problems


def test_a_comment_cannot_hide_nested_macros() -> None:
    expression = f'true // "\n && {nested(3)}'
    cel.compile(expression)
    problems, _ = check_expression(expression, WHEN_VARIABLES)
    assert problems and "nest more than" in problems[0], problems


def _cel_string(value: str, form: str) -> str:
    """``value`` written as a CEL string literal of the given form."""
    if form == "raw-triple":
        return 'r"""' + value + '"""'
    escaped = "".join(f"\\u{ord(c):04x}" if c in "\\\"'\n\r" else c for c in value)
    return {"double": f'"{escaped}"', "single": f"'{escaped}'", "triple": f"'''{escaped}'''"}[form]


@settings(max_examples=300, deadline=None)
@given(
    value=st.text(alphabet="()[]{}.,'\"\\ abc", max_size=12).filter(
        lambda s: '"""' not in s and not s.endswith('"')
    ),
    form=st.sampled_from(["double", "single", "triple", "raw-triple"]),
    depth=st.integers(0, 4),
)
def test_nesting_is_judged_on_the_parse_whatever_the_strings_contain(
    value: str, form: str, depth: int
) -> None:
    literal = _cel_string(value, form)
    expression = f"{literal} == {literal} && {nested(depth)}"
    cel.compile(expression)
    assert macro_nesting(expression) == depth
    problems, _ = check_expression(expression, WHEN_VARIABLES)
    assert bool(problems) == (depth > MAX_MACRO_NESTING), problems


def test_string_literals_decode_as_cel_defines_them() -> None:
    cases = {
        '"a\\tb"': "a\tb",
        "'\\101\\x42\\u0043\\U00000044'": "ABCD",
        'r"\\n"': "\\n",
        '"""two\nlines"""': "two\nlines",
        "'''it's'''": "it's",
    }
    for literal, value in cases.items():
        token = tokenize(literal)[0]
        assert token.value == value, literal
        assert cel.evaluate(literal) == value, literal


@pytest.mark.parametrize(
    "expression",
    [
        '"\\q" == ""',  # an escape CEL does not define
        '"open',
        "'line\nbreak' == ''",
        "a.?b",
        "`a` == 1",
        "1 @ 2",
        "steps['a'] # 1",
        "(" * 40 + "true" + ")" * 40,
        "Msg{a: 1} == Msg{a: 1}",
    ],
)
def test_what_the_checker_cannot_classify_is_rejected(expression: str) -> None:
    problems, steps = check_expression(expression, WHEN_VARIABLES)
    assert problems and steps == set(), expression


def test_step_references_and_variables_come_from_the_parse() -> None:
    problems, steps = check_expression(
        'steps.a.phase == "x" && steps["b-c"].summary != "steps.ghost" '
        "&& has(steps.d.metrics.errors) && [1].all(steps, steps > 0)",
        WHEN_VARIABLES,
    )
    assert problems == []
    assert steps == {"a", "b-c", "d"}
    problems, _ = check_expression('"result" != "" && result.iteration > 1', WHEN_VARIABLES)
    assert problems == ["unknown variable 'result' (available: inputs, steps, workflow)"]
    problems, _ = check_expression('steps.my-step.phase == "x"', WHEN_VARIABLES)
    assert problems == ['a step name with "-" must be written steps["name"] in CEL']
    assert check_expression('steps.a.phase == "my-step" ', WHEN_VARIABLES)[0] == []


# A regex is compiled each time ``matches`` runs; near the library's size limit that takes about
# 0.1 s, so two levels of ten elements (100 runs) take over 10 s, nesting within the bound.
SLOW = '[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, !"x".matches("\\\\w{200}")))'


def test_an_expression_over_its_budget_is_stopped_and_the_next_one_runs() -> None:
    assert check_expression(SLOW, WHEN_VARIABLES)[0] == []  # nothing static gives it away
    assert evaluate_bool("true", {})  # the worker is up: its start is not what is measured
    started = time.monotonic()
    with pytest.raises(ExpressionError, match=r"longer than 0.3 s, the limit for one expression"):
        evaluate_bool(SLOW, {}, budget=0.3)
    assert time.monotonic() - started < 2.0
    assert evaluate_bool('workflow.name == "wf"', {"workflow": {"name": "wf"}})
    assert not evaluate_bool('workflow.name == "wf"', {"workflow": {"name": "other"}})


def _step(summary: str, artifacts: list[str]) -> dict[str, Any]:
    metrics = {"toolCalls": 3, "score": 0.5}
    view = {"summary": summary, "status": "ok", "metrics": metrics, "artifacts": artifacts}
    return {**view, "phase": "Succeeded", "iteration": 1}


@pytest.mark.parametrize(
    "expression",
    [
        'steps.a.summary == "one" && steps["b-c"].artifacts == ["x.py"]',
        "has(steps.a.metrics.score) && !has(steps.a.metrics.errors) && steps.a.metrics.score > 0.4",
        "size(steps) == 3",
        'steps.exists(k, steps[k].summary == "three")',
        'steps["a"].iteration == 1 && steps.a.phase == "Succeeded" && workflow.name == "wf"',
        "steps.ghost.phase == 'x'",
    ],
)
def test_the_worker_evaluates_as_the_library_does_in_process(expression: str) -> None:
    context = {
        "steps": {"a": _step("one", []), "b-c": _step("two", ["x.py"]), "d": _step("three", [])},
        "workflow": {"name": "wf", "namespace": "team"},
    }
    try:
        expected: object = cel.compile(expression).execute(context)
    except Exception:  # any failure in process must be a failure in the worker
        expected = ExpressionError
    if expected is ExpressionError:
        with pytest.raises(ExpressionError):
            evaluate_bool(expression, context)
    else:
        assert evaluate_bool(expression, context) is expected


def test_a_value_that_is_not_a_bool_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="expected a bool, got int 2"):
        evaluate_bool("1 + 1", {})


def test_a_when_over_its_budget_fails_its_step_and_the_workflow_naming_the_field() -> None:
    w = World(workflow([step("a"), step("b", when=SLOW)]))
    w.plan()
    w.succeed("a")
    started = time.monotonic()
    p = w.plan()
    assert time.monotonic() - started < EVALUATION_BUDGET_SECONDS + 2.0
    b = w.step_status("b")
    assert b.phase is StepPhase.FAILED
    assert b.message is not None
    assert b.message.startswith(
        f"spec.steps[1].when: evaluation took longer than {EVALUATION_BUDGET_SECONDS:g} s"
    ), b.message
    assert creates(p) == []
    assert w.phase == "Failed"


def test_an_until_over_its_budget_fails_its_step_naming_the_field() -> None:
    w = World(workflow([step("a", repeat={"until": SLOW, "maxIterations": 3})]))
    w.plan()
    w.succeed("a")
    w.plan()
    a = w.step_status("a")
    assert a.phase is StepPhase.FAILED
    assert a.message is not None
    assert a.message.startswith("spec.steps[0].repeat.until: evaluation took longer than")
    assert w.phase == "Failed"


def test_a_pass_spends_at_most_its_cel_budget_and_later_passes_carry_on() -> None:
    # Conditions of 0.02 to 0.04 s each, depending on the machine (distinct, so no answer is
    # reused), far from the budget of one expression; as many as make three pass budgets.
    # The worker's start and its first regular expression are not what is measured.
    assert evaluate_bool('!"warm".matches("\\\\w{100}")', {})
    costs: list[float] = []
    for i in range(5):  # the cheapest of a few: fewer conditions could all fit into one pass
        before = time.monotonic()
        assert evaluate_bool(f'!"probe{i}".matches("\\\\w{{100}}")', {})
        costs.append(time.monotonic() - before)
    each = min(costs)
    # The typical one, not the slowest: a busy CI machine can stall any single call.
    assert statistics.median(costs) < EVALUATION_BUDGET_SECONDS / 4, costs
    count = min(MAX_STEPS, max(40, math.ceil(3 * PASS_BUDGET_SECONDS / each)))
    costly = [step(f"s{i}", when=f'!"x{i}".matches("\\\\w{{100}}")') for i in range(count)]
    w = World(workflow(costly, strategy="Parallel"))
    started: list[int] = []
    while sum(started) < len(costly) and len(started) < 100:
        before = time.monotonic()
        p = w.plan()
        assert time.monotonic() - before < PASS_BUDGET_SECONDS + EVALUATION_BUDGET_SECONDS + 1.0
        started.append(len(creates(p)))
    assert sum(started) == len(costly), started
    assert len(started) >= 2 and started[0] < len(costly), started
    assert all(w.step_status(s.name).phase is StepPhase.RUNNING for s in costly)


def test_an_expression_that_needs_too_much_memory_stops_only_the_worker() -> None:
    # 10,000 strings of 40 KB: 400 MB, more than the worker may map.
    items = "[" + ",".join("0" for _ in range(100)) + "]"
    hungry = f"{items}.map(a, {items}.map(b, steps.big + steps.big)).size() > 0"
    with pytest.raises(ExpressionError, match=r"the CEL worker stopped .* more than 256 MiB"):
        evaluate_bool(hungry, {"steps": {"big": "x" * 20_000}}, budget=30.0)
    assert WORKER_MEMORY_BYTES == 256 * 1024 * 1024
    assert evaluate_bool("steps.big.size() == 2", {"steps": {"big": "xx"}})


_ORPHAN = f"""
from agentflow.engine import expressions
expressions.evaluate_bool("true", {{}})
print(expressions._EVALUATOR._process.pid, flush=True)
expressions.evaluate_bool({SLOW!r}, {{}}, budget=3.0)
"""


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command: state, ppid, ..., utime, stime."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return ["X"]


def _alive(pid: int) -> bool:
    # A zombie is dead too: it only waits for its (new) parent to reap it.
    return _stat(pid)[0] not in ("X", "Z")


def _cpu_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if len(fields) > 12 else 0


def _poll(seconds: float, done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        select.select([], [], [], 0.05)
    return done()


def test_a_worker_whose_operator_died_mid_evaluation_ends_soon_after_its_budget() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    idle = _cpu_ticks(worker)
    # Busy for a tenth of a second of CPU: it has the request and is evaluating.
    assert _poll(5.0, lambda: _cpu_ticks(worker) > idle + 10)
    started = time.monotonic()
    # Killed as SIGKILL kills an operator: before its own 3 s deadline, with no atexit.
    parent.kill()
    parent.wait()
    try:
        assert _alive(worker)  # orphaned, evaluating an expression of minutes
        # The request armed an alarm of ceil(3) + 2 s, which needs no Python code to fire.
        assert _poll(10.0, lambda: not _alive(worker)), "the orphaned worker still runs"
        assert time.monotonic() - started < 5.5
    finally:
        parent.stdout.close()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_an_answer_is_remembered_for_the_same_expression_and_inputs() -> None:
    # Ten regular expressions of about 0.06 s: over half a second, with a budget to match.
    costly = '[0,1,2,3,4,5,6,7,8,9].all(a, !steps.s.summary.matches("\\\\w{150}"))'
    context: dict[str, Any] = {"steps": {"s": {"summary": "memo"}}}
    evaluate_bool("true", {})
    before = time.monotonic()
    assert evaluate_bool(costly, context, budget=10.0)
    first = time.monotonic() - before
    before = time.monotonic()
    assert evaluate_bool(costly, context, budget=10.0)
    again = time.monotonic() - before
    assert first > 0.3 and again < first / 3, (first, again)
    changed: dict[str, Any] = {"steps": {"s": {"summary": "w" * 150}}}
    assert not evaluate_bool(costly, changed, budget=10.0)  # other inputs: evaluated again


def test_costly_until_conditions_are_judged_over_several_passes_within_the_budget() -> None:
    # 40 steps whose until (about 0.045 s each on an idle machine, distinct) is judged when their
    # Jobs succeed: together well over one pass's budget however fast the machine is.
    loops = [
        step(f"s{i}", repeat={"until": f'!"u{i}".matches("\\\\w{{200}}")', "maxIterations": 2})
        for i in range(40)
    ]
    w = World(workflow(loops, strategy="Parallel"))
    w.plan()
    for s in loops:
        w.succeed(s.name)
    assert evaluate_bool("true", {})  # the worker's start is not what is measured
    passes = 0
    while w.phase != "Succeeded" and passes < 50:
        before = time.monotonic()
        w.plan()
        assert time.monotonic() - before < PASS_BUDGET_SECONDS + EVALUATION_BUDGET_SECONDS + 1.0
        passes += 1
    assert w.phase == "Succeeded", w.phases()
    assert passes >= 2
    assert all(len(w.step_status(s.name).attempts) == 1 for s in loops)


def test_a_long_chain_of_operators_is_checked_without_running_out_of_stack() -> None:
    # Each operator is a node whose first operand is the rest of the chain: 3,000 deep, while
    # the parser's nesting bound counts brackets only.  It failed every pass with RecursionError.
    chain = " + ".join(["steps.a.metrics.score"] * 3000) + " > 0"
    problems, referenced = check_expression(chain, UNTIL_VARIABLES)
    assert problems == [] and referenced == {"a"}
