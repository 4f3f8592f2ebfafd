"""The chart's RBAC is exactly what the operator needs, shown on a real API server.

The rendered chart's ServiceAccount and RBAC are installed into a cluster of their own, the
operator runs with that ServiceAccount's token (not admin), and workflows that exercise every
code path run to the end.  The API server's audit log then shows every request the operator
made: none was forbidden (the rules suffice), and every verb each rule grants was used (the
rules are minimal), except the few documented paths that only a rare event takes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow_devcluster import LocalCluster
from tests.integration.conftest import OperatorProcess, install_crds, kubectl_for, wait_for
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    get,
    policy,
    script_agent,
    step,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

RELEASE_NAMESPACE = "agentflow-system"
WORKLOAD_NAMESPACE = "rbac-e2e"
HELM = Path.home() / ".cache" / "agentflow" / "bin" / "helm"
# Rights only a rare event uses; each names the event, and a unit test covers the path.
RARE = {
    ("agentflow.dev", "workflows", "get"): "re-read after a 409 on the status patch",
    ("batch", "jobs", "get"): "owner check after a 409 on Job creation",
    ("", "configmaps", "patch"): "refreshing a cache entry whose key already exists",
    ("agentflow.dev", "workflows", "patch"): (
        "kopf taking off the finalizer earlier versions put on Workflows (test_operator.py)"
    ),
}
Rule = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


IDENTITY_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def render_chart(*sets: str, release: str = "agentflow") -> list[dict[str, Any]]:
    """The chart as ``release`` in RELEASE_NAMESPACE, with ``--set`` for each of ``sets``."""
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make binaries`")
    version = (REPO / "hack" / "controlplane" / "VERSION").read_text().strip()
    args = [str(HELM), "template", release, str(REPO / "charts" / "agentflow")]
    args += ["--namespace", RELEASE_NAMESPACE, "--kube-version", version]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The chart's environment of the operator container, as the kubelet would resolve it for
    a pod in the Deployment's namespace (the pod's name fields are left out)."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env: dict[str, str] = {}
    for var in operator_container(docs).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[var["name"]] = deployment["metadata"]["namespace"]
    return env


def watch_args(docs: list[dict[str, Any]]) -> list[str]:
    """The chart's arguments that choose what the operator watches (the tests pick the rest)."""
    args = operator_container(docs)["args"]
    chosen = [a for a in args if a == "--all-namespaces"]
    for i, arg in enumerate(args):
        if arg == "--namespace":
            chosen += [arg, args[i + 1]]
    return chosen


def granted(docs: list[dict[str, Any]], account: str) -> set[Rule]:
    """Every (group, resource, verb) the chart grants to the operator's ServiceAccount."""
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in docs
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("name") == account for s in b.get("subjects", []))
    }
    rules: set[Rule] = set()
    for role in docs:
        if (
            role["kind"] in ("ClusterRole", "Role")
            and (role["kind"], role["metadata"]["name"]) in bound
        ):
            for r in role.get("rules", []):
                for group in r.get("apiGroups", []):
                    for resource in r.get("resources", []):
                        for verb in r.get("verbs", []):
                            rules.add((group, resource, verb))
    return rules


def used(audit_log: Path, username: str, since: int = 0) -> tuple[set[Rule], list[dict[str, Any]]]:
    """What ``username`` requested (and what of it was forbidden), from byte ``since`` of the
    audit log on."""
    seen: set[Rule] = set()
    forbidden: list[dict[str, Any]] = []
    with audit_log.open("rb") as log:
        log.seek(since)
        lines = log.read().decode().splitlines()
    for line in lines:
        event = json.loads(line)
        if event["user"]["username"] != username or "objectRef" not in event:
            continue
        if "dryRun=" in event["requestURI"]:  # a test's probe: it changes nothing
            continue
        ref = event["objectRef"]
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        seen.add((ref.get("apiGroup", ""), resource, event["verb"]))
        if event.get("responseStatus", {}).get("code") == 403:
            forbidden.append({"verb": event["verb"], "uri": event["requestURI"]})
    return seen, forbidden


def fresh_cluster(name: str) -> Iterator[LocalCluster]:
    """A cluster of its own under .agentflow/<name>, started afresh (its audit log holds only
    this run), stopped at the end."""
    state = REPO / ".agentflow" / name
    LocalCluster(state).stop()
    shutil.rmtree(state, ignore_errors=True)
    cluster = LocalCluster(state)
    cluster.start()
    cluster.start_node()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def rbac_cluster() -> Iterator[LocalCluster]:
    yield from fresh_cluster("rbac-cluster")


@dataclass(frozen=True)
class ChartIdentity:
    """The chart's operator ServiceAccount, installed with its RBAC (and whatever else of the
    chart was asked for), and a kubeconfig with its token."""

    account: str
    kubeconfig: Path
    env: dict[str, str]

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{RELEASE_NAMESPACE}:{self.account}"

    def operator(self, cluster: LocalCluster, *extra_args: str) -> OperatorProcess:
        """The operator as the chart runs it: this identity and the Deployment's env."""
        return OperatorProcess(
            kubeconfig=self.kubeconfig,
            log_dir=cluster.logs_dir,
            env=self.env,
            extra_args=list(extra_args),
        )


def install_chart_identity(
    cluster: LocalCluster,
    docs: list[dict[str, Any]],
    kubeconfig: Path,
    kinds: tuple[str, ...] = IDENTITY_KINDS,
    workload: str = WORKLOAD_NAMESPACE,
) -> ChartIdentity:
    """CRDs, the release namespace and ``workload``, and the rendered objects of ``kinds``;
    ``kubeconfig`` is written with a token of the operator's ServiceAccount."""
    kubectl = kubectl_for(cluster.kubeconfig)
    install_crds(kubectl)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    for ns in (RELEASE_NAMESPACE, workload):
        kubectl("create", "namespace", ns)  # fails harmlessly when another install made it
    objects = [d for d in docs if d["kind"] in kinds]
    result = kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    assert result.returncode == 0, result.stderr
    token = kubectl("create", "token", account, "-n", RELEASE_NAMESPACE, "--duration=2h")
    assert token.returncode == 0, token.stderr
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "operator",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.api_url,
                            "certificate-authority": str(cluster.pki_dir / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token.stdout.strip()}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": "local", "user": "operator"}}
                ],
            }
        )
    )
    return ChartIdentity(account=account, kubeconfig=kubeconfig, env=operator_env(docs))


def run_every_code_path(kubectl: Kubectl, namespace: str = WORKLOAD_NAMESPACE) -> None:
    """Workflows in ``namespace`` that take every path of the operator's API use, run to
    the end: Job creation, Job deletion (a critical failure stops a running step), fallbacks,
    an output ConfigMap (a large report), a cache entry and its expiry sweep, the policy's
    status, and deleting a Workflow after ttlSecondsAfterFinished."""
    apply(
        kubectl,
        namespace,
        [
            policy(
                "fallbacks",
                [
                    {"agent": "primary", "fallback": "backup", "criticality": "high"},
                    {"agent": "validator", "criticality": "critical"},
                ],
            ),
            # A critical failure stops the other running step: its Job is deleted.
            workflow(
                "stopped",
                [{"name": "validate", "agent": "validator"}, {"name": "slow", "agent": "slow"}],
                [script_agent("validator", fail="always"), script_agent("slow", sleep=120)],
                strategy="Parallel",
                fallbackPolicyRef={"name": "fallbacks"},
            ),
            workflow(
                "everything",
                [
                    {"name": "first", "agent": "primary", "prompt": "falls back"},
                    {
                        "name": "big",
                        "agent": "verbose",
                        "prompt": "lots",
                        "cache": {"ttlSeconds": 2},
                    },
                ],
                [
                    script_agent("primary", fail="always"),
                    script_agent("backup"),
                    script_agent("verbose", output_bytes=50_000),
                ],
                fallbackPolicyRef={"name": "fallbacks"},
            ),
            workflow(
                "short-lived",
                [{"name": "only", "agent": "a", "cache": {"enabled": False}}],
                [script_agent("a")],
                ttlSecondsAfterFinished=0,
            ),
            # The workspace claim it makes (create), and an existing claim it looks for (get).
            workflow(
                "shared-files",
                [{"name": "only", "agent": "a"}],
                [script_agent("a")],
                workspace={"volumeClaimTemplate": {"storage": "16Mi"}},
            ),
            workflow(
                "missing-files",
                [{"name": "only", "agent": "a"}],
                [script_agent("a")],
                workspace={"claimName": "not-there"},
            ),
        ],
    )

    def finished() -> dict[str, Any] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "everything")
        return wf if (wf or {}).get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    missing = wait_finished(kubectl, namespace, "missing-files")
    assert "spec.workspace.claimName" in missing["status"]["message"], missing["status"]

    def claim_made() -> bool:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "shared-files") or {}
        name = (wf.get("status") or {}).get("workspaceClaim")
        return bool(name) and get(kubectl, namespace, "persistentvolumeclaims", name) is not None

    wait_for(claim_made, 60, what="the operator to make the workspace claim")
    wf = wait_for(finished, 120, what="the workflow under the chart's identity")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert step(wf, "big")["result"]["outputRef"]
    wait_for(
        lambda: get(kubectl, namespace, "workflows.agentflow.dev", "short-lived") is None,
        60,
        what="ttlSecondsAfterFinished to delete the finished workflow",
    )
    policy_status = get(kubectl, namespace, "agentfallbackpolicies.agentflow.dev", "fallbacks")
    assert policy_status and policy_status["status"]["conditions"][0]["type"] == "Ready"
    remaining: list[str] = []

    def cache_swept() -> bool:
        entries = json.loads(
            kubectl("get", "cm", "-n", namespace, "-l", "agentflow.dev/cache", "-o", "json").stdout
        )["items"]
        remaining[:] = [
            f"{e['metadata']['name']} {e['metadata'].get('annotations')}" for e in entries
        ]
        return not entries

    try:
        wait_for(cache_swept, 60, what="the cache sweeper to delete the expired entry")
    except AssertionError as e:
        raise AssertionError(f"{e}; left: {remaining}") from None


@pytest.mark.parametrize(
    ("release", "workload_namespace", "sets"),
    [
        ("agentflow", WORKLOAD_NAMESPACE, ()),
        # Namespaced: Roles in the watched namespace only, the Lease in the release namespace
        # (which the operator does not watch); its own release name and ServiceAccount keep
        # its requests apart from the first run's in the audit log.
        (
            "agentflow-ns",
            "rbac-ns-e2e",
            ("watch.mode=namespaced", "watch.namespaces={rbac-ns-e2e}", "rbac.scope=namespaced"),
        ),
    ],
    ids=["cluster", "namespaced"],
)
def test_chart_rbac_is_sufficient_and_minimal(
    rbac_cluster: LocalCluster,
    tmp_path: Path,
    release: str,
    workload_namespace: str,
    sets: tuple[str, ...],
) -> None:
    kubectl = kubectl_for(rbac_cluster.kubeconfig)
    docs = render_chart(*sets, release=release)
    identity = install_chart_identity(
        rbac_cluster, docs, tmp_path / "operator.kubeconfig", workload=workload_namespace
    )
    operator = identity.operator(rbac_cluster, *watch_args(docs))
    operator.start()
    try:
        run_every_code_path(kubectl, workload_namespace)
    finally:
        operator.stop()

    seen, forbidden = used(rbac_cluster.audit_log, identity.username)
    assert not forbidden, f"the chart's RBAC is insufficient: {forbidden[:10]}"
    rules = granted(docs, identity.account)
    unused = sorted(r for r in rules - seen if r not in RARE)
    assert not unused, f"the chart grants rights the operator never used: {unused}"
    assert set(RARE) <= rules, "a documented rare path lost its right"


def test_the_whole_chart_installs_with_every_toggle_on(rbac_cluster: LocalCluster) -> None:
    """Every rendered object is accepted by a real API server (CRDs first, as users must)."""
    kubectl = kubectl_for(rbac_cluster.kubeconfig)

    fixtures = REPO / "tests" / "chart" / "fixtures"
    for crd in sorted(fixtures.glob("monitoring.coreos.com_*.yaml")):
        created = kubectl("apply", "--server-side", "-f", str(crd))
        assert created.returncode == 0, created.stderr
    install_crds(kubectl)
    for ns in ("agentflow-all-on", "team-a", "team-b"):
        kubectl("create", "namespace", ns)
    version = (REPO / "hack" / "controlplane" / "VERSION").read_text().strip()
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            "all-on",
            str(REPO / "charts" / "agentflow"),
            "--namespace",
            "agentflow-all-on",
            "--kube-version",
            version,
            "--api-versions",
            "monitoring.coreos.com/v1",
            "-f",
            str(REPO / "tests" / "chart" / "values-all-on.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"Deployment", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "ConfigMap"} <= kinds
    # Objects carry their own namespaces (the release's, and each watched namespace's).
    applied = kubectl("apply", "--server-side", "-f", "-", input=rendered)
    assert applied.returncode == 0, applied.stderr
    for kind in (
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
        "deployment",
        "service",
        "networkpolicy",
    ):
        listed = kubectl("get", kind, "-n", "agentflow-all-on", "-o", "name")
        assert listed.returncode == 0 and listed.stdout.strip(), (kind, listed.stderr)
