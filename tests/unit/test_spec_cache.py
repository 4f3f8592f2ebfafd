"""A Workflow's spec is validated once per generation, its metadata on every pass, and its
status unless the pass starts from the very version our last write stored."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from agentflow import controller
from agentflow.api.models import Workflow
from tests.support.shell import NAMESPACE, Clock, Shell
from tests.support.world import T0


def script_spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps), "agents": [{"name": "a", "provider": "script"}]}


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The raw specs the controller validates (a cached spec is passed as a model)."""
    seen: list[dict[str, Any]] = []
    original = Workflow.model_validate

    def counting(obj: Any, *args: Any, **kwargs: Any) -> Workflow:
        if isinstance(obj, Mapping) and isinstance(obj.get("spec"), Mapping):
            seen.append(copy.deepcopy(dict(obj["spec"])))
        return original(obj, *args, **kwargs)

    monkeypatch.setattr(controller.Workflow, "model_validate", counting)
    return seen


def edit_spec(shell: Shell, key: tuple[str, str], spec: dict[str, Any]) -> None:
    """What the API server does with a new spec: a new generation."""
    body = shell.kube.workflows[key]
    body["spec"] = spec
    body["metadata"]["generation"] += 1


def test_passes_of_one_generation_validate_the_spec_once(
    validations: list[dict[str, Any]],
) -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}, {"name": "t", "agent": "a"}))
    shell.reconcile(key)
    shell.reconcile(key)
    shell.reconcile(key)
    assert len(validations) == 1
    assert shell.status(key)["steps"][0]["phase"] == "Running"
    # An annotation (a rerun, a retry) changes no generation: the metadata is read every pass.
    shell.kube.workflows[key]["metadata"]["annotations"] = {"agentflow.dev/rerun": "1"}
    shell.reconcile(key)
    assert len(validations) == 1
    assert shell.status(key)["run"] == 2

    edit_spec(shell, key, script_spec({"name": "only", "agent": "a"}))
    shell.reconcile(key)
    shell.reconcile(key)
    assert len(validations) == 2 and validations[1]["steps"] == [{"name": "only", "agent": "a"}]
    assert [s["name"] for s in shell.status(key)["steps"]] == ["only"]


def test_a_workflow_created_again_under_its_name_is_validated_again(
    validations: list[dict[str, Any]],
) -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    shell.reconcile(key)
    shell.kube.workflows.pop(key)
    # Same name, same generation (1), another uid: not the spec cached for the old one.
    shell.submit("wf", script_spec({"name": "other", "agent": "a"}))
    shell.reconcile(key)
    assert len(validations) == 2
    assert [s["name"] for s in shell.status(key)["steps"]] == ["other"]


def test_an_invalid_spec_fails_the_workflow_naming_the_field_on_every_pass(
    validations: list[dict[str, Any]],
) -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a", "bogus": 1}))
    shell.reconcile(key)
    first = shell.status(key)
    stalled = next(c for c in first["conditions"] if c["type"] == "Stalled")
    assert first["phase"] == "Failed" and stalled["reason"] == "InvalidSpec"
    assert "spec.steps" in stalled["message"] and "bogus" in stalled["message"]
    assert key not in shell.rt.specs  # nothing cached for a spec that does not validate
    shell.reconcile(key)
    assert shell.status(key)["conditions"] == first["conditions"]
    assert shell.kube.jobs == {}

    # Fixed in a new generation: validated, cached and planned.
    edit_spec(shell, key, script_spec({"name": "s", "agent": "a"}))
    shell.reconcile(key)
    assert shell.rt.specs[key].generation == 2
    assert len(shell.kube.jobs) == 1


def test_the_cached_spec_is_never_changed_by_a_pass_and_is_dropped_when_finished() -> None:
    shell = Shell(Clock(T0))
    spec = script_spec({"name": "s", "agent": "a"}, {"name": "t", "agent": "a", "dependsOn": ["s"]})
    key = shell.submit("wf", spec)
    shell.reconcile(key)
    cached = shell.rt.specs[key].spec
    before = cached.model_dump()
    for _ in range(2):
        [name] = [n for (ns, n) in shell.kube.jobs if ns == NAMESPACE and not finished(shell, n)]
        shell.kube.finish_job(NAMESPACE, name, shell.clock.now)
        shell.reconcile(key)
        assert cached.model_dump() == before
    assert shell.status(key)["phase"] == "Succeeded"
    # Finished Workflows are not planned until they change; their specs take no memory.
    assert key not in shell.rt.specs


def test_forget_drops_the_cached_spec() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    shell.reconcile(key)
    assert key in shell.rt.specs
    shell.rt.forget(key)
    assert key not in shell.rt.specs


def finished(shell: Shell, job: str) -> bool:
    return any(
        step.get("phase") == "Succeeded" and any(a.get("jobName") == job for a in step["attempts"])
        for step in shell.status(("team", "wf"))["steps"]
    )


@pytest.fixture
def status_validations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The raw statuses the controller validates."""
    seen: list[Any] = []
    original = controller.parse_status

    def counting(raw: Mapping[str, Any] | None) -> Any:
        seen.append(copy.deepcopy(raw))
        return original(raw)

    monkeypatch.setattr(controller, "parse_status", counting)
    return seen


def test_a_pass_from_the_version_our_write_stored_plans_from_the_model_it_wrote(
    status_validations: list[Any],
) -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}, {"name": "t", "agent": "a"}))
    shell.reconcile(key)
    assert status_validations == [None]  # a new Workflow: nothing to validate
    version, model = shell.rt.stored_statuses[key]
    assert version == shell.body(key)["metadata"]["resourceVersion"]
    assert model.wire() == shell.status(key)
    shell.reconcile(key)
    shell.reconcile(key)
    assert status_validations == [None]
    assert [s["phase"] for s in shell.status(key)["steps"]] == ["Running", "Pending"]


def test_a_status_another_client_changed_is_validated_and_its_change_kept(
    status_validations: list[Any],
) -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    shell.reconcile(key)
    body = shell.kube.workflows[key]
    theirs = {"type": "Audited", "status": "True", "reason": "Checked", "message": "ok"}
    body["status"]["conditions"].append({**theirs, "lastTransitionTime": "2026-01-01T00:00:00Z"})
    body["metadata"]["resourceVersion"] = "999"  # what the API server does on their write
    shell.reconcile(key)
    assert len(status_validations) == 2 and status_validations[1] is not None
    conditions = {c["type"]: c for c in shell.status(key)["conditions"]}
    assert conditions["Audited"]["reason"] == "Checked"


def test_a_write_answered_with_another_status_keeps_no_model(
    status_validations: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    write = shell.kube.patch_workflow_status

    async def defaulting(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        # As a schema default of the API server would: the stored status is not the one sent.
        written = await write(*args, **kwargs)
        if written is not None:
            written["status"]["defaulted"] = True
        return written

    monkeypatch.setattr(shell.kube, "patch_workflow_status", defaulting)
    shell.reconcile(key)
    assert key not in shell.rt.stored_statuses
    shell.reconcile(key)
    assert len(status_validations) == 2


def test_the_stored_status_is_dropped_when_finished_or_forgotten() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("wf", script_spec({"name": "s", "agent": "a"}))
    shell.reconcile(key)
    assert key in shell.rt.stored_statuses
    shell.rt.forget(key)
    assert key not in shell.rt.stored_statuses
    shell.reconcile(key)
    [name] = [n for (ns, n) in shell.kube.jobs if ns == NAMESPACE]
    shell.kube.finish_job(NAMESPACE, name, shell.clock.now)
    shell.reconcile(key)
    assert shell.status(key)["phase"] == "Succeeded"
    assert key not in shell.rt.stored_statuses
