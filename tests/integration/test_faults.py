"""Fault injection on a real control plane: what breaks, and what the operator does about it.

Every scenario checks the same things at the end: each Workflow reaches the right terminal
phase, each step attempt has exactly one Job (no duplicates, no Job without an attempt), no
result is lost and no Job is left without its Workflow.  Measured timings are printed (run with
``-s``); docs/reliability.md quotes them.

Every scenario runs on a cluster of its own (a state directory per test session) with an
operator of its own: stopping the API server, etcd or the node never disturbs the shared test
cluster, and the operator measured is the one under test, not another session's operator that
happens to hold the shared cluster's Lease.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from agentflow.engine.planner import STEP_TIMEOUT_GRACE_SECONDS
from agentflow_devcluster import LocalCluster
from tests.conftest import Kubectl as ClusterKubectl
from tests.conftest import namespace_name
from tests.integration.conftest import OperatorProcess, install_crds, wait_for
from tests.integration.workflows import (
    Kubectl,
    apply,
    condition,
    get,
    items,
    policy,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
WORKFLOW = "workflows.agentflow.dev"
ATTEMPT_LABELS = ("step", "run", "iteration", "attempt")


# ---- checks shared by every scenario --------------------------------------------------------


def job_identity(job: dict[str, Any]) -> tuple[str, ...]:
    labels = job["metadata"]["labels"]
    return tuple(labels[f"agentflow.dev/{k}"] for k in ATTEMPT_LABELS)


def assert_one_job_per_attempt(
    wf: dict[str, Any], jobs: list[dict[str, Any]], gone: frozenset[str] = frozenset()
) -> None:
    """No two Jobs for one attempt; every Job is an attempt in status and vice versa.

    ``gone`` names attempts whose Job was deleted on purpose (by hand or by the operator); such
    a Job may still be on its way out, but no other may be missing.
    """
    name = wf["metadata"]["name"]
    mine = [j for j in jobs if j["metadata"]["labels"]["agentflow.dev/workflow"] == name]
    duplicates = {k: n for k, n in Counter(job_identity(j) for j in mine).items() if n > 1}
    assert not duplicates, f"{name}: more than one Job for an attempt: {duplicates}"
    attempts = {a["jobName"] for s in wf["status"]["steps"] for a in s["attempts"]}
    present = {j["metadata"]["name"] for j in mine}
    assert present <= attempts, f"{name}: Jobs without an attempt: {present - attempts}"
    assert attempts - gone <= present, f"{name}: attempts without a Job: {attempts - present}"


def assert_no_orphans(jobs: list[dict[str, Any]], workflows: list[dict[str, Any]]) -> None:
    uids = {w["metadata"]["uid"] for w in workflows}
    orphans = [
        j["metadata"]["name"]
        for j in jobs
        if not {o["uid"] for o in j["metadata"].get("ownerReferences") or []} & uids
    ]
    assert not orphans, f"Jobs whose Workflow is gone: {orphans}"


def chain(name: str, steps: int = 3, sleep: float = 2.0, **spec: Any) -> dict[str, Any]:
    """A sequential Workflow whose every step's summary names the step and the Workflow."""
    names = [f"s{i}" for i in range(steps)]
    return workflow(
        name,
        [
            {
                "name": s,
                "agent": "worker",
                "prompt": f"{s} of {name}"
                + (f" after {{{{ steps.{names[i - 1]}.summary }}}}" if i else ""),
            }
            for i, s in enumerate(names)
        ],
        [script_agent("worker", report="## Summary\n{step} done: {prompt}\n", sleep=sleep)],
        **spec,
    )


def assert_results_kept(wf: dict[str, Any]) -> None:
    """Every step's result is its own report, fed forward from the step before (none lost)."""
    name = wf["metadata"]["name"]
    for s in wf["status"]["steps"]:
        summary = s["result"]["summary"]
        assert summary.startswith(f"{s['name']} done: {s['name']} of {name}"), s


def all_finished(kubectl: Kubectl, namespace: str, count: int) -> list[dict[str, Any]] | None:
    wfs = items(kubectl, namespace, WORKFLOW)
    done = [w for w in wfs if (w.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    return wfs if len(wfs) == count and len(done) == count else None


def pods(kubectl: Kubectl, namespace: str, job: str) -> list[dict[str, Any]]:
    return items(kubectl, namespace, "pods", f"batch.kubernetes.io/job-name={job}")


def running_pod(kubectl: Kubectl, namespace: str, job: str) -> dict[str, Any] | None:
    """The Job's pod once its container runs (the agent process has started)."""
    for pod in pods(kubectl, namespace, job):
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and "running" in (statuses[0].get("state") or {}):
            return pod
    return None


def first_job_name(kubectl: Kubectl, namespace: str, wf: str) -> str | None:
    jobs = step_jobs(kubectl, namespace, wf)
    return jobs[0]["metadata"]["name"] if jobs else None


def wait_value(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """wait_for, typed for predicates that return a value or None."""
    value = wait_for(predicate, timeout, interval=interval, what=what)
    assert value is not None
    return value


def measured(text: str) -> None:
    print(f"\nMEASURED {text}")


# ---- a cluster of its own for faults of the control plane and the node ----------------------


@pytest.fixture(scope="session")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A LocalCluster in a state directory of this test session, used only by these tests.

    test_replicas imports this fixture, which makes it a second fixture of the same name;
    both find the same directory, so the second one reuses the running cluster.
    """
    cluster = LocalCluster(tmp_path_factory.getbasetemp() / "fault-cluster")
    try:
        cluster.start()
        cluster.start_node()
        install_crds(ClusterKubectl(cluster.kubeconfig))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def fault_kubectl(fault_cluster: LocalCluster) -> Kubectl:
    return ClusterKubectl(fault_cluster.kubeconfig)


@pytest.fixture(scope="session")
def fault_api(fault_cluster: LocalCluster) -> Iterator[client.ApiClient]:
    kubeconfig = str(fault_cluster.kubeconfig)
    api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    yield api_client
    api_client.close()


@pytest.fixture
def fault_namespace(fault_kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = namespace_name(request.node.name)
    created = fault_kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    # Pods are rejected until the serviceaccount controller has created `default`.
    wait_for(
        lambda: fault_kubectl("get", "-n", name, "serviceaccount", "default").returncode == 0,
        30,
        what=f"ServiceAccount default in {name}",
    )
    yield name
    fault_kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def fault_operator(
    fault_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        kubeconfig=fault_cluster.kubeconfig, log_dir=tmp_path_factory.mktemp("fault-operator")
    )
    process.start()
    yield process
    process.stop()


# ---- 1. the API server and etcd go away and come back ---------------------------------------


def test_apiserver_and_etcd_restart_mid_run(
    fault_cluster: LocalCluster,
    fault_operator: OperatorProcess,
    fault_kubectl: Kubectl,
    fault_namespace: str,
) -> None:
    count = 10
    apply(fault_kubectl, fault_namespace, [chain(f"outage-{i:02d}") for i in range(count)])
    wait_for(
        lambda: len(items(fault_kubectl, fault_namespace, "jobs")) >= count,
        90,
        what="every workflow's first step Job",
    )
    operator_pid = fault_operator.proc.pid if fault_operator.proc else None
    down = time.monotonic()
    fault_cluster.stop_apiserver(crash=True)
    try:
        status = wait_for(
            lambda: fault_operator.http("/healthz")[0] == 503,
            60,
            interval=0.5,
            what="/healthz to report the outage",
        )
        unhealthy_after = time.monotonic() - down
        assert status
        body = fault_operator.http("/healthz")[1]
        assert "heartbeat" in body, body
    finally:
        fault_cluster.start_apiserver()
    up = time.monotonic()
    wait_for(
        lambda: fault_operator.http("/healthz")[0] == 200,
        60,
        interval=0.5,
        what="/healthz to recover",
    )
    healthy_after = time.monotonic() - up
    wfs = wait_value(
        lambda: all_finished(fault_kubectl, fault_namespace, count),
        240,
        interval=1.0,
        what="every workflow to finish",
    )
    finished_after = time.monotonic() - up
    # It reconnected by itself: the same process, never restarted.
    assert fault_operator.proc is not None and fault_operator.proc.poll() is None
    assert fault_operator.proc.pid == operator_pid and fault_operator.starts == 1
    jobs = items(fault_kubectl, fault_namespace, "jobs")
    for wf in wfs:
        assert wf["status"]["phase"] == "Succeeded", (wf["metadata"]["name"], wf["status"])
        assert_results_kept(wf)
        assert_one_job_per_attempt(wf, jobs)
        assert all(len(s["attempts"]) == 1 for s in wf["status"]["steps"]), wf["status"]
    assert_no_orphans(jobs, wfs)
    measured(
        f"apiserver+etcd outage {up - down:.1f}s: /healthz 503 after {unhealthy_after:.1f}s, "
        f"200 again {healthy_after:.1f}s after the restart; all {count} workflows Succeeded "
        f"{finished_after:.1f}s after the restart"
    )


# ---- 2. a step's Job or pod deleted by hand --------------------------------------------------


def single_step(name: str, sleep: float, **step_spec: Any) -> dict[str, Any]:
    return workflow(
        name,
        [{"name": "work", "agent": "worker", "prompt": f"work of {name}", **step_spec}],
        [script_agent("worker", report="## Summary\n{step} attempt {attempt}\n", sleep=sleep)],
    )


RETRY_ONCE = {"retries": {"limit": 1, "backoffSeconds": 0}}


def job_gone(kubectl: Kubectl, namespace: str, job: str) -> bool:
    return get(kubectl, namespace, "job", job) is None


@pytest.mark.parametrize(
    ("propagation", "reason"), [("Background", "JobLost"), ("Foreground", "JobDeleted")]
)
def test_job_deleted_by_hand_fails_the_attempt_and_the_retry_succeeds(
    fault_operator: OperatorProcess,
    fault_kubectl: Kubectl,
    fault_namespace: str,
    propagation: str,
    reason: str,
) -> None:
    """Background: the Job vanishes at once, so the attempt is lost after the planner's grace.

    Foreground: the Job lingers with a deletionTimestamp until its pod is gone, which the
    operator sees as JobDeleted right away.
    """
    kubectl, namespace = fault_kubectl, fault_namespace
    apply(kubectl, namespace, [single_step("job-deleted", sleep=8, **RETRY_ONCE)])
    job = wait_value(lambda: first_job_name(kubectl, namespace, "job-deleted"), 60, what="the Job")
    wait_for(lambda: running_pod(kubectl, namespace, job), 60, what="the agent to run")
    deleted = kubectl(
        "delete", "-n", namespace, "job", job, f"--cascade={propagation.lower()}", "--wait=false"
    )
    assert deleted.returncode == 0, deleted.stderr
    started = time.monotonic()
    wf = wait_finished(kubectl, namespace, "job-deleted", timeout=120)
    took = time.monotonic() - started
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    first, second = step(wf, "work")["attempts"]
    assert (first["jobName"], first["outcome"], first["reason"]) == (job, "Failed", reason)
    assert second["outcome"] == "Succeeded" and second["attempt"] == 2
    assert step(wf, "work")["result"]["summary"] == "work attempt 2"
    wait_for(lambda: job_gone(kubectl, namespace, job), 60, what=f"Job {job} to go")
    jobs = items(kubectl, namespace, "jobs")
    assert_one_job_per_attempt(wf, jobs, gone=frozenset({job}))
    assert_no_orphans(jobs, [wf])
    measured(
        f"Job deleted by hand ({propagation}): attempt failed {reason}, Succeeded {took:.1f}s later"
    )


def test_pod_deleted_by_hand_fails_the_attempt_and_the_retry_succeeds(
    fault_operator: OperatorProcess, fault_kubectl: Kubectl, fault_namespace: str
) -> None:
    """With backoffLimit 0 the Job controller counts the deleted pod as the attempt's failure.

    It makes no new pod (the Job fails with BackoffLimitExceeded, so the attempt's class is
    AgentError); the operator retries.
    """
    kubectl, namespace = fault_kubectl, fault_namespace
    apply(kubectl, namespace, [single_step("pod-deleted", sleep=8, **RETRY_ONCE)])
    job = wait_value(lambda: first_job_name(kubectl, namespace, "pod-deleted"), 60, what="the Job")
    pod = wait_value(lambda: running_pod(kubectl, namespace, job), 60, what="the agent to run")
    deleted = kubectl("delete", "-n", namespace, "pod", pod["metadata"]["name"], "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    started = time.monotonic()
    wf = wait_finished(kubectl, namespace, "pod-deleted", timeout=120)
    took = time.monotonic() - started
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    first, second = step(wf, "work")["attempts"]
    assert (first["jobName"], first["outcome"]) == (job, "Failed")
    assert first["reason"] == "AgentError", first
    assert second["outcome"] == "Succeeded" and second["attempt"] == 2
    assert step(wf, "work")["result"]["summary"] == "work attempt 2"
    failed_job = get(kubectl, namespace, "job", job)
    assert failed_job is not None and failed_job["status"].get("failed") == 1, failed_job
    assert pods(kubectl, namespace, job) == [], "the Job controller made a replacement pod"
    jobs = items(kubectl, namespace, "jobs")
    assert_one_job_per_attempt(wf, jobs)
    assert_no_orphans(jobs, [wf])
    measured(
        f"pod deleted by hand: attempt failed BackoffLimitExceeded, Succeeded {took:.1f}s later"
    )


# ---- 3. a pod that never starts ----------------------------------------------------------------


def test_unknown_image_fails_the_attempt_and_the_fallback_runs(
    fault_operator: OperatorProcess, fault_kubectl: Kubectl, fault_namespace: str
) -> None:
    """The pod waits on ErrImagePull/ImagePullBackOff; after the 60 s grace the operator fails
    the attempt, deletes its Job and the fallback agent runs: Succeeded, degraded."""
    kubectl, namespace = fault_kubectl, fault_namespace
    apply(
        kubectl,
        namespace,
        [
            policy("fallbacks", [{"agent": "unpullable", "fallback": "backup"}]),
            workflow(
                "bad-image",
                [{"name": "work", "agent": "unpullable", "prompt": "work"}],
                [
                    {"name": "unpullable", "image": "registry.invalid/nope:1"},
                    script_agent("backup", report="## Summary\nbackup did the {step}\n"),
                ],
                fallbackPolicyRef={"name": "fallbacks"},
            ),
        ],
    )
    job = wait_value(lambda: first_job_name(kubectl, namespace, "bad-image"), 60, what="the Job")
    started = time.monotonic()
    wf = wait_finished(kubectl, namespace, "bad-image", timeout=150)
    took = time.monotonic() - started
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["degraded"] is True
    degraded = condition(wf, "Degraded")
    assert degraded is not None and degraded["reason"] == "FallbackUsed", degraded
    work = step(wf, "work")
    first, second = work["attempts"]
    assert (first["jobName"], first["agent"], first["outcome"]) == (job, "unpullable", "Failed")
    assert first["reason"] == "ImagePullFailed", first
    assert first["message"].startswith(
        ("ImagePullFailed (ErrImagePull)", "ImagePullFailed (ImagePullBackOff)")
    ), first
    assert "registry.invalid/nope:1" in first["message"], first
    assert (second["agent"], second["fallback"], second["outcome"]) == ("backup", True, "Succeeded")
    assert work["result"]["summary"] == "backup did the work"
    wait_for(lambda: job_gone(kubectl, namespace, job), 60, what=f"the stuck Job {job} to go")
    jobs = items(kubectl, namespace, "jobs")
    assert_one_job_per_attempt(wf, jobs, gone=frozenset({job}))
    assert_no_orphans(jobs, [wf])
    measured(
        f"unknown image: attempt failed {first['reason']}, "
        f"fallback Succeeded {took:.1f}s after the Job was created"
    )


# ---- 4. the node goes away ---------------------------------------------------------------------


def test_node_lost_mid_step_ends_at_the_step_timeout_and_the_retry_runs_when_it_is_back(
    fault_cluster: LocalCluster,
    fault_operator: OperatorProcess,
    fault_kubectl: Kubectl,
    fault_namespace: str,
) -> None:
    """Nothing here marks a lost node's pods (no node-lifecycle controller): the pod stays
    Running, and the Job only reaches FailureTarget at its deadline, since its pod never
    terminates.  The planner's timeout (timeoutSeconds + 30 s) fails the attempt and deletes
    the Job; the retry's pod waits unscheduled until the node is back, then succeeds."""
    kubectl, namespace = fault_kubectl, fault_namespace
    timeout = 25
    apply(
        kubectl,
        namespace,
        [single_step("node-lost", sleep=6, timeoutSeconds=timeout, **RETRY_ONCE)],
    )
    job = wait_value(lambda: first_job_name(kubectl, namespace, "node-lost"), 60, what="the Job")
    wait_for(lambda: running_pod(kubectl, namespace, job), 60, what="the agent to run")
    down = time.monotonic()
    fault_cluster.stop_node()
    phases_seen: set[str] = set()

    def first_attempt_failed() -> dict[str, Any] | None:
        phases_seen.update(p["status"].get("phase", "") for p in pods(kubectl, namespace, job))
        wf = get(kubectl, namespace, WORKFLOW, "node-lost")
        attempts = step(wf, "work")["attempts"] if wf else []
        return attempts[0] if attempts and attempts[0]["outcome"] == "Failed" else None

    def retry_pod() -> dict[str, Any] | None:
        found = items(kubectl, namespace, "pods", "agentflow.dev/attempt=2")
        return found[0] if found else None

    try:
        first = wait_value(first_attempt_failed, 120, interval=1.0, what="attempt 1 to fail")
        failed_after = time.monotonic() - down
        waiting = wait_value(retry_pod, 30, what="the retry's pod")
    finally:
        fault_cluster.start_node()
    up = time.monotonic()
    assert phases_seen == {"Running"}, f"the lost node's pod was not left Running: {phases_seen}"
    assert (first["jobName"], first["reason"]) == (job, "Timeout"), first
    assert not waiting["spec"].get("nodeName"), "a pod was bound while no node was there"
    wf = wait_finished(kubectl, namespace, "node-lost", timeout=120)
    finished_after = time.monotonic() - up
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    first, second = step(wf, "work")["attempts"]
    ran_for = datetime.fromisoformat(first["finishedAt"]) - datetime.fromisoformat(
        first["startedAt"]
    )
    assert ran_for.total_seconds() >= timeout + STEP_TIMEOUT_GRACE_SECONDS, first
    assert second["outcome"] == "Succeeded" and second["attempt"] == 2
    assert step(wf, "work")["result"]["summary"] == "work attempt 2"
    # The restarted node cleans up the pod it lost; the operator deleted that pod's Job.
    wait_for(lambda: not pods(kubectl, namespace, job), 60, what="the lost pod to go")
    wait_for(lambda: job_gone(kubectl, namespace, job), 60, what=f"Job {job} to go")
    jobs = items(kubectl, namespace, "jobs")
    assert_one_job_per_attempt(wf, jobs, gone=frozenset({job}))
    assert_no_orphans(jobs, [wf])
    measured(
        f"node stopped mid-step (timeoutSeconds {timeout}): attempt 1 failed (Timeout) "
        f"{failed_after:.1f}s after the node stopped; after start_node() the retry Succeeded "
        f"in {finished_after:.1f}s"
    )


# ---- 6. another client writes the same Workflow ------------------------------------------------


def api_requests(process: OperatorProcess) -> dict[tuple[str, str], float]:
    """The operator's agentflow_kubernetes_api_requests_total, by (verb, code)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(process.metrics()):
        for sample in family.samples:
            if sample.name == "agentflow_kubernetes_api_requests_total":
                counts[(sample.labels["verb"], sample.labels["code"])] = sample.value
    return counts


JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class ForeignWriter:
    """Another client: keeps a condition of its own in the status and labels the Workflow."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.last: int = 0  # the last write the API server accepted

    def _call(self, method: str, body: Any, content_type: str) -> bool:
        try:
            getattr(self.objects, method)(
                "agentflow.dev",
                "v1alpha1",
                self.namespace,
                "workflows",
                self.name,
                body,
                _content_type=content_type,
            )
        except ApiException as e:
            if e.status == 422:  # a JSON-patch `test` failed: the list moved under us
                return False
            raise
        return True

    def write(self, n: int) -> dict[str, Any]:
        """Write number ``n`` unless the object moved under us; returns the object it read."""
        wf = cast(
            dict[str, Any],
            self.objects.get_namespaced_custom_object(
                "agentflow.dev", "v1alpha1", self.namespace, "workflows", self.name
            ),
        )
        conditions = (wf.get("status") or {}).get("conditions") or []
        index = next((i for i, c in enumerate(conditions) if c["type"] == "Example"), None)
        message = f"write {n}"
        if index is None:
            ops = [
                {"op": "test", "path": "/status/conditions", "value": conditions},
                {
                    "op": "add",
                    "path": "/status/conditions/-",
                    "value": {
                        "type": "Example",
                        "status": "True",
                        "reason": "ExternalCheck",
                        "message": message,
                        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                },
            ]
        else:
            ops = [
                {"op": "test", "path": f"/status/conditions/{index}/type", "value": "Example"},
                {"op": "replace", "path": f"/status/conditions/{index}/message", "value": message},
            ]
        if not self._call("patch_namespaced_custom_object_status", ops, JSON_PATCH):
            return wf
        meta = {"metadata": {"annotations": {"example.dev/write": str(n)}}}
        if not self._call("patch_namespaced_custom_object", meta, MERGE_PATCH):
            return wf
        self.last = n
        return wf


def test_foreign_writes_to_status_and_metadata_survive_and_the_run_finishes(
    fault_operator: OperatorProcess,
    fault_kubectl: Kubectl,
    fault_namespace: str,
    fault_api: client.ApiClient,
) -> None:
    """Every status write of the operator is conditional on the resourceVersion it planned
    from; a 409 makes it re-read and plan again.  So a client writing the same Workflow the
    whole time loses nothing: its own condition and annotation hold its last write.

    Six short steps give the operator seven status transitions to race the writer on, so the
    conflict path runs (in 12 runs of the 3-step version, 1 to 13 conflicts each)."""
    kubectl, namespace = fault_kubectl, fault_namespace
    before = api_requests(fault_operator)
    apply(kubectl, namespace, [chain("contended", steps=6, sleep=1)])
    writer = ForeignWriter(fault_api, namespace, "contended")
    labelled = kubectl("label", "-n", namespace, WORKFLOW, "contended", "example.dev/owner=team")
    assert labelled.returncode == 0, labelled.stderr
    writes = iter(range(1, 100_000))
    seen: dict[str, Any] = {}

    def write_until_finished() -> bool:
        seen.update(writer.write(next(writes)))
        return (seen.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    try:
        wait_for(write_until_finished, 120, interval=0.02, what="the contended workflow to finish")
    except AssertionError:
        print(json.dumps(seen.get("status"), indent=1))
        raise
    after = api_requests(fault_operator)
    wf = get(kubectl, namespace, WORKFLOW, "contended")
    assert wf is not None
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert_results_kept(wf)
    assert writer.last > 0, "the other client never got a write in"
    example = condition(wf, "Example")
    assert example is not None, wf["status"]["conditions"]
    assert example["message"] == f"write {writer.last}", (example, writer.last)
    assert {c["type"] for c in wf["status"]["conditions"]} == {
        "Ready",
        "Reconciling",
        "Stalled",
        "Degraded",
        "Example",
    }
    assert wf["metadata"]["annotations"]["example.dev/write"] == str(writer.last)
    assert wf["metadata"]["labels"]["example.dev/owner"] == "team"
    jobs = step_jobs(kubectl, namespace, "contended")
    assert_one_job_per_attempt(wf, jobs)
    assert all(len(s["attempts"]) == 1 for s in wf["status"]["steps"]), wf["status"]
    conflicts = after.get(("patch", "409"), 0) - before.get(("patch", "409"), 0)
    patches = after.get(("patch", "200"), 0) - before.get(("patch", "200"), 0)
    assert conflicts > 0, "no write of the operator raced the other client: nothing was shown"
    measured(
        f"{writer.last} foreign writes during the run; the operator got {conflicts:.0f} 409s "
        f"and made {patches:.0f} patches"
    )
