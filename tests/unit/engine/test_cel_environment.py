"""The declared CEL environment (agentflow.api.celenv): every variable and type, the checker's
errors, the views the runtime builds from the same declaration, and the generated docs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.api.celenv import (
    METRICS,
    RESULT,
    STEP,
    VARIABLE_DOCS,
    VARIABLES,
    CelType,
    ExpressionKind,
    activation,
    environment,
    environment_markdown,
    result_view,
    step_view,
    workflow_view,
)
from agentflow.api.models import Artifact, StepMetrics, StepPhase, StepResult, StepStatus
from agentflow.engine.expressions import check_expression, evaluate_bool

WHEN, UNTIL, ACCEPT = ExpressionKind.WHEN, ExpressionKind.UNTIL, ExpressionKind.ACCEPT


def problems(
    expression: str, kind: ExpressionKind = WHEN, inputs: tuple[str, ...] = ()
) -> list[str]:
    return check_expression(expression, kind, inputs=inputs)[0]


def conforms(value: Any, cel_type: CelType) -> bool:
    """Whether a runtime value has the declared type (optional fields may be absent)."""
    kind = cel_type.kind
    if kind == "dyn":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "double":
        return isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        assert cel_type.element is not None
        return isinstance(value, list) and all(conforms(v, cel_type.element) for v in value)
    if kind == "map":
        assert cel_type.element is not None
        return isinstance(value, dict) and all(
            isinstance(k, str) and conforms(v, cel_type.element) for k, v in value.items()
        )
    if kind == "object":
        if not isinstance(value, dict):
            return False
        fields = {f.name: f for f in cel_type.fields}
        if set(value) - set(fields):
            return False  # the runtime offers nothing the checker does not know
        return all(
            (f.name in value and conforms(value[f.name], f.type))
            or (f.optional and f.name not in value)
            for f in fields.values()
        )
    raise AssertionError(kind)


# ---- every variable, of every kind ----------------------------------------------------------

VALID = [
    (WHEN, 'steps.a.phase == "Succeeded" && steps.a.summary.contains("ok")'),
    (WHEN, 'steps["a-b"].status == "success" && steps.a.iteration >= 1'),
    (WHEN, "size(steps.a.artifacts) > 0 && steps.a.artifacts.exists(p, p.endsWith('.py'))"),
    (WHEN, "has(steps.a.metrics.errors) && steps.a.metrics.errors == 0"),
    (WHEN, "steps.a.metrics.toolCalls + steps.a.metrics.filesRead < 10"),
    (WHEN, "steps.a.metrics.linesGenerated > 0 || steps.a.metrics.inputTokens > 0"),
    (WHEN, "steps.a.metrics.outputTokens < 1000"),
    (WHEN, "'score' in steps.a.metrics.extra && steps.a.metrics.extra.score >= 80"),
    (WHEN, 'steps.a.metrics.extra["p95"] < 200.0 && steps.a.metrics.errors == 0.0'),
    (WHEN, 'inputs.target == "prod" && inputs.target.startsWith("p")'),
    (WHEN, 'workflow.name != "" && workflow.namespace == "team"'),
    (WHEN, 'steps.exists(name, steps[name].phase == "Skipped")'),
    (WHEN, "double(steps.a.metrics.errors) + 0.5 > 1.0 && int(inputs.target) > 2"),
    (WHEN, "steps.a.metrics.extra.map(k, k).size() >= 0 && [1, 2].all(x, x > 0)"),
    (UNTIL, "result.iteration >= 3 || result.metrics.extra.coverage >= 0.9"),
    (UNTIL, 'result.summary.matches("done") && steps.a.phase == "Succeeded"'),
    (UNTIL, 'inputs.target == "x" ? result.iteration > 1 : true'),
    (ACCEPT, "has(result.metrics.extra.score) && result.metrics.extra.score >= 80"),
    (ACCEPT, "size(result.artifacts) > 0 && result.status == 'success'"),
    (ACCEPT, 'inputs.target != "" && workflow.name != "" && steps.a.iteration > 0'),
]


@pytest.mark.parametrize(("kind", "expression"), VALID)
def test_well_typed_expressions_pass(kind: ExpressionKind, expression: str) -> None:
    assert problems(expression, kind, inputs=("target",)) == []


ERRORS = [
    (WHEN, "steps.a.metrics.nosuch > 1", "steps.a.metrics has no field 'nosuch'"),
    (WHEN, "steps.a.metrics.score > 1", "is steps.a.metrics.extra.score"),
    (WHEN, "steps.a.nosuch", "steps.a has no field 'nosuch' (Step fields: phase, summary"),
    (WHEN, 'inputs.undeclared == "x"', "unknown input 'undeclared' (declared in"),
    (WHEN, "steps.a.summary > 3", "cannot order steps.a.summary (string) with 3 (int)"),
    (WHEN, 'steps.a.metrics.errors == "0"', "values of different types are never equal"),
    (WHEN, "steps.a.phase", "the expression must be a bool, it is a string"),
    (WHEN, "steps.a.iteration + 0.5 > 1.0", "CEL does not convert between number types"),
    (WHEN, "steps.a.summary && true", "&& needs bools; steps.a.summary is a string"),
    (WHEN, "steps.a.summary.size() > steps.a.phase", "cannot order"),
    (WHEN, "steps.a.iteration.contains('x')", "contains() is a function of strings"),
    (WHEN, "steps.a.summary.x == 1", "steps.a.summary is a string, which has no field 'x'"),
    (WHEN, "steps.a.artifacts['x'] == ''", "its index must be an int"),
    (WHEN, "steps.a.artifacts.all(p, p > 1)", "cannot order p (string) with 1 (int)"),
    (WHEN, "steps.a.iteration.all(p, true)", "all() needs a list or map"),
    (WHEN, "1 in steps.a.artifacts", "looks for an int in steps.a.artifacts"),
    (WHEN, "has(steps.a.metrics.nosuch)", "steps.a.metrics has no field 'nosuch'"),
    (WHEN, "result.iteration > 1", "unknown variable 'result'"),
    (UNTIL, "result.phase == 'x'", "result has no field 'phase' (Result fields"),
    (ACCEPT, "result.metrics.extra.score.x > 1", "is a double, which has no field 'x'"),
    (ACCEPT, "inputs.nope == ''", "unknown input 'nope' (declared in spec.arguments: target)"),
]


@pytest.mark.parametrize(("kind", "expression", "message"), ERRORS)
def test_mistyped_expressions_name_the_problem(
    kind: ExpressionKind, expression: str, message: str
) -> None:
    found = problems(expression, kind, inputs=("target",))
    assert found and message in found[0], found


def test_the_accept_kind_has_its_own_environment() -> None:
    assert VARIABLES[ACCEPT] == ("result", "steps", "inputs", "workflow")
    env = environment(ACCEPT, ["b", "a"])
    assert env["result"] is RESULT
    assert [f.name for f in env["inputs"].fields] == ["a", "b"]
    assert check_expression("result.iteration > 0 && steps.x.phase != ''", ACCEPT) == ([], {"x"})
    assert problems("inputs.a == ''", ACCEPT) == [
        "unknown input 'a' (declared in spec.arguments: none)"
    ]


def test_a_long_chain_is_checked_without_recursion() -> None:
    chain = " + ".join(["steps.a.metrics.toolCalls"] * 3000) + " > 0"
    assert problems(chain) == []
    bad = " + ".join(["steps.a.metrics.toolCalls"] * 3000) + " + 0.5 > 0.0"
    assert "CEL does not convert between number types" in problems(bad)[0]


# ---- the runtime views come from the declaration --------------------------------------------

results = st.builds(
    StepResult,
    status=st.none() | st.text(max_size=5),
    summary=st.text(max_size=10),
    artifacts=st.lists(st.builds(Artifact, path=st.text(max_size=5)), max_size=3),
    metrics=st.builds(
        StepMetrics,
        tool_calls=st.none() | st.integers(0, 10),
        errors=st.none() | st.integers(0, 10),
        input_tokens=st.none() | st.integers(0, 10),
        extra=st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False), max_size=3),
    ),
)


@given(st.none() | results, st.integers(1, 5), st.sampled_from(list(StepPhase)))
def test_views_have_the_declared_types(
    result: StepResult | None, iteration: int, phase: StepPhase
) -> None:
    assert conforms(result_view(result, iteration), RESULT)
    status = StepStatus(name="a", phase=phase, iteration=iteration, result=result)
    assert conforms(step_view(status, with_result=True), STEP)
    assert conforms(step_view(status, with_result=False), STEP)


def test_the_schema_shaped_path_works_at_runtime() -> None:
    result = StepResult(summary="ok", metrics=StepMetrics(errors=0, extra={"score": 85.0}))
    steps = {"a": step_view(StepStatus(name="a", phase=StepPhase.SUCCEEDED, result=result), True)}
    context = activation(WHEN, steps=steps, inputs={"t": "x"}, workflow=workflow_view("w", "n"))
    expression = "steps.a.metrics.extra.score >= 80 && steps.a.metrics.errors == 0"
    assert problems(expression) == []
    assert evaluate_bool(expression, context)
    assert evaluate_bool('inputs.t == "x" && workflow.name == "w"', context)


def test_an_activation_has_exactly_the_declared_variables() -> None:
    with pytest.raises(TypeError, match="takes"):
        activation(WHEN, steps={}, workflow={})
    with pytest.raises(TypeError, match="takes"):
        activation(WHEN, steps={}, inputs={}, workflow={}, result={})


def test_metrics_follow_the_status_model() -> None:
    aliases = {info.alias or name for name, info in StepMetrics.model_fields.items()}
    assert {f.name for f in METRICS.fields} == aliases


def test_the_docs_describe_every_variable_and_field() -> None:
    text = environment_markdown()
    for kind in ExpressionKind:
        for name in VARIABLES[kind]:
            assert f"`{name}`" in text
    for obj in (STEP, RESULT, METRICS):
        for f in obj.fields:
            assert f"| `{f.name}` |" in text
    # Every example in the docs type-checks, in every kind that has its variables.
    for name, variable in VARIABLE_DOCS.items():
        assert f"`{variable.example}`" in text
        for kind in ExpressionKind:
            if name in VARIABLES[kind]:
                assert problems(variable.example, kind, inputs=("target",)) == [], variable


def test_a_mistyped_when_fails_the_workflow_before_any_job() -> None:
    from tests.support.world import World, creates, step, workflow

    w = World(workflow([step("a"), step("b", when="steps.a.metrics.score > 0.5")]))
    p = w.plan()
    assert creates(p) == []
    assert w.phase == "Failed"
    assert w.wf.status is not None
    ready = w.wf.status.condition("Ready")
    assert ready is not None and ready.status == "False"
    assert ready.message.startswith(
        "invalid spec: spec.steps[1].when: steps.a.metrics has no field 'score'"
    )


# ---- the checker agrees with the CEL library -------------------------------------------------

_INTS = ["steps.a.iteration", "steps.a.metrics.toolCalls", "size(steps.a.artifacts)", "3"]
_DOUBLES = ["steps.a.metrics.extra.score", "2.5", "double(steps.a.metrics.errors)"]
_STRINGS = ["steps.a.summary", "inputs.t", "workflow.name", "'ok'", "steps.a.phase"]


def _terms() -> st.SearchStrategy[tuple[str, str]]:
    """(expression, its type) over the declared environment, every optional field present."""
    leaves = st.one_of(
        st.sampled_from([(e, "int") for e in _INTS]),
        st.sampled_from([(e, "double") for e in _DOUBLES]),
        st.sampled_from([(e, "string") for e in _STRINGS]),
        st.sampled_from([("true", "bool"), ("has(steps.a.metrics.errors)", "bool")]),
    )

    def extend(inner: st.SearchStrategy[tuple[str, str]]) -> st.SearchStrategy[tuple[str, str]]:
        pairs = st.tuples(inner, inner)

        def combine(pair: tuple[tuple[str, str], tuple[str, str]]) -> tuple[str, str]:
            (a, ta), (b, tb) = pair
            numeric = {"int", "double"}
            if ta == tb == "bool":
                return f"({a} && !{b})", "bool"
            if ta in numeric and tb in numeric:
                return (f"({a} + {b})", ta) if ta == tb else (f"({a} < {b})", "bool")
            if ta == tb == "string":
                return f"({a} + {b}).contains({b})", "bool"
            return f"({a} == {a})", "bool"

        return pairs.map(combine)

    return st.recursive(leaves, extend, max_leaves=8)


def _context() -> dict[str, Any]:
    result = StepResult(
        summary="all ok",
        status="success",
        artifacts=[Artifact(path="x.py")],
        metrics=StepMetrics(tool_calls=2, errors=0, extra={"score": 81.0}),
    )
    status = StepStatus(name="a", phase=StepPhase.SUCCEEDED, iteration=1, result=result)
    return activation(
        WHEN,
        steps={"a": step_view(status, True)},
        inputs={"t": "prod"},
        workflow=workflow_view("wf", "team"),
    )


@given(_terms())
def test_what_the_checker_accepts_evaluates_to_a_bool(term: tuple[str, str]) -> None:
    import cel

    expression, type_ = term
    if type_ != "bool":
        expression = f"{expression} == {expression}"
    assert problems(expression, inputs=("t",)) == [], expression
    assert isinstance(cel.compile(expression).execute(_context()), bool), expression


@given(st.sampled_from(_INTS), st.sampled_from(_DOUBLES[:1] + _DOUBLES[2:]))
def test_what_the_library_refuses_the_checker_refuses_first(an_int: str, a_double: str) -> None:
    import cel

    for expression in (f"{an_int} + {a_double} > 0.0", f"{a_double} - {an_int} > 0.0"):
        assert problems(expression, inputs=("t",)), expression
        with pytest.raises(Exception, match="coerce"):
            cel.compile(expression).execute(_context())
    expression = f"steps.a.summary < {an_int}"
    assert problems(expression, inputs=("t",)), expression
    with pytest.raises(Exception, match="No such overload"):
        cel.compile(expression).execute(_context())


_PIECES = [
    "steps", "result", "inputs", "workflow", ".", "a", "metrics", "extra", "score", "[", "]",
    "(", ")", "'x'", "1", "2.5", "3u", "true", "null", "==", "<", "+", "-", "*", "&&", "||",
    "!", "?", ":", ",", "in", "size", "has", "exists", "map", "filter", "all", "x", "{", "}",
    "artifacts", "summary", "int", "double", "contains", "b\"y\"",
]  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=24), st.sampled_from(list(ExpressionKind)))
def test_the_checker_never_raises_on_any_expression(
    pieces: list[str], kind: ExpressionKind
) -> None:
    expression = " ".join(pieces) or "true"
    found, steps = check_expression(expression, kind, inputs=("x",))
    assert isinstance(found, list) and isinstance(steps, set)


def _expressions() -> st.SearchStrategy[str]:
    """Well-formed CEL, mostly ill-typed: the checker's every branch, against any input."""
    names = st.sampled_from(["steps", "result", "inputs", "workflow", "x", "v"])
    fields = st.sampled_from(["a", "metrics", "extra", "score", "summary", "artifacts", "x"])
    literals = st.sampled_from(["1", "2.5", "3u", "'s'", 'b"y"', "true", "null", "[]", "{}"])
    paths = st.tuples(names, st.lists(fields, max_size=4)).map(lambda t: ".".join([t[0], *t[1]]))
    atoms = st.one_of(paths, literals)

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        ops = st.sampled_from(["==", "!=", "<", ">=", "+", "-", "*", "/", "%", "&&", "||", "in"])
        return st.one_of(
            st.tuples(inner, ops, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda e: f"!({e})"),
            inner.map(lambda e: f"-({e})"),
            inner.map(lambda e: f"size({e})"),
            st.tuples(paths).map(lambda t: f"has({t[0]})"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]}, {t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"{{'k': {t[0]}, 'j': {t[1]}}}"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            st.tuples(inner, st.sampled_from(["all", "exists", "map", "filter"]), inner).map(
                lambda t: f"{t[0]}.{t[1]}(v, {t[2]})"
            ),
            st.tuples(inner, st.sampled_from(["contains", "startsWith", "matches"]), inner).map(
                lambda t: f"{t[0]}.{t[1]}({t[2]})"
            ),
            st.tuples(st.sampled_from(["int", "double", "string", "dyn"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
        )

    return st.recursive(atoms, extend, max_leaves=10)


@given(_expressions(), st.sampled_from(list(ExpressionKind)))
def test_the_type_checker_never_raises_on_well_formed_expressions(
    expression: str, kind: ExpressionKind
) -> None:
    found, _ = check_expression(expression, kind, inputs=("x",))
    assert all(isinstance(p, str) and p for p in found)


def test_a_kind_is_documented_once_its_field_exists() -> None:
    from agentflow.api.celenv import documented_kinds
    from agentflow.api.models import Step

    kinds = documented_kinds()
    assert kinds[:2] == [WHEN, UNTIL]
    assert (ACCEPT in kinds) == ("accept" in Step.model_fields)
    text = environment_markdown()
    assert ("`spec.steps[].accept`" in text) == (ACCEPT in kinds)
