"""The leader Lease cannot be taken or held by a tenant, on a real API server.

The operator runs as the chart configures it in namespaced mode (its watch arguments and its
environment, POD_NAMESPACE resolved to the release namespace), on a cluster of its own so that
no other operator acts on the tenant's Workflows.  Before it starts, a tenant has written a
Lease of the operator's name into the watched namespace, claimed until the end of time, and
the release namespace holds a Lease of another holder with a huge duration that nobody has
renewed for longer than the operator's own duration (6 s in the tests).  The operator must
lead anyway, leave the tenant's Lease alone, and stay healthy: its heartbeat is a watch of the
Lease in the release namespace, which kopf does not watch in namespaced mode.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow_devcluster import LocalCluster
from tests.conftest import Kubectl
from tests.integration.conftest import OperatorProcess, cluster_of_its_own, wait_for
from tests.integration.test_chart_rbac import operator_env, render_chart, watch_args
from tests.integration.workflows import apply, get, script_agent, wait_finished, workflow

pytestmark = pytest.mark.integration

RELEASE_NAMESPACE = "agentflow-system"
TENANT = "tenant-a"
HUGE = 2_000_000_000  # seconds: about 63 years


def micro_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(namespace: str, name: str, holder: str, renewed: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": HUGE,
            "acquireTime": micro_time(renewed),
            "renewTime": micro_time(renewed),
        },
    }


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalCluster, Kubectl]]:
    with cluster_of_its_own("lease") as (cluster, kubectl):
        yield cluster, kubectl


def test_a_tenants_lease_cannot_keep_the_operator_from_leading_and_the_heartbeat_works(
    own_cluster: tuple[LocalCluster, Kubectl], tmp_path: Path
) -> None:
    cluster, kubectl = own_cluster
    docs = render_chart(
        "watch.mode=namespaced", f"watch.namespaces={{{TENANT}}}", "rbac.scope=namespaced"
    )
    env = operator_env(docs)
    lease_name = env.get("AGENTFLOW_LEASE_NAME", "agentflow-operator")  # older charts: unset
    namespaces = (RELEASE_NAMESPACE, TENANT)
    for ns in namespaces:
        assert kubectl("create", "namespace", ns).returncode == 0
    wait_for(
        lambda: all(
            kubectl("get", "serviceaccount", "default", "-n", ns).returncode == 0
            for ns in namespaces
        ),
        30,
        what="the namespaces' default ServiceAccounts",
    )
    now = datetime.now(UTC)
    tenants = lease(TENANT, lease_name, "tenant", now)
    stale = lease(RELEASE_NAMESPACE, lease_name, "gone-operator", now - timedelta(seconds=60))
    for body in (tenants, stale):
        result = kubectl("create", "-f", "-", input=json.dumps(body))
        assert result.returncode == 0, result.stderr

    operator = OperatorProcess(
        kubeconfig=cluster.kubeconfig, log_dir=tmp_path, env=env, extra_args=watch_args(docs)
    )
    operator.start()
    try:
        assert operator.proc is not None
        identity = f"{socket.gethostname()}-{operator.proc.pid}"

        def holder() -> str | None:
            found = get(kubectl, RELEASE_NAMESPACE, "lease", lease_name) or {}
            held: str | None = (found.get("spec") or {}).get("holderIdentity")
            return held if held == identity else None

        wait_for(holder, 30, what="the operator to take the stale Lease in its namespace")
        taken = get(kubectl, RELEASE_NAMESPACE, "lease", lease_name)
        assert taken is not None
        # Renewed with the operator's own duration, not the huge one it found.
        assert taken["spec"]["leaseDurationSeconds"] == 6

        apply(
            kubectl, TENANT, [workflow("led", [{"name": "s", "agent": "a"}], [script_agent("a")])]
        )
        assert wait_finished(kubectl, TENANT, "led", 90)["status"]["phase"] == "Succeeded"

        # The heartbeat goes on: /healthz stays 200 past its limit (4 x 2 s + 6 s = 14 s) with
        # no renewal in any namespace kopf watches.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = operator.http("/healthz")
            assert status == 200, body
            time.sleep(1)
        # The tenant's Lease was neither taken nor changed.
        untouched = get(kubectl, TENANT, "lease", lease_name)
        assert untouched is not None
        assert untouched["spec"] == tenants["spec"]
    finally:
        operator.stop()
