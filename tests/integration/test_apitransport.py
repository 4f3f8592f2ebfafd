"""The operator's own client (``agentflow.kube`` over ``agentflow.apitransport``) against the
real API server: requests, errors, credentials and the Lease watch, as the operator sends them.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import certifi
import kubernetes
import pytest
import yaml
from kubernetes import client

from agentflow.apierror import ApiError
from agentflow.apitransport import ApiTransport
from agentflow.kube import CONFIGMAPS, Kube, load_configuration
from tests.integration.conftest import free_port

T = TypeVar("T")


def run(kubeconfig: Path, use: Callable[[Kube], Coroutine[Any, Any, T]]) -> T:
    """``use`` a Kube of ``kubeconfig`` on a loop of its own; its session is closed after."""

    async def main() -> T:
        kube = Kube.connect(str(kubeconfig), qps=50.0, burst=100)
        try:
            return await use(kube)
        finally:
            await kube.close()

    return asyncio.run(main())


def configmap(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"text": "é ✓"},
    }


def test_requests_round_trip_json_queries_and_the_api_servers_errors(
    api: client.ApiClient, kubeconfig: Path, namespace: str
) -> None:
    counted: list[tuple[str, int]] = []

    async def use(kube: Kube) -> None:
        kube.count = lambda verb, code: counted.append((verb, code))
        assert await kube.create_configmap(configmap(namespace, "a", {"pick": "yes"}))
        assert await kube.create_configmap(configmap(namespace, "b", {"pick": "no"}))
        assert not await kube.create_configmap(configmap(namespace, "a", {}))  # 409
        picked = await kube.list_configmaps(namespace, "pick=yes")
        assert [cm["metadata"]["name"] for cm in picked] == ["a"]
        assert picked[0]["data"] == {"text": "é ✓"}
        await kube.replace_configmap_data(
            {**configmap(namespace, "a", {"pick": "again"}), "data": {"text": "new"}}
        )
        got = await kube.get_or_none(CONFIGMAPS.format(namespace=namespace) + "/a")
        assert got is not None and got["data"] == {"text": "new"}
        assert got["metadata"]["labels"] == {"pick": "again"}
        with pytest.raises(ApiError) as refused:
            await kube.request(
                "POST", CONFIGMAPS.format(namespace=namespace), body={"metadata": {"name": "A"}}
            )
        assert refused.value.status == 422
        assert "metadata.name" in refused.value.message  # the API server's own Status message
        assert await kube.get_or_none(CONFIGMAPS.format(namespace=namespace) + "/none") is None
        # Preconditions travel in a DELETE's body: a wrong uid is refused, the right one not.
        assert not await kube.delete_configmap(namespace, "b", uid="not-its-uid")
        assert await kube.delete_configmap(namespace, "a", uid=got["metadata"]["uid"])

    run(kubeconfig, use)
    items = client.CoreV1Api(api).list_namespaced_config_map(namespace).items
    names = {cm.metadata.name for cm in items if cm.metadata}
    assert "a" not in names and "b" in names
    assert ("post", 201) in counted and ("post", 409) in counted and ("post", 422) in counted
    assert ("get", 404) in counted and ("delete", 409) in counted and ("delete", 200) in counted


def bearer_kubeconfig(kubeconfig: Path, token: str, out: Path) -> Path:
    """``kubeconfig`` with its user's client certificate swapped for a bearer token."""
    document = yaml.safe_load(kubeconfig.read_text())
    for user in document["users"]:
        user["user"] = {"token": token}
    out.write_text(yaml.safe_dump(document))
    return out


def test_a_bearer_token_is_what_the_api_server_authenticates(
    api: client.ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("reader", namespace, request).status
    assert token is not None
    config = bearer_kubeconfig(kubeconfig, str(token.token), tmp_path / "kubeconfig")

    async def use(kube: Kube) -> ApiError:
        with pytest.raises(ApiError) as forbidden:
            await kube.list_configmaps(namespace, "a=b")
        return forbidden.value

    error = run(config, use)
    # Not system:anonymous: the token was sent, and names its service account.
    assert error.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in error.message


def test_a_token_is_read_on_every_request_so_a_rotated_one_is_used(
    kubeconfig: Path, namespace: str
) -> None:
    configuration = load_configuration(str(kubeconfig))
    configuration.cert_file = configuration.key_file = None  # the token is all it has
    # As the in-cluster loader leaves it: a token, and a hook that reads the file again.
    configuration.api_key["authorization"] = "Bearer the-token-the-file-had-at-start"
    tokens = iter(["Bearer first-token-that-is-not-valid", "Bearer second-not-valid-either"])
    seen: list[str] = []

    def refresh(c: Any) -> None:
        c.api_key["authorization"] = next(tokens)
        seen.append(c.api_key["authorization"])

    configuration.refresh_api_key_hook = refresh

    async def main() -> list[int]:
        kube = Kube(ApiTransport(configuration))
        statuses = []
        for _ in range(2):
            try:
                await kube.list_configmaps(namespace, "a=b")
            except ApiError as e:
                statuses.append(e.status)
        await kube.close()
        return statuses

    assert asyncio.run(main()) == [401, 401]  # both tokens were presented, and refused
    assert seen == ["Bearer first-token-that-is-not-valid", "Bearer second-not-valid-either"]


def test_no_answer_is_status_zero_with_a_message_and_is_counted(tmp_path: Path) -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    counted: list[tuple[str, int]] = []

    async def main() -> ApiError:
        kube = Kube(ApiTransport(configuration), count=lambda v, c: counted.append((v, c)))
        try:
            with pytest.raises(ApiError) as failed:
                await kube.get_workflow("default", "x")
            return failed.value
        finally:
            await kube.close()

    error = asyncio.run(main())
    assert error.status == 0 and "Connect" in error.message
    assert counted == [("get", 0)]


def lease(namespace: str, holder: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "heartbeat", "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10},
    }


def test_the_lease_watch_delivers_each_write_and_ends_when_the_server_ends_it(
    kubeconfig: Path, namespace: str
) -> None:
    async def use(kube: Kube) -> list[tuple[str, str]]:
        created = await kube.write_lease(lease(namespace, "one"))
        assert created is not None
        events: AsyncIterator[dict[str, Any]] = kube.watch_lease(
            namespace, "heartbeat", timeout_seconds=3
        )
        seen: list[tuple[str, str]] = []
        first = asyncio.Event()

        async def read() -> None:
            async for event in events:
                seen.append((event["type"], event["object"]["spec"]["holderIdentity"]))
                first.set()

        reader = asyncio.create_task(read())
        await asyncio.wait_for(first.wait(), timeout=15)
        renewed = {**created, "spec": {**created["spec"], "holderIdentity": "two"}}
        assert await kube.write_lease(renewed) is not None
        await asyncio.wait_for(reader, timeout=15)  # the server's timeoutSeconds ends it
        return seen

    assert run(kubeconfig, use) == [("ADDED", "one"), ("MODIFIED", "two")]


def test_tls_is_verified_against_the_kubeconfigs_authority(
    kubeconfig: Path, tmp_path: Path
) -> None:
    # The same server, trusted through another authority: the handshake must fail.
    document = yaml.safe_load(kubeconfig.read_text())
    other = Path(certifi.where())
    for cluster in document["clusters"]:
        cluster["cluster"]["certificate-authority-data"] = base64.b64encode(
            other.read_bytes()
        ).decode()
    untrusted = tmp_path / "kubeconfig"
    untrusted.write_text(yaml.safe_dump(document))

    async def use(kube: Kube) -> ApiError:
        with pytest.raises(ApiError) as failed:
            await kube.get_workflow("default", "x")
        return failed.value

    error = run(untrusted, use)
    assert error.status == 0 and "certificate" in error.message.lower()
