"""The product on real containers: the chart on kind, the operator in a pod, a kubelet runs steps.

The tests run in file order on one cluster and one release: the upgrade and the uninstall come
last.  Every namespace a Workflow runs in enforces Pod Security ``restricted``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import prometheus
from tests.e2e.conftest import (
    RELEASE,
    RELEASE_NAMESPACE,
    REPO,
    VALUES,
    KindCluster,
    operator_pods,
    wait_operator_ready,
)
from tests.integration.conftest import wait_for
from tests.integration.workflows import (
    apply,
    condition,
    events,
    get,
    items,
    policy,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

RUNNER_IMAGE = "agentflow/agent-runner:0.1.0"
OFFLINE_EXAMPLES = {
    "finance-feature.yaml": "finance-feature",
    "health-check.yaml": "health-check",
    "performance-optimization.yaml": "performance-optimization",
    "release-review.yaml": "release-review",
    "service-review.yaml": "service-review",
}


def agentflow_cli(cluster: KindCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``agentflow`` command as a user runs it, against the kind cluster."""
    binary = Path(sys.executable).parent / "agentflow"
    return subprocess.run(
        [str(binary), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def step_pods(cluster: KindCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return items(cluster.kubectl, namespace, "pods", f"agentflow.dev/workflow={name}")


def test_the_operator_runs_from_its_image_under_the_charts_service_account(
    release: KindCluster,
) -> None:
    pod = wait_operator_ready(release)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == RELEASE
    container = spec["containers"][0]
    assert container["image"] == "agentflow/operator:0.1.0"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    # It runs as the chart's non-root user, in a namespace that enforces `restricted`.
    assert spec["securityContext"]["runAsNonRoot"] is True
    ns = release.json("get", "namespace", RELEASE_NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    node = release.json("get", "node", pod["spec"]["nodeName"])
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.4"


def test_the_offline_examples_run_to_succeeded_in_runner_containers(
    release: KindCluster, namespace: str
) -> None:
    for filename in OFFLINE_EXAMPLES:
        apply(release.kubectl, namespace, REPO / "workflows" / filename)
    for name in OFFLINE_EXAMPLES.values():
        wf = wait_finished(release.kubectl, namespace, name, timeout=300)
        assert wf["status"]["phase"] == "Succeeded", (name, wf["status"])
        ready = condition(wf, "Ready")
        assert ready is not None and ready["status"] == "True"
        pods = step_pods(release, namespace, name)
        assert pods, f"{name}: no step pods"
        for pod in pods:
            assert pod["spec"]["containers"][0]["image"] == RUNNER_IMAGE
            statuses = pod["status"]["containerStatuses"]
            # A real container ran it: containerd's ID and the image it resolved.
            assert statuses[0]["containerID"].startswith("containerd://"), statuses
            assert statuses[0]["state"]["terminated"]["exitCode"] == 0
    finance = wait_finished(release.kubectl, namespace, "finance-feature")
    validate = finance["status"]["steps"][0]
    assert validate["result"]["summary"].startswith("Validated Bangladesh VAT")


def test_fallback_degrades_the_run_and_a_critical_failure_fails_it(
    release: KindCluster, namespace: str
) -> None:
    kubectl = release.kubectl
    apply(
        kubectl,
        namespace,
        [
            policy(
                "fallbacks",
                [
                    {"agent": "primary", "fallback": "backup", "criticality": "high"},
                    {"agent": "validator", "criticality": "critical"},
                ],
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
            workflow(
                "critical-failure",
                [{"name": "validate", "agent": "validator", "prompt": "validate"}],
                [script_agent("validator", fail="always")],
                fallbackPolicyRef={"name": "fallbacks"},
            ),
        ],
    )
    degraded = wait_finished(kubectl, namespace, "with-fallback", timeout=300)
    assert degraded["status"]["phase"] == "Succeeded", degraded["status"]
    assert degraded["status"]["degraded"] is True
    work = step(degraded, "work")
    assert work["fallbackUsed"] is True
    assert work["result"]["summary"] == "backup did it"
    assert [a["agent"] for a in work["attempts"]] == ["primary", "backup"]
    cond = condition(degraded, "Degraded")
    assert cond is not None and cond["status"] == "True"
    assert "FallbackUsed" in {e["reason"] for e in events(kubectl, namespace, "with-fallback")}
    # The primary's container really failed.
    failed = [
        p
        for p in step_pods(release, namespace, "with-fallback")
        if p["metadata"]["labels"]["agentflow.dev/agent"] == "primary"
    ]
    assert (
        failed
        and failed[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] != 0
    )

    failed_run = wait_finished(kubectl, namespace, "critical-failure", timeout=300)
    assert failed_run["status"]["phase"] == "Failed"
    stalled = condition(failed_run, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert "validate" in stalled["message"]
    assert "WorkflowFailed" in {e["reason"] for e in events(kubectl, namespace, "critical-failure")}


def test_a_large_report_arrives_whole_and_agentflow_logs_reads_real_pod_logs(
    release: KindCluster, namespace: str
) -> None:
    apply(
        release.kubectl,
        namespace,
        [
            workflow(
                "big-output",
                [
                    {"name": "write", "agent": "verbose", "prompt": "write a lot"},
                    {"name": "note", "agent": "terse", "prompt": "one line"},
                ],
                [
                    script_agent(
                        "verbose", report="## Summary\nlots of detail\n", output_bytes=200_000
                    ),
                    script_agent("terse", report="## Summary\nshort and sweet\n"),
                ],
            )
        ],
    )
    wf = wait_finished(release.kubectl, namespace, "big-output", timeout=300)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    result = step(wf, "write")["result"]
    assert result["truncated"] is True
    cm = get(release.kubectl, namespace, "configmap", result["outputRef"])
    assert cm is not None and len(cm["data"]["report"].encode()) > 200_000

    whole = agentflow_cli(release, "logs", "big-output", "write", "-n", namespace)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.startswith("## Summary\nlots of detail")
    assert len(whole.stdout.encode()) > 200_000
    # No output ConfigMap for the small step: `logs` reads its pod's log through the kubelet.
    assert "outputRef" not in step(wf, "note")["result"]
    pod_log = agentflow_cli(release, "logs", "big-output", "note", "-n", namespace)
    assert pod_log.returncode == 0, pod_log.stderr
    assert "short and sweet" in pod_log.stdout


def _assert_one_job_per_attempt(release: KindCluster, namespace: str, name: str) -> None:
    wf = get(release.kubectl, namespace, "workflows.agentflow.dev", name)
    assert wf is not None
    attempts = [a for s in wf["status"]["steps"] for a in s.get("attempts", [])]
    jobs = step_jobs(release.kubectl, namespace, name)
    keys = Counter(
        tuple(
            j["metadata"]["labels"][f"agentflow.dev/{k}"]
            for k in ("step", "run", "iteration", "attempt")
        )
        for j in jobs
    )
    assert all(n == 1 for n in keys.values()), keys
    assert len(jobs) == len(attempts), (sorted(keys), attempts)


def start_slow_chain(release: KindCluster, namespace: str, name: str, steps: int) -> None:
    """A sequential Workflow of 4-second steps, once its first step Job exists."""
    chain = [{"name": f"s{i}", "agent": "slow", "prompt": f"part {i}"} for i in range(steps)]
    apply(release.kubectl, namespace, [workflow(name, chain, [script_agent("slow", sleep=4)])])
    wait_for(lambda: step_jobs(release.kubectl, namespace, name), 120, what="the first step Job")


def test_deleting_the_operator_pod_mid_run_loses_and_duplicates_nothing(
    release: KindCluster, namespace: str
) -> None:
    start_slow_chain(release, namespace, "survivor", 4)
    before = wait_operator_ready(release)
    deleted = release.kubectl(
        "-n", RELEASE_NAMESPACE, "delete", "pod", before["metadata"]["name"], "--wait=false"
    )
    assert deleted.returncode == 0, deleted.stderr
    after = wait_for(
        lambda: next(
            (
                p
                for p in operator_pods(release)
                if p["metadata"]["uid"] != before["metadata"]["uid"]
                and p["status"].get("phase") == "Running"
            ),
            None,
        ),
        180,
        what="the Deployment's replacement operator pod",
    )
    wf = wait_finished(release.kubectl, namespace, "survivor", timeout=300)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert [s["phase"] for s in wf["status"]["steps"]] == ["Succeeded"] * 4
    assert after["metadata"]["name"] != before["metadata"]["name"]
    _assert_one_job_per_attempt(release, namespace, "survivor")


def pipeline_notes(release: str) -> str:
    """What workflows/file-pipeline.yaml's last step reads from the file, for input ``release``."""
    return f"release: {release}\nstatus: reviewed\n- fixed the login timeout"


def _workspace_claims(release: KindCluster, namespace: str) -> list[dict[str, Any]]:
    return items(release.kubectl, namespace, "persistentvolumeclaims")


def _assert_the_pipeline_passed_its_file(
    release: KindCluster, namespace: str, wf: dict[str, Any], notes_for: str = "1.4.0"
) -> None:
    """The three steps of workflows/file-pipeline.yaml shared one provisioned claim: the
    file the first wrote (for input release ``notes_for``) and the second changed is what the
    third read and reported."""
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    check = wf["status"]["steps"][2]
    assert check["name"] == "check" and check["result"]["summary"] == pipeline_notes(notes_for)
    draft, review = wf["status"]["steps"][:2]
    assert draft["result"]["artifacts"] == [{"path": "docs/release-notes.md", "action": "created"}]
    assert review["result"]["artifacts"] == [
        {"path": "docs/release-notes.md", "action": "modified"}
    ]
    [claim] = _workspace_claims(release, namespace)
    assert claim["metadata"]["name"] == wf["status"]["workspaceClaim"]
    assert claim["metadata"]["ownerReferences"][0]["uid"] == wf["metadata"]["uid"]
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "local-path"  # the cluster's default class
    pods = step_pods(release, namespace, wf["metadata"]["name"])
    assert len(pods) == 3
    for pod in pods:
        volumes = pod["spec"]["volumes"]
        assert {
            "name": "workspace",
            "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
        } in volumes
        assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")


def test_the_workspace_pipeline_passes_a_file_between_steps_on_a_provisioned_claim(
    release: KindCluster, namespace: str
) -> None:
    # Submitted as a user does, with its input set on the command line.
    example = str(REPO / "workflows" / "file-pipeline.yaml")
    submitted = agentflow_cli(release, "submit", example, "-n", namespace, "-p", "release=2.0.0")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    wf = wait_finished(release.kubectl, namespace, "file-pipeline", timeout=300)
    assert wf["spec"]["arguments"][0] == {
        "name": "release",
        "value": "2.0.0",
        "default": "1.4.0",
        "description": "The release the notes are for (written into the file by the first step).",
    }
    _assert_the_pipeline_passed_its_file(release, namespace, wf, notes_for="2.0.0")
    # Deleting the Workflow deletes its claim (and, under reclaim policy Delete, its volume).
    claim = wf["status"]["workspaceClaim"]
    deleted = release.kubectl("delete", "workflows.agentflow.dev", "file-pipeline", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr
    wait_for(
        lambda: get(release.kubectl, namespace, "persistentvolumeclaims", claim) is None,
        120,
        what="the garbage collector to delete the workspace claim",
    )


def test_the_workspace_and_its_files_survive_an_operator_restart_mid_run(
    release: KindCluster, namespace: str
) -> None:
    doc = yaml.safe_load((REPO / "workflows" / "file-pipeline.yaml").read_text())
    editor = next(a for a in doc["spec"]["agents"] if a["name"] == "editor")
    editor["env"].append({"name": "AGENTFLOW_SCRIPT_SLEEP_SECONDS", "value": "20"})
    apply(release.kubectl, namespace, [doc])

    def review_running() -> bool:
        pods = step_pods(release, namespace, "file-pipeline")
        return any(
            p["metadata"]["labels"].get("agentflow.dev/step") == "review"
            and p["status"].get("phase") == "Running"
            for p in pods
        )

    wait_for(review_running, 180, what="step review's pod to run")
    before = wait_operator_ready(release)
    deleted = release.kubectl(
        "-n", RELEASE_NAMESPACE, "delete", "pod", before["metadata"]["name"], "--wait=false"
    )
    assert deleted.returncode == 0, deleted.stderr
    wf = wait_finished(release.kubectl, namespace, "file-pipeline", timeout=300)
    after = wait_operator_ready(release)
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    _assert_the_pipeline_passed_its_file(release, namespace, wf)
    _assert_one_job_per_attempt(release, namespace, "file-pipeline")


def test_prometheus_operator_scrapes_the_operator_and_loads_its_alerts(
    release: KindCluster, namespace: str
) -> None:
    """The chart's ServiceMonitor, with metrics authentication on, scraped by a real Prometheus."""
    kubeconfig = release.kubeconfig
    apply(
        release.kubectl,
        namespace,
        [
            policy("fallbacks", [{"agent": "primary", "fallback": "backup"}]),
            workflow(
                "scraped",
                [{"name": "work", "agent": "primary", "prompt": "do the work"}],
                [script_agent("primary", fail="always"), script_agent("backup")],
                fallbackPolicyRef={"name": "fallbacks"},
            ),
        ],
    )
    wf = wait_finished(release.kubectl, namespace, "scraped", timeout=300)
    assert wf["status"]["phase"] == "Succeeded" and wf["status"]["degraded"] is True

    job = f"{RELEASE}-metrics"
    (target,) = prometheus.wait_target_up(kubeconfig, job)
    assert target["labels"]["namespace"] == RELEASE_NAMESPACE
    # max: a replaced operator pod's series lingers until Prometheus marks it stale.
    assert prometheus.query(kubeconfig, f'max(up{{job="{job}"}})')[0]["value"][1] == "1"

    def value(promql: str) -> float | None:
        found = prometheus.query(kubeconfig, promql)
        return float(found[0]["value"][1]) if found else None

    # The series of the run just made, with the values it must have moved them to.
    finished = f'agentflow_workflows_finished_total{{namespace="{namespace}"}}'
    wait_for(lambda: value(finished) == 1, 60, what=f"{finished} == 1")
    assert prometheus.query(kubeconfig, finished)[0]["metric"]["degraded"] == "true"
    fallbacks = (
        f'agentflow_fallbacks_total{{namespace="{namespace}",agent="primary",'
        'fallback_agent="backup"}'
    )
    assert value(fallbacks) == 1
    failed_attempts = (
        f'agentflow_step_attempts_total{{namespace="{namespace}",agent="primary",outcome="failed"}}'
    )
    assert (value(failed_attempts) or 0) >= 1

    # The chart's PrometheusRule is loaded with every alert of charts/agentflow/files/alerts.yaml.
    group = prometheus.wait_rule_group(kubeconfig, "agentflow")
    alerts = {r["name"] for r in group["rules"]}
    assert {
        "AgentflowWorkflowsFailing",
        "AgentflowDegradedRatioHigh",
        "AgentflowOperatorDown",
        "AgentflowStepsStuck",
    } <= alerts
    # The operator is up, so its own alert is not firing.
    down = next(r for r in group["rules"] if r["name"] == "AgentflowOperatorDown")
    assert down.get("state") != "firing"


def test_helm_upgrade_rolls_the_operator_and_running_workflows_finish(
    release: KindCluster, namespace: str
) -> None:
    start_slow_chain(release, namespace, "across-upgrade", 3)
    before = wait_operator_ready(release)
    release.helm(
        "upgrade", RELEASE, str(REPO / "charts/agentflow"), "--namespace", RELEASE_NAMESPACE,
        "--values", str(VALUES), "--set", "logFormat=text", "--wait", "--timeout", "5m",
    )  # fmt: skip
    after = wait_operator_ready(release)
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert "text" in after["spec"]["containers"][0]["args"]
    wf = wait_finished(release.kubectl, namespace, "across-upgrade", timeout=300)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    _assert_one_job_per_attempt(release, namespace, "across-upgrade")


def test_helm_uninstall_leaves_no_jobs_pods_or_configmaps_of_ours(release: KindCluster) -> None:
    """As docs/runbook.md says: delete the Workflows and purge the cache while the operator
    runs, then uninstall.  The CRDs stay, as Helm keeps them."""
    kubectl = release.kubectl
    deleted = kubectl("delete", "workflows.agentflow.dev", "--all-namespaces", "--all", "--wait")
    assert deleted.returncode == 0, deleted.stderr
    purged = agentflow_cli(release, "cache", "purge", "--all-namespaces")
    assert purged.returncode == 0, purged.stderr
    release.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait")

    def ours(kind: str) -> list[str]:
        found: list[str] = []
        for selector in (
            "agentflow.dev/workflow",
            "agentflow.dev/cache",
            f"app.kubernetes.io/instance={RELEASE}",
        ):
            for obj in release.json("get", kind, "--all-namespaces", "-l", selector)["items"]:
                if not obj["metadata"].get("deletionTimestamp"):
                    found.append(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
        return found

    for kind in ("jobs", "pods", "configmaps"):
        wait_for(lambda kind=kind: not ours(kind), 120, what=f"no {kind} of agentflow's left")
    assert release.kubectl("get", "crd", "workflows.agentflow.dev").returncode == 0
