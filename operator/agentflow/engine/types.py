"""Plain data that goes into and comes out of the reconcile core.

The core (``agentflow.engine.plan``) is a pure function: given the Workflow, its fallback
policy, the step Jobs observed in the cluster, a cache lookup and the time, it returns the new
status and the actions the operator must carry out.  Nothing here talks to Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from agentflow.api.models import (
    AgentTemplate,
    StepMetrics,
    StepPhase,
    StepResult,
    WorkflowPhase,
    WorkflowStatus,
    WorkspaceClaimTemplate,
)
from agentflow.engine.failures import ClassRule
from agentflow.engine.usage import NO_LIMITS, NO_PRICES, ConcurrencyGrant, PriceTable, Waiter

# Labels and annotations the operator owns.
LABEL_WORKFLOW = "agentflow.dev/workflow"
LABEL_STEP = "agentflow.dev/step"
LABEL_RUN = "agentflow.dev/run"
LABEL_ITERATION = "agentflow.dev/iteration"
LABEL_ATTEMPT = "agentflow.dev/attempt"
LABEL_AGENT = "agentflow.dev/agent"
# On a step Job whose attempt counts against one of the operator's concurrency limits: its name.
LABEL_LIMIT = "agentflow.dev/limit"
LABEL_CACHE = "agentflow.dev/cache"
LABEL_OUTPUT = "agentflow.dev/output"
ANNOTATION_RERUN = "agentflow.dev/rerun"
ANNOTATION_RETRY = "agentflow.dev/retry"


class JobState(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class ObservedJob:
    """What the operator saw of one step Job (from its labels and status)."""

    name: str
    step: str
    run: int
    iteration: int
    attempt: int
    agent: str
    state: JobState
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    # Why it failed, e.g. DeadlineExceeded, BackoffLimitExceeded, ErrImagePull, Error.
    reason: str | None = None
    # What a failed attempt says about its failure: the summary of the agent's report, the
    # Job controller's or the kubelet's message, or the operator's (JobConflict, OutputRefused).
    message: str = ""
    # What a succeeded attempt reported, parsed from its termination message (the runner's
    # compact JSON or a raw report); None when it wrote none.
    result: StepResult | None = None
    # Name of the ConfigMap holding the full report, once the operator has stored it.
    output_ref: str | None = None
    # The full report, read from the pod log because the termination message could not carry
    # it (truncated, or none written); the plan stores it in an output ConfigMap (StoreOutput).
    # An attempt that wrote no termination message has its result parsed from it.
    log_report: str | None = None
    # Its pod will never start (an image or config error, see agentflow.observe): the Job is
    # reported failed but is still there, and the plan deletes it.
    stuck: bool = False
    # How a failed attempt failed (agentflow.engine.failures.classify), when observe knows it;
    # the plan classifies ``reason`` otherwise.
    failure_class: str | None = None
    # The provider's Retry-After the agent reported with its failure, in seconds (bounded).
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class CacheEntry:
    key: str
    result: StepResult
    created_at: datetime
    expires_at: datetime


CacheLookup = Callable[[str], CacheEntry | None]


def no_cache(_key: str) -> CacheEntry | None:
    return None


@dataclass(frozen=True)
class PolicyRule:
    """The fallback rule in force for one agent (resolved from the policy and its default)."""

    fallback: str | None = None
    criticality: str = "medium"
    skip_if_unavailable: bool = False
    max_attempts: int = 1
    # Its onFailure entries; classes they do not list get failures.BUILTIN_CLASS_RULES.
    on_failure: tuple[ClassRule, ...] = ()


@dataclass(frozen=True)
class FallbackPolicy:
    """A resolved AgentFallbackPolicy, or the built-in default when ``rules`` is empty.

    ``error`` is set when the referenced policy is missing or invalid: the workflow then fails
    with that message rather than guess.
    """

    rules: dict[str, PolicyRule] = field(default_factory=dict)
    default: PolicyRule = field(default_factory=PolicyRule)
    name: str | None = None
    error: str | None = None

    def rule_for(self, agent: str) -> PolicyRule:
        return self.rules.get(agent, self.default)


@dataclass(frozen=True)
class Limits:
    """Operator-wide limits that the plan respects (from the Helm values)."""

    # How many more step Jobs may start in this namespace now (None: no limit).
    namespace_job_slots: int | None = None
    # Images agents may use (None: any image).
    allowed_images: frozenset[str] | None = None
    # Names or patterns of the Secrets agents may reference (None: any Secret; empty: none).
    allowed_secrets: tuple[str, ...] | None = None
    # The operator's price table (tokens -> cost).
    prices: PriceTable = NO_PRICES
    # What may start under the operator's concurrency limits, and who waits before us.
    concurrency: ConcurrencyGrant = NO_LIMITS


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateJob:
    job_name: str
    step: str
    run: int
    iteration: int
    attempt: int
    agent: AgentTemplate  # resolved: the step's override merged in, image defaulted
    fallback: bool
    prompt: str  # rendered; passed to the container as data, never through a shell
    cache_key: str | None
    timeout_seconds: int | None
    # What is left of the Workflow's budget, as the agent's max-tokens bound (None: no bound).
    max_tokens: int | None = None
    # The operator's concurrency limit the attempt counts against (its Job carries the label).
    concurrency_limit: str | None = None
    # The PersistentVolumeClaim mounted at /workspace (spec.workspace), or None.
    workspace_claim: str | None = None

    def observed(self, state: JobState, at: datetime, **outcome: Any) -> ObservedJob:
        """The Job this action creates, as observed at ``at`` in ``state`` (with ``outcome``:
        ``finished_at``, ``reason``, ``message``, ``result``...)."""
        return ObservedJob(
            name=self.job_name,
            step=self.step,
            run=self.run,
            iteration=self.iteration,
            attempt=self.attempt,
            agent=self.agent.name,
            state=state,
            started_at=at,
            **outcome,
        )


@dataclass(frozen=True)
class EnsureWorkspaceClaim:
    """Before the pass's Jobs that mount it: make sure the workspace claim is there.

    With a ``template``, create claim ``name`` from it, owned by the Workflow (one that exists
    and is the Workflow's is fine); without one, the claim is the author's own (``claimName``)
    and must exist.  When it cannot be had, the Jobs that mount it are not created and their
    attempts fail with the reason.
    """

    name: str
    template: WorkspaceClaimTemplate | None


@dataclass(frozen=True)
class DeleteJob:
    job_name: str
    reason: str


@dataclass(frozen=True)
class RecordEvent:
    type: str  # Normal | Warning
    reason: str  # StepStarted, StepSucceeded, StepFailed, FallbackUsed, StepSkipped, CacheHit, ...
    message: str


@dataclass(frozen=True)
class WriteCache:
    key: str
    step: str
    result: StepResult
    ttl_seconds: int


@dataclass(frozen=True)
class StoreOutput:
    """Keep a step attempt's full report (read from its pod log) in an output ConfigMap."""

    job_name: str
    step: str
    report: str


@dataclass(frozen=True)
class DeleteWorkflow:
    """ttlSecondsAfterFinished has passed."""

    reason: str


Action = (
    EnsureWorkspaceClaim
    | CreateJob
    | DeleteJob
    | RecordEvent
    | WriteCache
    | StoreOutput
    | DeleteWorkflow
)


# ---------------------------------------------------------------------------------------------
# Transition facts: what a plan changed, for the metrics (agentflow.metrics.metric_updates)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheOutcome:
    """A step's cache lookup for the first attempt of an iteration."""

    step: str
    key: str
    result: str  # hit | miss | expired


@dataclass(frozen=True)
class StepStarted:
    """A step's first attempt started at ``started_at``; it could run from ``ready_at`` (its
    last dependency finished, or the run started)."""

    step: str
    agent: str
    ready_at: datetime | None
    started_at: datetime


@dataclass(frozen=True)
class AttemptFinished:
    """An attempt was settled at ``at``: ``succeeded``, ``fallback`` (a fallback agent's
    attempt succeeded) or ``failed``."""

    step: str
    agent: str
    outcome: str
    started_at: datetime | None
    finished_at: datetime | None
    # When its Job finished, as observed (None: no finished Job was seen).
    job_finished_at: datetime | None
    at: datetime
    # The failure class of a failed attempt (a FailureClass value), else None.
    failure_class: str | None = None


@dataclass(frozen=True)
class StepFinished:
    """A step became Succeeded (with the metrics its agent reported), Cached or Skipped."""

    step: str
    agent: str
    phase: StepPhase
    metrics: StepMetrics | None = None


@dataclass(frozen=True)
class FallbackTaken:
    """A step switched from its agent to a fallback agent for the first time."""

    step: str
    agent: str
    fallback_agent: str


@dataclass(frozen=True)
class UsageRecorded:
    """An attempt reported tokens; ``cost`` is what they cost (None: its model has no price)."""

    step: str
    agent: str
    input_tokens: int
    output_tokens: int
    cost: Decimal | None


@dataclass(frozen=True)
class BudgetExceeded:
    """The run reached its budget (``bound``: maxTokens or maxCost); no new attempt starts."""

    bound: str


@dataclass(frozen=True)
class WorkflowFinished:
    """A run reached Succeeded or Failed."""

    phase: WorkflowPhase
    degraded: bool


Fact = (
    CacheOutcome
    | StepStarted
    | AttemptFinished
    | StepFinished
    | FallbackTaken
    | WorkflowFinished
    | UsageRecorded
    | BudgetExceeded
)


@dataclass
class Plan:
    status: WorkflowStatus
    actions: list[Action] = field(default_factory=list)
    # Call plan again after this many seconds even if nothing changes (backoff, deadlines, TTL).
    requeue_after: float | None = None
    facts: list[Fact] = field(default_factory=list)
    # This Workflow's step attempts that wait for a concurrency limit's slot, after the pass.
    waiters: list[Waiter] = field(default_factory=list)

    @property
    def cache_outcomes(self) -> list[CacheOutcome]:
        return [f for f in self.facts if isinstance(f, CacheOutcome)]
