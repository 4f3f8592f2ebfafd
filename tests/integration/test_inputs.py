"""Workflow inputs and typed CEL on the real control plane: ``agentflow submit -p``, kubectl
apply with defaults, a required input refused at admission, and a mistyped ``when`` that fails
the Workflow, naming the field, before any Job exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agentflow.cli import app
from tests.integration.conftest import OperatorProcess
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    condition,
    items,
    job_env,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "workflows" / "service-review.yaml"


def cli(kubeconfig: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--kubeconfig", str(kubeconfig), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_submit_with_parameters_runs_the_example_with_them(
    operator: OperatorProcess, kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    result = cli(
        kubeconfig,
        "submit",
        str(EXAMPLE),
        "-n",
        namespace,
        "-p",
        "service=billing",
        "-p",
        "environment=production",
        "--watch",
        "--timeout",
        "300",
    )
    assert result.exit_code == 0, result.output
    assert f"Workflow/service-review created in namespace {namespace}" in result.stdout
    wf = wait_finished(kubectl, namespace, "service-review")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    review = step(wf, "code-review")
    assert review["result"]["summary"] == (
        "code-review of billing: Review the latest changes to billing (production)."
    )
    # environment=production and the score of 90 make the when true.
    load = step(wf, "load-test")
    assert load["phase"] == "Succeeded"
    assert load["result"]["summary"] == "load-test of billing: Load-test billing in production."
    [job] = [
        j
        for j in step_jobs(kubectl, namespace, "service-review")
        if j["metadata"]["labels"]["agentflow.dev/step"] == "code-review"
    ]
    report = job_env(job, "AGENTFLOW_SCRIPT_REPORT")
    assert report is not None and "{step} of billing: {prompt}" in report


def test_kubectl_apply_runs_the_example_with_its_defaults(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, EXAMPLE)
    wf = wait_finished(kubectl, namespace, "service-review")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert step(wf, "code-review")["result"]["summary"] == (
        "code-review of checkout: Review the latest changes to checkout (staging)."
    )
    skipped = step(wf, "load-test")
    assert skipped["phase"] == "Skipped"
    assert skipped["message"].startswith('when: inputs.environment == "production"')


def _required(generate: bool = False) -> dict[str, Any]:
    doc = workflow(
        "needs-target",
        [{"name": "only", "agent": "x", "prompt": "deploy to {{ inputs.target }}"}],
        [script_agent("x", report="## Summary\n{prompt}\n")],
        arguments=[{"name": "target", "description": "where to deploy"}],
    )
    if generate:
        doc["metadata"] = {"generateName": "needs-target-"}
    return doc


def test_a_missing_required_input_is_refused_with_its_name(
    operator: OperatorProcess, kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    refused = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_required()))
    assert refused.returncode != 0
    assert (
        "spec.arguments[0]: Invalid value: input target is required: set its value"
        " (agentflow submit -p target=...) or a default"
    ) in refused.stderr
    path = tmp_path / "needs-target.yaml"
    path.write_text(yaml.safe_dump(_required()))
    result = cli(kubeconfig, "submit", str(path), "-n", namespace)
    assert result.exit_code == 1
    assert "spec.arguments[0]: input target is required" in result.stderr
    result = cli(kubeconfig, "submit", str(path), "-n", namespace, "-p", "tagret=prod")
    assert result.exit_code == 1
    assert "-p tagret: no Workflow of the files declares this input" in result.stderr
    assert items(kubectl, namespace, "workflows.agentflow.dev") == []


def test_submit_with_generate_name_creates_a_fresh_workflow_each_time(
    operator: OperatorProcess, kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(_required(generate=True)))
    names = []
    for target in ("eu", "us"):
        result = cli(kubeconfig, "submit", str(path), "-n", namespace, "-p", f"target={target}")
        assert result.exit_code == 0, result.output
        [line] = result.stdout.splitlines()
        assert line.startswith("Workflow/needs-target-") and line.endswith(
            f" created in namespace {namespace}"
        )
        names.append(line.split()[0].split("/", 1)[1])
    assert len(set(names)) == 2
    for name, target in zip(names, ("eu", "us"), strict=True):
        wf = wait_finished(kubectl, namespace, name)
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        assert step(wf, "only")["result"]["summary"] == f"deploy to {target}"
        assert wf["spec"]["arguments"][0]["value"] == target


def test_a_mistyped_when_fails_the_workflow_naming_the_field_before_any_job(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    # The schema-shaped path of an extra metric is metrics.extra.score; metrics.score is not
    # a field, and the operator says so before it starts anything.
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "mistyped",
                [
                    {"name": "a", "agent": "x"},
                    {"name": "b", "agent": "x", "when": "steps.a.metrics.score >= 80"},
                ],
                [script_agent("x")],
            )
        ],
    )
    wf = wait_finished(kubectl, namespace, "mistyped")
    assert wf["status"]["phase"] == "Failed"
    message = wf["status"]["message"]
    assert message.startswith(
        "invalid spec: spec.steps[1].when: steps.a.metrics has no field 'score'"
    ), message
    assert "steps.a.metrics.extra.score" in message
    stalled = condition(wf, "Stalled")
    assert stalled is not None and stalled["reason"] == "InvalidSpec"
    assert step_jobs(kubectl, namespace, "mistyped") == []


def test_a_different_input_value_misses_the_cache(
    operator: OperatorProcess, kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    # The prompt does not read the input: only the inputs in the cache key tell the runs apart.
    doc = workflow(
        "cached",
        [{"name": "only", "agent": "x", "prompt": "the same prompt every time"}],
        [script_agent("x")],
        arguments=[{"name": "flavour", "default": "plain"}],
    )
    doc["metadata"] = {"generateName": "cached-"}
    path = tmp_path / "cached.yaml"
    path.write_text(yaml.safe_dump(doc))
    phases = []
    for flavour in ("plain", "plain", "spicy"):
        result = cli(kubeconfig, "submit", str(path), "-n", namespace, "-p", f"flavour={flavour}")
        assert result.exit_code == 0, result.output
        name = result.stdout.split()[0].split("/", 1)[1]
        wf = wait_finished(kubectl, namespace, name)
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        phases.append(step(wf, "only")["phase"])
    assert phases == ["Succeeded", "Cached", "Succeeded"]
