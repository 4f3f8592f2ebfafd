"""The local control plane behaves like Kubernetes: version, CRUD, CRD schemas, garbage
collection, RBAC, PodSecurity; and it starts, is reused and stops without leaving processes.

The tests without the ``integration`` mark exercise the PKI and the start-up error paths with fake
binaries; they start no cluster.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from agentflow.api.models import DEFAULT_AGENT_IMAGE
from agentflow_devcluster import LocalCluster, LocalClusterError, MissingBinaryError, pki
from agentflow_devcluster.controlplane import CONTROL_PLANE, group_members
from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
EXPECTED_VERSION = (REPO / "hack" / "controlplane" / "VERSION").read_text().strip()
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def status_message(err: ApiException) -> str:
    """The apiserver's Status message of a failed request."""
    return str(json.loads(err.body)["message"])


# ---------------------------------------------------------------------------------- integration


@pytest.mark.integration
def test_version_is_the_stamped_release(api: client.ApiClient, kubectl: Kubectl) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == EXPECTED_VERSION
    major, minor = EXPECTED_VERSION.removeprefix("v").split(".")[:2]
    assert (info.major, info.minor) == (major, minor)

    result = kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["serverVersion"]["gitVersion"] == EXPECTED_VERSION


@pytest.mark.integration
def test_configmap_round_trip(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"})
    created = core.create_namespaced_config_map(namespace, body)
    assert created.metadata.uid

    core.patch_namespaced_config_map("settings", namespace, {"data": {"b": "2"}})
    read = core.read_namespaced_config_map("settings", namespace)
    assert read.data == {"a": "1", "b": "2"}
    assert int(read.metadata.resource_version) > int(created.metadata.resource_version)

    names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
    assert "settings" in names

    core.delete_namespaced_config_map("settings", namespace)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("settings", namespace)
    assert missing.value.status == 404


def _crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1, "maximum": 5},
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def gadget_group(api: client.ApiClient) -> Iterator[str]:
    """A test CRD in a group of its own (CRDs are cluster-wide; sessions may run in parallel)."""
    group = f"t{secrets.token_hex(4)}.test.agentflow.dev"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(_crd(group))

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"gadgets.{group}")
        conditions = crd.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, 30.0, what="the CRD to be established")
    yield group
    ext.delete_custom_resource_definition(f"gadgets.{group}")


@pytest.mark.integration
def test_crd_schema_is_enforced(
    api: client.ApiClient, namespace: str, gadget_group: str, kubectl: Kubectl
) -> None:
    custom = client.CustomObjectsApi(api)

    def gadget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{gadget_group}/v1",
            "kind": "Gadget",
            "metadata": {"name": name},
            "spec": spec,
        }

    def create(name: str, spec: dict[str, Any]) -> Any:
        return custom.create_namespaced_custom_object(
            gadget_group, "v1", namespace, "gadgets", gadget(name, spec)
        )

    create("good", {"size": 3, "color": "red"})

    with pytest.raises(ApiException) as too_big:
        create("too-big", {"size": 9})
    assert too_big.value.status == 422
    assert "spec.size" in status_message(too_big.value)
    assert "should be less than or equal to 5" in status_message(too_big.value)

    with pytest.raises(ApiException) as bad_enum:
        create("bad-color", {"size": 1, "color": "green"})
    assert bad_enum.value.status == 422
    assert 'supported values: "red", "blue"' in status_message(bad_enum.value)

    with pytest.raises(ApiException) as missing:
        create("no-size", {"color": "blue"})
    assert missing.value.status == 422
    assert "spec.size: Required value" in status_message(missing.value)

    # kubectl talks to the same server and prints the CRD's columns.
    manifest = yaml.safe_dump(gadget("from-kubectl", {"size": 0}))
    rejected = kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    assert rejected.returncode != 0
    assert "should be greater than or equal to 1" in rejected.stderr
    table = kubectl("get", f"gadgets.{gadget_group}", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "AGE"]
    assert [row.split()[:2] for row in rows] == [["good", "3"]]


@pytest.mark.integration
def test_workflow_crd_is_enforced_and_printed(namespace: str, kubectl: Kubectl) -> None:
    # Same apply as the operator tests' fixture (server-side, same field manager), so the two
    # can install the CRD in either order; it stays installed for them.
    crd = REPO / "crds" / "agentflow.dev_workflows.yaml"
    applied = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    assert applied.returncode == 0, applied.stderr
    established = kubectl(
        "wait", "--for=condition=Established", "crd/workflows.agentflow.dev", "--timeout=60s"
    )
    assert established.returncode == 0, established.stderr

    workflow = yaml.safe_load((REPO / "workflows" / "health-check.yaml").read_text())
    invalid = yaml.safe_load(yaml.safe_dump(workflow))
    invalid["metadata"]["name"] = "invalid"
    invalid["spec"]["steps"][0]["name"] = "Not_A_Label"
    rejected = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(invalid))
    assert rejected.returncode != 0
    assert 'spec.steps[0].name: Invalid value: "Not_A_Label"' in rejected.stderr
    assert "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'" in rejected.stderr

    accepted = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(workflow))
    assert accepted.returncode == 0, accepted.stderr
    table = kubectl("get", "awf", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "DEGRADED", "AGE"]
    assert [row.split()[0] for row in rows] == ["health-check"]


@pytest.mark.integration
def test_garbage_collector_deletes_dependents(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    for name in ("dependent-a", "dependent-b"):
        core.create_namespaced_config_map(
            namespace,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=name, owner_references=[reference])
            ),
        )
    bystander = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bystander"))
    core.create_namespaced_config_map(namespace, bystander)

    core.delete_namespaced_config_map(
        "owner", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )

    def dependents_gone() -> bool:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
        return not names & {"dependent-a", "dependent-b"}

    wait_for(dependents_gone, 30.0, what="the garbage collector to delete the dependents")
    assert core.read_namespaced_config_map("bystander", namespace).metadata.name == "bystander"


@pytest.mark.integration
def test_rbac_denies_until_a_role_is_bound(
    api: client.ApiClient, namespace: str, kubectl: Kubectl
) -> None:
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    as_reader = ("--as", f"system:serviceaccount:{namespace}:reader", "-n", namespace)

    denied = kubectl("get", "pods", *as_reader)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "system:serviceaccount:{namespace}:reader" cannot list resource "pods"' in (
        denied.stderr
    )

    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-pods"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )

    # The authorizer reads roles from an informer cache, so the grant lands within moments.
    wait_for(
        lambda: kubectl("get", "pods", *as_reader).returncode == 0,
        30.0,
        what="the RoleBinding to take effect",
    )
    still_denied = kubectl("get", "secrets", *as_reader)
    assert still_denied.returncode != 0
    assert "Forbidden" in still_denied.stderr


def _pod(name: str, privileged: bool) -> dict[str, Any]:
    if privileged:
        security: dict[str, Any] = {"privileged": True}
        pod_security: dict[str, Any] = {}
    else:
        security = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
        }
        pod_security = {"seccompProfile": {"type": "RuntimeDefault"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": pod_security,
            "containers": [
                {"name": "main", "image": DEFAULT_AGENT_IMAGE, "securityContext": security}
            ],
        },
    }


@pytest.mark.integration
def test_pod_security_restricted_namespace(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # Admission (PodSecurity included) runs on dry-run requests too; dry-run keeps the pods from
    # being scheduled onto the local node.
    core.create_namespaced_pod(namespace, _pod("privileged-before", True), dry_run="All")

    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )

    # PodSecurity admission reads the namespace's labels from the API server's informer cache,
    # so the new label takes effect a moment after the patch returns.
    def rejection() -> ApiException | None:
        try:
            core.create_namespaced_pod(namespace, _pod("privileged", True), dry_run="All")
        except ApiException as error:
            return error
        return None

    rejected = wait_for(rejection, timeout=30, what="PodSecurity to reject a privileged pod")
    assert rejected.status == 403
    assert 'violates PodSecurity "restricted:latest"' in status_message(rejected)
    assert "privileged" in status_message(rejected)

    admitted = core.create_namespaced_pod(namespace, _pod("restricted", False), dry_run="All")
    assert admitted.metadata.name == "restricted"


def _shell_pod(name: str, script: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(name="main", image="busybox", command=["sh", "-c", script])
            ],
        ),
    )


@pytest.mark.integration
def test_pod_logs_come_from_the_node_through_the_apiserver(
    api: client.ApiClient, namespace: str, kubectl: Kubectl
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, _shell_pod("hello", "echo hello from the node"))
    wait_for(
        lambda: core.read_namespaced_pod("hello", namespace).status.phase == "Succeeded",
        30.0,
        what="the pod to succeed",
    )
    # The apiserver dials the node's HTTPS endpoint, verifying it against the cluster CA, with
    # its kubelet client certificate.
    assert core.read_namespaced_pod_log("hello", namespace) == "hello from the node\n"
    logs = kubectl("logs", "-n", namespace, "hello")
    assert (logs.returncode, logs.stdout) == (0, "hello from the node\n"), logs.stderr


@pytest.mark.integration
def test_finished_job_is_deleted_after_its_ttl(api: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    template = _shell_pod("unused", "exit 0")
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="short-lived"),
        spec=client.V1JobSpec(
            ttl_seconds_after_finished=2,  # long enough to see it finish first
            template=client.V1PodTemplateSpec(spec=template.spec),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def finished() -> bool:
        status = batch.read_namespaced_job("short-lived", namespace).status
        return any(c.type == "Complete" and c.status == "True" for c in status.conditions or [])

    wait_for(finished, 30.0, what="the Job to complete")

    def job_and_pods_gone() -> bool:
        try:
            batch.read_namespaced_job("short-lived", namespace)
            return False
        except ApiException as err:
            if err.status != 404:
                raise
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=short-lived")
        return not pods.items

    wait_for(job_and_pods_gone, 30.0, what="ttl-after-finished and the garbage collector")


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow_devcluster", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.integration
def test_cli_up_reuses_and_down_leaves_no_process(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    up = _cli(state, "up", "--no-node")
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
    try:
        first = json.loads((state / "cluster.json").read_text())["components"]
        assert set(first) == set(CONTROL_PLANE)
        status = _cli(state, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["running"] is True

        again = _cli(state, "up", "--no-node")
        assert again.returncode == 0, again.stderr
        second = json.loads((state / "cluster.json").read_text())["components"]
        assert {n: c["pid"] for n, c in second.items()} == {n: c["pid"] for n, c in first.items()}
    finally:
        down = _cli(state, "down")
    assert down.returncode == 0, down.stderr
    for name, component in first.items():
        assert group_members(component["pid"]) == [], f"{name} left processes behind"
    assert not (state / "cluster.json").exists()
    stopped = _cli(state, "status")
    assert stopped.returncode == 1
    assert "running:    False" in stopped.stdout


@pytest.mark.integration
def test_stop_leaves_no_process_and_restart_keeps_data(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "cluster")
    local.start()
    try:
        with _client(local.kubeconfig) as api:
            client.CoreV1Api(api).create_namespaced_config_map(
                "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kept"))
            )
        components = json.loads(local.state_file.read_text())["components"]
        pids = {name: components[name]["pid"] for name in CONTROL_PLANE}
    finally:
        local.stop()
    assert not local.is_running()
    for name, pid in pids.items():
        assert group_members(pid) == [], f"{name} left processes behind"

    local.start()
    try:
        with _client(local.kubeconfig) as api:
            kept = client.CoreV1Api(api).read_namespaced_config_map("kept", "default")
        assert kept.metadata.name == "kept"
    finally:
        local.stop()


def _client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


# ---------------------------------------------------------------------------------- no cluster


def test_pki_is_created_once_and_reused(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path)
    assert pki.CA_CERT in first.written and pki.KUBELET_CERT in first.written
    assert pki.ensure_pki(tmp_path).written == []

    ca = x509.load_pem_x509_certificate((tmp_path / pki.CA_CERT).read_bytes())
    kubelet = x509.load_pem_x509_certificate((tmp_path / pki.KUBELET_CERT).read_bytes())
    kubelet.verify_directly_issued_by(ca)
    san = kubelet.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    node = x509.load_pem_x509_certificate((tmp_path / pki.NODE_CERT).read_bytes())
    assert node.subject.rfc4514_string() == "CN=system:node:agentflow-local,O=system:nodes"
    assert (tmp_path / pki.ADMIN_KEY).stat().st_mode & 0o077 == 0


def test_pki_reissues_what_is_invalid(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    (tmp_path / pki.ADMIN_CERT).write_text("not a certificate")
    assert set(pki.ensure_pki(tmp_path).written) == {pki.ADMIN_CERT, pki.ADMIN_KEY}

    (tmp_path / pki.CA_KEY).unlink()
    rewritten = set(pki.ensure_pki(tmp_path).written)
    assert {pki.CA_CERT, pki.APISERVER_CERT, pki.NODE_CERT, pki.KUBELET_CLIENT_CERT} <= rewritten
    assert pki.SA_KEY not in rewritten  # tokens stay valid across a new CA


def test_missing_binary_says_how_to_build(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "state", bin_dir=tmp_path / "empty")
    with pytest.raises(MissingBinaryError, match="make binaries"):
        local.start()
    assert not (tmp_path / "state" / "cluster.json").exists()


def test_a_dying_component_is_reported_with_its_log(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in CONTROL_PLANE:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho '{name}: cannot open data dir' >&2\nexit 3\n")
        script.chmod(0o755)
    local = LocalCluster(tmp_path / "state", bin_dir=bin_dir)
    with pytest.raises(LocalClusterError) as failure:
        local.start(timeout=30)
    message = str(failure.value)
    assert "etcd exited with code 3" in message
    assert "etcd: cannot open data dir" in message
    assert not local.is_running()
