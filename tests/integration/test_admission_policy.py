"""The chart's optional admission policies (``admissionPolicy.enabled``), on a real API server.

The rendered chart's ServiceAccount, RBAC and ValidatingAdmissionPolicies are installed into a
cluster of their own.  With that ServiceAccount's token, the operator runs workflows that take
every path of its API use to the end, and none of its requests is refused; requests of any
other shape, made with the same token, are refused with the policy's message.  The probes are
server-side dry runs: admission judges them like any request, and nothing is stored.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agentflow.api.models import AgentTemplate, StepResult, WorkspaceClaimTemplate
from agentflow.children import (
    WorkflowRef,
    build_step_job,
    cache_configmap,
    output_configmap,
    workspace_claim,
)
from agentflow.engine.names import job_name, workspace_claim_name
from agentflow.engine.types import CreateJob, WriteCache
from agentflow_devcluster import LocalCluster
from tests.integration.conftest import kubectl_for, wait_for
from tests.integration.test_chart_rbac import (
    IDENTITY_KINDS,
    WORKLOAD_NAMESPACE,
    ChartIdentity,
    fresh_cluster,
    install_chart_identity,
    render_chart,
    run_every_code_path,
    used,
)
from tests.integration.workflows import (
    apply,
    get,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
JOB_POLICY = "ValidatingAdmissionPolicy 'agentflow-step-jobs'"
CONFIGMAP_POLICY = "ValidatingAdmissionPolicy 'agentflow-configmaps'"
CLAIM_POLICY = "ValidatingAdmissionPolicy 'agentflow-workspace-claims'"
# The existing claim the release's admissionPolicy.workspaceClaims lists.
SHARED_CLAIM = "team-files"
TENANT_NAMESPACE = "tenant-a"
PROBE_WORKFLOW = WorkflowRef("probe", WORKLOAD_NAMESPACE, str(uuid.uuid4()))
Manifest = dict[str, Any]


@dataclass(frozen=True)
class PolicyRelease:
    cluster: LocalCluster
    identity: ChartIdentity
    core: client.CoreV1Api  # as the operator's ServiceAccount
    batch: client.BatchV1Api


def probe_job(namespace: str = WORKLOAD_NAMESPACE, **action_fields: Any) -> Manifest:
    """A step Job exactly as the operator builds it, with a Secret reference as agents have."""
    agent = AgentTemplate.model_validate(
        {
            "name": "coder",
            "provider": "script",
            "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "api", "key": "k"}}}],
        }
    )
    action = CreateJob(
        job_name=job_name(PROBE_WORKFLOW.name, "build", 1, 1, 1, uid=PROBE_WORKFLOW.uid),
        step="build",
        run=1,
        iteration=1,
        attempt=1,
        agent=agent,
        fallback=False,
        prompt="p",
        cache_key=None,
        timeout_seconds=None,
        **action_fields,
    )
    return build_step_job(replace(PROBE_WORKFLOW, namespace=namespace), action)


def probe_cache_entry(key: str) -> Manifest:
    action = WriteCache(key=key, step="build", result=StepResult(summary="ok"), ttl_seconds=600)
    return cache_configmap(WORKLOAD_NAMESPACE, action, datetime.now(UTC))


def refusal(request: Callable[[], object]) -> str | None:
    """The message of a 403 for ``request``; None when it was admitted."""
    try:
        request()
    except ApiException as e:
        assert e.status == 403, (e.status, e.body)
        message: str = json.loads(e.body)["message"]
        return message
    return None


@pytest.fixture(scope="module")
def admission_cluster() -> Iterator[LocalCluster]:
    yield from fresh_cluster("admission-cluster")


@pytest.fixture(scope="module")
def release(
    admission_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PolicyRelease]:
    docs = render_chart(
        "admissionPolicy.enabled=true", f"admissionPolicy.workspaceClaims={{{SHARED_CLAIM}}}"
    )
    assert {d["kind"] for d in docs} >= set(POLICY_KINDS)
    identity = install_chart_identity(
        admission_cluster,
        docs,
        tmp_path_factory.mktemp("admission") / "operator.kubeconfig",
        IDENTITY_KINDS + POLICY_KINDS,
    )
    api = config.new_client_from_config(config_file=str(identity.kubeconfig))
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    wait_until_effective(core, batch, WORKLOAD_NAMESPACE)
    yield PolicyRelease(admission_cluster, identity, core, batch)
    api.close()


def wait_until_effective(core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str) -> None:
    """Until the three policies refuse a request: a new policy takes effect once the API server has
    compiled it, a moment after its creation."""
    unowned = probe_job(namespace)
    del unowned["metadata"]["ownerReferences"]
    plain = {"metadata": {"name": "plain"}, "data": {"a": "b"}}

    bare_claim = {
        "metadata": {"name": "plain"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }

    def effective() -> bool:
        return bool(
            refusal(lambda: batch.create_namespaced_job(namespace, unowned, dry_run="All"))
            and refusal(lambda: core.create_namespaced_config_map(namespace, plain, dry_run="All"))
            and refusal(
                lambda: core.create_namespaced_persistent_volume_claim(
                    namespace, bare_claim, dry_run="All"
                )
            )
        )

    wait_for(effective, 60, what="the admission policies to refuse a request")


def test_the_operator_runs_every_code_path_under_the_policies(release: PolicyRelease) -> None:
    kubectl = kubectl_for(release.cluster.kubeconfig)
    audit_log = release.cluster.audit_log
    since = audit_log.stat().st_size  # other tests of this module make refused requests too
    operator = release.identity.operator(release.cluster)
    operator.start()
    try:
        run_every_code_path(kubectl)
        # A cache hit: the same step in another Workflow is answered from the entry written by
        # the first, without a Job.
        cached = workflow(
            "cached", [{"name": "once", "agent": "a", "prompt": "p"}], [script_agent("a")]
        )
        apply(kubectl, WORKLOAD_NAMESPACE, [cached])
        first = wait_finished(kubectl, WORKLOAD_NAMESPACE, "cached")
        assert first["status"]["phase"] == "Succeeded", first["status"]
        again = {**cached, "metadata": {"name": "cached-again"}}
        apply(kubectl, WORKLOAD_NAMESPACE, [again])
        second = wait_finished(kubectl, WORKLOAD_NAMESPACE, "cached-again")
        assert step(second, "once")["phase"] == "Cached", second["status"]
        assert step_jobs(kubectl, WORKLOAD_NAMESPACE, "cached-again") == []
    finally:
        operator.stop()

    seen, forbidden = used(audit_log, release.identity.username, since)
    assert not forbidden, f"the admission policies refused the operator: {forbidden[:10]}"
    # Creating and deleting Jobs and ConfigMaps all passed the policies.
    assert {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
        ("", "configmaps", "create"),
        ("", "configmaps", "delete"),
    } <= seen


def test_a_job_the_policy_refuses_fails_its_step_with_the_policys_message(
    release: PolicyRelease,
) -> None:
    """An operator whose settings disagree with the policy's (here a step ServiceAccount the
    chart did not configure) gets its Jobs refused: each attempt fails with JobRefused and the
    policy's message, and the Workflow ends instead of waiting."""
    kubectl = kubectl_for(release.cluster.kubeconfig)
    operator = release.identity.operator(release.cluster, "--step-service-account", "impostor")
    operator.start()
    try:
        apply(
            kubectl,
            WORKLOAD_NAMESPACE,
            [workflow("refused", [{"name": "only", "agent": "a"}], [script_agent("a")])],
        )
        wf = wait_finished(kubectl, WORKLOAD_NAMESPACE, "refused")
    finally:
        operator.stop()
    assert wf["status"]["phase"] == "Failed", wf["status"]
    attempts = step(wf, "only")["attempts"]
    assert [a["reason"] for a in attempts] == ["JobRefused"], attempts
    for message in (attempts[0]["message"], wf["status"]["message"]):
        assert JOB_POLICY in message, message
        assert "only Jobs that name no ServiceAccount" in message, message
    assert step_jobs(kubectl, WORKLOAD_NAMESPACE, "refused") == []


def _without_owner(job: Manifest) -> None:
    del job["metadata"]["ownerReferences"]


def _owned_by_a_deployment(job: Manifest) -> None:
    job["metadata"]["ownerReferences"][0].update(apiVersion="apps/v1", kind="Deployment")


def _privileged(job: Manifest) -> None:
    context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context.update(privileged=True, allowPrivilegeEscalation=True)


def _added_capability(job: Manifest) -> None:
    context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["capabilities"] = {"add": ["SYS_ADMIN"]}


def _host_path(job: Manifest) -> None:
    volumes = job["spec"]["template"]["spec"]["volumes"]
    volumes.append({"name": "host-root", "hostPath": {"path": "/"}})


def _host_path_as_the_workspace(job: Manifest) -> None:
    volumes = job["spec"]["template"]["spec"]["volumes"]
    volumes.append({"name": "workspace", "hostPath": {"path": "/"}})


def _other_service_account(job: Manifest) -> None:
    job["spec"]["template"]["spec"]["serviceAccountName"] = "agentflow"


def _token_mounted(job: Manifest) -> None:
    job["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def _host_network(job: Manifest) -> None:
    job["spec"]["template"]["spec"]["hostNetwork"] = True


def _host_port(job: Manifest) -> None:
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"containerPort": 8080, "hostPort": 8080}]


def _as_root(job: Manifest) -> None:
    context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context.update(runAsNonRoot=False, runAsUser=0)


def _unconfined(job: Manifest) -> None:
    context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["seccompProfile"] = {"type": "Unconfined"}


def _on_a_chosen_node(job: Manifest) -> None:
    job["spec"]["template"]["spec"]["nodeName"] = "agentflow-local"


def _tolerating_taints(job: Manifest) -> None:
    job["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]


def _missing_labels(job: Manifest) -> None:
    for label in ("agentflow.dev/run", "agentflow.dev/agent"):
        del job["metadata"]["labels"][label]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without_owner, "whose one ownerReference is a controller reference to the"),
        (_owned_by_a_deployment, "whose one ownerReference is a controller reference to the"),
        (_privileged, "whose containers are not privileged"),
        (_added_capability, "add no capabilities"),
        (_host_path, "whose volumes are emptyDir (no hostPath or other sources) and, as volume"),
        (_host_path_as_the_workspace, "admissionPolicy.workspaceClaims; Job "),
        (_other_service_account, "only Jobs that name no ServiceAccount"),
        (_token_mounted, "set automountServiceAccountToken false"),
        (_host_network, "use the host's network, PID or IPC namespace"),
        (_host_port, "use host ports"),
        (_as_root, "run as non-root with the RuntimeDefault seccomp profile"),
        (_unconfined, "run as non-root with the RuntimeDefault seccomp profile"),
        (_on_a_chosen_node, "name a node, tolerate taints or take a priority class"),
        (_tolerating_taints, "name a node, tolerate taints or take a priority class"),
        (_missing_labels, "lacks agentflow.dev/run, agentflow.dev/agent"),
    ],
)
def test_a_job_of_another_shape_is_refused(
    release: PolicyRelease, change: Callable[[Manifest], None], message: str
) -> None:
    job = probe_job()

    def create(manifest: Manifest) -> Callable[[], object]:
        return lambda: release.batch.create_namespaced_job(
            WORKLOAD_NAMESPACE, manifest, dry_run="All"
        )

    assert refusal(create(job)) is None, "the operator's own shape must be admitted"
    other = copy.deepcopy(job)
    change(other)
    refused = refusal(create(other))
    assert refused is not None, f"admitted: {other}"
    assert JOB_POLICY in refused and message in refused, refused


def test_a_step_job_of_a_concurrency_limit_with_its_budget_bound_is_admitted(
    release: PolicyRelease,
) -> None:
    """The limit label (agentflow.dev/limit) and the budget bound's env var are the operator's
    own too: the policy requires the six step labels and lets the seventh through."""
    job = probe_job(concurrency_limit="anthropic", max_tokens=1200)
    assert job["metadata"]["labels"]["agentflow.dev/limit"] == "anthropic"
    created = lambda: release.batch.create_namespaced_job(  # noqa: E731
        WORKLOAD_NAMESPACE, job, dry_run="All"
    )
    assert refusal(created) is None


def test_only_the_operators_own_configmaps_may_be_written_or_deleted(
    release: PolicyRelease,
) -> None:
    core, ns = release.core, WORKLOAD_NAMESPACE
    kubectl = kubectl_for(release.cluster.kubeconfig)

    def create(manifest: Manifest) -> str | None:
        return refusal(lambda: core.create_namespaced_config_map(ns, manifest, dry_run="All"))

    def delete(name: str) -> str | None:
        return refusal(lambda: core.delete_namespaced_config_map(name, ns, dry_run="All"))

    # What the operator writes is admitted.
    report = output_configmap(PROBE_WORKFLOW, "probe-build-1-1-1-x", "build", "# a long report")
    assert create(report) is None
    assert create(probe_cache_entry("k1")) is None

    # A ConfigMap without the operator's labels, or with the cache label under a name that is
    # no cache entry's, is refused.
    unlabelled = create({"metadata": {"name": "settings"}, "data": {"a": "b"}})
    assert unlabelled and CONFIGMAP_POLICY in unlabelled, unlabelled
    assert "may write only its cache ConfigMaps" in unlabelled and "refused: settings" in unlabelled
    disguised = probe_cache_entry("k2")
    disguised["metadata"]["name"] = "settings"
    refused = create(disguised)
    assert refused and "refused: settings" in refused, refused

    # A user's ConfigMap may be neither deleted (one carrying the cache label neither) nor
    # changed, not even into the shape of an entry (it is judged as it was, too); an entry of the
    # operator's may be deleted.
    users = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "team-settings", "labels": {"agentflow.dev/cache": "true"}},
        "data": {"a": "b"},
    }
    entry = probe_cache_entry("k3")
    unlabelled_entry = probe_cache_entry("k4")
    del unlabelled_entry["metadata"]["labels"]
    for manifest in (users, entry, unlabelled_entry):
        created = kubectl("create", "-n", ns, "-f", "-", input=json.dumps(manifest))
        assert created.returncode == 0, created.stderr
    name = unlabelled_entry["metadata"]["name"]
    labels = {"metadata": {"labels": probe_cache_entry("k4")["metadata"]["labels"]}}
    changed = refusal(lambda: core.patch_namespaced_config_map(name, ns, labels, dry_run="All"))
    assert changed and "may change or delete only its own" in changed, changed
    deleted = delete("team-settings")
    assert deleted and CONFIGMAP_POLICY in deleted, deleted
    assert "may change or delete only its own cache and output ConfigMaps" in deleted, deleted
    assert "refused: team-settings" in deleted, deleted
    # Refreshing an entry of the operator's (kube.Kube.replace_configmap_data) and deleting it
    # are admitted.
    entry_name = entry["metadata"]["name"]
    fresh = probe_cache_entry("k3")
    refresh = {
        "metadata": {k: fresh["metadata"][k] for k in ("labels", "annotations")},
        "data": fresh["data"],
    }
    assert (
        refusal(lambda: core.patch_namespaced_config_map(entry_name, ns, refresh, dry_run="All"))
        is None
    )
    assert delete(entry_name) is None


def test_the_operator_may_delete_only_its_own_jobs(release: PolicyRelease) -> None:
    """A Job without the operator's owner reference may not be deleted; one of its own may, even
    in the shape of earlier settings (here namespaced mode's step ServiceAccount)."""
    kubectl = kubectl_for(release.cluster.kubeconfig)
    earlier = workflow("earlier", [{"name": "build", "agent": "a"}], [script_agent("a")])
    apply(kubectl, WORKLOAD_NAMESPACE, [earlier])
    owner = get(kubectl, WORKLOAD_NAMESPACE, "workflows.agentflow.dev", "earlier")
    assert owner is not None
    own = probe_job()
    own["metadata"]["name"] = "earlier-build"
    own["metadata"]["labels"]["agentflow.dev/workflow"] = "earlier"
    own["metadata"]["ownerReferences"][0].update(name="earlier", uid=owner["metadata"]["uid"])
    own["spec"]["template"]["spec"]["serviceAccountName"] = "agentflow-step"
    foreign = probe_job()
    del foreign["metadata"]["ownerReferences"]
    foreign["metadata"]["name"] = "someone-elses"
    for job in (own, foreign):
        job["spec"]["suspend"] = True  # never runs
        created = kubectl("create", "-n", WORKLOAD_NAMESPACE, "-f", "-", input=json.dumps(job))
        assert created.returncode == 0, created.stderr

    def delete(name: str) -> str | None:
        return refusal(
            lambda: release.batch.delete_namespaced_job(name, WORKLOAD_NAMESPACE, dry_run="All")
        )

    refused = delete("someone-elses")
    assert refused and JOB_POLICY in refused, refused
    assert "may create or delete only Jobs whose one ownerReference" in refused, refused
    assert delete("earlier-build") is None


def test_in_namespaced_mode_the_operator_runs_as_the_step_account_in_its_namespaces_only(
    admission_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The recommended setting for shared clusters: namespaced mode with the policies.  A release
    of its own (its own ServiceAccount and policies) watches one namespace: its operator runs
    every code path there, its step Jobs run as the step ServiceAccount, and a Job even of its
    own shape in a namespace it does not watch is forbidden by RBAC."""
    kubectl = kubectl_for(admission_cluster.kubeconfig)
    docs = render_chart(
        "watch.mode=namespaced",
        f"watch.namespaces={{{TENANT_NAMESPACE}}}",
        "rbac.scope=namespaced",
        "admissionPolicy.enabled=true",
        release="tenant",
    )
    identity = install_chart_identity(
        admission_cluster,
        docs,
        tmp_path / "tenant.kubeconfig",
        IDENTITY_KINDS + POLICY_KINDS,
        TENANT_NAMESPACE,
    )
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    chosen = [
        part
        for i, flag in enumerate(args)
        if flag in ("--namespace", "--step-service-account")
        for part in (flag, args[i + 1])
    ]
    assert chosen == ["--namespace", TENANT_NAMESPACE, "--step-service-account", "agentflow-step"]
    api = config.new_client_from_config(config_file=str(identity.kubeconfig))
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    try:
        wait_until_effective(core, batch, TENANT_NAMESPACE)
        elsewhere = refusal(
            lambda: batch.create_namespaced_job(WORKLOAD_NAMESPACE, probe_job(), dry_run="All")
        )
        assert elsewhere and 'cannot create resource "jobs"' in elsewhere, elsewhere
    finally:
        api.close()

    audit_log = admission_cluster.audit_log
    since = audit_log.stat().st_size
    operator = identity.operator(admission_cluster, *chosen)
    operator.start()
    try:
        run_every_code_path(kubectl, TENANT_NAMESPACE)
    finally:
        operator.stop()
    jobs = step_jobs(kubectl, TENANT_NAMESPACE, "everything")
    assert jobs
    assert {j["spec"]["template"]["spec"]["serviceAccountName"] for j in jobs} == {"agentflow-step"}
    seen, forbidden = used(audit_log, identity.username, since)
    assert not forbidden, f"refused in namespaced mode: {forbidden[:10]}"
    assert {("batch", "jobs", "create"), ("", "configmaps", "create")} <= seen


def test_a_job_may_mount_only_its_workflows_claim_or_a_listed_one(release: PolicyRelease) -> None:
    """The workspace volume of a step Job: the claim the operator makes for the Job's Workflow,
    or an existing claim listed in admissionPolicy.workspaceClaims; any other claim (another
    Workflow's, a claim of the namespace's own) is refused."""

    def create(claim: str | None) -> str | None:
        job = probe_job(workspace_claim=claim)
        return refusal(
            lambda: release.batch.create_namespaced_job(WORKLOAD_NAMESPACE, job, dry_run="All")
        )

    own = workspace_claim_name(PROBE_WORKFLOW.name, uid=PROBE_WORKFLOW.uid)
    assert create(own) is None
    assert create(SHARED_CLAIM) is None
    others = workspace_claim_name("another-workflow", uid=PROBE_WORKFLOW.uid)
    for foreign in ("database-backups", others, own + "0", "probe-workspace-not-hex-digits"):
        refused = create(foreign)
        assert refused is not None, f"admitted a Job that mounts {foreign}"
        assert JOB_POLICY in refused, refused
        assert "the workspace claim it makes for the Workflow" in refused, refused
        assert "admissionPolicy.workspaceClaims; Job " in refused and "has workspace" in refused


def test_only_workspace_claims_of_the_operators_shape_may_be_created(
    release: PolicyRelease,
) -> None:
    name = workspace_claim_name(PROBE_WORKFLOW.name, uid=PROBE_WORKFLOW.uid)
    claim = workspace_claim(PROBE_WORKFLOW, name, WorkspaceClaimTemplate(storage="1Gi"))

    def create(manifest: Manifest) -> str | None:
        return refusal(
            lambda: release.core.create_namespaced_persistent_volume_claim(
                WORKLOAD_NAMESPACE, manifest, dry_run="All"
            )
        )

    assert create(claim) is None, "the operator's own claim must be admitted"

    def variant(change: Callable[[Manifest], None]) -> Manifest:
        other = copy.deepcopy(claim)
        change(other)
        return other

    shape = "may create only workspace claims labelled agentflow.dev/workspace"
    cases: list[tuple[Callable[[Manifest], None], str]] = [
        (lambda c: c["metadata"].pop("ownerReferences"), shape),
        (lambda c: c["metadata"]["labels"].pop("agentflow.dev/workspace"), shape),
        (lambda c: c["metadata"].update(name="database-backups"), shape),
        (lambda c: c["metadata"]["ownerReferences"][0].update(name="another"), shape),
        (lambda c: c["spec"].update(volumeName="someone-elses-volume"), "name no volume"),
        (lambda c: c["spec"].update(selector={"matchLabels": {"a": "b"}}), "name no volume"),
        (
            lambda c: c["spec"].update(dataSource={"kind": "PersistentVolumeClaim", "name": "x"}),
            "name no volume, selector or data source",
        ),
    ]
    for change, message in cases:
        refused = create(variant(change))
        assert refused is not None and CLAIM_POLICY in refused, refused
        assert message in refused, refused
