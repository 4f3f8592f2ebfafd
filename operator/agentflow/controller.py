"""One reconcile pass for one Workflow: observe, plan (pure), act, write status once.

The handlers call :func:`reconcile` from a per-Workflow daemon whenever the Workflow or one of
its Jobs or Pods changes, or when the plan asked to be called again (backoff, deadlines, TTL).
All progress lives in the Workflow status and the Jobs, so a restarted operator carries on
where the last one stopped: Job names are deterministic and creating an existing Job that we
own counts as success, so no step attempt ever gets two Jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agentflow import engine, report
from agentflow.api.models import (
    AgentFallbackPolicySpec,
    Condition,
    ConditionType,
    StepPhase,
    StepResult,
    Workflow,
    WorkflowPhase,
    WorkflowStatus,
)
from agentflow.config import OperatorConfig
from agentflow.engine.types import (
    LABEL_CACHE,
    LABEL_OUTPUT,
    LABEL_STEP,
    LABEL_WORKFLOW,
    Action,
    CacheEntry,
    CreateJob,
    DeleteJob,
    DeleteWorkflow,
    FallbackPolicy,
    JobState,
    Limits,
    ObservedJob,
    Plan,
    RecordEvent,
    WriteCache,
)
from agentflow.jobspec import WorkflowRef, build_step_job
from agentflow.kube import CreateOutcome, Kube
from agentflow.metrics import OperatorMetrics
from agentflow.observe import JobSummary, PodSummary, observe, recheck_at

logger = logging.getLogger("agentflow.controller")

Key = tuple[str, str]  # (namespace, workflow name)
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]

CACHE_KEY_ANNOTATION = "agentflow.dev/cache-key"
CACHE_EXPIRES_ANNOTATION = "agentflow.dev/expires-at"
CACHE_CREATED_ANNOTATION = "agentflow.dev/created-at"
CACHE_DATA_KEY = "result.json"
OUTPUT_DATA_KEY = "report"
MAX_CONFLICT_RETRIES = 5


def now_utc() -> datetime:
    return datetime.now(UTC)


def cache_configmap_name(key: str) -> str:
    return "agentflow-cache-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def output_configmap_name(job_name: str) -> str:
    return f"{job_name}-output"


def cache_entry_from_configmap(cm: Mapping[str, Any]) -> CacheEntry | None:
    meta = cm.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    try:
        result = StepResult.model_validate_json((cm.get("data") or {})[CACHE_DATA_KEY])
        return CacheEntry(
            key=annotations[CACHE_KEY_ANNOTATION],
            result=result,
            created_at=datetime.fromisoformat(annotations[CACHE_CREATED_ANNOTATION]),
            expires_at=datetime.fromisoformat(annotations[CACHE_EXPIRES_ANNOTATION]),
        )
    except (KeyError, ValueError, ValidationError):
        return None


def cache_configmap(namespace: str, action: WriteCache, now: datetime) -> dict[str, Any]:
    expires = now + timedelta(seconds=action.ttl_seconds)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cache_configmap_name(action.key),
            "namespace": namespace,
            "labels": {LABEL_CACHE: "true", LABEL_STEP: action.step},
            "annotations": {
                CACHE_KEY_ANNOTATION: action.key,
                CACHE_CREATED_ANNOTATION: now.isoformat(),
                CACHE_EXPIRES_ANNOTATION: expires.isoformat(),
            },
        },
        "data": {CACHE_DATA_KEY: action.result.model_dump_json(by_alias=True, exclude_none=True)},
    }


def output_configmap(wf: WorkflowRef, job: ObservedJob, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": output_configmap_name(job.name),
            "namespace": wf.namespace,
            "labels": {LABEL_OUTPUT: wf.name, LABEL_WORKFLOW: wf.name, LABEL_STEP: job.step},
            "ownerReferences": [
                {
                    "apiVersion": "agentflow.dev/v1alpha1",
                    "kind": "Workflow",
                    "name": wf.name,
                    "uid": wf.uid,
                    "controller": True,
                }
            ],
        },
        "data": {OUTPUT_DATA_KEY: text},
    }


def status_wire(status: WorkflowStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that turns ``old`` into ``new`` (keys that disappeared become null)."""
    patch: dict[str, Any] = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def invalid_object_status(
    old: WorkflowStatus | None, generation: int | None, message: str, now: datetime
) -> WorkflowStatus:
    """Status for a Workflow the models cannot even parse (the schema let it through)."""
    status = old.model_copy(deep=True) if old else WorkflowStatus()
    status.phase = WorkflowPhase.FAILED
    status.observed_generation = generation
    status.message = f"invalid spec: {message}"
    status.finished_at = status.finished_at or now
    status.conditions = [
        Condition(
            type=ConditionType.READY,
            status="False",
            reason="InvalidSpec",
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        ),
        Condition(
            type=ConditionType.STALLED,
            status="True",
            reason="InvalidSpec",
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        ),
        Condition(
            type=ConditionType.RECONCILING,
            status="False",
            reason="InvalidSpec",
            message="",
            last_transition_time=now,
            observed_generation=generation,
        ),
    ]
    return status


@dataclass
class Written:
    """The status we last wrote, to plan from it until the watch delivers it back."""

    previous_resource_version: str | None
    body: dict[str, Any]

    def is_newer_than(self, resource_version: str | None) -> bool:
        """Whether the object we wrote is newer than one the watch handed us.

        The watch may still deliver versions from before our write (kopf's own patches, the
        object's deletion); planning from those would repeat what we already did.  On etcd,
        resourceVersions are revisions that only grow; if one ever is not a number, only the
        exact version we planned from counts as stale.
        """
        ours = (self.body.get("metadata") or {}).get("resourceVersion")
        try:
            return int(resource_version or 0) < int(ours or 0)
        except ValueError:
            return resource_version == self.previous_resource_version


@dataclass
class Runtime:
    """Operator-wide state shared by the handlers (kopf's ``memo``)."""

    kube: Kube
    metrics: OperatorMetrics
    config: OperatorConfig
    post_event: EventPoster
    wakeups: dict[Key, asyncio.Event] = field(default_factory=dict)
    written: dict[Key, Written] = field(default_factory=dict)
    outputs_stored: set[str] = field(default_factory=set)
    phases: dict[Key, str] = field(default_factory=dict)
    last_heartbeat: float = field(default_factory=time.monotonic)
    cache_names: set[Key] = field(default_factory=set)
    is_leader: bool = True

    def wakeup(self, key: Key) -> asyncio.Event:
        event = self.wakeups.get(key)
        if event is None:
            event = self.wakeups[key] = asyncio.Event()
        return event

    def wake(self, key: Key) -> None:
        event = self.wakeups.get(key)
        if event is not None:
            event.set()

    def wake_namespace(self, namespace: str) -> None:
        for (ns, _), event in self.wakeups.items():
            if ns == namespace:
                event.set()

    def forget(self, key: Key) -> None:
        self.wakeups.pop(key, None)
        self.written.pop(key, None)
        self.phases.pop(key, None)
        self._refresh_phase_gauge()

    def record_phase(self, key: Key, phase: str) -> None:
        if self.phases.get(key) != phase:
            self.phases[key] = phase
            self._refresh_phase_gauge()

    def _refresh_phase_gauge(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (ns, _), phase in self.phases.items():
            counts[(ns, phase)] = counts.get((ns, phase), 0) + 1
        self.metrics.workflows.clear()
        for (ns, phase), n in counts.items():
            self.metrics.workflows.labels(namespace=ns, phase=phase).set(n)


@dataclass
class Observations:
    """What the indexes hold for one Workflow and its namespace."""

    jobs: Sequence[JobSummary]
    pods: Sequence[PodSummary]
    policies: Mapping[str, Mapping[str, Any]]  # policy name -> spec (this namespace)
    cache: Callable[[str], CacheEntry | None]
    active_jobs_in_namespace: int


def resolve_fallback_policy(
    spec_ref: str | None, policies: Mapping[str, Mapping[str, Any]]
) -> FallbackPolicy:
    """The policy a Workflow uses: its ``fallbackPolicyRef``, else ``default``, else built-in."""
    name = spec_ref or "default"
    raw = policies.get(name)
    if raw is None:
        if spec_ref:
            return FallbackPolicy(name=name, error=f"fallback policy {name!r} not found")
        return engine.resolve_policy(None, None)
    try:
        spec = AgentFallbackPolicySpec.model_validate(raw)
    except ValidationError as e:
        return FallbackPolicy(name=name, error=f"fallback policy {name!r} is invalid: {e}")
    return engine.resolve_policy(spec, name)


async def store_outputs(
    rt: Runtime, wf: WorkflowRef, status: WorkflowStatus | None, jobs: list[ObservedJob]
) -> list[ObservedJob]:
    """Store the full report of finished steps whose termination message was truncated."""
    result: list[ObservedJob] = []
    for job in jobs:
        if job.state is not JobState.SUCCEEDED or job.output_ref is not None:
            result.append(job)
            continue
        step = status.step(job.step) if status else None
        already = step is not None and step.result is not None and step.result.output_ref
        decoded = report.decode_termination_message(job.termination_message)
        if not decoded.truncated or already:
            result.append(job)
            continue
        name = output_configmap_name(job.name)
        if name not in rt.outputs_stored:
            text = await rt.kube.read_job_log(wf.namespace, job.name, rt.config.output_limit_bytes)
            if text is None:
                result.append(job)
                continue
            await rt.kube.create_configmap(output_configmap(wf, job, text))
            rt.outputs_stored.add(name)
        result.append(replace(job, output_ref=name))
    return result


async def execute(
    rt: Runtime, body: Mapping[str, Any], wf: WorkflowRef, actions: Sequence[Action], now: datetime
) -> None:
    fields = {"workflow": wf.name, "namespace": wf.namespace}
    for action in actions:
        if isinstance(action, CreateJob):
            created = await rt.kube.create_job(build_step_job(wf, action, rt.config.job))
            logger.info(
                "step job %s: %s",
                created.outcome.value,
                action.job_name,
                extra={
                    **fields,
                    "step": action.step,
                    "run": action.run,
                    "iteration": action.iteration,
                    "attempt": action.attempt,
                    "agent": action.agent.name,
                    "job": action.job_name,
                },
            )
            if created.outcome is CreateOutcome.FOREIGN:
                rt.post_event(body, "Warning", "JobConflict", created.message)
        elif isinstance(action, DeleteJob):
            await rt.kube.delete_job(wf.namespace, action.job_name)
            logger.info(
                "step job deleted: %s (%s)",
                action.job_name,
                action.reason,
                extra={**fields, "job": action.job_name},
            )
        elif isinstance(action, RecordEvent):
            rt.post_event(body, action.type, action.reason, action.message)
            logger.info(
                "%s: %s", action.reason, action.message, extra={**fields, "reason": action.reason}
            )
        elif isinstance(action, WriteCache):
            await rt.kube.replace_configmap_data(cache_configmap(wf.namespace, action, now))
        elif isinstance(action, DeleteWorkflow):
            logger.info("deleting finished workflow: %s", action.reason, extra=fields)
            await rt.kube.delete_workflow(wf.namespace, wf.name, wf.uid)


def record_metrics(
    rt: Runtime,
    namespace: str,
    old: WorkflowStatus | None,
    new: WorkflowStatus,
    plan: Plan,
    observed: Sequence[ObservedJob],
    now: datetime,
) -> None:
    m = rt.metrics
    old_steps = {s.name: s for s in (old.steps if old else [])}
    finished_jobs = {j.name: j for j in observed if j.state is not JobState.ACTIVE}
    for step in new.steps:
        before = old_steps.get(step.name)
        old_attempts = {a.job_name: a for a in (before.attempts if before else [])}
        primary = step.attempts[0].agent if step.attempts else (step.agent or "unknown")
        for attempt in step.attempts:
            prev = old_attempts.get(attempt.job_name)
            if (
                prev is None
                and attempt.fallback
                and not any(a.fallback for a in old_attempts.values())
            ):
                m.fallbacks.labels(
                    namespace=namespace, agent=primary, fallback_agent=attempt.agent
                ).inc()
            if attempt.outcome == "Running" or (prev is not None and prev.outcome != "Running"):
                continue
            if attempt.outcome == "Succeeded":
                outcome = "fallback" if attempt.fallback else "succeeded"
            else:
                outcome = "failed"
            m.step_attempts.labels(namespace=namespace, agent=attempt.agent, outcome=outcome).inc()
            if attempt.started_at and attempt.finished_at:
                m.step_duration.labels(namespace=namespace, agent=attempt.agent).observe(
                    max(0.0, (attempt.finished_at - attempt.started_at).total_seconds())
                )
            job = finished_jobs.get(attempt.job_name)
            if job is not None and job.finished_at is not None:
                m.step_overhead.observe(max(0.0, (now - job.finished_at).total_seconds()))
        became = before is None or before.phase != step.phase
        if became and step.phase in (StepPhase.SKIPPED, StepPhase.CACHED):
            m.step_attempts.labels(
                namespace=namespace, agent=step.agent or primary, outcome=step.phase.value.lower()
            ).inc()
        if became and step.phase is StepPhase.SUCCEEDED and step.result is not None:
            agent = step.agent or primary
            metrics = step.result.metrics
            if metrics.tool_calls:
                m.agent_tool_calls.labels(namespace=namespace, agent=agent).inc(metrics.tool_calls)
            if metrics.input_tokens:
                m.agent_tokens.labels(namespace=namespace, agent=agent, direction="input").inc(
                    metrics.input_tokens
                )
            if metrics.output_tokens:
                m.agent_tokens.labels(namespace=namespace, agent=agent, direction="output").inc(
                    metrics.output_tokens
                )
    for lookup in plan.cache_outcomes:
        m.cache_requests.labels(result=lookup.result).inc()
    terminal = (WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED)
    if new.phase in terminal and (old is None or old.phase != new.phase):
        m.workflows_finished.labels(
            namespace=namespace, phase=new.phase.value, degraded=str(new.degraded).lower()
        ).inc()


def parse_status(raw: Mapping[str, Any] | None) -> WorkflowStatus | None:
    if not raw:
        return None
    try:
        return WorkflowStatus.model_validate(raw)
    except ValidationError:
        logger.warning("status of a workflow does not parse; planning from scratch")
        return None


async def reconcile(
    rt: Runtime, key: Key, body: Mapping[str, Any], gather: Callable[[], Observations]
) -> float | None:
    """One pass (retried on write conflicts).  Returns when to be called again, if at all."""
    started = time.monotonic()
    outcome = "ok"
    try:
        current: Mapping[str, Any] = body
        written = rt.written.get(key)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if written is not None and written.is_newer_than(rv):
            current = written.body  # the watch has not caught up with our own write yet
        for _ in range(MAX_CONFLICT_RETRIES):
            result = await _reconcile_once(rt, key, current, gather)
            if not isinstance(result, Conflict):
                return result
            fresh = await rt.kube.get_workflow(*key)
            if fresh is None:
                return None
            current = fresh
        outcome = "conflict"
        return 1.0
    except Exception:
        outcome = "error"
        raise
    finally:
        rt.metrics.reconcile_duration.labels(outcome=outcome).observe(time.monotonic() - started)


@dataclass
class Conflict:
    pass


async def _reconcile_once(
    rt: Runtime, key: Key, body: Mapping[str, Any], gather: Callable[[], Observations]
) -> float | Conflict | None:
    namespace, name = key
    meta = body.get("metadata") or {}
    now = now_utc()
    wf_ref = WorkflowRef(name=name, namespace=namespace, uid=meta.get("uid", ""))
    old_raw: dict[str, Any] = dict(body.get("status") or {})
    old = parse_status(old_raw)
    try:
        workflow = Workflow.model_validate(
            {"metadata": meta, "spec": body.get("spec") or {}, "status": None}
        )
    except ValidationError as e:
        error = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
        )
        new = invalid_object_status(old, meta.get("generation"), error, now)
        plan = Plan(status=new)
        observed: list[ObservedJob] = []
        recheck: datetime | None = None
    else:
        workflow = workflow.model_copy(update={"status": old})
        obs = gather()
        observed, stuck = observe(obs.jobs, obs.pods, now)
        recheck = recheck_at(obs.jobs, obs.pods, now)
        observed = await store_outputs(rt, wf_ref, old, observed)
        ref = workflow.spec.fallback_policy_ref
        policy = resolve_fallback_policy(ref.name if ref else None, obs.policies)
        slots = None
        if rt.config.max_jobs_per_namespace is not None:
            slots = max(0, rt.config.max_jobs_per_namespace - obs.active_jobs_in_namespace)
        limits = Limits(namespace_job_slots=slots, allowed_images=rt.config.allowed_images)
        plan = engine.plan(workflow, policy, observed, obs.cache, now, limits)
        for job_name in stuck:
            await rt.kube.delete_job(namespace, job_name)
        await execute(rt, body, wf_ref, plan.actions, now)
        new = plan.status

    new_raw = status_wire(new)
    if new_raw != old_raw:
        patched = await rt.kube.patch_workflow_status(
            namespace, name, merge_patch_status(old_raw, new_raw), meta.get("resourceVersion")
        )
        if patched is None:
            return Conflict()
        rt.written[key] = Written(meta.get("resourceVersion"), patched)
        record_metrics(rt, namespace, old, new, plan, observed, now)
    rt.record_phase(key, new.phase.value)
    if recheck is not None:
        # A grace period of observe() ends then, and no watch event may mark it.
        until = (recheck - now).total_seconds()
        return until if plan.requeue_after is None else min(until, plan.requeue_after)
    return plan.requeue_after
