"""``spec.workspace``: the claim the plan asks for, the Jobs that mount it, the cache's honesty,
the access-mode rule, and the controller making (or checking) the claim before the first Job,
driven on the in-memory fake of ``agentflow.kube``.  tests/integration/test_workspace.py does
the Kubernetes side against the real API server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from agentflow import children
from agentflow.api.models import (
    WORKSPACE_PATH,
    AgentTemplate,
    WorkflowSpec,
    WorkspaceClaimTemplate,
)
from agentflow.children import WorkflowRef, build_step_job, workspace_claim
from agentflow.controller import Key
from agentflow.engine.caching import caching_enabled
from agentflow.engine.names import workspace_claim_name
from agentflow.engine.types import EnsureWorkspaceClaim, WriteCache
from agentflow.kube import ApiError
from tests.support.shell import Clock, Shell
from tests.support.world import UID, World, creates, kinds, report_message, step, workflow

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE = {"volumeClaimTemplate": {"storage": "1Gi"}}


# ---- names ---------------------------------------------------------------------------------


def test_the_claim_name_is_per_workflow_object_and_fits_a_label() -> None:
    name = workspace_claim_name("wf", uid=UID)
    assert name.startswith("wf-workspace-") and len(name) == len("wf-workspace-") + 16
    assert name == workspace_claim_name("wf", uid=UID)
    assert name != workspace_claim_name("wf", uid="another-uid")
    long = workspace_claim_name("w" * 63, uid=UID)
    assert len(long) == 63 and long.startswith("w" * 36 + "-workspace-")


# ---- the plan ------------------------------------------------------------------------------


def test_the_claim_is_ensured_before_the_first_job_and_every_job_mounts_it() -> None:
    w = World(workflow([step("one"), step("two")], workspace=TEMPLATE))
    p = w.plan()
    claim = workspace_claim_name("wf", uid=UID)
    assert isinstance(p.actions[0], EnsureWorkspaceClaim)
    assert p.actions[0].name == claim and p.actions[0].template is not None
    assert [c.workspace_claim for c in creates(p)] == [claim]
    assert w.wf.status is not None and w.wf.status.workspace_claim == claim
    w.succeed("one")
    p = w.plan()
    assert [c.workspace_claim for c in creates(p)] == [claim]
    assert len(kinds(p.actions, EnsureWorkspaceClaim)) == 1


def test_an_existing_claim_is_checked_not_made() -> None:
    w = World(workflow([step("one")], workspace={"claimName": "team-files"}))
    p = w.plan()
    [ensure] = kinds(p.actions, EnsureWorkspaceClaim)
    assert (ensure.name, ensure.template) == ("team-files", None)
    assert creates(p)[0].workspace_claim == "team-files"


def test_without_a_workspace_nothing_is_mounted() -> None:
    w = World(workflow([step("one")]))
    p = w.plan()
    assert kinds(p.actions, EnsureWorkspaceClaim) == []
    assert creates(p)[0].workspace_claim is None
    assert w.wf.status is not None and "workspaceClaim" not in w.wf.status.model_dump(
        by_alias=True, exclude_none=True
    )


def test_a_pass_that_starts_nothing_asks_for_no_claim() -> None:
    w = World(workflow([step("one")], workspace=TEMPLATE))
    w.plan()
    p = w.plan()
    assert creates(p) == [] and kinds(p.actions, EnsureWorkspaceClaim) == []


# ---- the cache is honest about files -------------------------------------------------------


def test_steps_of_a_workflow_with_a_workspace_are_not_cached_unless_they_opt_in() -> None:
    spec = workflow(
        [
            step("writes"),
            step("opted", cache={"enabled": True}),
            step("ttl", cache={"ttlSeconds": 9}),
        ],
        workspace=TEMPLATE,
    ).spec
    assert [caching_enabled(spec, s) for s in spec.steps] == [False, True, False]
    plain = workflow([step("writes"), step("off", cache={"enabled": False})]).spec
    assert [caching_enabled(plain, s) for s in plain.steps] == [True, False]


def test_a_workspace_step_neither_reads_nor_writes_the_cache() -> None:
    w = World(workflow([step("writes")], workspace=TEMPLATE))
    p = w.plan()
    assert creates(p)[0].cache_key is None and p.cache_outcomes == []
    w.succeed("writes", "wrote a file")
    p = w.plan()
    assert kinds(p.actions, WriteCache) == []
    assert w.phase == "Succeeded"

    again = World(workflow([step("writes")], workspace=TEMPLATE, name="again"), cache=w.cache)
    assert len(creates(again.plan())) == 1  # runs again: its files are needed


def test_a_step_that_opts_in_is_cached_as_usual() -> None:
    steps = [step("report-only", cache={"enabled": True})]
    first = World(workflow(steps, workspace=TEMPLATE))
    first.plan()
    first.succeed("report-only", "summary only")
    [write] = kinds(first.plan().actions, WriteCache)
    second = World(workflow(steps, workspace=TEMPLATE, name="second"), cache=first.cache)
    assert creates(second.plan()) == [] and second.phases() == {"report-only": "Cached"}
    assert write.step == "report-only"


# ---- the access-mode rule ------------------------------------------------------------------


def spec_doc(**fields: Any) -> dict[str, Any]:
    return {
        "steps": [{"name": "a", "agent": "x"}, {"name": "b", "agent": "x"}],
        "agents": [{"name": "x"}],
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "valid"),
    [
        ({"workspace": TEMPLATE}, True),
        ({"workspace": TEMPLATE, "strategy": "Parallel"}, False),
        ({"workspace": TEMPLATE, "strategy": "DAG"}, False),
        ({"workspace": TEMPLATE, "strategy": "DAG", "parallelism": 2}, False),
        ({"workspace": TEMPLATE, "strategy": "Parallel", "parallelism": 1}, True),
        (
            {
                "workspace": {
                    "volumeClaimTemplate": {"storage": "1Gi", "accessModes": ["ReadWriteMany"]}
                },
                "strategy": "Parallel",
            },
            True,
        ),
        (
            {
                "workspace": {
                    "volumeClaimTemplate": {"storage": "1Gi", "accessModes": ["ReadWriteOncePod"]}
                },
                "strategy": "DAG",
            },
            False,
        ),
        ({"workspace": {"claimName": "files"}, "strategy": "Parallel"}, True),
    ],
)
def test_single_node_claims_refuse_steps_that_run_at_once(
    fields: dict[str, Any], valid: bool
) -> None:
    if valid:
        WorkflowSpec.model_validate(spec_doc(**fields))
        return
    with pytest.raises(ValidationError, match=r"spec\.workspace\.volumeClaimTemplate\.accessModes"):
        WorkflowSpec.model_validate(spec_doc(**fields))


@pytest.mark.parametrize(
    "workspace",
    [{}, {"claimName": "a", "volumeClaimTemplate": {"storage": "1Gi"}}],
)
def test_a_workspace_is_one_of_template_or_claim(workspace: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of volumeClaimTemplate or claimName"):
        WorkflowSpec.model_validate(spec_doc(workspace=workspace))


# ---- the children --------------------------------------------------------------------------

REF = WorkflowRef(name="wf", namespace="team", uid=UID)


def test_a_job_mounts_the_claim_at_the_workspace_path_and_starts_there() -> None:
    w = World(workflow([step("one")], workspace=TEMPLATE))
    [create] = creates(w.plan())
    job = build_step_job(REF, create)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    claim = workspace_claim_name("wf", uid=UID)
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}} in pod["volumes"]
    assert {"name": "workspace", "mountPath": WORKSPACE_PATH} in container["volumeMounts"]
    assert container["workingDir"] == WORKSPACE_PATH == "/workspace"
    assert {"name": "AGENTFLOW_WORKSPACE", "value": "/workspace"} in container["env"]
    # The scratch emptyDir stays: /tmp is still writable on a read-only root filesystem.
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


def test_an_agent_cannot_move_the_workspace_variable() -> None:
    agent = AgentTemplate.model_validate(
        {"name": "a", "env": [{"name": "AGENTFLOW_WORKSPACE", "value": "/etc"}]}
    )
    w = World(workflow([step("one")], workspace=TEMPLATE, agents=[agent]))
    [create] = creates(w.plan())
    env = build_step_job(REF, create)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "AGENTFLOW_WORKSPACE"] == ["/workspace"]


def test_the_claim_is_the_workflows_with_the_templates_settings() -> None:
    template = WorkspaceClaimTemplate.model_validate(
        {"storage": "2Gi", "storageClassName": "fast", "accessModes": ["ReadWriteMany"]}
    )
    claim = workspace_claim(REF, "wf-workspace-x", template)
    assert claim["metadata"]["ownerReferences"] == [children.owner_reference(REF)]
    assert claim["metadata"]["labels"] == {
        "agentflow.dev/workflow": "wf",
        "agentflow.dev/workspace": "wf",
    }
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "2Gi"}},
        "storageClassName": "fast",
    }
    default = workspace_claim(REF, "n", WorkspaceClaimTemplate(storage="1Gi"))
    assert "storageClassName" not in default["spec"]  # the cluster's default class


# ---- the controller, on the fake API -------------------------------------------------------


def shell_with(workspace: dict[str, Any], **spec: Any) -> tuple[Shell, Key]:
    shell = Shell(Clock(NOW))
    body = {
        "steps": [{"name": "one", "agent": "a"}, {"name": "two", "agent": "a"}],
        "agents": [{"name": "a", "provider": "script"}],
        "workspace": workspace,
        **spec,
    }
    return shell, shell.submit("wf", body)


def test_the_claim_is_created_once_before_the_first_job() -> None:
    shell, key = shell_with(TEMPLATE)
    shell.reconcile(key)
    uid = shell.body(key)["metadata"]["uid"]
    claim = workspace_claim_name("wf", uid=uid)
    creations = [c for c in shell.kube.calls if c[0] in ("create-claim", "create-job")]
    assert creations[0] == ("create-claim", claim) and creations[1][0] == "create-job"
    stored = shell.kube.claims[("team", claim)]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == uid
    assert shell.status(key)["workspaceClaim"] == claim
    [job] = shell.kube.jobs.values()
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}} in volumes

    name = job["metadata"]["name"]
    shell.kube.finish_job("team", name, NOW, message=report_message("one done"))
    shell.reconcile(key)
    assert len(shell.kube.jobs) == 2
    assert sum(c[0] == "create-claim" for c in shell.kube.calls) == 1  # seen in place already


def test_a_restarted_operator_finds_its_claim_and_goes_on() -> None:
    shell, key = shell_with(TEMPLATE)
    shell.reconcile(key)
    [job] = shell.kube.jobs.values()
    shell.kube.finish_job("team", job["metadata"]["name"], NOW, message=report_message("one"))
    shell.rt.claims_ready.clear()  # what a new process knows
    shell.reconcile(key)
    assert len(shell.kube.claims) == 1 and len(shell.kube.jobs) == 2
    assert shell.status(key)["phase"] == "Running"


def test_a_claim_under_the_name_that_is_not_the_workflows_fails_the_step_naming_the_field() -> None:
    shell, key = shell_with(TEMPLATE)
    uid = shell.body(key)["metadata"]["uid"]
    claim = workspace_claim_name("wf", uid=uid)
    shell.kube.add_claim("team", claim)
    shell.reconcile(key)
    assert shell.kube.jobs == {}
    status = shell.status(key)
    assert status["phase"] == "Failed"
    [attempt] = status["steps"][0]["attempts"]
    assert attempt["reason"] == "WorkspaceUnavailable"
    assert attempt["message"].startswith(
        f"WorkspaceUnavailable: spec.workspace.volumeClaimTemplate: PersistentVolumeClaim {claim}"
        " exists and is not this Workflow's"
    )
    assert "metadata" in shell.kube.claims[("team", claim)]  # left alone
    assert "ownerReferences" not in shell.kube.claims[("team", claim)]["metadata"]


def test_a_refused_claim_fails_the_step_with_the_servers_message() -> None:
    shell, key = shell_with(TEMPLATE)
    shell.kube.faults.claim_error = ApiError(
        403, "error", {"message": "exceeded quota: requests.storage"}
    )
    shell.reconcile(key)
    status = shell.status(key)
    assert status["phase"] == "Failed" and shell.kube.jobs == {}
    message = status["steps"][0]["attempts"][0]["message"]
    assert "spec.workspace.volumeClaimTemplate: the API server refused PersistentVolumeClaim" in (
        message
    )
    assert "exceeded quota: requests.storage" in message


def test_an_existing_claim_that_is_missing_fails_the_step_naming_claim_name() -> None:
    shell, key = shell_with({"claimName": "team-files"})
    shell.reconcile(key)
    status = shell.status(key)
    assert status["phase"] == "Failed" and shell.kube.jobs == {}
    assert (
        "spec.workspace.claimName: PersistentVolumeClaim team-files not found in namespace team"
        in status["steps"][0]["attempts"][0]["message"]
    )
    assert shell.kube.claims == {}  # never made by the operator


def test_an_existing_claim_is_mounted_and_not_made() -> None:
    shell, key = shell_with({"claimName": "team-files"})
    shell.kube.add_claim("team", "team-files")
    shell.reconcile(key)
    assert not any(c[0] == "create-claim" for c in shell.kube.calls)
    [job] = shell.kube.jobs.values()
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "team-files"}} in volumes
    assert shell.status(key)["workspaceClaim"] == "team-files"
