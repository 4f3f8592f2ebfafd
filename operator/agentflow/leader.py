"""Leader election on a coordination.k8s.io Lease in the operator's own namespace.

Only the replica holding the Lease reconciles.  The holder renews it every few seconds.  Every
replica also watches the Lease (``handlers.watch_heartbeat``): its renewals are the heartbeat
behind /healthz.

The Lease always lives in the operator's namespace (the chart's release namespace), never in a
namespace the operator watches, where a tenant could write it.  Whether a holder's claim has
run out is judged with the operator's own duration, never with the Lease's
``leaseDurationSeconds`` (a writer could set it to years), and a claim that has not changed for
that long runs out too, whatever ``renewTime`` it states (a writer could put it in the future).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agentflow.kube import Kube

logger = logging.getLogger("agentflow.leader")


def _micro_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def lease_expired(
    spec: dict[str, Any], now: datetime, duration: float, unchanged_for: float
) -> bool:
    """Whether the claim in a Lease's ``spec`` has run out, under the operator's ``duration``.

    ``unchanged_for`` is how long (seconds, by this replica's clock) the Lease has been seen
    unchanged.  A claim runs out when its renewal is older than ``duration``, or when it states
    a renewal but nobody has renewed it for ``duration``.
    """
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    if renewed is None:
        return True
    return (now - renewed).total_seconds() > duration or unchanged_for > duration


def may_lead(
    spec: dict[str, Any], identity: str, now: datetime, duration: float, unchanged_for: float
) -> bool:
    """Whether ``identity`` may write itself into a Lease: free, its own, or run out."""
    holder = spec.get("holderIdentity")
    if holder in (None, "", identity):
        return True
    return lease_expired(spec, now, duration, unchanged_for)


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        renew_interval: float,
        on_change: Callable[[bool], None],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_interval = renew_interval
        self.on_change = on_change
        self.leading = False
        # The Lease version last seen, and when (monotonic) it was first seen.
        self.seen_version: str | None = None
        self.seen_since = time.monotonic()

    def unchanged_for(self, lease: dict[str, Any]) -> float:
        """Seconds this replica has seen ``lease`` in its current version."""
        version = (lease.get("metadata") or {}).get("resourceVersion")
        if version != self.seen_version:
            self.seen_version = version
            self.seen_since = time.monotonic()
        return time.monotonic() - self.seen_since

    async def try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        lease = await self.kube.get_lease(self.namespace, self.name)
        spec: dict[str, Any] = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        if lease is not None and not may_lead(
            spec, self.identity, now, self.duration, self.unchanged_for(lease)
        ):
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": _micro_time(now),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else _micro_time(now),
            "leaseTransitions": transitions if holder == self.identity else transitions + 1,
        }
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": new_spec,
        }
        if lease is not None:
            body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return await self.kube.write_lease(body) is not None

    async def run(self) -> None:
        while True:
            try:
                leading = await self.try_acquire_or_renew()
            except Exception as e:  # the API server may be down: keep trying, stop leading
                logger.warning("lease renewal failed: %s", e)
                leading = False
            if leading != self.leading:
                self.leading = leading
                logger.info("leadership %s", "acquired" if leading else "lost")
                self.on_change(leading)
            await asyncio.sleep(self.renew_interval)

    async def release(self) -> None:
        if not self.leading:
            return
        lease = await self.kube.get_lease(self.namespace, self.name)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await self.kube.write_lease(lease)
