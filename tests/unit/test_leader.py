"""Leader election decisions: the operator's own duration, never the Lease's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentflow import leader
from agentflow.leader import LeaderElector, lease_expired, may_lead

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
DURATION = 15.0


def spec(holder: str | None, renewed_ago: float | None, duration: int = 15) -> dict[str, Any]:
    out: dict[str, Any] = {"leaseDurationSeconds": duration}
    if holder is not None:
        out["holderIdentity"] = holder
    if renewed_ago is not None:
        out["renewTime"] = (NOW - timedelta(seconds=renewed_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def test_a_free_or_own_lease_may_be_taken() -> None:
    for holder in (None, ""):
        assert may_lead(spec(holder, 1), "me", NOW, DURATION, 0)
    assert may_lead(spec("me", 1), "me", NOW, DURATION, 0)


def test_a_recently_renewed_foreign_lease_is_respected() -> None:
    assert not may_lead(spec("other", 3), "me", NOW, DURATION, 3)


def test_a_huge_lease_duration_does_not_keep_a_stale_holder_leading() -> None:
    stale = spec("tenant", renewed_ago=60, duration=10**9)
    assert lease_expired(stale, NOW, DURATION, unchanged_for=0)
    assert may_lead(stale, "me", NOW, DURATION, 0)


def test_a_short_lease_duration_does_not_end_a_live_holders_claim_early() -> None:
    # The Lease says 1 s, the operator's own duration is 15 s: renewed 5 s ago is still live.
    assert not lease_expired(spec("other", renewed_ago=5, duration=1), NOW, DURATION, 5)


def test_a_renewal_time_in_the_future_runs_out_once_nobody_has_changed_it() -> None:
    future = spec("tenant", renewed_ago=-365 * 86400)
    assert not lease_expired(future, NOW, DURATION, unchanged_for=DURATION - 1)
    assert lease_expired(future, NOW, DURATION, unchanged_for=DURATION + 1)


@pytest.mark.parametrize("renew_time", [None, "", "not a time"])
def test_a_lease_without_a_readable_renewal_has_run_out(renew_time: str | None) -> None:
    assert lease_expired({"holderIdentity": "x", "renewTime": renew_time}, NOW, DURATION, 0)


class LeaseStore:
    """Just the two Lease calls the elector makes, on one stored Lease."""

    def __init__(self, lease: dict[str, Any] | None) -> None:
        self.lease = lease
        self.version = 1

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.lease

    async def write_lease(self, body: dict[str, Any]) -> dict[str, Any] | None:
        current = (self.lease or {}).get("metadata", {}).get("resourceVersion")
        if body["metadata"].get("resourceVersion") != current:
            return None
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        return body


def test_the_elector_takes_over_a_lease_nobody_renews_whatever_its_renewal_time_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(leader.time, "monotonic", lambda: clock[0])
    future = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store = LeaseStore(
        {
            "metadata": {"name": "l", "namespace": "ns", "resourceVersion": "1"},
            "spec": {
                "holderIdentity": "tenant",
                "renewTime": future,
                "leaseDurationSeconds": 10**9,
            },
        }
    )
    elector = LeaderElector(
        store,  # type: ignore[arg-type]
        namespace="ns",
        name="l",
        identity="me",
        duration=DURATION,
        renew_interval=5,
        on_change=lambda _leading: None,
    )
    assert not asyncio.run(elector.try_acquire_or_renew())
    clock[0] += DURATION - 1
    assert not asyncio.run(elector.try_acquire_or_renew())
    clock[0] += 2
    assert asyncio.run(elector.try_acquire_or_renew())
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "me"
    assert store.lease["spec"]["leaseDurationSeconds"] == int(DURATION)
