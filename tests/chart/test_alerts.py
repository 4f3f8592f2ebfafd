"""The alert rules (charts/agentflow/files/alerts.yaml) and the Grafana dashboard
(charts/agentflow/files/dashboard.json): promtool checks and unit tests, and every PromQL
expression names only metrics the operator registers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.metrics import OperatorMetrics
from tests.chart.chart_tools import CHART, HERE, MONITORING_API, documents, one, render, run, tool
from tests.chart.promql import metric_names_in_promql

ALERTS = CHART / "files" / "alerts.yaml"
ALERTS_TEST = HERE / "alerts_test.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
# Metrics that come from Prometheus itself rather than from the operator.
PROMETHEUS_METRICS = {"up"}


def exposed_metric_names() -> set[str]:
    """Every series name the operator's registry can expose."""
    names: set[str] = set()
    for family in OperatorMetrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "info":
            names.add(family.name + "_info")
        else:
            names.add(family.name)
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


# --------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_alert_unit_tests() -> None:
    result = run([tool("promtool"), "test", "rules", str(ALERTS_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    assert yaml.safe_load(ALERTS_TEST.read_text())["rule_files"] == [
        "../../charts/agentflow/files/alerts.yaml"
    ]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts == {
        "AgentflowWorkflowsFailing",
        "AgentflowDegradedRatioHigh",
        "AgentflowOperatorDown",
        "AgentflowStepsStuck",
    }
    assert fires == alerts
    assert quiet == alerts


@pytest.mark.parametrize(
    ("original", "changed"),
    [
        ("> 3\n", "> 30\n"),  # WorkflowsFailing threshold
        (") > 0.25", ") > 0.75"),  # DegradedRatioHigh threshold
        ("for: 5m", "for: 30m"),  # OperatorDown duration
        ("[30m])) > 0", "[5m])) > 0"),  # StepsStuck window
        (") > 600", ") > 6000"),  # StepsStuck queue latency
    ],
)
def test_the_unit_tests_notice_a_changed_rule(original: str, changed: str, tmp_path: Path) -> None:
    text = ALERTS.read_text()
    assert original in text
    rules_dir = tmp_path / "charts" / "agentflow" / "files"
    rules_dir.mkdir(parents=True)
    (rules_dir / "alerts.yaml").write_text(text.replace(original, changed, 1))
    tests_dir = tmp_path / "tests" / "chart"
    tests_dir.mkdir(parents=True)
    (tests_dir / "alerts_test.yaml").write_text(ALERTS_TEST.read_text())
    result = run([tool("promtool"), "test", "rules", str(tests_dir / "alerts_test.yaml")])
    assert result.returncode != 0, result.stdout


def test_the_rendered_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    docs = documents(render([HERE / "values-all-on.yaml"], api_versions=[MONITORING_API]))
    spec = one(docs, "PrometheusRule")["spec"]
    rules_file = tmp_path / "rendered-rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec))
    result = run([tool("promtool"), "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# Metric names in PromQL
# --------------------------------------------------------------------------------------------


def test_alert_expressions_name_only_registered_metrics() -> None:
    known = exposed_metric_names() | PROMETHEUS_METRICS
    for rule in alert_rules():
        names = metric_names_in_promql(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: unknown metrics {names - known}"


def test_dashboard_expressions_name_only_registered_metrics() -> None:
    known = exposed_metric_names() | PROMETHEUS_METRICS
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        names = metric_names_in_promql(expr)
        assert names, expr
        assert names <= known, f"{expr}: unknown metrics {names - known}"
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["definition"]
            assert definition.startswith("label_values(")
            metric = definition.removeprefix("label_values(").split(",")[0].strip()
            assert metric in known, definition


def test_the_name_check_would_catch_a_typo() -> None:
    known = exposed_metric_names()
    assert "agentflow_step_attempts_total" in known
    assert "agentflow_step_duration_seconds_bucket" in known
    assert not metric_names_in_promql("rate(agentflow_step_attempt_total[5m])") <= known


def test_dashboard_covers_the_operator() -> None:
    board = dashboard()
    used = set().union(*(metric_names_in_promql(e) for e in dashboard_exprs()))
    for metric in (
        "agentflow_workflows",
        "agentflow_workflows_finished_total",
        "agentflow_step_attempts_total",
        "agentflow_fallbacks_total",
        "agentflow_step_duration_seconds_bucket",
        "agentflow_operator_step_overhead_seconds_bucket",
        "agentflow_reconcile_duration_seconds_bucket",
        "agentflow_kubernetes_api_requests_total",
        "agentflow_cache_requests_total",
        "agentflow_agent_tokens_total",
    ):
        assert metric in used, f"no panel shows {metric}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace"}
    assert board["uid"] == "agentflow-operator"
