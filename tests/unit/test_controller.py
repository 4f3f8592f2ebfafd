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
