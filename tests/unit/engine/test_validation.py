"""validate_workflow and step_dependencies: each problem named by its field."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from pydantic import ValidationError

from agentflow.api.models import WORKFLOW_NAME_MESSAGE, AgentTemplate, Workflow, WorkflowSpec
from agentflow.engine import (
    field_path,
    model_error_messages,
    planner,
    step_dependencies,
    validate_workflow,
)
from tests.support.world import step


def spec(*steps: Any, agents: tuple[str, ...] = ("a",), **fields: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "steps": [s.model_dump() for s in steps],
            "agents": [AgentTemplate(name=n) for n in agents],
            **fields,
        }
    )


def test_a_valid_spec_has_no_problems() -> None:
    valid = spec(
        step("diff"),
        step(
            "audit", depends_on=["diff"], when="steps.diff.artifacts.exists(f, f.startsWith('x'))"
        ),
        step(
            "notes",
            depends_on=["audit"],
            prompt="{{ steps.diff.summary }} {{ steps.audit.metrics.score }} {{ workflow.name }}",
            repeat={"until": 'result.summary.contains("ok") && steps["diff"].phase == "Succeeded"'},
        ),
        step(
            "loop",
            depends_on=["notes"],
            prompt="{{ steps.loop.summary }}",
            repeat={"until": "true"},
        ),
        strategy="DAG",
    )
    assert validate_workflow(valid) == []


@pytest.mark.parametrize(
    ("workflow_spec", "expected"),
    [
        (
            spec(step("a"), step("b", depends_on=["x"]), strategy="DAG"),
            ["spec.steps[1].dependsOn: unknown step 'x'"],
        ),
        (
            spec(step("a"), step("b", depends_on=["a", "a"]), strategy="DAG"),
            ["spec.steps[1].dependsOn: duplicate step 'a'"],
        ),
        (
            spec(step("a", depends_on=["b"]), step("b", depends_on=["a"]), strategy="DAG"),
            ["spec.steps: dependency cycle a -> b -> a"],
        ),
        (
            spec(step("a", depends_on=["a"]), strategy="DAG"),
            ["spec.steps: dependency cycle a -> a"],
        ),
        (
            # Sequential: c follows b follows a, so a waiting for c is a cycle.
            spec(step("a", depends_on=["c"]), step("b"), step("c")),
            ["spec.steps: dependency cycle a -> c -> b -> a"],
        ),
        (
            spec(step("a"), step("b", agent="foo"), agents=("a", "b")),
            ["spec.steps[1].agent: unknown agent 'foo' (declared: a, b)"],
        ),
        (
            spec(step("a", agent="foo"), agents=()),
            ["spec.steps[0].agent: unknown agent 'foo' (declared: none)"],
        ),
        (
            spec(step("a", when="steps.x ==")),
            ["spec.steps[0].when: invalid CEL: "],
        ),
        (
            spec(step("a"), step("b", when="result.summary == ''")),
            ["spec.steps[1].when: unknown variable 'result' (available: inputs, steps, workflow)"],
        ),
        (
            spec(step("a"), step("b", when="steps.nope.phase == 'Succeeded'")),
            ["spec.steps[1].when: unknown step 'nope'"],
        ),
        (
            spec(step("a"), step("b", when="steps.a.phase == 'Succeeded'"), strategy="Parallel"),
            ["spec.steps[1].when: references step 'a' which is not an upstream dependency"],
        ),
        (
            spec(step("my-step"), step("b", when="steps.my-step.phase == 'Succeeded'")),
            ['spec.steps[1].when: a step name with "-" must be written steps["name"] in CEL'],
        ),
        (
            spec(step("a", repeat={"until": "result.iteration >"})),
            ["spec.steps[0].repeat.until: invalid CEL: "],
        ),
        (
            spec(step("a"), step("b"), step("c"), step("d", prompt="{{ steps.nope.summary }}")),
            ["spec.steps[3].prompt: unknown reference {{ steps.nope.summary }}"],
        ),
        (
            spec(step("a"), step("b", prompt="{{ steps.c.summary }}"), step("c")),
            ["spec.steps[1].prompt: references step 'c' which is not an upstream dependency"],
        ),
        (
            spec(step("a", prompt="{{ steps.a.summary }}")),
            ["spec.steps[0].prompt: references step 'a' which is not an upstream dependency"],
        ),
        (
            spec(step("a", prompt="{{ steps.a.colour }}")),
            ["spec.steps[0].prompt: unknown reference {{ steps.a.colour }}"],
        ),
        (
            spec(step("a", prompt="unclosed {{ workflow.name")),
            ["spec.steps[0].prompt: unterminated or malformed '{{'"],
        ),
    ],
)
def test_each_problem_names_its_field(workflow_spec: WorkflowSpec, expected: list[str]) -> None:
    problems = validate_workflow(workflow_spec)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


def test_every_problem_is_reported() -> None:
    problems = validate_workflow(
        spec(
            step("a", agent="x", depends_on=["ghost"]),
            step("b", when="1 +", prompt="{{ steps.zzz.summary }}"),
            strategy="DAG",
        )
    )
    assert [p.split(":")[0] for p in problems] == [
        "spec.steps[0].dependsOn",
        "spec.steps[0].agent",
        "spec.steps[1].when",
        "spec.steps[1].prompt",
    ]


def test_step_dependencies_per_strategy() -> None:
    steps = (step("a"), step("b"), step("c", depends_on=["a"]))
    assert step_dependencies(spec(*steps)) == {"a": [], "b": ["a"], "c": ["b", "a"]}
    assert step_dependencies(spec(*steps, strategy="Parallel")) == {"a": [], "b": [], "c": ["a"]}
    assert step_dependencies(spec(*steps, strategy="DAG")) == {"a": [], "b": [], "c": ["a"]}


def test_validating_a_long_chain_is_fast_enough_to_run_every_pass() -> None:
    import time

    chain = [step("s0")] + [
        step(
            f"s{i}", prompt=f"{{{{ steps.s{i - 1}.summary }}}}", when=f"steps.s{i - 1}.phase != ''"
        )
        for i in range(1, 256)
    ]
    started = time.perf_counter()
    assert validate_workflow(spec(*chain)) == []
    assert time.perf_counter() - started < 1.0  # quadratic work would take far longer


def test_deeply_nested_macros_are_rejected_for_their_cost() -> None:
    from agentflow.engine.expressions import MAX_MACRO_NESTING, check_expression, macro_nesting

    nested = "[1,2].all(a, [1].exists(b, [2].all(c, true)))"
    assert macro_nesting(nested) == 3 > MAX_MACRO_NESTING
    problems, _ = check_expression(nested, frozenset({"steps"}))
    assert problems and "nest more than" in problems[0]
    fine, _ = check_expression('[1].all(a, ["(", ")"].exists(b, b == "x"))', frozenset({"steps"}))
    assert fine == []


def test_field_paths_skip_validator_tags() -> None:
    loc = ("spec", "agents", 0, "env", 1, "function-after[_one_source(), EnvVar]")
    assert field_path(loc) == "spec.agents[0].env[1]"


def test_model_errors_name_their_field_from_the_objects_root() -> None:
    body = {
        "metadata": {"name": "w" * 64},
        "spec": {
            "steps": [{"name": "s", "agent": "a"}],
            "agents": [{"name": "a"}],
            "parallelism": 0,
        },
    }
    with pytest.raises(ValidationError) as raised:
        Workflow.model_validate(body)
    # The metadata validator names metadata.name itself: no "metadata: " (nor "spec.") before it.
    assert model_error_messages(raised.value) == [
        WORKFLOW_NAME_MESSAGE,
        "spec.parallelism: Input should be greater than or equal to 1",
    ]


def test_a_pass_checks_a_spec_object_it_has_seen_without_dumping_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The operator's passes of one generation share one parsed spec object.
    checked: list[WorkflowSpec] = []
    dumped: list[WorkflowSpec] = []

    def validate(s: WorkflowSpec) -> list[str]:
        checked.append(s)
        return validate_workflow(s)

    def dump_json(self: WorkflowSpec, **kwargs: Any) -> str:
        dumped.append(self)
        return original_dump(self, **kwargs)

    original_dump = WorkflowSpec.model_dump_json
    monkeypatch.setattr(planner, "_VALIDATED", OrderedDict())
    monkeypatch.setattr(planner, "_VALIDATED_OBJECTS", OrderedDict())
    monkeypatch.setattr(planner, "validate_workflow", validate)
    monkeypatch.setattr(WorkflowSpec, "model_dump_json", dump_json)
    invalid = spec(step("a", depends_on=["b"]), step("b", depends_on=["a"]), strategy="DAG")
    first = planner._validate(invalid)
    assert first and "cycle" in first[0]
    assert planner._validate(invalid) == first  # the same object: neither checked nor dumped
    assert (len(checked), len(dumped)) == (1, 1)
    twin = invalid.model_copy(deep=True)  # another object of the same content
    assert planner._validate(twin) == first
    assert (len(checked), len(dumped)) == (1, 2)
    valid = spec(step("a"))
    assert planner._validate(valid) == []
    assert planner._validate(valid) == []
    assert (len(checked), len(dumped)) == (2, 3)
