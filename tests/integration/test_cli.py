"""The ``agentflow`` CLI against the real operator on the local control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agentflow.cli import app
from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    get,
    items,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

FINANCE_SUMMARY = "Validated Bangladesh VAT and tax compliance requirements for the new feature."


class Cli:
    """Runs ``agentflow --kubeconfig K ...`` in-process, as a user would run it."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str) -> Any:
        result = CliRunner().invoke(app, ["--kubeconfig", str(self.kubeconfig), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result


@pytest.fixture
def cli(kubeconfig: Path) -> Cli:
    return Cli(kubeconfig)


def write(tmp_path: Path, name: str, docs: list[dict[str, Any]]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def jobs_of_run(kubectl: Kubectl, namespace: str, name: str, run: int) -> set[str]:
    return {
        j["metadata"]["labels"]["agentflow.dev/step"]
        for j in step_jobs(kubectl, namespace, name)
        if j["metadata"]["labels"]["agentflow.dev/run"] == str(run)
    }


def test_submit_watch_succeeds_and_get_describe_logs_show_the_results(
    operator: OperatorProcess, cli: Cli, namespace: str
) -> None:
    result = cli(
        "submit",
        str(REPO / "workflows" / "finance-feature.yaml"),
        "-n",
        namespace,
        "--watch",
        "--timeout",
        "300",
    )
    assert result.exit_code == 0, result.output
    assert (
        f"AgentFallbackPolicy/finance-fallbacks created in namespace {namespace}" in result.stdout
    )
    assert f"Workflow/finance-feature created in namespace {namespace}" in result.stdout
    assert f"workflow {namespace}/finance-feature Succeeded" in result.stdout
    assert (
        f"{namespace}/finance-feature: step validate-requirements Succeeded "
        f"(agent business-logic-validator): {FINANCE_SUMMARY}"
    ) in result.stdout

    table = cli("get", "-n", namespace)
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "DEGRADED", "AGE", "MESSAGE"]
    assert row.split()[:4] == ["finance-feature", "Succeeded", "4/4", "false"]
    everywhere = cli("get", "-A")
    assert any(
        line.split()[:3] == [namespace, "finance-feature", "Succeeded"]
        for line in everywhere.stdout.splitlines()
    )

    described = cli("describe", "finance-feature", "-n", namespace)
    assert described.exit_code == 0, described.output
    out = described.stdout
    assert f"summary: {FINANCE_SUMMARY}" in out
    assert "artifacts: services/finance/test-validation.ts (created)" in out
    assert "metrics: toolCalls=5, filesRead=12" in out
    assert "attempt 1 (iteration 1): agent business-logic-validator, job " in out
    assert any(line.split()[:3] == ["Ready", "True", "Succeeded"] for line in out.splitlines())
    assert "WorkflowSucceeded" in out  # the Workflow's events

    logs = cli("logs", "finance-feature", "validate-requirements", "-n", namespace)
    assert logs.exit_code == 0, logs.output
    assert "## Summary" in logs.stdout and FINANCE_SUMMARY in logs.stdout
    assert "services/finance/vat.ts" in logs.stdout


def test_logs_read_a_large_report_from_its_output_configmap(
    operator: OperatorProcess, cli: Cli, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "big-output",
                [{"name": "write", "agent": "verbose", "prompt": "write a lot"}],
                [
                    script_agent(
                        "verbose", report="## Summary\nlots of detail\n", output_bytes=200_000
                    )
                ],
            )
        ],
    )
    wf = wait_finished(kubectl, namespace, "big-output")
    assert step(wf, "write")["result"]["outputRef"], wf["status"]
    logs = cli("logs", "big-output", "write", "-n", namespace)
    assert logs.exit_code == 0, logs.output
    assert logs.stdout.startswith("## Summary\nlots of detail")
    assert len(logs.stdout.encode()) > 200_000


def test_submit_watch_of_a_failing_workflow_exits_1(
    operator: OperatorProcess, cli: Cli, namespace: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "failing.yaml",
        [
            workflow(
                "doomed",
                [{"name": "break", "agent": "broken", "prompt": "fail"}],
                [script_agent("broken", fail="always")],
            )
        ],
    )
    result = cli("submit", path, "-n", namespace, "--watch", "--timeout", "300")
    assert result.exit_code == 1, result.output
    assert f"workflow {namespace}/doomed Failed: step break failed" in result.stdout


def test_retry_runs_only_the_failed_step_and_what_never_started(
    operator: OperatorProcess, cli: Cli, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    # The flaky agent fails while the Secret says so; flipping it does not change the
    # Workflow's spec, so only the retry request can start another run.
    switch = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "flaky-switch"},
        "stringData": {"fail": "always"},
    }
    moody = {
        "name": "moody",
        "provider": "script",
        "env": [
            {
                "name": "AGENTFLOW_SCRIPT_FAIL",
                "valueFrom": {"secretKeyRef": {"name": "flaky-switch", "key": "fail"}},
            },
            {"name": "AGENTFLOW_SCRIPT_REPORT", "value": "## Summary\nflaky worked\n"},
        ],
    }
    path = write(
        tmp_path,
        "flaky.yaml",
        [
            switch,
            workflow(
                "flaky-run",
                [
                    {"name": "prepare", "agent": "steady", "prompt": "prepare"},
                    {"name": "flaky", "agent": "moody", "prompt": "try"},
                    {
                        "name": "finish",
                        "agent": "steady",
                        "prompt": "finish {{ steps.flaky.summary }}",
                    },
                ],
                [script_agent("steady"), moody],
            ),
        ],
    )
    first = cli("submit", path, "-n", namespace, "--watch", "--timeout", "300")
    assert first.exit_code == 1, first.output
    assert f"Secret/flaky-switch created in namespace {namespace}" in first.stdout
    failed = get(kubectl, namespace, "workflows.agentflow.dev", "flaky-run")
    assert failed is not None
    assert [step(failed, s)["phase"] for s in ("prepare", "flaky", "finish")] == [
        "Succeeded",
        "Failed",
        "Pending",
    ]

    patched = kubectl(
        "patch",
        "secret",
        "flaky-switch",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"stringData": {"fail": "never"}}',
    )
    assert patched.returncode == 0, patched.stderr
    retried = cli("retry", "flaky-run", "-n", namespace)
    assert retried.exit_code == 0, retried.output
    assert f"retry requested for {namespace}/flaky-run (agentflow.dev/retry=" in retried.stdout

    def second_run_finished() -> dict[str, Any] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "flaky-run")
        status = (wf or {}).get("status") or {}
        done = status.get("run") == 2 and status.get("phase") in ("Succeeded", "Failed")
        return wf if done else None

    wf = wait_for(second_run_finished, 180, what="the retried run")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    # prepare kept its first-run result (not re-run, not even from the cache).
    assert step(wf, "prepare")["phase"] == "Succeeded"
    assert step(wf, "prepare")["attempts"] == step(failed, "prepare")["attempts"]
    assert step(wf, "flaky")["result"]["summary"] == "flaky worked"
    assert jobs_of_run(kubectl, namespace, "flaky-run", 1) == {"prepare", "flaky"}
    assert jobs_of_run(kubectl, namespace, "flaky-run", 2) == {"flaky", "finish"}


def test_suspend_stops_new_steps_and_resume_continues(
    operator: OperatorProcess, cli: Cli, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "pausable.yaml",
        [
            workflow(
                "pausable",
                [
                    {"name": "first", "agent": "slow", "prompt": "takes a moment"},
                    {"name": "second", "agent": "quick", "prompt": "then this"},
                ],
                [script_agent("slow", sleep=5), script_agent("quick")],
            )
        ],
    )
    assert cli("submit", path, "-n", namespace).exit_code == 0

    def first_running() -> bool:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "pausable")
        return bool(wf and wf.get("status") and step(wf, "first")["phase"] == "Running")

    wait_for(first_running, 120, what="the first step to run")
    suspended = cli("suspend", "pausable", "-n", namespace)
    assert suspended.exit_code == 0, suspended.output
    assert f"workflow {namespace}/pausable suspended" in suspended.stdout

    def first_done_while_suspended() -> dict[str, Any] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "pausable")
        status = (wf or {}).get("status") or {}
        if status.get("observedGeneration") != (wf or {}).get("metadata", {}).get("generation"):
            return None
        first = step(wf or {}, "first")
        return (
            wf
            if first["phase"] == "Succeeded" and "suspended" in status.get("message", "")
            else None
        )

    # One planning pass both records the finished step and decides what to start next, so
    # once this status is visible, a second step that was going to start would be Running.
    paused = wait_for(first_done_while_suspended, 120, what="the running step to finish")
    assert step(paused, "second")["phase"] == "Pending"
    assert paused["status"]["phase"] == "Running"
    assert "second" not in {
        j["metadata"]["labels"]["agentflow.dev/step"]
        for j in step_jobs(kubectl, namespace, "pausable")
    }

    resumed = cli("resume", "pausable", "-n", namespace)
    assert resumed.exit_code == 0, resumed.output
    wf = wait_finished(kubectl, namespace, "pausable", timeout=120)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert step(wf, "second")["phase"] == "Succeeded"


def test_cache_ls_and_purge(
    operator: OperatorProcess, cli: Cli, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, REPO / "workflows" / "health-check.yaml")
    # A user's ConfigMap that carries the cache label is not a cache entry: never listed or purged.
    users = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "team-notes", "labels": {"agentflow.dev/cache": "true"}},
        "data": {"notes": "keep me"},
    }
    apply(kubectl, namespace, [users])
    wf = wait_finished(kubectl, namespace, "health-check")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]

    listed = cli("cache", "ls", "-n", namespace)
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert sorted(r[1] for r in rows) == ["api-latency", "certificates", "database", "dependencies"]
    assert all(r[-2] == "in" for r in rows)  # not expired: "in 23h"

    kept = cli("cache", "purge", "-n", namespace, "--expired-only")
    assert kept.exit_code == 0 and "deleted 0 cache entries, kept 4" in kept.stdout
    purged = cli("cache", "purge", "-n", namespace)
    assert purged.exit_code == 0 and "deleted 4 cache entries, kept 0" in purged.stdout
    left = items(kubectl, namespace, "configmaps", "agentflow.dev/cache")
    assert [cm["metadata"]["name"] for cm in left] == ["team-notes"]
    empty = cli("cache", "ls", "-n", namespace)
    assert f"No cache entries in namespace {namespace}." in empty.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["get", "nope"],
        ["describe", "nope"],
        ["logs", "nope", "step"],
        ["retry", "nope"],
        ["rerun", "nope"],
        ["suspend", "nope"],
        ["resume", "nope"],
    ],
    ids=lambda c: c[0],
)
def test_unknown_workflow_exits_4(
    operator: OperatorProcess, cli: Cli, namespace: str, command: list[str]
) -> None:
    result = cli(*command, "-n", namespace)
    assert result.exit_code == 4, result.output
    assert result.stderr.strip() == f"workflow 'nope' not found in namespace '{namespace}'"
