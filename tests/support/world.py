"""Builders and a fake world for planning tests.

``World`` stands in for the cluster and the operator around ``plan``: it keeps the Jobs the
plan created (as ``ObservedJob``), the cache entries it wrote, and a clock; tests finish Jobs
the way Kubernetes would and plan again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agentflow.api.models import (
    AgentFallbackPolicySpec,
    AgentTemplate,
    Artifact,
    ObjectMeta,
    Step,
    StepMetrics,
    StepResult,
    StepStatus,
    Workflow,
    WorkflowSpec,
)
from agentflow.engine import plan, resolve_policy
from agentflow.engine.types import (
    CacheEntry,
    CreateJob,
    DeleteJob,
    DeleteWorkflow,
    Fact,
    FallbackPolicy,
    JobState,
    Limits,
    ObservedJob,
    Plan,
    RecordEvent,
    WriteCache,
)
from agentflow.observe import reported
from agentflow.report import encode_termination_message

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
# The uid of the Workflows that workflow() makes, unless told otherwise.
UID = "6f1c2b9e-0d4a-4c8e-9a51-3e7d2f0b8c14"


def step(name: str, agent: str = "a", **fields: Any) -> Step:
    """A step; its prompt defaults to one of its own, so steps don't share cache keys."""
    return Step.model_validate({"name": name, "agent": agent, "prompt": f"do {name}", **fields})


def workflow(
    steps: Iterable[Step],
    *,
    name: str = "wf",
    namespace: str = "team",
    uid: str = UID,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    agents: Iterable[AgentTemplate] | None = None,
    **spec: Any,
) -> Workflow:
    steps = list(steps)
    if agents is None:
        agents = [AgentTemplate(name=n) for n in dict.fromkeys(s.agent for s in steps)]
    return Workflow(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            uid=uid,
            generation=generation,
            annotations=annotations or {},
        ),
        spec=WorkflowSpec.model_validate(
            {"steps": [s.model_dump() for s in steps], "agents": list(agents), **spec}
        ),
    )


def fallback_policy(
    *rules: dict[str, Any], default: dict[str, Any] | None = None
) -> FallbackPolicy:
    spec = AgentFallbackPolicySpec.model_validate({"rules": list(rules), "default": default})
    resolved = resolve_policy(spec, "test-policy")
    assert resolved.error is None, resolved.error
    return resolved


def report_message(
    summary: str = "done",
    *,
    status: str | None = "success",
    artifacts: Iterable[str] = (),
    metrics: dict[str, Any] | None = None,
    digest: str | None = None,
    full_size: int = 100,
) -> str:
    """The termination message the agent runner writes for this result."""
    named = {k: v for k, v in (metrics or {}).items() if k in StepMetrics.model_fields}
    extra = {k: float(v) for k, v in (metrics or {}).items() if k not in StepMetrics.model_fields}
    result = StepResult(
        status=status,
        summary=summary,
        artifacts=[Artifact(path=p) for p in artifacts],
        metrics=StepMetrics(**named, extra=extra),
        digest=digest,
    )
    return encode_termination_message(result, full_size=full_size)


def kinds(actions: Iterable[object], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def events(p: Plan, reason: str | None = None) -> list[RecordEvent]:
    return [e for e in kinds(p.actions, RecordEvent) if reason is None or e.reason == reason]


def creates(p: Plan) -> list[CreateJob]:
    return kinds(p.actions, CreateJob)


def deletes(p: Plan) -> list[DeleteJob]:
    return kinds(p.actions, DeleteJob)


@dataclass
class World:
    """The cluster as the plan sees it, plus the clock."""

    wf: Workflow
    policy: FallbackPolicy = field(default_factory=FallbackPolicy)
    now: datetime = T0
    limits: Limits = field(default_factory=Limits)
    jobs: dict[str, ObservedJob] = field(default_factory=dict)
    cache: dict[str, CacheEntry] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    workflow_deleted: bool = False
    last: Plan | None = None
    # The transition facts of every plan carried out, in order.
    facts: list[Fact] = field(default_factory=list)

    # -- planning ---------------------------------------------------------------------------

    def observed(self) -> list[ObservedJob]:
        return list(self.jobs.values())

    def plan(self) -> Plan:
        """Plan, carry out the actions, and keep the new status (as the operator does)."""
        p = plan(self.wf, self.policy, self.observed(), self.cache.get, self.now, self.limits)
        self.apply(p)
        return p

    def apply(self, p: Plan) -> None:
        for action in p.actions:
            if isinstance(action, CreateJob):
                assert action.job_name not in self.jobs, f"duplicate Job {action.job_name}"
                self.created.append(action.job_name)
                self.jobs[action.job_name] = action.observed(JobState.ACTIVE, self.now)
            elif isinstance(action, DeleteJob):
                self.jobs.pop(action.job_name, None)
            elif isinstance(action, WriteCache):
                self.cache[action.key] = CacheEntry(
                    key=action.key,
                    result=action.result,
                    created_at=self.now,
                    expires_at=self.now + timedelta(seconds=action.ttl_seconds),
                )
            elif isinstance(action, DeleteWorkflow):
                self.workflow_deleted = True
        self.wf = self.wf.model_copy(update={"status": p.status})
        self.facts.extend(p.facts)
        self.last = p

    # -- the cluster ------------------------------------------------------------------------

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def active(self, step_name: str | None = None) -> list[ObservedJob]:
        return [
            j
            for j in self.jobs.values()
            if j.state is JobState.ACTIVE and (step_name is None or j.step == step_name)
        ]

    def job_of(self, step_name: str) -> ObservedJob:
        running = self.active(step_name)
        assert len(running) == 1, f"expected one active Job of {step_name}, have {running}"
        return running[0]

    def succeed(self, step_name: str, summary: str | None = None, **report: Any) -> ObservedJob:
        job = self.job_of(step_name)
        message = report_message(summary if summary is not None else f"{step_name} done", **report)
        result, _ = reported(JobState.SUCCEEDED, message)
        done = replace(
            job, state=JobState.SUCCEEDED, finished_at=self.now, exit_code=0, result=result
        )
        self.jobs[job.name] = done
        return done

    def fail(
        self,
        step_name: str,
        reason: str = "BackoffLimitExceeded",
        exit_code: int | None = 1,
        summary: str = "",
        failure_class: str | None = None,
        retry_after: float | None = None,
    ) -> ObservedJob:
        """Fail the step's Job; ``failure_class`` and ``retry_after`` as observe reports what the
        agent said (without them the plan classifies ``reason``)."""
        job = self.job_of(step_name)
        _, failure = reported(
            JobState.FAILED, report_message(summary, status="failure") if summary else None
        )
        done = replace(
            job,
            state=JobState.FAILED,
            finished_at=self.now,
            exit_code=exit_code,
            reason=reason,
            message=failure,
            failure_class=failure_class,
            retry_after_seconds=retry_after,
        )
        self.jobs[job.name] = done
        return done

    # -- reading the status -----------------------------------------------------------------

    def step_status(self, name: str) -> StepStatus:
        assert self.wf.status is not None
        found = self.wf.status.step(name)
        assert found is not None
        return found

    def phases(self) -> dict[str, str]:
        assert self.wf.status is not None
        return {s.name: str(s.phase) for s in self.wf.status.steps}

    @property
    def phase(self) -> str:
        assert self.wf.status is not None
        return str(self.wf.status.phase)
