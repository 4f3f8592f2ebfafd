"""docs/gitops/argocd-health.lua: the Argo CD health check for Workflows, run with Lua 5.1
(the dialect of Argo CD's gopher-lua) against every case of docs/gitops/health_test.yaml."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

from agentflow.api.models import Workflow

GITOPS = Path(__file__).resolve().parents[2] / "docs" / "gitops"
SCRIPT = (GITOPS / "argocd-health.lua").read_text()
CASES: list[dict[str, Any]] = yaml.safe_load((GITOPS / "health_test.yaml").read_text())["tests"]
DEGRADED_IS_HEALTHY = "local degradedIsHealthy = false"


def to_lua(lua: Any, value: Any) -> Any:
    """A Python value as Lua sees a decoded Kubernetes object (tables, numbers, strings)."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(obj: dict[str, Any], script: str = SCRIPT) -> dict[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    assert result is not None, "the script must return a health status table"
    out = {key: result[key] for key in ("status", "message")}
    assert all(isinstance(v, str) for v in out.values()), out
    return out


def load(case: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((GITOPS / case["inputPath"]).read_text())
    return data


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_test_case(case: dict[str, Any]) -> None:
    assert health(load(case)) == case["healthStatus"]


def test_every_fixture_is_a_case_and_a_valid_workflow() -> None:
    fixtures = {p.relative_to(GITOPS).as_posix() for p in (GITOPS / "testdata").glob("*.yaml")}
    assert fixtures == {c["inputPath"] for c in CASES}
    for case in CASES:
        Workflow.model_validate(load(case))


def test_the_cases_cover_every_phase_and_the_special_states() -> None:
    phases = {(load(c).get("status") or {}).get("phase") for c in CASES}
    assert {None, "Pending", "Running", "Succeeded", "Failed"} <= phases
    statuses = {c["healthStatus"]["status"] for c in CASES}
    assert {"Progressing", "Healthy", "Degraded", "Suspended"} <= statuses


def by_stem(stem: str) -> dict[str, Any]:
    return load(next(c for c in CASES if Path(c["inputPath"]).stem == stem))


def test_degraded_success_can_be_configured_healthy() -> None:
    assert DEGRADED_IS_HEALTHY in SCRIPT
    script = SCRIPT.replace(DEGRADED_IS_HEALTHY, "local degradedIsHealthy = true")
    assert health(by_stem("succeeded-degraded"), script) == {
        "status": "Healthy",
        "message": "Degraded: step review: agent writer failed, fallback writer-small succeeded",
    }
    # A clean success and a failure do not change with the switch.
    assert health(by_stem("succeeded"), script)["status"] == "Healthy"
    assert health(by_stem("failed"), script)["status"] == "Degraded"


def test_a_stale_status_is_never_healthy_or_degraded() -> None:
    for stem in ("succeeded", "succeeded-degraded", "failed"):
        obj = copy.deepcopy(by_stem(stem))
        obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
        assert health(obj)["status"] == "Progressing", stem


def test_degraded_without_a_condition_message_falls_back() -> None:
    obj = copy.deepcopy(by_stem("succeeded-degraded"))
    obj["status"]["conditions"] = [
        c for c in obj["status"]["conditions"] if c["type"] != "Degraded"
    ]
    assert health(obj) == {"status": "Degraded", "message": "All 2 steps finished"}
    del obj["status"]["message"]
    assert health(obj) == {
        "status": "Degraded",
        "message": "Succeeded with fallbacks or skipped steps",
    }


def test_a_finished_workflow_ignores_suspend_and_an_unknown_phase_is_unknown() -> None:
    obj = copy.deepcopy(by_stem("succeeded"))
    obj["spec"]["suspend"] = True
    assert health(obj)["status"] == "Healthy"
    obj["spec"]["suspend"] = False
    obj["status"]["phase"] = "Exploded"
    assert health(obj) == {"status": "Unknown", "message": "Unknown phase Exploded"}


def test_running_without_progress_uses_the_ready_message() -> None:
    obj = copy.deepcopy(by_stem("running"))
    del obj["status"]["progress"]
    assert health(obj) == {"status": "Progressing", "message": "Step review is running"}
