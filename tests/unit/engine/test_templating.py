"""Prompt templates: references, strictness, no re-rendering."""

from __future__ import annotations

import re
import tracemalloc

import pytest

from agentflow.api.models import MAX_PROMPT_LENGTH, Artifact, StepMetrics, StepResult
from agentflow.engine import PromptContext, TemplateError, render_prompt
from agentflow.engine.templating import MAX_RENDERED_PROMPT_BYTES, PromptTooLarge

CONTEXT = PromptContext(
    workflow="release",
    namespace="team",
    step="notes",
    iteration=2,
    phases={"audit": "Succeeded", "perf": "Skipped"},
    iterations={"audit": 3, "perf": 0},
)
RESULTS = {
    "audit": StepResult(
        status="success",
        summary="no findings",
        artifacts=[Artifact(path="a.md"), Artifact(path="b.md", action="created")],
        metrics=StepMetrics(tool_calls=4, extra={"score": 0.5, "files": 3.0}),
    ),
    "notes": StepResult(summary="draft one"),
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ steps.audit.summary }}", "no findings"),
        ("{{steps.audit.status}}", "success"),
        ("{{   steps.audit.artifacts   }}", "a.md, b.md"),
        ("{{ steps.audit.metrics.toolCalls }}", "4"),
        ("{{ steps.audit.metrics.score }}", "0.5"),
        ("{{ steps.audit.metrics.extra.score }}", "0.5"),
        ("{{ steps.audit.metrics.extra.toolCalls }}", ""),
        ("{{ steps.audit.metrics.files }}", "3"),
        ("{{ steps.audit.metrics.inputTokens }}", ""),
        ("{{ steps.audit.iteration }}", "3"),
        ("{{ steps.audit.phase }}", "Succeeded"),
        ("{{ steps.perf.summary }}|{{ steps.perf.phase }}", "|Skipped"),
        ("{{ workflow.name }}/{{ workflow.namespace }}", "release/team"),
        ("{{ step.name }} #{{ step.iteration }}", "notes #2"),
        ("last: {{ steps.notes.summary }}", "last: draft one"),
        ("no references at all", "no references at all"),
        ("literal \\{{ steps.audit.summary }}", "literal {{ steps.audit.summary }}"),
        ("a } b }} c", "a } b }} c"),
    ],
)
def test_references_render(template: str, expected: str) -> None:
    assert render_prompt(template, RESULTS, CONTEXT) == expected


def test_first_iteration_sees_an_empty_previous_result() -> None:
    context = PromptContext(workflow="w", namespace="n", step="loop", iteration=1)
    assert render_prompt("[{{ steps.loop.summary }}]", {}, context) == "[]"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ steps.nope.summary }}", "unknown reference {{ steps.nope.summary }}"),
        ("{{ steps.audit.owner }}", "unknown reference {{ steps.audit.owner }}"),
        ("{{ workflow.uid }}", "unknown reference {{ workflow.uid }}"),
        ("{{ steps.audit.summary | upper }}", "unknown reference"),
        ("{{ 1 + 1 }}", "unknown reference {{ 1 + 1 }}"),
        ("{{ }}", "unknown reference"),
        ("open {{ steps.audit.summary", "unterminated or malformed"),
        ("{{{ steps.audit.summary }}}", "unterminated or malformed"),
    ],
)
def test_unknown_or_malformed_references_raise(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render_prompt(template, RESULTS, CONTEXT)


def test_injected_braces_are_not_rendered_again() -> None:
    hostile = {"audit": StepResult(summary="{{ workflow.name }} and {{ steps.nope.summary }}")}
    context = PromptContext(workflow="w", namespace="n", step="s", phases={"audit": "Succeeded"})
    rendered = render_prompt("got: {{ steps.audit.summary }}", hostile, context)
    assert rendered == "got: {{ workflow.name }} and {{ steps.nope.summary }}"


def test_shell_metacharacters_pass_through_untouched() -> None:
    hostile = {"audit": StepResult(summary="$(rm -rf /); `id` && echo $HOME")}
    context = PromptContext(workflow="w", namespace="n", step="s", phases={"audit": "Succeeded"})
    assert render_prompt("{{ steps.audit.summary }}", hostile, context) == hostile["audit"].summary


# ---------------------------------------------------------------------------------------------
# The size bound of a rendered prompt
# ---------------------------------------------------------------------------------------------

LONG_ARTIFACTS = {
    "audit": StepResult(
        summary="many files",
        artifacts=[Artifact(path=f"src/{i:03d}/" + "p" * 1000) for i in range(100)],
    )
}
AUDIT_DONE = PromptContext(workflow="w", namespace="n", step="notes", phases={"audit": "Succeeded"})
# The hostile template of issue 12: 16 KiB of references to 100 KB of artifact paths.
HOSTILE = "{{ steps.audit.artifacts }}" * (MAX_PROMPT_LENGTH // len("{{ steps.audit.artifacts }}"))


def test_a_prompt_that_would_render_past_the_limit_fails_naming_the_step_and_the_limit() -> None:
    assert len(HOSTILE) <= MAX_PROMPT_LENGTH  # the schema lets this template through
    with pytest.raises(PromptTooLarge) as raised:
        render_prompt(HOSTILE, LONG_ARTIFACTS, AUDIT_DONE)
    message = str(raised.value)
    assert "step notes" in message and f"{MAX_RENDERED_PROMPT_BYTES} bytes" in message
    assert isinstance(raised.value, TemplateError)  # the planner fails the step with it


def test_rendering_stops_before_the_huge_string_exists() -> None:
    # Rendered in full this would be 627 copies of ~100 KB: about 63 MB.
    tracemalloc.start()
    try:
        with pytest.raises(PromptTooLarge):
            render_prompt(HOSTILE, LONG_ARTIFACTS, AUDIT_DONE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_RENDERED_PROMPT_BYTES, peak


def test_the_limit_counts_utf8_bytes_and_is_inclusive() -> None:
    context = PromptContext(workflow="w", namespace="n", step="s")
    assert render_prompt("ab", {}, context, limit=2) == "ab"
    with pytest.raises(PromptTooLarge):
        render_prompt("abc", {}, context, limit=2)
    # "é" is two bytes: three of them pass a limit of five.
    assert render_prompt("éé", {}, context, limit=4) == "éé"
    with pytest.raises(PromptTooLarge):
        render_prompt("ééé", {}, context, limit=5)
    # Referenced values count too, not only the template's own text.
    with pytest.raises(PromptTooLarge, match="step s"):
        render_prompt("{{ workflow.name }}{{ workflow.name }}", {}, context, limit=1)


def test_a_prompt_at_the_default_limit_renders_and_one_byte_more_does_not() -> None:
    result = {"audit": StepResult(summary="s" * 2000)}
    refs = MAX_RENDERED_PROMPT_BYTES // 2000
    padding = MAX_RENDERED_PROMPT_BYTES - refs * 2000
    template = "{{ steps.audit.summary }}" * refs + "x" * padding
    rendered = render_prompt(template, result, AUDIT_DONE)
    assert len(rendered.encode()) == MAX_RENDERED_PROMPT_BYTES
    with pytest.raises(PromptTooLarge):
        render_prompt(template + "x", result, AUDIT_DONE)
