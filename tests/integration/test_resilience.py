"""Checkpoint and resume: an operator killed at random moments loses and duplicates nothing."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.workflows import (
    Kubectl,
    apply,
    items,
    script_agent,
    workflow,
)

pytestmark = pytest.mark.integration

WORKFLOWS = 20
STEPS = ("fetch", "analyse", "report")


def _assert_exactly_one_job_per_attempt(wf: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    name = wf["metadata"]["name"]
    mine = [j for j in jobs if j["metadata"]["labels"]["agentflow.dev/workflow"] == name]
    identities = Counter(
        tuple(
            j["metadata"]["labels"][f"agentflow.dev/{k}"]
            for k in ("step", "run", "iteration", "attempt")
        )
        for j in mine
    )
    assert all(n == 1 for n in identities.values()), f"{name}: duplicate Jobs {identities}"
    attempts = [a for s in wf["status"]["steps"] for a in s["attempts"]]
    assert sorted(a["jobName"] for a in attempts) == sorted(j["metadata"]["name"] for j in mine), (
        f"{name}: attempts in status and Jobs in the cluster differ"
    )


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    seed = int(os.environ.get("AGENTFLOW_CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    print(f"chaos seed: {seed}")
    docs = [
        workflow(
            f"chaos-{i:02d}",
            [
                {
                    "name": step,
                    "agent": "worker",
                    "prompt": f"{step} for run {i}"
                    + (f" after {{{{ steps.{STEPS[n - 1]}.summary }}}}" if n else ""),
                }
                for n, step in enumerate(STEPS)
            ],
            [
                script_agent(
                    "worker", report="## Summary\n{step} of {prompt}\n", sleep=rng.uniform(0.2, 1.5)
                )
            ],
        )
        for i in range(WORKFLOWS)
    ]
    apply(kubectl, namespace, docs)
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 4.0))  # a random moment mid-run, by design of this test
        operator.kill(signal.SIGKILL)
        time.sleep(rng.uniform(0.0, 1.5))
        operator.start()

    def all_finished() -> list[dict[str, Any]] | None:
        wfs = items(kubectl, namespace, "workflows.agentflow.dev")
        done = [w for w in wfs if (w.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        return wfs if len(done) == WORKFLOWS else None

    wfs = wait_for(all_finished, 300, interval=1.0, what="every workflow to finish")
    jobs = items(kubectl, namespace, "jobs")
    for wf in wfs:
        assert wf["status"]["phase"] == "Succeeded", (
            wf["metadata"]["name"],
            wf["status"].get("message"),
        )
        for step in wf["status"]["steps"]:
            assert step["result"]["summary"].startswith(step["name"]), step
        _assert_exactly_one_job_per_attempt(wf, jobs)
    owned = {j["metadata"]["ownerReferences"][0]["uid"] for j in jobs}
    assert owned <= {w["metadata"]["uid"] for w in wfs}, "a Job is orphaned"
