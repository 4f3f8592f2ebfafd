"""Failure classes and quality gates on the real control plane.

The agents are the project's runner with the ``anthropic`` and ``openai`` providers, pointed
(``ANTHROPIC_BASE_URL``/``OPENAI_BASE_URL``) at a fake provider on 127.0.0.1 in this process
(:mod:`tests.support.fake_provider`); the local node runs step pods as host processes, so the
runner reaches it.  Each test scripts the provider's answers and checks the path the operator
takes: the attempts' classes, retries of the same agent, the fallback, the Event and the
failure metric's ``class`` label.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.test_metrics_scrape import samples
from tests.integration.workflows import (
    REPO,
    Kubectl,
    apply,
    events,
    get,
    items,
    policy,
    step,
    wait_finished,
    workflow,
)
from tests.support import fake_provider as fp
from tests.support.fake_provider import Api, FakeProvider

pytestmark = pytest.mark.integration

KEY = "sk-fake-provider-test-key"
REPORT = "## Summary\n{who} reviewed the change.\n\n## Status\nsuccess\n"


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with fp.fake_provider() as fake:
        yield fake


def llm_agent(name: str, api: Api, provider: FakeProvider) -> dict[str, Any]:
    base = provider.url + ("/v1" if api == "openai" else "")
    return {
        "name": name,
        "provider": api,
        "model": "test-model",
        "env": [
            {"name": f"{api.upper()}_BASE_URL", "value": base},
            {
                "name": f"{api.upper()}_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "provider-key", "key": "key"}},
            },
        ],
    }


def backup_agent() -> dict[str, Any]:
    env = [{"name": "AGENTFLOW_SCRIPT_REPORT", "value": REPORT.format(who="backup")}]
    return {"name": "backup", "provider": "script", "env": env}


def secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "provider-key"},
        "stringData": {"key": KEY},
    }


def run(
    kubectl: Kubectl,
    namespace: str,
    provider: FakeProvider,
    name: str,
    api: Api,
    rules: list[dict[str, Any]],
) -> dict[str, Any]:
    apply(
        kubectl,
        namespace,
        [
            secret(),
            policy("classes", rules),
            workflow(
                name,
                [{"name": "review", "agent": "reviewer", "prompt": "Review the change."}],
                [llm_agent("reviewer", api, provider), backup_agent()],
                fallbackPolicyRef={"name": "classes"},
            ),
        ],
    )
    return wait_finished(kubectl, namespace, name, timeout=180)


def attempts(wf: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["agent"], a["outcome"], a.get("reason")) for a in step(wf, "review")["attempts"]]


def warning_messages(kubectl: Kubectl, namespace: str, name: str) -> str:
    return "\n".join(
        e.get("message", "") for e in events(kubectl, namespace, name) if e["type"] == "Warning"
    )


@pytest.mark.parametrize(
    ("wire", "reply", "failure"),
    [
        ("openai", fp.unauthorized("openai"), "AuthFailed"),
        ("anthropic", fp.payment_required("anthropic"), "QuotaExceeded"),
        ("openai", fp.quota("openai"), "QuotaExceeded"),
        ("openai", fp.context_too_long("openai"), "ContextTooLong"),
    ],
    ids=["401", "402", "429-insufficient-quota", "400-context-length"],
)
def test_auth_quota_and_context_errors_go_to_the_fallback_at_once(
    operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,
    provider: FakeProvider,
    wire: Api,
    reply: fp.Reply,
    failure: str,
) -> None:
    """maxAttempts 3 would retry the agent twice; these classes skip that (built-in default)."""
    api = wire
    provider.script(api, reply)
    rules = [{"agent": "reviewer", "fallback": "backup", "maxAttempts": 3}]
    wf = run(kubectl, namespace, provider, "at-once", api, rules)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert attempts(wf) == [("reviewer", "Failed", failure), ("backup", "Succeeded", None)]
    first = step(wf, "review")["attempts"][0]
    assert first["message"].startswith(f"{failure} (exit code 1): {api} API returned HTTP")
    assert len(provider.calls(api)) == 1
    [request] = provider.calls(api)
    expected = {"anthropic": "x-api-key", "openai": "authorization"}[api]
    assert KEY in request.headers[expected]
    assert KEY not in str(wf)
    warnings = warning_messages(kubectl, namespace, "at-once")
    assert f"agent reviewer failed: {failure}" in warnings
    text = operator.metrics()
    labels = {"namespace": namespace, "agent": "reviewer", "class": failure}
    assert samples(text, "agentflow_step_attempt_failures_total", **labels) == 1


def test_rate_limited_waits_for_retry_after_and_retries_the_same_agent(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, provider: FakeProvider
) -> None:
    """Retry-After 12 s is longer than the runner waits in the pod: the attempt fails
    RateLimited, the step waits in status (nextAttemptAt, a message naming the class), and the
    same agent runs again; maxAttempts 1 is not used up by it."""
    provider.script(
        "anthropic",
        fp.rate_limited("anthropic", "12"),
        fp.success("anthropic", REPORT.format(who="reviewer")),
    )
    rules = [{"agent": "reviewer", "fallback": "backup"}]
    apply(
        kubectl,
        namespace,
        [
            secret(),
            policy("classes", rules),
            workflow(
                "limited",
                [{"name": "review", "agent": "reviewer", "prompt": "Review the change."}],
                [llm_agent("reviewer", "anthropic", provider), backup_agent()],
                fallbackPolicyRef={"name": "classes"},
            ),
        ],
    )

    def waiting() -> dict[str, Any] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", "limited")
        review = step(wf, "review") if wf and wf.get("status", {}).get("steps") else None
        if review and review.get("nextAttemptAt") and "RateLimited" in review.get("message", ""):
            return review
        return None

    review = wait_for(waiting, 90, interval=0.3, what="the step to wait for Retry-After")
    assert "retrying in 12s (RateLimited: Retry-After 12s; not counted" in review["message"]
    wf = wait_finished(kubectl, namespace, "limited", timeout=120)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["degraded"] is False
    assert attempts(wf) == [("reviewer", "Failed", "RateLimited"), ("reviewer", "Succeeded", None)]
    first, second = step(wf, "review")["attempts"]
    assert "(Retry-After 12s)" in first["message"]
    waited = fromiso(second["startedAt"]) - fromiso(first["finishedAt"])
    assert waited >= 11.0, waited
    assert len(provider.calls("anthropic")) == 2
    assert "RateLimited" in warning_messages(kubectl, namespace, "limited")


def fromiso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_overloaded_twice_in_the_pod_then_the_operator_retries(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, provider: FakeProvider
) -> None:
    """529 with Retry-After 0: the runner retries once in the pod, the second 529 fails the
    attempt as Overloaded, and the operator runs the same agent again at once."""
    provider.script(
        "anthropic",
        fp.overloaded("anthropic", 529, "0"),
        fp.overloaded("anthropic", 529, "0"),
        fp.success("anthropic", REPORT.format(who="reviewer")),
    )
    wf = run(kubectl, namespace, provider, "overloaded", "anthropic", [{"agent": "reviewer"}])
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert attempts(wf) == [("reviewer", "Failed", "Overloaded"), ("reviewer", "Succeeded", None)]
    assert len(provider.calls("anthropic")) == 3


def test_invalid_request_fails_without_fallback_when_the_policy_says_so(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, provider: FakeProvider
) -> None:
    provider.script("openai", fp.invalid_request("openai"))
    rules = [
        {
            "agent": "reviewer",
            "fallback": "backup",
            "maxAttempts": 3,
            "onFailure": [{"classes": ["InvalidRequest"], "action": "Fail"}],
        }
    ]
    wf = run(kubectl, namespace, provider, "invalid", "openai", rules)
    assert wf["status"]["phase"] == "Failed", wf["status"]
    assert attempts(wf) == [("reviewer", "Failed", "InvalidRequest")]
    assert "the fallback policy fails the step on InvalidRequest" in step(wf, "review")["message"]
    assert len(provider.calls("openai")) == 1
    assert items(kubectl, namespace, "jobs", "agentflow.dev/agent=backup") == []


def test_the_quality_gate_example_retries_a_rate_limit_and_falls_back_on_a_failed_gate(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, REPO / "workflows" / "quality-gate.yaml")
    wf = wait_finished(kubectl, namespace, "quality-gate", timeout=180)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert wf["status"]["degraded"] is True
    draft = [(a["agent"], a["outcome"], a.get("reason")) for a in step(wf, "draft")["attempts"]]
    assert draft == [("drafter", "Failed", "RateLimited"), ("drafter", "Succeeded", None)]
    assert attempts(wf) == [
        ("fast-reviewer", "Failed", "QualityGateFailed"),
        ("careful-reviewer", "Succeeded", None),
    ]
    gate = step(wf, "review")["attempts"][0]
    assert gate["exitCode"] == 0
    assert gate["message"] == (
        "QualityGateFailed: accept: result.metrics.extra.score >= 80 && size(result.artifacts) > 0"
        " was false (score = 42, size(artifacts) = 1)"
    )
    assert step(wf, "review")["result"]["metrics"]["extra"]["score"] == 91
    warnings = warning_messages(kubectl, namespace, "quality-gate")
    assert "agent fast-reviewer failed: QualityGateFailed: accept:" in warnings
    # Only the drafter's accepted result was cached; the rejected review never was (and a
    # fallback's result is not what the step's key describes).
    cached = items(kubectl, namespace, "configmaps", "agentflow.dev/cache")
    assert len(cached) == 1, [c["metadata"]["name"] for c in cached]
    assert "Drafted the release notes" in cached[0]["data"]["result.json"]
    text = operator.metrics()
    ns = {"namespace": namespace}
    gate_label = {"agent": "fast-reviewer", "class": "QualityGateFailed"}
    assert samples(text, "agentflow_step_attempt_failures_total", **ns, **gate_label) == 1
    rate_label = {"agent": "drafter", "class": "RateLimited"}
    assert samples(text, "agentflow_step_attempt_failures_total", **ns, **rate_label) == 1
