"""The operator's kopf shell in-process: ``controller.reconcile`` on a :class:`FakeKube`, on a
fake clock, with the observations the handlers' indexes would hold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agentflow import children, controller
from agentflow.config import OperatorConfig
from agentflow.controller import Key, Observations, PassResult, Runtime
from agentflow.engine.types import CacheEntry
from agentflow.metrics import OperatorMetrics
from tests.support.fake_kube import FakeKube

NAMESPACE = "team"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Shell:
    clock: Clock
    config: OperatorConfig = field(default_factory=OperatorConfig)
    kube: FakeKube = field(default_factory=FakeKube)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rt = Runtime(
            kube=self.kube,
            metrics=OperatorMetrics(),
            config=self.config,
            post_event=lambda _body, type_, reason, message: self.events.append(
                (type_, reason, message)
            ),
            clock=self.clock,
        )

    def submit(self, name: str, spec: dict[str, Any], namespace: str = NAMESPACE) -> Key:
        self.kube.add_workflow(
            {
                "apiVersion": "agentflow.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )
        return (namespace, name)

    def body(self, key: Key) -> dict[str, Any]:
        return self.kube.workflows[key]

    def gather(self, key: Key) -> Observations:
        namespace = key[0]
        jobs, pods = self.kube.summaries(namespace, self.body(key)["metadata"]["uid"])
        entries = {
            e.key: e
            for cm in self.kube.configmaps.values()
            if cm["metadata"]["namespace"] == namespace
            and (e := children.cache_entry_from_configmap(cm)) is not None
        }

        def lookup(cache_key: str) -> CacheEntry | None:
            return entries.get(cache_key)

        return Observations(
            jobs=jobs,
            pods=pods,
            policies=self.policies,
            cache=lookup,
            active_jobs_in_namespace=sum(j.state == "Active" for j in jobs),
        )

    def reconcile(self, key: Key) -> PassResult:
        """One pass on what the watch would deliver now: the object as the fake holds it."""
        body = dict(self.body(key))
        return asyncio.run(controller.reconcile(self.rt, key, body, lambda: self.gather(key)))

    def status(self, key: Key) -> dict[str, Any]:
        status: dict[str, Any] = self.body(key).get("status") or {}
        return status
