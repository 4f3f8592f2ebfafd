"""The chart's metrics.agentsPerNamespace reaches the operator, and the schema bounds it."""

from __future__ import annotations

import pytest

from agentflow.config import load_config
from agentflow.metrics import AGENTS_PER_NAMESPACE
from tests.chart.chart_tools import documents, one, render, render_result

ENV = "AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE"


def _env(sets: tuple[str, ...]) -> dict[str, str]:
    deployment = one(documents(render(sets=sets)), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize(
    ("sets", "expected"),
    [((), AGENTS_PER_NAMESPACE), (("metrics.agentsPerNamespace=7",), 7)],
)
def test_agents_per_namespace_reaches_the_operator(sets: tuple[str, ...], expected: int) -> None:
    value = _env(sets)[ENV]
    assert value == str(expected)
    assert load_config({ENV: value}).metrics_agents_per_namespace == expected


@pytest.mark.parametrize("value", ["0", "1001", "many"])
def test_the_schema_refuses_an_unbounded_or_empty_cap(value: str) -> None:
    result = render_result(sets=(f"metrics.agentsPerNamespace={value}",))
    assert result.returncode != 0
    assert "agentsPerNamespace" in result.stderr, result.stderr
