"""Least privilege and secrets, on the real control plane.

- Step pods are admitted in a namespace that enforces the ``restricted`` Pod Security Standard.
- A Secret an agent uses (by ``secretKeyRef``) appears nowhere the operator writes: not in the
  Workflow, Events, ConfigMaps, Jobs, the operator's log or ``/metrics``.
- With ``--allowed-images`` a step whose image is not listed fails, naming the image; with
  ``--max-jobs-per-namespace 2`` no more than two step Jobs are ever active in a namespace; with
  ``--metrics-auth`` ``/metrics`` wants a token whose user may ``get /metrics``.

The last three need an operator started with those flags.  It runs against a cluster of its
own (started for this module, about five seconds), so that it and the session's operator never
act on the same Workflows or contend for one leader Lease.
"""

from __future__ import annotations

import base64
import json
import secrets
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from agentflow.api.models import DEFAULT_AGENT_IMAGE
from agentflow.engine import WAITING_NAMESPACE_LIMIT
from agentflow_devcluster import LocalCluster
from tests.conftest import Kubectl
from tests.integration.conftest import (
    OperatorProcess,
    fresh_namespace,
    operator_of_its_own,
    wait_for,
)
from tests.integration.workflows import (
    apply,
    get,
    items,
    policy,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MAX_JOBS = 2


def command_agent(name: str, code: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    argv = json.dumps(["python3", "-c", textwrap.dedent(code)])
    return {
        "name": name,
        "provider": "command",
        "env": [{"name": "AGENTFLOW_COMMAND", "value": argv}, *env],
    }


# --------------------------------------------------------------------------------------------
# Pod security
# --------------------------------------------------------------------------------------------


def test_step_pods_pass_the_restricted_pod_security_standard(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    labelled = kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    assert labelled.returncode == 0, labelled.stderr
    # The namespace really enforces it: an ordinary pod is turned away.
    plain = kubectl("run", "plain", "-n", namespace, "--image=busybox", "--restart=Never")
    assert plain.returncode != 0 and "violates PodSecurity" in plain.stderr, plain.stderr

    agents = [
        script_agent("runner"),
        command_agent("command", 'print("## Summary\\nran as a command")', []),
        {
            "name": "own-image",
            "image": "python:3.12",
            "command": ["python3", "-c", 'print("## Summary\\nown image")'],
            "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}},
        },
    ]
    steps = [{"name": a["name"], "agent": a["name"]} for a in agents]
    apply(kubectl, namespace, [workflow("restricted", steps, agents, strategy="Parallel")])
    wf = wait_finished(kubectl, namespace, "restricted")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    pods = items(kubectl, namespace, "pods", "agentflow.dev/workflow=restricted")
    assert len(pods) == len(agents)
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert not any(v.get("projected") for v in pod["spec"].get("volumes", []))


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

USES_THE_TOKEN = """
import os
token = os.environ["API_TOKEN"]
print(f"## Summary\\nused a token of {len(token)} characters\\n")
print("## Details\\n" + "a long report, stored in an output ConfigMap\\n" * 300)
"""
FAILS_WITH_THE_TOKEN = """
import os, sys
token = os.environ["API_TOKEN"]
print(f"## Summary\\nfailed after reading a token of {len(token)} characters")
sys.exit(4)
"""


def test_a_secret_reaches_its_agent_and_nothing_the_operator_writes(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    canary = "canary-" + secrets.token_hex(16)
    created = kubectl(
        "create",
        "secret",
        "generic",
        "agent-key",
        "-n",
        namespace,
        f"--from-literal=token={canary}",
    )
    assert created.returncode == 0, created.stderr
    token = {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "agent-key", "key": "token"}},
    }
    apply(
        kubectl,
        namespace,
        [
            policy(
                "lenient", [{"agent": "flaky", "criticality": "low", "skipIfUnavailable": True}]
            ),
            workflow(
                "with-secret",
                [
                    {"name": "use", "agent": "user", "prompt": "use the key"},
                    {"name": "fail", "agent": "flaky", "prompt": "use it and fail"},
                ],
                [
                    command_agent("user", USES_THE_TOKEN, [token]),
                    command_agent("flaky", FAILS_WITH_THE_TOKEN, [token]),
                ],
                strategy="Parallel",
                fallbackPolicyRef={"name": "lenient"},
            ),
        ],
    )
    wf = wait_finished(kubectl, namespace, "with-secret")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    used = step(wf, "use")["result"]
    # The agent had the Secret's value: its length is in the report, the value is not.
    assert used["summary"] == f"used a token of {len(canary)} characters"
    assert used["truncated"] is True and used["outputRef"]
    assert step(wf, "fail")["phase"] == "Skipped"
    # The cache entry is written shortly after the status that reports the step.
    wait_for(
        lambda: items(kubectl, namespace, "configmaps", "agentflow.dev/cache"),
        30,
        what="the cache entry",
    )

    places = {
        "the Workflow": json.dumps(
            get(kubectl, namespace, "workflows.agentflow.dev", "with-secret")
        ),
        "Events": json.dumps(items(kubectl, namespace, "events")),
        "ConfigMaps": json.dumps(items(kubectl, namespace, "configmaps")),
        "Jobs": json.dumps(step_jobs(kubectl, namespace, "with-secret")),
        "the operator's log": operator.log_path.read_text(errors="replace"),
        "/metrics": operator.metrics(),
    }
    assert "used a token of" in places["ConfigMaps"]  # the output ConfigMap was searched
    assert "API_TOKEN" in places["Jobs"]  # the Jobs name the Secret, by reference only
    leaks = [where for where, text in places.items() if canary in text]
    assert leaks == []
    # The search itself works: the value is where it belongs.
    stored = get(kubectl, namespace, "secret", "agent-key")
    assert stored is not None
    assert base64.b64decode(stored["data"]["token"]).decode() == canary


# --------------------------------------------------------------------------------------------
# An operator with --allowed-images, --max-jobs-per-namespace and --metrics-auth
# --------------------------------------------------------------------------------------------


@dataclass
class LimitedOperator:
    cluster: LocalCluster
    kubectl: Kubectl
    api: client.ApiClient
    operator: OperatorProcess

    def namespace(self, name: str) -> str:
        return fresh_namespace(self.kubectl, name)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedOperator]:
    with operator_of_its_own(
        "security",
        tmp_path_factory.mktemp("limited-operator"),
        extra_args=[
            "--allowed-images",
            DEFAULT_AGENT_IMAGE,
            "--max-jobs-per-namespace",
            str(MAX_JOBS),
            "--metrics-auth",
        ],
    ) as (cluster, kubectl, operator):
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        try:
            yield LimitedOperator(cluster, kubectl, api, operator)
        finally:
            api.close()


def test_only_allowed_images_run(limited: LimitedOperator) -> None:
    ns = limited.namespace("images")
    kubectl = limited.kubectl
    apply(
        kubectl,
        ns,
        [
            workflow("allowed", [{"name": "s", "agent": "a"}], [script_agent("a")]),
            workflow(
                "denied",
                [{"name": "s", "agent": "shell"}],
                [{"name": "shell", "image": "busybox:1.36", "command": ["sh", "-c", "id"]}],
            ),
            workflow(
                "overridden",
                [{"name": "s", "agent": "a", "override": {"image": "evil.example/agent:1"}}],
                [script_agent("a")],
            ),
        ],
    )
    assert wait_finished(kubectl, ns, "allowed")["status"]["phase"] == "Succeeded"
    for name, image in (("denied", "busybox:1.36"), ("overridden", "evil.example/agent:1")):
        wf = wait_finished(kubectl, ns, name)
        assert wf["status"]["phase"] == "Failed", wf["status"]
        message = step(wf, "s")["message"]
        assert f"image {image!r}" in message and "not allowed" in message, message
        assert DEFAULT_AGENT_IMAGE in message  # and says what is allowed
        assert image in wf["status"]["message"]
        assert step_jobs(kubectl, ns, name) == []


def _active_jobs(api: client.ApiClient, namespace: str) -> int:
    jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
    finished = {"Complete", "Failed"}
    return sum(
        1
        for job in jobs
        if not any(c.type in finished and c.status == "True" for c in (job.status.conditions or []))
    )


def test_no_more_than_the_namespace_limit_of_step_jobs_run_at_once(
    limited: LimitedOperator,
) -> None:
    ns = limited.namespace("limit")
    kubectl = limited.kubectl
    steps = [{"name": f"s{i}", "agent": "slow", "prompt": f"part {i}"} for i in range(5)]
    apply(
        kubectl,
        ns,
        [workflow("fan-out", steps, [script_agent("slow", sleep=3)], strategy="Parallel")],
    )
    most = 0
    messages: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        most = max(most, _active_jobs(limited.api, ns))
        wf = get(kubectl, ns, "workflows.agentflow.dev", "fan-out") or {}
        status = wf.get("status") or {}
        messages.add(status.get("message") or "")
        if status.get("phase") in ("Succeeded", "Failed"):
            break
    else:
        raise AssertionError("fan-out did not finish in 120 s")
    assert status["phase"] == "Succeeded", status
    assert most == MAX_JOBS, f"at most {most} step Jobs were active at once"
    assert any(WAITING_NAMESPACE_LIMIT in m for m in messages), messages
    assert len(step_jobs(kubectl, ns, "fan-out")) == 5


def _get_metrics(port: int, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _scraper_allowed_metrics(kubectl: Kubectl, ns: str, reader: str) -> None:
    """ServiceAccount ``scraper`` in ``ns``, bound to a ClusterRole ``reader`` that may get
    /metrics."""
    for args in (
        ("create", "serviceaccount", "scraper", "-n", ns),
        ("create", "clusterrole", reader, "--non-resource-url=/metrics", "--verb=get"),
        (
            "create",
            "clusterrolebinding",
            reader,
            f"--clusterrole={reader}",
            f"--serviceaccount={ns}:scraper",
        ),
    ):
        result = kubectl(*args)
        assert result.returncode == 0, result.stderr


def _token(kubectl: Kubectl, ns: str, account: str) -> str:
    result = kubectl("create", "token", account, "-n", ns, "--duration=10m")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_metrics_need_a_token_whose_user_may_get_metrics(limited: LimitedOperator) -> None:
    ns = limited.namespace("metrics")
    kubectl = limited.kubectl
    created = kubectl("create", "serviceaccount", "nobody", "-n", ns)
    assert created.returncode == 0, created.stderr
    _scraper_allowed_metrics(kubectl, ns, f"metrics-reader-{ns}")

    def token(account: str) -> str:
        return _token(kubectl, ns, account)

    port = limited.operator.metrics_port
    status, body = _get_metrics(port, None)
    assert status == 401, body
    assert _get_metrics(port, "not-a-token")[0] == 403
    assert _get_metrics(port, token("nobody"))[0] == 403
    status, body = _get_metrics(port, token("scraper"))
    assert status == 200, body
    assert "agentflow_build_info" in body
    # The probes stay open: the kubelet calls them without credentials.
    assert limited.operator.http("/healthz")[0] == 200


# --------------------------------------------------------------------------------------------
# A flood of bearer tokens on /metrics
# --------------------------------------------------------------------------------------------

FLOOD_CONNECTIONS = 64
FLOOD_RATE = 150.0  # requests per second: three times the operator's own API budget (qps 50)
FLOOD_MAX_REQUESTS = 30_000
FLOOD_MAX_SECONDS = 120.0


def _random_service_account_shaped_token() -> str:
    """Three base64url parts with a JSON header and payload: it passes every check but the API
    server's, so each one would cost a TokenReview if nothing stopped it."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "RS256", "kid": "flood"}).encode())
    payload = b64(json.dumps({"sub": f"system:serviceaccount:x:{secrets.token_hex(8)}"}).encode())
    return f"{header}.{payload}.{b64(secrets.token_bytes(256))}"


class Flood:
    """Sends ``GET /metrics`` with a new random token each time, from a thread of its own, over
    loopback, until stopped or a bound is reached; records each answer's status and latency."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        # Written by the flood's thread only; read by the test once the thread has ended.
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self.sent = 0  # answers so far (an int, so the test may poll it meanwhile)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="metrics-flood", daemon=True)
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the flood did not stop"

    def _run(self) -> None:
        import asyncio

        asyncio.run(self._main())

    async def _main(self) -> None:
        import asyncio

        import aiohttp

        url = f"http://127.0.0.1:{self.port}/metrics"
        self.started = time.monotonic()
        deadline = self.started + FLOOD_MAX_SECONDS
        issued = 0
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=FLOOD_CONNECTIONS)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def one(token: str) -> None:
                began = time.monotonic()
                try:
                    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                self.latencies.append(time.monotonic() - began)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.sent += 1

            async def worker() -> None:
                nonlocal issued
                while not self.stopped.is_set() and issued < FLOOD_MAX_REQUESTS:
                    # Pace the whole flood at FLOOD_RATE: request n leaves at n / FLOOD_RATE.
                    slot = self.started + issued / FLOOD_RATE
                    issued += 1
                    if slot > deadline:
                        return
                    await asyncio.sleep(max(0.0, slot - time.monotonic()))
                    await one(_random_service_account_shaped_token())

            await asyncio.gather(*(worker() for _ in range(FLOOD_CONNECTIONS)))
        self.seconds = time.monotonic() - self.started


def _sequential_workflow(name: str) -> dict[str, Any]:
    steps = [{"name": f"s{i}", "agent": "a", "prompt": f"{name}: part {i}"} for i in range(4)]
    return workflow(name, steps, [script_agent("a")], strategy="Sequential")


def _time_to_finish(kubectl: Kubectl, namespace: str, name: str) -> float:
    began = time.monotonic()
    apply(kubectl, namespace, [_sequential_workflow(name)])
    wf = wait_finished(kubectl, namespace, name, timeout=180)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    return time.monotonic() - began


def test_a_flood_of_random_tokens_on_metrics_does_not_slow_workflows(
    limited: LimitedOperator,
) -> None:
    from agentflow.metricsauth import FIRST_CHECK_BURST, FIRST_CHECK_RATE

    ns = limited.namespace("flood")
    kubectl = limited.kubectl
    _scraper_allowed_metrics(kubectl, ns, f"flood-reader-{ns}")
    scraper = _token(kubectl, ns, "scraper")
    port = limited.operator.metrics_port

    usual = _time_to_finish(kubectl, ns, "usual")
    # The scraper's grant is cached now (60 s): refused tokens must not push it out.
    assert _get_metrics(port, scraper)[0] == 200
    with Flood(port) as flood:
        wait_for(lambda: flood.sent >= 200, 30, what="the flood to start")
        flooded = _time_to_finish(kubectl, ns, "flooded")
        began = time.monotonic()
        status, body = _get_metrics(port, scraper)
        scrape_seconds = time.monotonic() - began
        assert limited.operator.http("/healthz")[0] == 200
    assert status == 200, body
    slowest = sorted(flood.latencies)[int(len(flood.latencies) * 0.99)]
    print(  # shown with -s: what the flood measured
        f"usual {usual:.1f}s, flooded {flooded:.1f}s; {flood.sent} requests in "
        f"{flood.seconds:.1f}s: {flood.statuses}; p99 {slowest * 1000:.0f} ms, "
        f"scrape {scrape_seconds * 1000:.0f} ms"
    )

    # The Workflow finished in its usual time.
    assert flooded <= 1.5 * usual + 5.0, (
        f"{flooded:.1f}s under the flood, {usual:.1f}s without; {flood.statuses} "
        f"in {flood.seconds:.1f}s"
    )
    # Every random token was refused, and quickly; a 403 means its TokenReview was sent, so at
    # most the first-check budget went to the API server and the rest never left the operator.
    assert set(flood.statuses) <= {403, 429}, flood.statuses
    reviewed = flood.statuses.get(403, 0)
    budget = FIRST_CHECK_BURST + FIRST_CHECK_RATE * flood.seconds * 1.1 + 2
    assert reviewed <= budget, flood.statuses
    assert slowest < 1.0, f"p99 answer to the flood took {slowest:.2f}s"
    assert scrape_seconds < 2.0
    # And the flood was real: hundreds of requests a second, for the whole second Workflow.
    assert flood.seconds >= flooded
    assert flood.sent >= 0.5 * FLOOD_RATE * flooded, (flood.sent, flood.seconds)
