"""``spec.workspace`` on the real API server, with the real Job controller and garbage collector
and the local node: the claim the operator makes (once, owned by the Workflow, deleted with it),
Jobs that mount it, an existing claim bound to a hostPath volume that carries files from step to
step on the local node, and the errors for what cannot work.

The local node mounts only a claim whose ``spec.volumeName`` names a hostPath PersistentVolume
(there is no provisioner); the e2e tier (tests/e2e/test_kind.py) runs the provisioned claim of
workflows/file-pipeline.yaml on a real kubelet.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    get,
    items,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

PIPELINE = REPO / "workflows" / "file-pipeline.yaml"
CLAIM_KIND = "persistentvolumeclaims"


def pipeline_with(workspace: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(PIPELINE.read_text()))
    doc["spec"]["workspace"] = workspace
    return doc


@pytest.fixture
def host_claim(kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A claim bound by name to a hostPath PersistentVolume on a directory of this test's; the
    volume (cluster-scoped) is deleted afterwards, also when the test failed."""
    directory = tmp_path / "shared"
    directory.mkdir()
    pv_name = f"{namespace}-files"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": "files"},
            "hostPath": {"path": str(directory), "type": "Directory"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "files"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "64Mi"}},
        },
    }
    created = kubectl("apply", "-f", "-", input=yaml.safe_dump(volume))
    assert created.returncode == 0, created.stderr
    try:
        apply(kubectl, namespace, [claim])
        yield "files", directory
    finally:
        kubectl("delete", "pv", pv_name, "--wait=false")
        # No pv-protection controller runs here to lift the finalizer the API server added.
        kubectl("patch", "pv", pv_name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        shutil.rmtree(directory, ignore_errors=True)


def test_files_pass_from_step_to_step_through_an_existing_claim_on_the_local_node(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, host_claim: tuple[str, Path]
) -> None:
    claim, directory = host_claim
    apply(kubectl, namespace, [pipeline_with({"claimName": claim})])
    wf = wait_finished(kubectl, namespace, "file-pipeline")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["workspaceClaim"] == claim
    notes = directory / "docs" / "release-notes.md"
    assert notes.read_text() == "release: 1.4.0\nstatus: reviewed\n- fixed the login timeout\n"
    assert step(wf, "draft")["result"]["artifacts"] == [
        {"path": "docs/release-notes.md", "action": "created"}
    ]
    assert step(wf, "review")["result"]["artifacts"] == [
        {"path": "docs/release-notes.md", "action": "modified"}
    ]
    check = step(wf, "check")["result"]
    assert check["summary"] == "release: 1.4.0\nstatus: reviewed\n- fixed the login timeout"
    # Steps of a Workflow with a workspace are not cached: each one ran its Job.
    assert all(s["phase"] == "Succeeded" and "cacheKey" not in s for s in wf["status"]["steps"])
    for job in step_jobs(kubectl, namespace, "file-pipeline"):
        pod = job["spec"]["template"]["spec"]
        assert {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}} in pod[
            "volumes"
        ]
        assert pod["containers"][0]["workingDir"] == "/workspace"
    # The author's claim is not the operator's: it stays, unowned.
    found = get(kubectl, namespace, CLAIM_KIND, claim)
    assert found is not None and "ownerReferences" not in found["metadata"]


def test_the_operator_makes_one_claim_per_workflow_owned_by_it(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, [pipeline_with({"volumeClaimTemplate": {"storage": "32Mi"}})])

    def claim_and_job() -> tuple[dict[str, Any], dict[str, Any]] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "file-pipeline")
        name = ((wf or {}).get("status") or {}).get("workspaceClaim")
        jobs = step_jobs(kubectl, namespace, "file-pipeline")
        found = get(kubectl, namespace, CLAIM_KIND, name) if name else None
        return (wf, found) if wf and found and jobs else None  # type: ignore[return-value]

    wf, claim = wait_for(claim_and_job, 60, what="the workspace claim and the first Job")
    uid = wf["metadata"]["uid"]
    assert claim["metadata"]["name"].startswith("file-pipeline-workspace-")
    assert claim["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "agentflow.dev/v1alpha1",
            "kind": "Workflow",
            "name": "file-pipeline",
            "uid": uid,
            "controller": True,
        }
    ]
    assert claim["metadata"]["labels"]["agentflow.dev/workspace"] == "file-pipeline"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "32Mi"
    [job] = step_jobs(kubectl, namespace, "file-pipeline")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "workspace",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    } in volumes
    claims = kubectl("get", CLAIM_KIND, "-n", namespace, "-o", "name").stdout.split()
    assert claims == [f"persistentvolumeclaim/{claim['metadata']['name']}"]

    # The local node cannot mount a provisioned claim, and says so.
    def waiting() -> dict[str, Any] | None:
        pods = items(kubectl, namespace, "pods", "agentflow.dev/workflow=file-pipeline")
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                state = (status.get("state") or {}).get("waiting") or {}
                if state.get("reason") == "CreateContainerConfigError":
                    return state  # type: ignore[no-any-return]
        return None

    state = wait_for(waiting, 60, what="the local node to refuse the provisioned claim")
    assert "names no volume" in state["message"], state
    assert "needs a real node" in state["message"], state

    # Deleted with the Workflow: the garbage collector deletes what the Workflow owns.
    deleted = kubectl("delete", "workflows.agentflow.dev", "file-pipeline", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr

    def claim_deleted() -> bool:
        left = get(kubectl, namespace, CLAIM_KIND, claim["metadata"]["name"])
        # The local control plane runs no pvc-protection controller: the claim may stay
        # Terminating behind its finalizer, but its deletion has been asked for.
        return left is None or bool(left["metadata"].get("deletionTimestamp"))

    wait_for(claim_deleted, 60, what="the garbage collector to delete the workspace claim")


def test_a_missing_existing_claim_fails_the_workflow_naming_the_field(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, [pipeline_with({"claimName": "nowhere"})])
    wf = wait_finished(kubectl, namespace, "file-pipeline", timeout=60)
    assert wf["status"]["phase"] == "Failed"
    expected = (
        "spec.workspace.claimName: PersistentVolumeClaim nowhere not found"
        f" in namespace {namespace}"
    )
    assert expected in wf["status"]["message"], wf["status"]
    assert step(wf, "draft")["attempts"][0]["reason"] == "WorkspaceUnavailable"
    assert step_jobs(kubectl, namespace, "file-pipeline") == []


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        (
            {
                "strategy": "Parallel",
                "workspace": {"volumeClaimTemplate": {"storage": "1Gi"}},
            },
            "ReadWriteOnce and ReadWriteOncePod claims cannot serve steps that run at once",
        ),
        (
            {"workspace": {"claimName": "a", "volumeClaimTemplate": {"storage": "1Gi"}}},
            "set exactly one of volumeClaimTemplate or claimName",
        ),
        (
            {"workspace": {"volumeClaimTemplate": {"storage": "lots"}}},
            "spec.workspace.volumeClaimTemplate.storage",
        ),
    ],
    ids=["rwo-parallel", "both", "bad-size"],
)
def test_impossible_workspaces_are_refused_by_the_api_server(
    crds: None, kubectl: Kubectl, namespace: str, spec: dict[str, Any], complaint: str
) -> None:
    doc = workflow(
        "impossible",
        [{"name": "a", "agent": "x"}, {"name": "b", "agent": "x"}],
        [script_agent("x")],
        **spec,
    )
    result = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr
