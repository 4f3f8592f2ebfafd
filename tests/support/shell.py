"""The operator's kopf shell in-process: ``controller.reconcile`` on a :class:`FakeKube`, on a
fake clock, with the observations the handlers' indexes would hold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agentflow import children, controller, handlers
from agentflow.config import OperatorConfig
from agentflow.controller import Key, Observations, PassResult, Runtime
from agentflow.engine.types import CacheEntry
from agentflow.metrics import OperatorMetrics
from agentflow.observe import JobSummary, summarize_job
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
        key = (namespace, name)
        self.rt.workflows[key] = self.body(key)  # as the watch delivers it
        return key

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

        # Each concurrency limit's active Jobs, cluster-wide, as the handlers count them.
        by_limit: dict[str, list[JobSummary]] = {}
        for (ns, _), job in self.kube.jobs.items():
            labels = job["metadata"].get("labels") or {}
            for index_key, summary in handlers.job_entries(summarize_job(job), ns, labels).items():
                if index_key[0] == handlers.ACTIVE_UNDER:
                    by_limit.setdefault(index_key[1], []).append(summary)

        def shown(owner: tuple[str, str], job_name: str) -> bool:
            return any(j.name == job_name for j in self.kube.summaries(*owner)[0])

        running_by_limit = {
            rule.name: self.rt.active_jobs(
                controller.limit_scope(rule.name), by_limit.get(rule.name, []), shown
            )
            for rule in self.config.concurrency_rules
        }
        return Observations(
            jobs=jobs,
            pods=pods,
            policies=self.policies,
            cache=lookup,
            active_jobs_in_namespace=sum(j.state == "Active" for j in jobs),
            running_by_limit=running_by_limit,
        )

    def reconcile(self, key: Key) -> PassResult:
        """One pass on what the watch would deliver now: the object as the fake holds it."""
        body = dict(self.body(key))
        return asyncio.run(controller.reconcile(self.rt, key, body, lambda: self.gather(key)))

    def status(self, key: Key) -> dict[str, Any]:
        status: dict[str, Any] = self.body(key).get("status") or {}
        return status


@dataclass
class QueuedPass:
    """Whether a pass of ``key`` is queued (a wake-up), read and cleared like an event."""

    rt: Runtime
    key: Key

    def is_set(self) -> bool:
        return self.rt.queue.is_pending(self.key)

    def clear(self) -> None:
        self.rt.queue.forget(self.key)


class LiveIndex(Mapping[Any, list[Any]]):
    """A kopf index as a pass reads it, computed from the fake on every read."""

    def __init__(self, entries: Callable[[], dict[Any, list[Any]]]) -> None:
        self._entries = entries

    def __getitem__(self, key: Any) -> list[Any]:
        return self._entries()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


def workflow_indexes(shell: Shell, key: Key) -> handlers.WorkflowIndexes:
    """The indexes the workers gather from (see ``agentflow.handlers``), over the fake."""
    namespace = key[0]

    def uid() -> str:
        found: str = shell.body(key)["metadata"]["uid"]
        return found

    def jobs() -> dict[Any, list[Any]]:
        summaries = shell.kube.summaries(namespace, uid())[0]
        return {
            (handlers.JOBS_OF, namespace, uid()): summaries,
            (handlers.ACTIVE_IN, namespace): [j for j in summaries if j.state == "Active"],
        }

    def pods() -> dict[Any, list[Any]]:
        return {key: shell.kube.summaries(namespace, uid())[1]}

    live: Any = {
        "step_jobs": LiveIndex(jobs),
        "step_pods": LiveIndex(pods),
        "fallback_policies": LiveIndex(dict),
        "cache_entries": LiveIndex(dict),
    }
    return handlers.WorkflowIndexes.of(live)
