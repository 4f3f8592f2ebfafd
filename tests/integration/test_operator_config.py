"""`agentflow operator` and its configuration, on a real API server: a bad setting stops it at
once with the setting named, and ``--allowed-secrets`` keeps a service-account-token Secret
out of step pods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import OperatorProcess, fresh_namespace, operator_of_its_own
from tests.integration.workflows import (
    apply,
    condition,
    get,
    script_agent,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"AGENTFLOW_API_QPS": "abc"}, [], "AGENTFLOW_API_QPS='abc': not a number"),
        (
            {"AGENTFLOW_LEASE_DURATION": "2", "AGENTFLOW_LEASE_RENEW_INTERVAL": "5"},
            [],
            "AGENTFLOW_LEASE_RENEW_INTERVAL=5 must be shorter than AGENTFLOW_LEASE_DURATION=2",
        ),
        ({}, ["--max-jobs-per-namespace", "0"], "--max-jobs-per-namespace=0: must be at least 1"),
        (
            {},
            ["--concurrency-limits", '[{"name": "llm", "max": 0}]'],
            "--concurrency-limits[0].max: must be at least 1",
        ),
        ({"AGENTFLOW_PRICES": "{not json"}, [], "AGENTFLOW_PRICES: not JSON"),
    ],
    ids=["not-a-number", "renewed-too-rarely", "bad-flag", "bad-limit", "bad-prices"],
)
def test_a_bad_setting_stops_the_operator_at_once_naming_it(
    kubeconfig: Path, tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    operator = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path, env=env, extra_args=args)
    try:
        # It exits at once (before, a bad number made the start-up retry every 60 s, forever).
        with pytest.raises(AssertionError, match="operator exited with 1"):
            operator.start()
    finally:
        operator.kill()
    output = operator.log_path.read_text()
    assert message in output
    assert "Traceback" not in output


def secret_agent(name: str, secret: str) -> dict[str, object]:
    agent = script_agent(name)
    agent["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
    ]
    return agent


def test_a_workflow_referencing_a_secret_off_the_allow_list_fails_before_any_job(
    tmp_path: Path,
) -> None:
    with operator_of_its_own("secrets", tmp_path, extra_args=["--allowed-secrets", "llm-*"]) as (
        _cluster,
        kubectl,
        _operator,
    ):
        ns = fresh_namespace(kubectl, "secrets")
        secrets = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "default-token",
                    "annotations": {"kubernetes.io/service-account.name": "default"},
                },
                "type": "kubernetes.io/service-account-token",
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "llm-keys"},
                "stringData": {"token": "not-a-real-key"},
            },
        ]
        apply(kubectl, ns, secrets)
        apply(
            kubectl,
            ns,
            [
                workflow(
                    "token-thief",
                    [{"name": "plain", "agent": "plain"}, {"name": "steal", "agent": "thief"}],
                    [script_agent("plain"), secret_agent("thief", "default-token")],
                ),
                workflow(
                    "allowed",
                    [{"name": "s", "agent": "model"}],
                    [secret_agent("model", "llm-keys")],
                ),
            ],
        )
        refused = wait_finished(kubectl, ns, "token-thief", 60)
        assert refused["status"]["phase"] == "Failed"
        stalled = condition(refused, "Stalled")
        assert stalled is not None and stalled["reason"] == "SecretNotAllowed", stalled
        assert (
            "spec.agents[1].env[0].valueFrom.secretKeyRef.name: Secret 'default-token'"
            in stalled["message"]
        )
        assert step_jobs(kubectl, ns, "token-thief") == []  # not even the harmless step ran
        assert wait_finished(kubectl, ns, "allowed", 90)["status"]["phase"] == "Succeeded"
        # The refused reference was to a real API token, which the switch kept out of pods.
        token = get(kubectl, ns, "secret", "default-token")
        assert token is not None and "token" in (token.get("data") or {}), json.dumps(token)
