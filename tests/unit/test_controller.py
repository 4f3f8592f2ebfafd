from __future__ import annotations

from datetime import UTC, datetime

from agentflow.api.models import StepMetrics, StepResult
from agentflow.controller import (
    cache_configmap,
    cache_configmap_name,
    cache_entry_from_configmap,
    merge_patch_status,
    resolve_fallback_policy,
)
from agentflow.engine.types import WriteCache

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_merge_patch_nulls_keys_that_disappeared() -> None:
    assert merge_patch_status({"a": 1, "b": 2}, {"a": 3}) == {"a": 3, "b": None}


def test_cache_entries_round_trip_through_configmaps() -> None:
    result = StepResult(summary="done", digest="sha256:1", metrics=StepMetrics(tool_calls=2))
    cm = cache_configmap(
        "ns", WriteCache(key="sha256:k", step="s", result=result, ttl_seconds=60), NOW
    )
    assert cm["metadata"]["name"] == cache_configmap_name("sha256:k")
    assert len(cm["metadata"]["name"]) <= 63
    entry = cache_entry_from_configmap(cm)
    assert entry is not None
    assert entry.key == "sha256:k" and entry.result == result
    assert (entry.expires_at - entry.created_at).total_seconds() == 60
    assert cache_entry_from_configmap({"metadata": {}, "data": {}}) is None


def test_policy_resolution_order() -> None:
    assert resolve_fallback_policy(None, {}).error is None  # built-in default
    missing = resolve_fallback_policy("nope", {})
    assert missing.error is not None and "nope" in missing.error
    spec = {"rules": [{"agent": "a", "fallback": "b", "criticality": "high"}]}
    chosen = resolve_fallback_policy(None, {"default": spec})
    assert chosen.rule_for("a").fallback == "b"


def test_a_body_older_than_our_last_write_is_stale() -> None:
    from agentflow.controller import Written

    written = Written("10", {"metadata": {"resourceVersion": "12"}})
    assert written.is_newer_than("10")
    assert written.is_newer_than("11")  # e.g. kopf's finalizer patch, before our write
    assert not written.is_newer_than("12")
    assert not written.is_newer_than("13")
    opaque = Written("a", {"metadata": {"resourceVersion": "b"}})
    assert opaque.is_newer_than("a") and not opaque.is_newer_than("c")


def test_a_status_too_large_to_store_becomes_a_small_failed_status() -> None:
    from agentflow.api.models import StepPhase, StepStatus, WorkflowPhase, WorkflowStatus
    from agentflow.controller import is_too_large, status_too_large
    from agentflow.kube import ApiError

    error = ApiError(500, "error", {"message": "etcdserver: request is too large"})
    assert is_too_large(error)
    assert not is_too_large(ApiError(500, "error", {"message": "internal error"}))
    big = WorkflowStatus(
        phase=WorkflowPhase.RUNNING,
        steps=[
            StepStatus(
                name=f"s{i}", phase=StepPhase.SUCCEEDED, result=StepResult(summary="x" * 2000)
            )
            for i in range(50)
        ],
    )
    small = status_too_large(big, str(error), 3, NOW)
    assert small.phase is WorkflowPhase.FAILED
    assert small.message is not None and "request is too large" in small.message
    assert [s.name for s in small.steps] == [s.name for s in big.steps]
    assert all(s.result is None for s in small.steps)
    stalled = small.condition("Stalled")
    assert stalled is not None and stalled.status == "True" and stalled.reason == "StatusTooLarge"
    assert stalled.observed_generation == 3
    assert len(small.model_dump_json()) < len(big.model_dump_json()) / 10


def test_an_invalid_spec_keeps_conditions_other_clients_own() -> None:
    from agentflow.api.models import Condition, WorkflowStatus
    from agentflow.controller import invalid_object_status

    theirs = Condition(type="Example", status="True", reason="Theirs", last_transition_time=NOW)
    old = WorkflowStatus(conditions=[theirs])
    status = invalid_object_status(old, 2, "spec.steps: bad", NOW)
    assert status.condition("Example") == theirs
    stalled = status.condition("Stalled")
    assert stalled is not None and stalled.reason == "InvalidSpec"
