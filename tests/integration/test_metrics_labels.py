"""Agent names are user input: a loop of Workflows with random agent names keeps the
agent-labelled series of a namespace bounded, on a real operator.

The operator runs on a cluster of its own (about five seconds to start), with
``AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE`` set low: so the test needs few Jobs, proves the setting
reaches the operator, and no other operator on a shared cluster can hold the leader Lease and
record the metrics instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentflow.metrics import OTHER_AGENT
from tests.conftest import Kubectl
from tests.integration.conftest import (
    OperatorProcess,
    fresh_namespace,
    operator_of_its_own,
    wait_for,
)
from tests.integration.test_metrics_scrape import label_values, samples
from tests.integration.workflows import (
    apply,
    items,
    policy,
    script_agent,
    step,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AGENTS = 4  # the operator's AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE here

# Every metric with an agent label, as scraped (a histogram by its _count).
AGENT_LABELLED = (
    "agentflow_step_attempts_total",
    "agentflow_fallbacks_total",
    "agentflow_step_duration_seconds_count",
    "agentflow_step_queue_latency_seconds_count",
    "agentflow_agent_tool_calls_total",
    "agentflow_agent_tokens_total",
)


@dataclass
class Capped:
    kubectl: Kubectl
    operator: OperatorProcess

    def namespace(self, name: str) -> str:
        return fresh_namespace(self.kubectl, name)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capped]:
    with operator_of_its_own(
        "labels",
        tmp_path_factory.mktemp("capped-operator"),
        env={"AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE": str(AGENTS)},
    ) as (_, kubectl, operator):
        yield Capped(kubectl, operator)


def random_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_random_agent_names_keep_the_agent_series_bounded(capped: Capped) -> None:
    """Workflows whose agents all have new random names: a namespace's agent-labelled metrics
    keep at most AGENTS names (the rest is ``other``), nothing goes uncounted, another
    namespace has names of its own, and once the Workflows are deleted the namespace's gauges
    are gone."""
    kubectl, operator = capped.kubectl, capped.operator
    namespace = capped.namespace("agents")
    shared = "the same work, whichever agent is named"
    seed = workflow(
        "seed", [{"name": "s", "agent": "seed", "prompt": shared}], [script_agent("seed")]
    )
    apply(kubectl, namespace, [seed])
    assert wait_finished(kubectl, namespace, "seed")["status"]["phase"] == "Succeeded"
    wait_for(
        lambda: items(kubectl, namespace, "configmaps", "agentflow.dev/cache"),
        30,
        what="the seed's cache entry",
    )
    # Cache hits: the agent's name is not part of the cache key, so these cost no Job, and each
    # brings a new agent name.  They use up the namespace's names and more.
    cached = AGENTS + 3
    docs = []
    for i in range(cached):
        agent = random_name("cached")
        steps = [{"name": "s", "agent": agent, "prompt": shared}]
        docs.append(workflow(f"cached-{i}", steps, [script_agent(agent)]))
    apply(kubectl, namespace, docs)
    for i in range(cached):
        wf = wait_finished(kubectl, namespace, f"cached-{i}")
        # Cached, unless one was planned before the operator's watch brought the cache entry:
        # then it ran, and counts the same way.
        assert step(wf, "s")["phase"] in ("Cached", "Succeeded"), wf["status"]
    # Real runs with new names after that: a failure handed to a fallback, with tool calls and
    # tokens, so that every agent-labelled metric sees names past the limit.
    ran = 2
    docs = []
    for i in range(ran):
        primary, backup = random_name("primary"), random_name("backup")
        report = "## Summary\nbackup did it\n\n## Metrics\n- Tool calls: 2\n"
        helper = script_agent(backup, report=report)
        helper["env"].append({"name": "AGENTFLOW_SCRIPT_TOKENS", "value": "10,5"})
        rules = [{"agent": primary, "fallback": backup, "criticality": "high"}]
        docs += [
            policy(f"fallback-{i}", rules),
            workflow(
                f"ran-{i}",
                [{"name": "work", "agent": primary, "prompt": f"run {i}"}],
                [script_agent(primary, fail="always"), helper],
                fallbackPolicyRef={"name": f"fallback-{i}"},
            ),
        ]
    apply(kubectl, namespace, docs)
    for i in range(ran):
        wf = wait_finished(kubectl, namespace, f"ran-{i}")
        assert wf["status"]["phase"] == "Succeeded" and wf["status"]["degraded"], wf["status"]
    # Another namespace's first agent keeps its name: the first namespace used up only its own.
    elsewhere = capped.namespace("elsewhere")
    apply(
        kubectl,
        elsewhere,
        [workflow("w", [{"name": "s", "agent": "mine"}], [script_agent("mine")])],
    )
    assert wait_finished(kubectl, elsewhere, "w")["status"]["phase"] == "Succeeded"

    text = operator.metrics()
    names: set[str] = set()
    for metric in AGENT_LABELLED:
        values = label_values(text, metric, namespace=namespace)
        assert OTHER_AGENT in values.get("agent", set()), (metric, values)
        names |= values["agent"] | values.get("fallback_agent", set())
    assert len(names) <= AGENTS + 1, sorted(names)
    assert "seed" in names  # the first names keep their own value
    assert label_values(text, "agentflow_step_attempts_total", namespace=elsewhere)["agent"] == {
        "mine"
    }
    # Nothing is lost: 1 + cached + 2 per run attempts, under their names or "other".
    ns = {"namespace": namespace}
    assert samples(text, "agentflow_step_attempts_total", **ns) == 1 + cached + 2 * ran
    assert samples(text, "agentflow_fallbacks_total", agent=OTHER_AGENT, **ns) == ran
    assert samples(text, "agentflow_agent_tool_calls_total", agent=OTHER_AGENT, **ns) == 2 * ran

    # The per-namespace gauges leave with the namespace's last Workflow.
    assert samples(text, "agentflow_workflows", **ns) == 1 + cached + ran
    assert label_values(text, "agentflow_jobs_active", namespace=namespace)
    deleted = kubectl("delete", "workflows.agentflow.dev", "--all", "-n", namespace, "--wait=true")
    assert deleted.returncode == 0, deleted.stderr

    def gauges_gone() -> bool:
        text = operator.metrics()
        return not any(
            label_values(text, gauge, namespace=namespace)
            for gauge in ("agentflow_workflows", "agentflow_jobs_active")
        )

    wait_for(gauges_gone, 60, what=f"the gauges of namespace {namespace} to go")
    assert label_values(operator.metrics(), "agentflow_workflows", namespace=elsewhere)
