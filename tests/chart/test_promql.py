"""The PromQL metric-name extractor used to check alerts and dashboards."""

from __future__ import annotations

import pytest

from tests.chart.promql import metric_names_in_promql


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job=~".*agentflow.*"} == 0', {"up"}),
        ('absent(up{job=~"a"}) or up{job=~"a"} == 0', {"up"}),
        (
            "sum by (namespace, le) (rate(agentflow_step_duration_seconds_bucket[5m]))",
            {"agentflow_step_duration_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) by (namespace) / on (namespace) group_left (team) b_info",
            {"a_total", "b_info"},
        ),
        ("sum without (instance) (x) unless y > bool 3", {"x", "y"}),
        (
            'histogram_quantile(0.95, sum by (le) (rate(h_bucket{a="b"}[$__rate_interval])))',
            {"h_bucket"},
        ),
        ('sum(rate(c_total{namespace=~"$namespace", x="{}"}[${interval}])) * 60', {"c_total"}),
        ("time() - max(ts_seconds) offset 1h30m", {"ts_seconds"}),
        ("rate(c_total[5m:30s] @ end())", {"c_total"}),
        ('{__name__="by_name", job="x"}', {"by_name"}),
        ('topk(5, count_values("v", m)) + inf', {"m"}),
        ("# a comment\nmetric_a + 1e3", {"metric_a"}),
        ("vector(1)", set()),
    ],
)
def test_metric_names_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names_in_promql(expr) == names


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", 'x{a="b"', "x ~ y"])
def test_malformed_expressions_are_reported(expr: str) -> None:
    with pytest.raises(ValueError):
        metric_names_in_promql(expr)
