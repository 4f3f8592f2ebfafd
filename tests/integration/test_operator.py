"""The operator end to end: real API server, real Job controller, the local node runs the pods."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    condition,
    events,
    get,
    items,
    job_env,
    policy,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

FINANCE_SUMMARY = "Validated Bangladesh VAT and tax compliance requirements for the new feature."


def test_finance_feature_runs_sequentially_and_feeds_outputs_forward(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, REPO / "workflows" / "finance-feature.yaml")
    wf = wait_finished(kubectl, namespace, "finance-feature")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["progress"] == "4/4"
    assert wf["status"]["observedGeneration"] == wf["metadata"]["generation"]
    validate = step(wf, "validate-requirements")
    assert validate["result"]["summary"] == FINANCE_SUMMARY
    assert validate["result"]["metrics"]["toolCalls"] == 5
    assert validate["result"]["metrics"]["filesRead"] == 12
    assert {a["path"] for a in validate["result"]["artifacts"]} == {
        "services/finance/test-validation.ts",
        "services/finance/vat.ts",
    }
    jobs = {
        j["metadata"]["labels"]["agentflow.dev/step"]: j
        for j in step_jobs(kubectl, namespace, "finance-feature")
    }
    assert len(jobs) == 4
    # The validator's summary reached the next step's prompt, as data in the environment.
    assert FINANCE_SUMMARY in (job_env(jobs["implement"], "AGENTFLOW_PROMPT") or "")
    # Sequential: each step started only after the previous one finished.
    order = ["validate-requirements", "implement", "write-tests", "review"]
    for before, after in itertools.pairwise(order):
        assert step(wf, before)["finishedAt"] <= step(wf, after)["startedAt"]
    ready = kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "awf/finance-feature", "--timeout=5s"
    )
    assert ready.returncode == 0, ready.stderr
    table = kubectl("get", "-n", namespace, "awf")
    assert table.returncode == 0
    header = table.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "PHASE", "PROGRESS", "DEGRADED", "AGE"]
    assert "Succeeded" in table.stdout and "4/4" in table.stdout
    reasons = {e["reason"] for e in events(kubectl, namespace, "finance-feature")}
    assert {"StepStarted", "StepSucceeded", "WorkflowSucceeded"} <= reasons


def test_health_check_runs_in_parallel(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, REPO / "workflows" / "health-check.yaml")
    wf = wait_finished(kubectl, namespace, "health-check")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert [s["phase"] for s in wf["status"]["steps"]] == ["Succeeded"] * 4
    assert step(wf, "database")["result"]["summary"] == "database: healthy."


def test_performance_optimization_iterates_until_target(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, REPO / "workflows" / "performance-optimization.yaml")
    wf = wait_finished(kubectl, namespace, "performance-optimization")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    optimize = step(wf, "optimize")
    assert optimize["iteration"] == 3
    assert optimize["result"]["metrics"]["extra"]["p95LatencyMs"] == 180
    jobs = [
        j
        for j in step_jobs(kubectl, namespace, "performance-optimization")
        if j["metadata"]["labels"]["agentflow.dev/step"] == "optimize"
    ]
    assert sorted(j["metadata"]["labels"]["agentflow.dev/iteration"] for j in jobs) == [
        "1",
        "2",
        "3",
    ]
    # The second iteration saw the first one's result.
    second = next(j for j in jobs if j["metadata"]["labels"]["agentflow.dev/iteration"] == "2")
    assert "310 ms" in (job_env(second, "AGENTFLOW_PROMPT") or "")


def test_release_review_dag_with_conditional_steps(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, REPO / "workflows" / "release-review.yaml")
    wf = wait_finished(kubectl, namespace, "release-review")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert step(wf, "security-audit")["phase"] == "Succeeded"
    assert step(wf, "performance-review")["phase"] == "Skipped"
    assert step(wf, "release-notes")["phase"] == "Succeeded"
    assert wf["status"]["degraded"] is False  # a false `when` is not a degradation
    steps_with_jobs = {
        j["metadata"]["labels"]["agentflow.dev/step"]
        for j in step_jobs(kubectl, namespace, "release-review")
    }
    assert "performance-review" not in steps_with_jobs


def test_fallback_agent_takes_over_and_the_run_is_degraded(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            policy(
                "fallbacks", [{"agent": "primary", "fallback": "backup", "criticality": "high"}]
            ),
            workflow(
                "with-fallback",
                [{"name": "work", "agent": "primary", "prompt": "do the work"}],
                [
                    script_agent("primary", fail="always"),
                    script_agent("backup", report="## Summary\nbackup did it\n"),
                ],
                fallbackPolicyRef={"name": "fallbacks"},
            ),
        ],
    )
    wf = wait_finished(kubectl, namespace, "with-fallback")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["degraded"] is True
    work = step(wf, "work")
    assert work["fallbackUsed"] is True
    assert work["result"]["summary"] == "backup did it"
    assert [a["agent"] for a in work["attempts"]] == ["primary", "backup"]
    degraded = condition(wf, "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert "FallbackUsed" in {e["reason"] for e in events(kubectl, namespace, "with-fallback")}
    assert len(step_jobs(kubectl, namespace, "with-fallback")) == 2


def test_skippable_step_is_skipped_when_fallback_also_fails(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            policy(
                "skips",
                [
                    {
                        "agent": "flaky",
                        "fallback": "flaky-backup",
                        "criticality": "low",
                        "skipIfUnavailable": True,
                    },
                ],
            ),
            workflow(
                "with-skip",
                [
                    {"name": "optional", "agent": "flaky", "prompt": "nice to have"},
                    {"name": "main", "agent": "solid", "prompt": "the real work"},
                ],
                [
                    script_agent("flaky", fail="always"),
                    script_agent("flaky-backup", fail="always"),
                    script_agent("solid"),
                ],
                strategy="Parallel",
                fallbackPolicyRef={"name": "skips"},
            ),
        ],
    )
    wf = wait_finished(kubectl, namespace, "with-skip")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["degraded"] is True
    assert step(wf, "optional")["phase"] == "Skipped"
    assert step(wf, "main")["phase"] == "Succeeded"
    assert "StepSkipped" in {e["reason"] for e in events(kubectl, namespace, "with-skip")}


def test_critical_failure_fails_the_run_and_stops_running_jobs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            policy("critical", [{"agent": "validator", "criticality": "critical"}]),
            workflow(
                "critical-failure",
                [
                    {"name": "validate", "agent": "validator", "prompt": "validate"},
                    {"name": "slow", "agent": "slowpoke", "prompt": "takes long"},
                ],
                [script_agent("validator", fail="always"), script_agent("slowpoke", sleep=120)],
                strategy="Parallel",
                fallbackPolicyRef={"name": "critical"},
            ),
        ],
    )
    wf = wait_finished(kubectl, namespace, "critical-failure")
    assert wf["status"]["phase"] == "Failed"
    stalled = condition(wf, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert "validate" in stalled["message"]
    ready = condition(wf, "Ready")
    assert ready is not None and ready["status"] == "False"

    def slow_job_gone() -> bool:
        jobs = [
            j
            for j in step_jobs(kubectl, namespace, "critical-failure")
            if j["metadata"]["labels"]["agentflow.dev/step"] == "slow"
        ]
        return all(j["metadata"].get("deletionTimestamp") for j in jobs)

    wait_for(slow_job_gone, 30, what="the slow step's Job to be stopped")
    assert "WorkflowFailed" in {e["reason"] for e in events(kubectl, namespace, "critical-failure")}


def test_report_larger_than_termination_message_arrives_through_output_ref(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
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
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    result = step(wf, "write")["result"]
    assert result["truncated"] is True
    assert result["summary"] == "lots of detail"
    cm = get(kubectl, namespace, "configmap", result["outputRef"])
    assert cm is not None
    report = cm["data"]["report"]
    assert len(report.encode()) > 200_000
    assert report.startswith("## Summary")
    assert cm["metadata"]["ownerReferences"][0]["uid"] == wf["metadata"]["uid"]
    # The Workflow object itself stays small.
    assert len(json.dumps(wf)) < 20_000


def _step_names_with_jobs(kubectl: Kubectl, namespace: str, wf: str, run: int) -> set[str]:
    return {
        j["metadata"]["labels"]["agentflow.dev/step"]
        for j in step_jobs(kubectl, namespace, wf)
        if j["metadata"]["labels"]["agentflow.dev/run"] == str(run)
    }


def _chain(name: str, review_prompt: str) -> dict[str, Any]:
    return workflow(
        name,
        [
            {"name": "plan", "agent": "a", "prompt": "make a plan"},
            {"name": "build", "agent": "a", "prompt": "build: {{ steps.plan.summary }}"},
            {"name": "review", "agent": "a", "prompt": review_prompt},
            {"name": "ship", "agent": "a", "prompt": "ship: {{ steps.review.summary }}"},
        ],
        [script_agent("a", report="## Summary\n{step} done for: {prompt}\n")],
    )


def test_cache_reuses_results_and_a_prompt_change_reruns_only_dependents(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, [_chain("first", "review the build")])
    first = wait_finished(kubectl, namespace, "first")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    assert len(step_jobs(kubectl, namespace, "first")) == 4

    # The same steps in another Workflow: every step is a cache hit, no Job at all.
    apply(kubectl, namespace, [_chain("second", "review the build")])
    second = wait_finished(kubectl, namespace, "second")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert [s["phase"] for s in second["status"]["steps"]] == ["Cached"] * 4
    assert step_jobs(kubectl, namespace, "second") == []
    assert step(second, "build")["result"]["summary"] == step(first, "build")["result"]["summary"]

    # Editing one step's prompt re-runs that step and what depends on it, nothing else.
    apply(kubectl, namespace, [_chain("second", "review the build carefully")])

    def rerun_done() -> dict[str, Any] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "second")
        status = (wf or {}).get("status") or {}
        if status.get("run") == 2 and status.get("phase") in ("Succeeded", "Failed"):
            return wf
        return None

    rerun = wait_for(rerun_done, 120, what="the second run")
    assert rerun["status"]["phase"] == "Succeeded", rerun["status"]
    assert rerun["status"]["observedGeneration"] == 2
    assert [step(rerun, s)["phase"] for s in ("plan", "build", "review", "ship")] == [
        "Cached",
        "Cached",
        "Succeeded",
        "Succeeded",
    ]
    assert _step_names_with_jobs(kubectl, namespace, "second", 2) == {"review", "ship"}


def test_invalid_workflow_fails_with_a_message_naming_the_field_and_others_still_run(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "cyclic",
                [
                    {"name": "a", "agent": "x", "dependsOn": ["b"]},
                    {"name": "b", "agent": "x", "dependsOn": ["a"]},
                ],
                [script_agent("x")],
                strategy="DAG",
            ),
            workflow("fine", [{"name": "only", "agent": "x"}], [script_agent("x")]),
        ],
    )
    bad = wait_finished(kubectl, namespace, "cyclic")
    assert bad["status"]["phase"] == "Failed"
    assert "spec.steps" in bad["status"]["message"] and "cycle" in bad["status"]["message"]
    stalled = condition(bad, "Stalled")
    assert stalled is not None and stalled["reason"] == "InvalidSpec"
    assert step_jobs(kubectl, namespace, "cyclic") == []
    good = wait_finished(kubectl, namespace, "fine")
    assert good["status"]["phase"] == "Succeeded"


def test_schema_rejects_invalid_workflow_with_the_field_named(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    bad = workflow("bad", [{"name": "Not_A_DNS_Label", "agent": "x"}], [script_agent("x")])
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad))
    assert result.returncode != 0
    assert "spec.steps[0].name" in result.stderr


def test_deleting_a_workflow_deletes_its_jobs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "to-delete",
                [{"name": "wait", "agent": "slow"}],
                [script_agent("slow", sleep=120)],
            )
        ],
    )
    wait_for(lambda: step_jobs(kubectl, namespace, "to-delete"), 60, what="the step Job")
    result = kubectl("delete", "-n", namespace, "awf/to-delete", "--wait=true", "--timeout=60s")
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: not step_jobs(kubectl, namespace, "to-delete"), 60, what="Jobs to be collected"
    )
    wait_for(
        lambda: not items(kubectl, namespace, "pods", "agentflow.dev/workflow=to-delete"),
        60,
        what="pods to be collected",
    )


def test_expired_cache_entries_are_swept_and_children_carry_no_operator_bookkeeping(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "short-lived-cache",
                [{"name": "once", "agent": "a", "prompt": "p", "cache": {"ttlSeconds": 2}}],
                [script_agent("a")],
            )
        ],
    )
    wf = wait_finished(kubectl, namespace, "short-lived-cache")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    entries = items(kubectl, namespace, "configmaps", "agentflow.dev/cache")
    assert len(entries) == 1
    assert (
        step(wf, "once")["cacheKey"]
        == entries[0]["metadata"]["annotations"]["agentflow.dev/cache-key"]
    )
    # kopf keeps no state on the children it only watches: no finalizers, no annotations of its own.
    for job in step_jobs(kubectl, namespace, "short-lived-cache"):
        assert not job["metadata"].get("finalizers")
        assert not any(
            k.startswith("agentflow.dev/") or "kopf" in k
            for k in job["metadata"].get("annotations", {})
        )
    assert not entries[0]["metadata"].get("finalizers")
    wait_for(
        lambda: not items(kubectl, namespace, "configmaps", "agentflow.dev/cache"),
        60,
        what="the expired cache entry to be swept",
    )


def test_an_agent_image_that_only_prints_its_report_is_read_from_the_pod_log(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    report = "## Summary\nplain agent\n\n## Metrics\n- Tool calls: 2\n"
    agent = {
        "name": "plain",
        "image": "python:3.12-slim",
        "command": ["python3", "-c", f"print({report!r})"],
    }
    apply(kubectl, namespace, [workflow("plain-image", [{"name": "s", "agent": "plain"}], [agent])])
    wf = wait_finished(kubectl, namespace, "plain-image")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    result = step(wf, "s")["result"]
    assert result["summary"] == "plain agent"
    assert result["metrics"]["toolCalls"] == 2
    cm = get(kubectl, namespace, "configmap", result["outputRef"])
    assert cm is not None and cm["data"]["report"].strip() == report.strip()


def test_a_workflow_whose_status_outgrows_etcd_fails_with_a_clear_reason(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    # ~1.47 MB of spec: accepted, but the status of a few dozen finished steps will not fit
    # under etcd's 1.5 MiB request limit any more.
    summary = "## Summary\n" + "s" * 1900 + "\n"
    steps = [
        {"name": f"s{i:03d}", "agent": "a", "prompt": f"{i} " + "x" * 15_900} for i in range(92)
    ]
    doc = workflow(
        "oversized", steps, [script_agent("a", report=summary)], strategy="Parallel", parallelism=20
    )
    created = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(doc))
    assert created.returncode == 0, created.stderr
    wf = wait_finished(kubectl, namespace, "oversized", timeout=240)
    assert wf["status"]["phase"] == "Failed"
    assert "too large" in wf["status"]["message"]
    stalled = condition(wf, "Stalled")
    assert stalled is not None and stalled["reason"] == "StatusTooLarge"
    assert "StatusTooLarge" in {e["reason"] for e in events(kubectl, namespace, "oversized")}


def test_same_named_workflows_in_two_namespaces_each_keep_their_full_report(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    other = f"{namespace[:50]}-twin"
    assert kubectl("create", "namespace", other).returncode == 0
    try:
        doc = workflow(
            "twin",
            [{"name": "write", "agent": "verbose"}],
            [script_agent("verbose", report="## Summary\nbig\n", output_bytes=20_000)],
        )
        for ns in (namespace, other):
            apply(kubectl, ns, [doc])
        for ns in (namespace, other):
            wf = wait_finished(kubectl, ns, "twin")
            ref = step(wf, "write")["result"]["outputRef"]
            cm = get(kubectl, ns, "configmap", ref)
            assert cm is not None, f"no output ConfigMap {ref} in {ns}"
            assert cm["metadata"]["ownerReferences"][0]["uid"] == wf["metadata"]["uid"]
    finally:
        kubectl("delete", "namespace", other, "--wait=false")


def test_active_deadline_fails_the_run_and_stops_its_jobs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        [
            workflow(
                "deadline",
                [{"name": "slow", "agent": "slowpoke"}],
                [script_agent("slowpoke", sleep=120)],
                activeDeadlineSeconds=4,
            )
        ],
    )
    wf = wait_finished(kubectl, namespace, "deadline", timeout=60)
    assert wf["status"]["phase"] == "Failed"
    stalled = condition(wf, "Stalled")
    assert stalled is not None and stalled["reason"] == "DeadlineExceeded", stalled
    assert step(wf, "slow")["attempts"], "the step never started, so nothing was stopped"
    wait_for(
        lambda: all(
            j["metadata"].get("deletionTimestamp")
            for j in step_jobs(kubectl, namespace, "deadline")
        ),
        30,
        what="the running step's Job to be stopped",
    )


def test_workflows_carry_no_finalizer_and_an_old_one_is_taken_off(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    """Workers, not a kopf daemon per Workflow: nothing needs a finalizer.  A Workflow left with
    the finalizer earlier versions put on it loses it, and deleting any of them never waits."""
    old = workflow("from-before", [{"name": "s", "agent": "a", "prompt": "p"}], [script_agent("a")])
    old["metadata"]["finalizers"] = ["agentflow.dev/finalizer"]
    new = workflow("from-now", [{"name": "s", "agent": "a", "prompt": "p"}], [script_agent("a")])
    apply(kubectl, namespace, [old, new])
    for name in ("from-before", "from-now"):
        wf = wait_finished(kubectl, namespace, name)
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
    wait_for(
        lambda: (
            not (get(kubectl, namespace, "awf", "from-before") or {})["metadata"].get("finalizers")
        ),
        30,
    )
    assert not (get(kubectl, namespace, "awf", "from-now") or {})["metadata"].get("finalizers")
    deleted = kubectl("delete", "-n", namespace, "awf", "from-before", "from-now", "--timeout=10s")
    assert deleted.returncode == 0, deleted.stderr
    assert get(kubectl, namespace, "awf", "from-now") is None
