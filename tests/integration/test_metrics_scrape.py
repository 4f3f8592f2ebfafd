"""What Prometheus would scrape from a real operator after real workflows."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.metrics import RECONCILE_OUTCOMES
from tests.chart.promql import metric_names_in_promql
from tests.chart.test_alerts import alert_rules, dashboard_exprs
from tests.integration.conftest import OperatorProcess
from tests.integration.workflows import (
    Kubectl,
    apply,
    policy,
    script_agent,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

PROMTOOL = Path.home() / ".cache" / "agentflow" / "bin" / "promtool"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")


def matching_samples(text: str, name: str, **labels: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of each sample of ``name`` in ``text`` whose labels include ``labels``."""
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            yield have, float(match["value"])


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for _, value in matching_samples(text, name, **labels))


def names_in(text: str) -> set[str]:
    return {m["name"] for line in text.splitlines() if (m := SAMPLE.match(line))}


@pytest.fixture
def scraped_after_fallback(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> str:
    backup_report = "## Summary\nbackup did it\n\n## Metrics\n- Tool calls: 4\n"
    backup = script_agent("backup", report=backup_report)
    backup["env"].append({"name": "AGENTFLOW_SCRIPT_TOKENS", "value": "120,30"})
    apply(
        kubectl,
        namespace,
        [
            policy(
                "fallbacks", [{"agent": "primary", "fallback": "backup", "criticality": "high"}]
            ),
            workflow(
                "observed",
                [{"name": "work", "agent": "primary", "prompt": "do it"}],
                [script_agent("primary", fail="always"), backup],
                fallbackPolicyRef={"name": "fallbacks"},
            ),
        ],
    )
    wf = wait_finished(kubectl, namespace, "observed")
    assert wf["status"]["phase"] == "Succeeded" and wf["status"]["degraded"] is True
    return operator.metrics()


def test_fallback_and_degraded_counters_move_by_exactly_one(
    scraped_after_fallback: str, namespace: str
) -> None:
    text = scraped_after_fallback
    ns = {"namespace": namespace}
    assert (
        samples(text, "agentflow_fallbacks_total", agent="primary", fallback_agent="backup", **ns)
        == 1
    )
    assert (
        samples(
            text, "agentflow_workflows_finished_total", phase="Succeeded", degraded="true", **ns
        )
        == 1
    )
    assert (
        samples(
            text, "agentflow_workflows_finished_total", phase="Succeeded", degraded="false", **ns
        )
        == 0
    )
    assert (
        samples(text, "agentflow_step_attempts_total", agent="primary", outcome="failed", **ns) == 1
    )
    assert (
        samples(text, "agentflow_step_attempts_total", agent="backup", outcome="fallback", **ns)
        == 1
    )
    assert samples(text, "agentflow_agent_tool_calls_total", agent="backup", **ns) == 4
    assert (
        samples(text, "agentflow_agent_tokens_total", agent="backup", direction="input", **ns)
        == 120
    )
    assert (
        samples(text, "agentflow_agent_tokens_total", agent="backup", direction="output", **ns)
        == 30
    )
    assert samples(text, "agentflow_step_duration_seconds_count", agent="backup", **ns) == 1


def test_a_real_scrape_passes_promtool(scraped_after_fallback: str) -> None:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: run `make binaries`")
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=scraped_after_fallback,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_and_alerts_query_only_metrics_a_real_operator_exports(
    scraped_after_fallback: str,
) -> None:
    exported = names_in(scraped_after_fallback) | {"up"}
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    assert exprs
    for expr in exprs:
        missing = metric_names_in_promql(expr) - exported
        assert not missing, f"{expr!r} queries {missing}, which the operator did not export"


def test_reconcile_outcomes_are_the_documented_ones(scraped_after_fallback: str) -> None:
    outcomes = label_values(scraped_after_fallback, "agentflow_reconcile_duration_seconds_count")
    assert outcomes.get("outcome"), outcomes
    assert outcomes["outcome"] <= set(RECONCILE_OUTCOMES), outcomes


def label_values(text: str, name: str, **labels: str) -> dict[str, set[str]]:
    """Label name -> the values it takes among the samples of ``name`` matching ``labels``."""
    found: dict[str, set[str]] = {}
    for have, _ in matching_samples(text, name, **labels):
        for key, value in have.items():
            found.setdefault(key, set()).add(value)
    return found
