from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from agentflow.api.models import Artifact, StepMetrics, StepResult
from agentflow.children import (
    CACHE_DATA_KEY,
    CACHE_EXPIRES_ANNOTATION,
    cache_configmap,
    cache_configmap_name,
    cache_configmap_to_sweep,
    cache_entry_from_configmap,
    is_cache_configmap,
)
from agentflow.controller import (
    merge_patch_status,
    resolve_fallback_policy,
)
from agentflow.engine.types import LABEL_CACHE, WriteCache
from agentflow.report import MAX_ARTIFACTS, MAX_STATUS_CHARS, MAX_SUMMARY_CHARS

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_merge_patch_nulls_keys_that_disappeared() -> None:
    assert merge_patch_status({"a": 1, "b": 2}, {"a": 3}) == {"a": 3, "b": None}


def test_cache_entries_round_trip_through_configmaps() -> None:
    digest = "sha256:" + "1" * 64
    result = StepResult(summary="done", digest=digest, metrics=StepMetrics(tool_calls=2))
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


def _entry(result: StepResult, key: str = "sha256:k", ttl: int = 60) -> dict[str, Any]:
    return cache_configmap("ns", WriteCache(key=key, step="s", result=result, ttl_seconds=ttl), NOW)


def test_only_configmaps_the_operator_wrote_are_cache_entries_or_swept() -> None:
    ours = _entry(StepResult(summary="done"))
    assert is_cache_configmap(ours) and cache_entry_from_configmap(ours) is not None
    later = NOW + timedelta(seconds=61)
    assert not cache_configmap_to_sweep(ours, NOW) and cache_configmap_to_sweep(ours, later)
    # A user's ConfigMap with the cache label: not an entry, never swept, however broken.
    theirs = {
        "metadata": {"name": "team-settings", "labels": {LABEL_CACHE: "true"}},
        "data": {"settings": "not a result"},
    }
    copied = copy.deepcopy(ours)
    copied["metadata"]["name"] = "my-copy-of-an-entry"
    for cm in (theirs, copied):
        assert not is_cache_configmap(cm) and cache_entry_from_configmap(cm) is None
        assert not cache_configmap_to_sweep(cm, later)
    # One of ours that no longer parses is swept: nothing will ever read it.
    broken = copy.deepcopy(ours)
    broken["data"][CACHE_DATA_KEY] = "{not json"
    assert cache_entry_from_configmap(broken) is None and cache_configmap_to_sweep(broken, NOW)
    # An expiry without a zone is UTC, not an error that would stop the sweep.
    naive = copy.deepcopy(ours)
    naive["metadata"]["annotations"][CACHE_EXPIRES_ANNOTATION] = "2000-01-01T00:00:00"
    assert cache_configmap_to_sweep(naive, NOW)


def test_a_cached_result_is_cut_to_the_bounds_of_a_fresh_one() -> None:
    huge = StepResult(
        status="success" * 50,
        summary="word " * 100_000,
        artifacts=[Artifact(path=f"src/file_{i}.py") for i in range(5_000)],
        metrics=StepMetrics(tool_calls=3, extra={f"m{i}": float(i) for i in range(1_000)}),
        digest="sha256:" + "a" * 64,
        output_ref="wf-s-1-1-1-0123456789abcdef-output",
    )
    entry = cache_entry_from_configmap(_entry(huge))
    assert entry is not None
    result = entry.result
    # What a fresh result can carry: a termination message's worth (4096 bytes).
    assert len(result.model_dump_json(exclude={"output_ref"}).encode()) <= 4096
    assert len(result.summary) <= MAX_SUMMARY_CHARS and len(result.artifacts) <= MAX_ARTIFACTS
    assert result.status is not None and len(result.status) <= MAX_STATUS_CHARS
    assert result.truncated and result.digest == huge.digest
    assert result.output_ref == huge.output_ref
    bad_ref = cache_entry_from_configmap(_entry(huge.model_copy(update={"output_ref": "../x"})))
    assert bad_ref is not None and bad_ref.result.output_ref is None
