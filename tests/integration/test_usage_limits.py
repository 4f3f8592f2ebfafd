"""Tokens, cost, budgets and provider concurrency limits on a real control plane.

One operator of its own (its price table and concurrency limits would change what the shared
one does), with script agents that report token usage.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from tests.integration.conftest import (
    OperatorProcess,
    fresh_namespace,
    operator_of_its_own,
    wait_for,
)
from tests.integration.test_metrics_scrape import samples
from tests.integration.test_replicas import successful_writes
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    condition,
    events,
    get,
    job_env,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

PRICES = {
    "currency": "USD",
    "models": [
        {"provider": "script", "model": "priced", "inputPerMillion": "3", "outputPerMillion": "15"}
    ],
}
LIMIT = 2
LIMITS = [{"name": "scarce", "provider": "script", "model": "scarce-*", "max": LIMIT}]


@pytest.fixture(scope="module")
def usage_operator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Kubectl, OperatorProcess]]:
    args = ["--prices", json.dumps(PRICES), "--concurrency-limits", json.dumps(LIMITS)]
    log_dir = tmp_path_factory.mktemp("usage-operator")
    with operator_of_its_own("usage", log_dir, extra_args=args) as (cluster, kubectl, operator):
        yield cluster.kubeconfig, kubectl, operator


def tokens_agent(name: str, model: str, tokens: str, sleep: float | None = None) -> dict[str, Any]:
    agent = script_agent(name, sleep=sleep)
    agent["model"] = model
    agent["env"].append({"name": "AGENTFLOW_SCRIPT_TOKENS", "value": tokens})
    return agent


def test_the_budget_stops_the_run_with_budget_exceeded_and_usage_in_status(
    usage_operator: tuple[Path, Kubectl, OperatorProcess],
) -> None:
    _, kubectl, operator = usage_operator
    ns = fresh_namespace(kubectl, "budget")
    steps = [{"name": n, "agent": "priced", "prompt": f"do {n}"} for n in ("one", "two", "three")]
    apply(
        kubectl,
        ns,
        [
            workflow(
                "capped",
                steps,
                [tokens_agent("priced", "priced", "300,200")],
                budget={"maxTokens": 900},
            )
        ],
    )
    wf = wait_finished(kubectl, ns, "capped", timeout=180)
    status = wf["status"]
    assert status["phase"] == "Failed", status
    stalled = condition(wf, "Stalled")
    assert stalled is not None and stalled["reason"] == "BudgetExceeded", stalled
    assert "1000 tokens used, spec.budget.maxTokens is 900" in status["message"]
    # One: 500 tokens, under the budget; two: 1000, over it; three never started.
    assert [step(wf, n)["phase"] for n in ("one", "two", "three")] == [
        "Succeeded",
        "Succeeded",
        "Pending",
    ]
    jobs = {
        j["metadata"]["labels"]["agentflow.dev/step"]: j for j in step_jobs(kubectl, ns, "capped")
    }
    assert sorted(jobs) == ["one", "two"]
    # The runner was given what was left of the budget as its max-tokens bound.
    assert job_env(jobs["one"], "AGENTFLOW_BUDGET_MAX_TOKENS") == "900"
    assert job_env(jobs["two"], "AGENTFLOW_BUDGET_MAX_TOKENS") == "400"
    # 600 in at 3/M + 400 out at 15/M = 0.0018 + 0.006
    assert status["usage"] == {
        "inputTokens": 600,
        "outputTokens": 400,
        "totalTokens": 1000,
        "cost": "0.0078",
        "unpricedTokens": 0,
        "currency": "USD",
        "budgetExceeded": "maxTokens",
        "agents": [
            {
                "agent": "priced",
                "inputTokens": 600,
                "outputTokens": 400,
                "cost": "0.0078",
                "unpricedTokens": 0,
            }
        ],
    }
    assert step(wf, "one")["usage"]["cost"] == "0.0039"
    assert step(wf, "one")["attempts"][0]["usage"]["inputTokens"] == 300
    assert [e["reason"] for e in events(kubectl, ns, "capped")].count("BudgetExceeded") == 1
    metrics = operator.metrics()
    assert samples(metrics, "agentflow_agent_cost_total", namespace=ns, agent="priced") == 0.0078
    assert samples(metrics, "agentflow_budgets_exceeded_total", namespace=ns) == 1
    tokens = "agentflow_agent_tokens_total"
    assert samples(metrics, tokens, namespace=ns, agent="priced", direction="input") == 600
    assert samples(metrics, tokens, namespace=ns, agent="priced", direction="output") == 400


def test_unknown_models_count_tokens_without_cost(
    usage_operator: tuple[Path, Kubectl, OperatorProcess],
) -> None:
    _, kubectl, _ = usage_operator
    ns = fresh_namespace(kubectl, "unpriced")
    apply(
        kubectl,
        ns,
        [
            workflow(
                "unpriced",
                [{"name": "only", "agent": "free", "prompt": "go"}],
                [tokens_agent("free", "no-such-model", "10,5")],
            )
        ],
    )
    wf = wait_finished(kubectl, ns, "unpriced", timeout=120)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    usage = wf["status"]["usage"]
    assert (usage["totalTokens"], usage["unpricedTokens"], usage.get("cost")) == (15, 15, None)


class JobWatch:
    """A watch of the namespace's Jobs of a limit on the API server: the most that were not yet
    finished (no Complete or Failed condition) at any one time."""

    def __init__(self, kubeconfig: Path, namespace: str, selector: str) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.namespace, self.selector = namespace, selector
        self.unfinished: set[str] = set()
        self.seen: set[str] = set()
        self.most = 0
        self.watch = watch.Watch()  # type: ignore[no-untyped-call]
        self.error: BaseException | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        batch = client.BatchV1Api(self.api)
        version: str | None = None
        while not self.stopped.is_set():
            try:
                for event in self.watch.stream(
                    batch.list_namespaced_job,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=60,
                ):
                    job = event["object"]
                    version = job.metadata.resource_version
                    self._seen(event["type"], job)
            except Exception as e:  # a watch the server ended: resume where it stopped
                if self.stopped.is_set():
                    return
                if isinstance(e, client.ApiException) and e.status == 410:
                    self.error = e  # events were lost: the count could be wrong
                    return

    def _seen(self, kind: str, job: Any) -> None:
        name = job.metadata.name
        self.seen.add(name)
        done = any(
            c.type in ("Complete", "Failed") and c.status == "True"
            for c in (job.status.conditions or [])
        )
        if kind == "DELETED" or done:
            self.unfinished.discard(name)
        else:
            self.unfinished.add(name)
        self.most = max(self.most, len(self.unfinished))

    def __enter__(self) -> JobWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.watch.stop()
        self.thread.join(timeout=30)
        self.api.close()


@pytest.mark.parametrize("disruption", ["none", "restart", "failover"])
def test_ten_workflows_against_a_limit_of_two_never_run_more_than_two_jobs(
    usage_operator: tuple[Path, Kubectl, OperatorProcess], disruption: str, tmp_path: Path
) -> None:
    """The key test of the limits: never more than two of the limit's Jobs unfinished at once,
    as a watch on the API server sees them, and every Workflow finishes.  With ``restart`` the
    operator is killed while steps wait and started again; with ``failover`` a second replica
    runs beside it and takes over when it is killed.  Either way the process that carries on
    knows nothing but what it observes (the Jobs' limit label, the Workflows' status)."""
    kubeconfig, kubectl, operator = usage_operator
    replica: OperatorProcess | None = None
    if disruption == "failover":
        replica = OperatorProcess(
            kubeconfig=kubeconfig, log_dir=tmp_path, extra_args=operator.extra_args
        )
        replica.start()
    try:
        run_ten_workflows(kubeconfig, kubectl, operator, disruption)
        if replica is not None:
            assert successful_writes(replica) > 0  # it took over and finished the runs
    finally:
        if replica is not None:
            replica.stop()  # releases the Lease
            if operator.proc is None:
                operator.start()


def run_ten_workflows(
    kubeconfig: Path, kubectl: Kubectl, operator: OperatorProcess, disruption: str
) -> None:
    ns = fresh_namespace(kubectl, "limits")
    count = 10
    docs = [
        workflow(
            f"limited-{i:02d}",
            [{"name": "call", "agent": "scarce", "prompt": f"call {i}"}],
            [tokens_agent("scarce", "scarce-model", "1,1", sleep=1.0)],
        )
        for i in range(count)
    ]
    with JobWatch(kubeconfig, ns, "agentflow.dev/limit=scarce") as jobs:
        apply(kubectl, ns, docs)

        def someone_waits() -> str | None:
            for i in range(count):
                wf = get(kubectl, ns, "workflows.agentflow.dev", f"limited-{i:02d}")
                for s in ((wf or {}).get("status") or {}).get("steps") or []:
                    message = s.get("message") or ""
                    if s.get("phase") == "Pending" and "concurrency limit scarce" in message:
                        return str(message)
            return None

        waiting = wait_for(someone_waits, 60, interval=0.3, what="a step waiting for the limit")
        assert waiting == "waiting: concurrency limit scarce reached (2 at once)"
        if disruption == "restart":
            operator.kill()
            operator.start()
        elif disruption == "failover":
            operator.kill()  # the replica takes the Lease once it expires (6 s here)
        finished = [
            wait_finished(kubectl, ns, f"limited-{i:02d}", timeout=300) for i in range(count)
        ]
    assert jobs.error is None, jobs.error
    spans = sorted(
        (step(wf, "call")["startedAt"], step(wf, "call")["finishedAt"]) for wf in finished
    )
    print("spans", spans)
    assert [wf["status"]["phase"] for wf in finished] == ["Succeeded"] * count
    assert len(jobs.seen) == count
    assert jobs.most == LIMIT, jobs.most
    for wf in finished:
        [attempt] = step(wf, "call")["attempts"]
        assert attempt["concurrencyLimit"] == "scarce"
    if disruption != "failover":
        metrics = operator.metrics()
        assert samples(metrics, "agentflow_concurrency_limit_waiting", limit="scarce") == 0


def test_the_token_budget_example_stops_after_two_steps(
    usage_operator: tuple[Path, Kubectl, OperatorProcess],
) -> None:
    _, kubectl, _ = usage_operator
    ns = fresh_namespace(kubectl, "example")
    apply(kubectl, ns, REPO / "workflows" / "token-budget.yaml")
    wf = wait_finished(kubectl, ns, "token-budget", timeout=180)
    assert wf["status"]["phase"] == "Failed"
    stalled = condition(wf, "Stalled")
    assert stalled is not None and stalled["reason"] == "BudgetExceeded"
    phases = [step(wf, n)["phase"] for n in ("collect", "analyse", "summarise")]
    assert phases == ["Succeeded", "Succeeded", "Pending"]
    usage = wf["status"]["usage"]
    # research-model has no price in this operator's table: tokens without a cost.
    assert (usage["totalTokens"], usage["unpricedTokens"], usage.get("cost")) == (6000, 6000, None)
