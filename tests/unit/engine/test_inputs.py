"""Workflow inputs (spec.arguments): the model, templates, env values, CEL, validation and the
cache key."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agentflow.api.models import (
    CEL_RESERVED_WORDS,
    MAX_ARGUMENTS,
    MAX_INPUT_VALUE_LENGTH,
    AgentTemplate,
    Parameter,
    WorkflowSpec,
)
from agentflow.engine import cache_key, model_error_messages, validate_workflow
from agentflow.engine.templating import (
    MAX_RENDERED_ENV_BYTES,
    PromptContext,
    TemplateError,
    input_references,
    render_inputs,
    render_prompt,
    template_references,
)
from tests.support.world import World, creates, step, workflow

AGENT = AgentTemplate(name="a", provider="script")  # type: ignore[arg-type]


def spec(**fields: Any) -> WorkflowSpec:
    body: dict[str, Any] = {
        "agents": [{"name": "a"}],
        "steps": [{"name": "s", "agent": "a", "prompt": "go"}],
    }
    body.update(fields)
    return WorkflowSpec.model_validate(body)


# ---- the model ------------------------------------------------------------------------------


def test_an_input_is_its_value_else_its_default() -> None:
    s = spec(
        arguments=[
            {"name": "a", "value": "given", "default": "fallback"},
            {"name": "b", "default": "fallback"},
            {"name": "c", "value": ""},
        ]
    )
    assert s.inputs() == {"a": "given", "b": "fallback", "c": ""}


def test_an_input_without_value_or_default_is_required_and_named() -> None:
    with pytest.raises(ValidationError) as e:
        spec(arguments=[{"name": "ok", "default": "x"}, {"name": "target"}])
    assert model_error_messages(e.value) == [
        "arguments[1]: input target is required: set its value"
        " (agentflow submit -p target=...) or a default"
    ]


@pytest.mark.parametrize("name", ["1st", "with-dash", "has space", "", "x" * 64, "dot.ted"])
def test_an_input_name_is_an_identifier(name: str) -> None:
    with pytest.raises(ValidationError):
        Parameter(name=name, default="x")


@pytest.mark.parametrize("name", CEL_RESERVED_WORDS)
def test_an_input_may_not_take_a_word_cel_reserves(name: str) -> None:
    with pytest.raises(ValidationError, match="a word CEL reserves"):
        Parameter(name=name, default="x")


def test_input_names_are_unique_and_bounded() -> None:
    with pytest.raises(ValidationError, match="duplicate input name 'a'"):
        spec(arguments=[{"name": "a", "default": "1"}, {"name": "a", "default": "2"}])
    many = [{"name": f"i{n}", "default": ""} for n in range(MAX_ARGUMENTS + 1)]
    with pytest.raises(ValidationError, match=f"at most {MAX_ARGUMENTS} items"):
        spec(arguments=many)
    with pytest.raises(ValidationError, match=f"at most {MAX_INPUT_VALUE_LENGTH} characters"):
        Parameter(name="a", value="x" * (MAX_INPUT_VALUE_LENGTH + 1))


# ---- templates ------------------------------------------------------------------------------


def test_a_prompt_renders_inputs_in_one_pass() -> None:
    context = PromptContext(
        workflow="wf", namespace="ns", step="s", inputs={"who": "{{ inputs.who }}", "n": "3"}
    )
    text = render_prompt("hello {{inputs.who}} x{{ inputs.n }}", {}, context)
    assert text == "hello {{ inputs.who }} x3"  # a value is inserted literally, never rendered


def test_an_unknown_input_does_not_render() -> None:
    context = PromptContext(workflow="wf", namespace="ns", step="s", inputs={"a": "1"})
    with pytest.raises(TemplateError, match=r"unknown input in \{\{ inputs.b \}\}"):
        render_prompt("{{ inputs.b }}", {}, context)
    with pytest.raises(TemplateError, match="unknown reference"):
        template_references("{{ inputs.with-dash }}")


def test_env_values_replace_inputs_and_keep_everything_else() -> None:
    value = r"--target={{inputs.t}} {{ steps.a.summary }} {x} \{{ inputs.t }} \{{ other"
    expected = r"--target=prod {{ steps.a.summary }} {x} {{ inputs.t }} \{{ other"
    assert render_inputs(value, {"t": "prod"}) == expected
    assert input_references(value) == ["t"]
    with pytest.raises(TemplateError, match=r"unknown input in \{\{ inputs.u \}\}"):
        render_inputs("{{ inputs.u }}", {"t": "x"})
    with pytest.raises(TemplateError, match="larger than"):
        render_inputs("{{ inputs.t }}" * 3, {"t": "x" * (MAX_RENDERED_ENV_BYTES // 2)})
    with pytest.raises(TemplateError, match="larger than"):
        render_inputs("x" * (MAX_RENDERED_ENV_BYTES + 1), {})


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text()))
def test_rendering_inputs_gives_back_each_value(values: dict[str, str]) -> None:
    template = "|".join(f"{{{{ inputs.{name} }}}}" for name in values)
    assert render_inputs(template, values, limit=10**9) == "|".join(values.values())


# ---- validation -----------------------------------------------------------------------------


def test_validation_names_every_undeclared_input() -> None:
    s = spec(
        arguments=[{"name": "known", "default": ""}],
        agents=[
            {
                "name": "a",
                "env": [
                    {"name": "OK", "value": "{{ inputs.known }}"},
                    {"name": "BAD", "value": "{{ inputs.ghost }}"},
                    {"name": "DATA", "value": "{{ steps.s.summary }} stays as written"},
                ],
            }
        ],
        steps=[
            {
                "name": "s",
                "agent": "a",
                "prompt": "{{ inputs.known }} {{ inputs.other }}",
                "when": 'inputs.known == "x" && inputs.nope == "y"',
                "override": {"env": [{"name": "O", "value": "{{ inputs.zz }}"}]},
            }
        ],
    )
    assert validate_workflow(s) == [
        "spec.agents[0].env[1].value: unknown input {{ inputs.ghost }}"
        " (declared in spec.arguments: known)",
        "spec.steps[0].override.env[0].value: unknown input {{ inputs.zz }}"
        " (declared in spec.arguments: known)",
        "spec.steps[0].when: unknown input 'nope' (declared in spec.arguments: known)",
        "spec.steps[0].prompt: unknown input {{ inputs.other }}"
        " (declared in spec.arguments: known)",
    ]


# ---- the plan -------------------------------------------------------------------------------


def _inputs_workflow(value: str, **fields: Any) -> World:
    agent = AgentTemplate.model_validate(
        {"name": "a", "env": [{"name": "TARGET", "value": "to {{ inputs.target }}"}]}
    )
    steps = [
        step("first", prompt="deploy {{ inputs.target }}"),
        step("second", when='inputs.target == "prod"', **fields),
    ]
    return World(
        workflow(
            steps,
            agents=[agent],
            arguments=[{"name": "target", "default": "staging", "value": value}],
        )
    )


def test_prompts_env_and_when_see_the_inputs() -> None:
    w = _inputs_workflow("prod")
    [create] = creates(w.plan())
    assert create.prompt == "deploy prod"
    assert [(e.name, e.value) for e in create.agent.env] == [("TARGET", "to prod")]
    w.succeed("first")
    assert [c.step for c in creates(w.plan())] == ["second"]

    w = _inputs_workflow("staging")
    w.plan()
    w.succeed("first")
    w.plan()
    assert w.phases()["second"] == "Skipped"


def test_a_different_input_value_misses_the_cache() -> None:
    # The prompt and env do not read the input: only the inputs in the key tell the runs apart.
    first = World(workflow([step("s")], arguments=[{"name": "x", "value": "1"}], name="one"))
    key_one = creates(first.plan())[0].cache_key
    first.succeed("s", "done with x=1")
    first.plan()
    same = World(
        workflow([step("s")], arguments=[{"name": "x", "value": "1"}], name="two"),
        cache=dict(first.cache),
        now=first.now,
    )
    same.plan()
    assert same.phases() == {"s": "Cached"}
    other = World(
        workflow([step("s")], arguments=[{"name": "x", "value": "2"}], name="three"),
        cache=dict(first.cache),
        now=first.now,
    )
    [create] = creates(other.plan())
    assert create.cache_key != key_one
    assert other.phases() == {"s": "Running"}


def test_the_key_of_a_workflow_without_inputs_is_unchanged() -> None:
    assert cache_key(AGENT, "p", {}, 1) == cache_key(AGENT, "p", {}, 1, inputs={})
    assert cache_key(AGENT, "p", {}, 1, inputs={"a": "1"}) != cache_key(AGENT, "p", {}, 1)
    assert cache_key(AGENT, "p", {}, 1, inputs={"a": "1", "b": "2"}) == cache_key(
        AGENT, "p", {}, 1, inputs={"b": "2", "a": "1"}
    )


@given(st.text(max_size=20), st.text(max_size=20))
def test_input_values_decide_the_key(one: str, two: str) -> None:
    same = cache_key(AGENT, "p", {}, 1, inputs={"x": one}) == cache_key(
        AGENT, "p", {}, 1, inputs={"x": two}
    )
    assert same == (one == two)


def test_the_example_in_writing_agents_is_what_it_says() -> None:
    import re
    from pathlib import Path

    import yaml

    docs = Path(__file__).resolve().parents[3] / "docs" / "writing-agents.md"
    section = docs.read_text().split("## What a step is given", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    body = yaml.safe_load(block.group(1))["spec"]
    with pytest.raises(ValidationError, match="input environment is required"):
        WorkflowSpec.model_validate(body)
    body["arguments"][1]["value"] = "production"
    given_spec = WorkflowSpec.model_validate(body)
    assert validate_workflow(given_spec) == []
    w = World(workflow(given_spec.steps, agents=given_spec.agents, arguments=body["arguments"]))
    [create] = creates(w.plan())
    assert create.prompt == "Review checkout before it ships to production."
    assert [(e.name, e.value) for e in create.agent.env] == [("TARGET", "checkout-production")]


def test_past_an_older_schema_the_operator_names_the_missing_input() -> None:
    # What the controller's model check reports (as the Failed condition's message) when a
    # Workflow reaches it without the CRD's rule, e.g. from before the rule existed.
    from agentflow.api.models import Workflow

    body = {
        "metadata": {"name": "wf"},
        "spec": {
            "agents": [{"name": "a"}],
            "steps": [{"name": "s", "agent": "a"}],
            "arguments": [{"name": "ok", "value": "1"}, {"name": "target"}],
        },
    }
    with pytest.raises(ValidationError) as e:
        Workflow.model_validate(body)
    assert model_error_messages(e.value) == [
        "spec.arguments[1]: input target is required: set its value"
        " (agentflow submit -p target=...) or a default"
    ]
