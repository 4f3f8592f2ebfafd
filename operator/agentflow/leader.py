"""Leader election on a coordination.k8s.io Lease, which doubles as the watch heartbeat.

Only the replica holding the Lease reconciles.  The holder renews it every few seconds; the
renewals come back to every replica through kopf's watch of Leases, so a replica whose watch
streams have gone silent sees its heartbeat stop and reports itself unhealthy on /healthz.
"""

from __future__ import annotations

import asyncio
import logging
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
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def lease_expired(spec: dict[str, Any], now: datetime) -> bool:
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 15
    return renewed is None or (now - renewed).total_seconds() > duration


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

    async def try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        lease = await self.kube.get_lease(self.namespace, self.name)
        spec: dict[str, Any] = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        if (
            lease is not None
            and holder not in (None, "", self.identity)
            and not lease_expired(spec, now)
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
