"""Two operator replicas on one cluster: only the Lease holder acts; when it dies the other
takes over once the Lease expires (6 s here), and finishes the runs without duplicating a Job.

The replicas run on the fault-injection cluster of ``test_faults`` (never on the shared one,
where the session operator holds the same Lease).
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentflow_devcluster import LocalCluster
from tests.integration.conftest import OperatorProcess
from tests.integration.test_faults import (  # noqa: F401 (fixtures are found by name)
    all_finished,
    api_requests,
    assert_no_orphans,
    assert_one_job_per_attempt,
    assert_results_kept,
    chain,
    fault_cluster,
    fault_kubectl,
    fault_namespace,
    measured,
    wait_value,
)
from tests.integration.workflows import Kubectl, apply, items

pytestmark = pytest.mark.integration

LEASE = ("default", "agentflow-operator")
WRITE_VERBS = ("post", "put", "patch", "delete")


def successful_writes(process: OperatorProcess) -> float:
    """Writes the replica made through its API client that the API server accepted."""
    return sum(
        n
        for (verb, code), n in api_requests(process).items()
        if verb in WRITE_VERBS and code.startswith("2")
    )


def lease_holder(kubectl: Kubectl) -> str | None:
    result = kubectl("get", "lease", "-n", LEASE[0], LEASE[1], "-o", "json")
    if result.returncode != 0:
        return None
    holder: str | None = json.loads(result.stdout)["spec"].get("holderIdentity")
    return holder or None


def holding(replicas: list[OperatorProcess], kubectl: Kubectl) -> OperatorProcess | None:
    """The replica whose identity (``<host>-<pid>``) holds the Lease."""
    holder = lease_holder(kubectl)
    for replica in replicas:
        if holder and replica.proc is not None and holder.endswith(f"-{replica.proc.pid}"):
            return replica
    return None


def test_only_the_lease_holder_acts_and_the_other_replica_takes_over_when_it_dies(
    fault_cluster: LocalCluster,  # noqa: F811
    fault_kubectl: Kubectl,  # noqa: F811
    fault_namespace: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    kubectl, namespace = fault_kubectl, fault_namespace
    replicas = [
        OperatorProcess(kubeconfig=fault_cluster.kubeconfig, log_dir=tmp_path) for _ in "ab"
    ]
    try:
        with ThreadPoolExecutor(len(replicas)) as pool:
            list(pool.map(OperatorProcess.start, replicas))  # both at once
        leader = wait_value(lambda: holding(replicas, kubectl), 30, what="a replica to lead")
        follower = next(r for r in replicas if r is not leader)

        count = 10
        apply(kubectl, namespace, [chain(f"replicas-{i:02d}") for i in range(count)])
        wait_value(
            lambda: len(items(kubectl, namespace, "jobs")) >= 15 or None,
            120,
            what="the runs to be half way",
        )
        assert successful_writes(follower) == 0, api_requests(follower)
        assert successful_writes(leader) > 0, api_requests(leader)

        leader.kill(signal.SIGKILL)
        killed = time.monotonic()
        wait_value(lambda: holding(replicas, kubectl), 30, what="the other replica to lead")
        took_over = time.monotonic() - killed
        wfs = wait_value(
            lambda: all_finished(kubectl, namespace, count),
            240,
            interval=1.0,
            what="every workflow to finish",
        )
        finished = time.monotonic() - killed
        assert successful_writes(follower) > 0, api_requests(follower)
        assert follower.http("/healthz")[0] == 200
        jobs = items(kubectl, namespace, "jobs")
        for wf in wfs:
            assert wf["status"]["phase"] == "Succeeded", (wf["metadata"]["name"], wf["status"])
            assert_results_kept(wf)
            assert_one_job_per_attempt(wf, jobs)
            assert all(len(s["attempts"]) == 1 for s in wf["status"]["steps"]), wf["status"]
        assert_no_orphans(jobs, wfs)
        measured(
            f"leader SIGKILLed half way through {count} workflows: the other replica held the "
            f"Lease {took_over:.1f}s later; all Succeeded {finished:.1f}s after the kill"
        )
    finally:
        for replica in replicas:
            replica.stop()
