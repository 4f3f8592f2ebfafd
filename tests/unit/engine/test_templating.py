"""Prompt templates: references, strictness, no re-rendering."""

from __future__ import annotations

import re

import pytest

from agentflow.api.models import Artifact, StepMetrics, StepResult
from agentflow.engine import PromptContext, TemplateError, render_prompt

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
