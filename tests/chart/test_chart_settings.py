"""Chart values that become operator settings reach the operator, and the schema bounds them."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from agentflow.config import OperatorConfig, load_config
from tests.chart.chart_tools import documents, one, render, render_result


class Setting(NamedTuple):
    value: str  # the chart value's path
    env: str  # the variable the chart sets
    field: str  # the OperatorConfig field it becomes
    example: int
    refused: tuple[str, ...]


SETTINGS = [
    # The cap on agent label values bounds the series a Workflow author can create.
    Setting(
        "metrics.agentsPerNamespace",
        "AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE",
        "metrics_agents_per_namespace",
        7,
        ("0", "1001", "many"),
    ),
    Setting("workers", "AGENTFLOW_WORKERS", "workers", 3, ("0", "101", "many")),
]
IDS = [s.value for s in SETTINGS]


def _env(sets: tuple[str, ...]) -> dict[str, str]:
    deployment = one(documents(render(sets=sets)), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_the_default_and_a_set_value_reach_the_operator(setting: Setting) -> None:
    default = getattr(OperatorConfig(), setting.field)
    for sets, expected in [
        ((), default),
        ((f"{setting.value}={setting.example}",), setting.example),
    ]:
        value = _env(sets)[setting.env]
        assert value == str(expected)
        assert getattr(load_config({setting.env: value}), setting.field) == expected


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_the_schema_refuses_values_out_of_bounds(setting: Setting) -> None:
    for value in setting.refused:
        result = render_result(sets=(f"{setting.value}={value}",))
        assert result.returncode != 0, value
        assert setting.value.rsplit(".", 1)[-1] in result.stderr, result.stderr
