"""The kopf shell in-process: ``controller.reconcile`` against an in-memory fake of
``agentflow.kube`` (tests/support), on a fake clock.

These cover the shell's own paths quickly; the same behaviour on Kubernetes is proven on the
real control plane (tests/integration).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from agentflow import controller
from agentflow.api.models import WORKFLOW_NAME_MESSAGE, StepResult
from agentflow.children import OUTPUT_DATA_KEY, output_configmap_name
from agentflow.controller import Key, PassResult
from agentflow.engine import job_name
from agentflow.kube import ApiError
from agentflow.report import encode_termination_message
from tests.support.shell import NAMESPACE, Clock, Shell
from tests.support.world import T0


def script_spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps), "agents": [{"name": "a", "provider": "script"}]}


def test_a_name_too_long_fails_the_workflow_naming_metadata_name_not_spec() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("w" * 64, script_spec({"name": "s", "agent": "a"}))
    assert shell.reconcile(key) == PassResult(requeue_after=None, finished=True)
    status = shell.status(key)
    assert status["phase"] == "Failed"
    assert status["message"] == f"invalid spec: {WORKFLOW_NAME_MESSAGE}"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["message"] == WORKFLOW_NAME_MESSAGE and stalled["reason"] == "InvalidSpec"
    assert shell.kube.jobs == {}


# ---- outputs: a report too large for the termination message ------------------------------


def truncated_message(summary: str = "long") -> str:
    return encode_termination_message(StepResult(summary=summary, truncated=True), full_size=10**4)


def one_step(shell: Shell) -> tuple[Key, str]:
    """A Workflow of one step, planned once: its Job is created."""
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    shell.reconcile(key)
    [(_, job)] = shell.kube.jobs
    return key, job


def test_a_truncated_report_is_read_from_the_log_into_an_output_configmap_once() -> None:
    shell = Shell(Clock(T0))
    key, job = one_step(shell)
    full = "## Summary\nthe whole story\n" + "x" * 5000
    shell.kube.finish_job(NAMESPACE, job, T0, message=truncated_message(), log=full)
    shell.reconcile(key)
    name = output_configmap_name(job)
    assert shell.kube.configmaps[(NAMESPACE, name)]["data"] == {OUTPUT_DATA_KEY: full}
    [step] = shell.status(key)["steps"]
    assert step["phase"] == "Succeeded" and step["result"]["outputRef"] == name
    assert step["result"]["summary"] == "long" and step["result"]["truncated"] is True
    assert shell.status(key)["phase"] == "Succeeded"
    shell.reconcile(key)
    assert [c for c in shell.kube.calls if c[0] in ("read-log", "create-configmap")] == [
        ("read-log", job),
        ("create-configmap", name),
    ]


def test_an_agent_that_wrote_no_termination_message_reports_through_its_log() -> None:
    shell = Shell(Clock(T0))
    key, job = one_step(shell)
    log = "## Summary\nprinted only\n\n## Metrics\n- tool_calls: 4\n"
    shell.kube.finish_job(NAMESPACE, job, T0, message="", log=log)
    shell.reconcile(key)
    [step] = shell.status(key)["steps"]
    assert step["result"]["summary"] == "printed only"
    assert step["result"]["metrics"]["toolCalls"] == 4
    assert step["result"]["outputRef"] == output_configmap_name(job)


def test_a_refused_output_configmap_fails_the_attempt_in_the_same_pass() -> None:
    shell = Shell(Clock(T0))
    key, job = one_step(shell)
    shell.kube.faults.configmap_error = ApiError(
        403, "error", {"message": 'configmaps "x" is forbidden: exceeded quota'}
    )
    shell.kube.finish_job(NAMESPACE, job, T0, message=truncated_message(), log="## Summary\nl\n")
    shell.reconcile(key)
    status = shell.status(key)
    [attempt] = status["steps"][0]["attempts"]
    expected = (
        f"the API server refused output ConfigMap {output_configmap_name(job)}: "
        '403: configmaps "x" is forbidden: exceeded quota'
    )
    assert (attempt["outcome"], attempt["reason"]) == ("Failed", "OutputRefused")
    assert attempt["message"] == f"OutputRefused: {expected}"
    assert status["phase"] == "Failed" and shell.kube.configmaps == {}


def test_an_output_configmap_holds_at_most_the_limit_whatever_the_log_decodes_to() -> None:
    shell = Shell(Clock(T0))
    key, job = one_step(shell)
    shell.kube.finish_job(NAMESPACE, job, T0, message=truncated_message(), log="\ufffd" * 10**6)
    shell.reconcile(key)
    cm = shell.kube.configmaps[(NAMESPACE, output_configmap_name(job))]
    assert len(cm["data"][OUTPUT_DATA_KEY].encode()) <= shell.config.output_limit_bytes


# ---- conflicts -----------------------------------------------------------------------------


def test_a_409_on_the_status_write_is_written_again_without_a_second_job() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    # Another writer (kopf adding its finalizer) came first: only bookkeeping changed.
    shell.kube.faults.status_conflicts = 1
    shell.reconcile(key)
    verbs = [verb for verb, _ in shell.kube.calls]
    assert verbs == ["create-job", "patch-status", "get-workflow", "patch-status"]
    [step] = shell.status(key)["steps"]
    assert step["phase"] == "Running" and len(step["attempts"]) == 1
    assert [reason for _, reason, _ in shell.events].count("StepStarted") == 1


def test_a_status_write_that_lost_to_a_spec_change_plans_again_from_the_new_spec() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    stale = copy.deepcopy(shell.body(key))
    # The spec changes between the watch event and the write: the pass plans run 2 from it.
    body = shell.body(key)
    body["spec"] = script_spec({"name": "t", "agent": "a"})
    body["metadata"]["generation"] = 2
    body["metadata"]["resourceVersion"] = "100"
    asyncio.run(controller.reconcile(shell.rt, key, stale, lambda: shell.gather(key)))
    status = shell.status(key)
    assert [s["name"] for s in status["steps"]] == ["t"]
    assert status["observedGeneration"] == 2


def test_a_job_name_held_by_a_foreign_job_fails_that_attempt_and_leaves_it() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    uid = shell.body(key)["metadata"]["uid"]
    name = job_name("wf", "s", 1, 1, 1, uid=uid)
    shell.kube.add_foreign_job(NAMESPACE, name, {"agentflow.dev/workflow": "wf"})
    shell.reconcile(key)
    status = shell.status(key)
    [attempt] = status["steps"][0]["attempts"]
    assert (attempt["jobName"], attempt["reason"]) == (name, "JobConflict")
    assert status["phase"] == "Failed"
    assert "ownerReferences" not in shell.kube.jobs[(NAMESPACE, name)]["metadata"]
    assert ("delete-job", name) not in shell.kube.calls
    assert any(reason == "JobConflict" for _, reason, _ in shell.events)


# ---- a status too large to store -----------------------------------------------------------


def test_a_status_too_large_for_etcd_becomes_a_small_failed_status_and_an_event() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}, {"name": "t", "agent": "a"}))
    too_large = ApiError(500, "error", {"message": "etcdserver: request is too large"})
    shell.kube.faults.status_error = lambda patch: (
        too_large if patch.get("phase") != "Failed" else None
    )
    shell.reconcile(key)
    status = shell.status(key)
    assert status["phase"] == "Failed"
    assert status["message"].startswith("the Workflow's status no longer fits")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "StatusTooLarge"
    assert [s["name"] for s in status["steps"]] == ["s", "t"]
    assert not any(s.get("attempts") for s in status["steps"])
    assert any(reason == "StatusTooLarge" for _, reason, _ in shell.events)


# ---- metrics: the facts of the pass whose status is stored, once ---------------------------


def test_a_pass_counts_its_metrics_once_whatever_its_writes_met() -> None:
    def sample(shell: Shell, name: str, **labels: str) -> float:
        value = shell.rt.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    team = {"namespace": NAMESPACE}
    # A 409 on the status write: the attempt started once, its queue latency observed once.
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    shell.kube.faults.status_conflicts = 1
    shell.reconcile(key)
    latency = "agentflow_step_queue_latency_seconds_count"
    assert sample(shell, latency, **team, agent="a") == 1
    # A Job name another's Job holds: one failed attempt, no Job that finished, one Failed run.
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    uid = shell.body(key)["metadata"]["uid"]
    shell.kube.add_foreign_job(NAMESPACE, job_name("wf", "s", 1, 1, 1, uid=uid), {})
    shell.reconcile(key)
    shell.reconcile(key)
    attempts = "agentflow_step_attempts_total"
    assert sample(shell, attempts, **team, agent="a", outcome="failed") == 1
    assert sample(shell, "agentflow_operator_step_overhead_seconds_count") == 0
    finished = "agentflow_workflows_finished_total"
    assert sample(shell, finished, **team, phase="Failed", degraded="false") == 1
    # A status too large to store: the run the controller failed counts as Failed, once.
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    too_large = ApiError(500, "error", {"message": "etcdserver: request is too large"})
    shell.kube.faults.status_error = lambda patch: (
        too_large if patch.get("phase") != "Failed" else None
    )
    shell.reconcile(key)
    shell.reconcile(key)
    assert sample(shell, finished, **team, phase="Failed", degraded="false") == 1
