"""``plan``: from a Workflow, what its step Jobs show and the time, the next status and actions.

The plan is level-triggered and idempotent: it compares the status it is given with what the
observed Jobs say, and every action and event comes from a transition it makes now, so planning
again on its own output and the same observations yields no CreateJob, DeleteJob or event.  It
never changes its inputs.  Decisions worth knowing:

Runs.  ``status.run`` numbers the runs; Job names carry it, so a new run never collides with
an old one.  A new run starts when the spec's generation changes (even on a finished Workflow:
an edit re-runs it), when the ``agentflow.dev/rerun`` annotation carries a new token (every step
again; the cache makes unchanged steps ``Cached``), or when ``agentflow.dev/retry`` carries a
new token on a Failed Workflow (only Failed and never-started steps again).  Jobs of older runs
are deleted when the new run starts and their results ignored.

Dependencies.  A step starts when every step it depends on (``step_dependencies``) is terminal.
A step is skipped without running when every one of its *explicit* ``dependsOn`` was skipped;
the implicit "previous step" of a Sequential workflow only orders steps, so a skipped step in a
sequence does not skip the rest.  A skipped step has no result: references to its result render
as "" (and as empty values in CEL) while its ``phase`` reads ``Skipped``.

Fallback.  When an attempt fails: (1) the same agent is retried, with backoff, up to
``max(retries.limit + 1, rule.maxAttempts)`` attempts for the step's own agent and
``rule.maxAttempts`` for a fallback agent; (2) then the agent's rule's fallback runs, following
the chain of rules while it reaches agents not yet tried in this iteration; (3) then, when the
rule of the step's own agent allows ``skipIfUnavailable`` and it is not critical, the step is
skipped (the Workflow is then degraded); (4) otherwise the step and the Workflow fail and every
Job still running is deleted.  Steps that were running are marked Failed ("cancelled"); steps
that never started stay Pending.  A step's ``override`` applies to its own agent, not to
fallbacks.  The failure class of the attempt (its ``reason``) can change the tiers: the rule's
``onFailure`` entry for it, else the built-in one (``engine/failures.py``), retries the same
agent after the reported Retry-After (bounded by ``maxWaitSeconds``; uncounted retries by
``maxRetries``), goes to (2) at once, or fails the step.

Quality gates.  A succeeded attempt whose result makes the step's ``accept`` false (or cannot be
judged) is a failed attempt of class QualityGateFailed and takes the tiers above; its result is
neither kept nor cached, and ``repeat.until`` judges only accepted results.  A cache entry that
fails the current gate is not reused.

Cache.  Caching is on unless a step says ``cache.enabled: false`` (TTL 24 h by default); in a
Workflow with a ``workspace`` it is off unless a step says ``cache.enabled: true``, since a
cached step writes no files (``caching_enabled``).  Each
iteration's first attempt looks up the key of the step's own agent; a result produced by a
fallback agent is not written to the cache (it is not what the key describes).

Jobs.  Observed Jobs are matched to attempts by (run, step, iteration, attempt).  A running
attempt whose Job is absent is taken as lost (reason ``JobLost``) only after
:data:`LOST_JOB_GRACE_SECONDS`, since a freshly created Job may not be observed yet: the caller
must pass every step Job of the Workflow it knows of.  A Job still active
:data:`STEP_TIMEOUT_GRACE_SECONDS` after the step's ``timeoutSeconds`` (a pod that never
started) is deleted and its attempt fails with reason ``Timeout``.  A succeeded Job whose report
was truncated waits up to :data:`TRUNCATED_REPORT_WAIT_SECONDS` for the caller to read the full
report from the pod log and pass it (``log_report``); the plan then stores it in an output
ConfigMap (``StoreOutput``) and refers to it from the result.  ``activeDeadlineSeconds`` counts
from the run's start, also while suspended.

Usage and budgets.  A succeeded attempt's reported tokens become its ``usage`` (with their cost
when the operator's price table has the agent's model); a step's and the run's usage are sums
over the attempts in the status, so they are recomputed, never accumulated, and a pass planned
twice counts nothing twice.  Once the run's usage reaches ``spec.budget`` no new attempt
starts; when none is running any more the Workflow fails with reason ``BudgetExceeded``
(running attempts finish first).  Each new attempt gets what is left of the budget as its
agent's max-tokens bound.

Concurrency limits.  An attempt whose agent matches one of the operator's concurrency limits
starts only when the limit has a free slot that no earlier waiter (of any Workflow, ordered by
the time it became ready to start) is owed; otherwise it waits (a step that has not started
stays ``Pending``) with a message naming the limit, and the plan lists it in ``waiters``.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from agentflow.api.celenv import (
    ExpressionKind,
    activation,
    result_view,
    step_view,
    workflow_view,
)
from agentflow.api.models import (
    RESULT_STEP_PHASES,
    TERMINAL_STEP_PHASES,
    TERMINAL_WORKFLOW_PHASES,
    AgentTemplate,
    Attempt,
    CachePolicy,
    ConditionType,
    FailureAction,
    FailureClass,
    RetryPolicy,
    Step,
    StepMetrics,
    StepPhase,
    StepResult,
    StepStatus,
    Workflow,
    WorkflowPhase,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowUsage,
)
from agentflow.engine.agents import resolve_agent, with_inputs
from agentflow.engine.caching import cache_key, caching_enabled, result_digest
from agentflow.engine.conditions import progress, set_condition, step_counts
from agentflow.engine.expressions import (
    EvaluationDeferred,
    ExpressionError,
    PassBudget,
    evaluate_bool,
)
from agentflow.engine.failures import GENERIC_REASONS, ClassRule, class_rule, classify
from agentflow.engine.gates import gate_values
from agentflow.engine.graph import Ancestors, step_dependencies, topological_order
from agentflow.engine.names import job_name, output_configmap_name, workspace_claim_name
from agentflow.engine.policy import undeclared_fallbacks
from agentflow.engine.templating import PromptContext, TemplateError, render_prompt
from agentflow.engine.templating import template_references as _template_references
from agentflow.engine.types import (
    ANNOTATION_RERUN,
    ANNOTATION_RETRY,
    Action,
    AttemptFinished,
    BudgetExceeded,
    CacheLookup,
    CacheOutcome,
    CreateJob,
    DeleteJob,
    DeleteWorkflow,
    EnsureWorkspaceClaim,
    Fact,
    FallbackPolicy,
    FallbackTaken,
    JobState,
    Limits,
    ObservedJob,
    Plan,
    PolicyRule,
    RecordEvent,
    StepFinished,
    StepStarted,
    StoreOutput,
    UsageRecorded,
    WorkflowFinished,
    WriteCache,
)
from agentflow.engine.usage import (
    ConcurrencyRule,
    QueueKey,
    Waiter,
    attempt_usage,
    budget_reached,
    decimal,
    last_finished,
    matching_rule,
    remaining_tokens,
    step_usage,
    workflow_usage,
)
from agentflow.engine.validation import secret_references_not_allowed, validate_workflow

LOST_JOB_GRACE_SECONDS = 30
STEP_TIMEOUT_GRACE_SECONDS = 30
TRUNCATED_REPORT_WAIT_SECONDS = 60
# How soon to look again when the namespace's step-Job limit held a step back.
NAMESPACE_SLOT_RETRY_SECONDS = 10

WAITING_NAMESPACE_LIMIT = "waiting: namespace step-Job limit reached"
WAITING_CEL_TIME = "waiting: time for CEL conditions spent"
WAITING_LIMIT = "waiting: concurrency limit {limit} reached ({max} at once)"
WAITING_BUDGET = "budget reached ({bound}): no new step starts; waiting for running steps"
MAX_CONDITION_MESSAGE = 32_768
_MAX_DETAIL = 300

_RUNNING = "Running"
_KEPT_ON_RETRY = frozenset({StepPhase.SUCCEEDED, StepPhase.CACHED, StepPhase.SKIPPED})


def plan(
    workflow: Workflow,
    policy: FallbackPolicy,
    jobs: Sequence[ObservedJob],
    cache: CacheLookup,
    now: datetime,
    limits: Limits = Limits(),  # noqa: B008 - frozen dataclass, never mutated
    cel_budget: PassBudget | None = None,
) -> Plan:
    """The status ``workflow`` should have now, and the actions that get it there.

    ``cel_budget`` is the CEL time the pass may spend (the operator draws it from the
    namespace's, ``CelTime``); without one, the pass gets a budget of its own.
    """
    return _Planner(workflow, policy, jobs, cache, now, limits, cel_budget).plan()


_VALIDATED: OrderedDict[str, list[str]] = OrderedDict()
# The same errors by the spec object they were found in: the operator's passes of one
# generation share one parsed spec (controller.parse_workflow), and dumping it to JSON for the
# content's key cost more than the rest of the pass's checks (2.6 % of the operator's samples
# in a chain of 10-step Workflows).  The weak reference tells a reused id() from the object.
_VALIDATED_OBJECTS: OrderedDict[int, tuple[weakref.ref[WorkflowSpec], list[str]]] = OrderedDict()
_VALIDATED_MAX = 512
# Planning runs on the operator's event loop (and in the CLI), one pass at a time, never in
# worker threads: the memos need no lock.


def _validate(spec: WorkflowSpec) -> list[str]:
    """validate_workflow, remembered by the spec object and by its content (every pass
    re-checks the spec; the planner never changes it, a property test holds it to that)."""
    seen = _VALIDATED_OBJECTS.get(id(spec))
    if seen is not None and seen[0]() is spec:
        _VALIDATED_OBJECTS.move_to_end(id(spec))
        return list(seen[1])
    key = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    errors = _VALIDATED.get(key)
    if errors is not None:
        _VALIDATED.move_to_end(key)
    else:
        errors = _VALIDATED[key] = validate_workflow(spec)
    _VALIDATED_OBJECTS[id(spec)] = (weakref.ref(spec), errors)
    for memo in (_VALIDATED, _VALIDATED_OBJECTS):
        while len(memo) > _VALIDATED_MAX:
            memo.popitem(last=False)
    return list(errors)


def _copy_status(status: WorkflowStatus) -> WorkflowStatus:
    """A copy the pass may change: everything it assigns to or appends to is copied.

    Results and conditions are shared with the input; the planner replaces them, never changes
    them in place.  (A deep copy of 256 steps would cost more than the whole rest of a pass.)
    """
    copy = status.model_copy()
    copy.conditions = list(status.conditions)
    copy.steps = []
    for step in status.steps:
        step_copy = step.model_copy()
        step_copy.attempts = [a.model_copy() for a in step.attempts]
        copy.steps.append(step_copy)
    return copy


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(reason: str, exit_code: int | None, summary: str, cause: str | None = None) -> str:
    """``Class (Kubernetes reason) (exit code N): what the agent said``."""
    text = reason
    if cause and cause != reason and cause not in GENERIC_REASONS:
        text += f" ({_clip(cause, 64)})"
    if exit_code:
        text += f" (exit code {exit_code})"
    summary = " ".join(summary.split())
    if summary:
        text += f": {_clip(summary, _MAX_DETAIL)}"
    return text


def run_spec_digest(spec: WorkflowSpec) -> str:
    """What a run executes, as a digest: the spec without `suspend`."""
    data = spec.model_dump(mode="json", by_alias=True, exclude={"suspend"})
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class _Planner:
    """One planning pass; every method works on the private copy of the status."""

    def __init__(
        self,
        workflow: Workflow,
        policy: FallbackPolicy,
        jobs: Sequence[ObservedJob],
        cache: CacheLookup,
        now: datetime,
        limits: Limits,
        cel_budget: PassBudget | None = None,
    ) -> None:
        self.workflow = workflow
        self.spec = workflow.spec
        self.policy = policy
        self.jobs = jobs
        self.cache = cache
        self.now = now
        self.limits = limits
        self.status = _copy_status(workflow.status) if workflow.status else WorkflowStatus()
        self.steps = {s.name: s for s in self.spec.steps}
        # Failure messages name the field, spec.steps[i].when, as validation's do.
        self.step_index = {s.name: i for i, s in enumerate(self.spec.steps)}
        self.cel_budget = cel_budget if cel_budget is not None else PassBudget()
        self.deps = step_dependencies(self.spec)
        self.ancestors = Ancestors(self.deps)
        self.agent_names = {a.name for a in self.spec.agents}
        self.inputs = self.spec.inputs()
        self.actions: list[Action] = []
        # What this pass changed, for the metrics: each fact once, where the change is made.
        self.facts: list[Fact] = []
        self.wakeups: list[datetime] = []
        self.by_name: dict[str, StepStatus] = {}
        self.index: dict[tuple[str, int, int], ObservedJob] = {}
        self.deleted: set[str] = set()
        self.slots = limits.namespace_job_slots
        self.started_run = False
        self.finished_run = False
        self.failed_step: str | None = None
        self.stall: tuple[str, str] | None = None
        self.waiting: str | None = None
        self.grant = limits.concurrency
        # Slots of each concurrency limit this pass has taken.
        self.limit_used: dict[str, int] = {}
        self.waiters: list[Waiter] = []
        # The bound of spec.budget the run has reached, once it has.
        self.budget_bound: str | None = None
        self.run_usage: WorkflowUsage | None = None
        self.tallied = False
        # An attempt reported tokens in this pass: the run's usage must be added up again.
        self.usage_changed = False

    # -- the pass ---------------------------------------------------------------------------

    def plan(self) -> Plan:
        status = self.status
        self._delete_stuck()
        if status.run == 0:
            self._new_run(keep=False, why=None)
        else:
            self._maybe_new_run()
        if status.phase in TERMINAL_WORKFLOW_PHASES and not self.started_run:
            self._expire()
            return self._result()

        self._sync_steps()
        status.workspace_claim = self._claim_name()
        generation = self.workflow.metadata.generation
        if generation is not None:
            status.observed_generation = generation
        self.index = {(j.step, j.iteration, j.attempt): j for j in self.jobs if j.run == status.run}
        problem = self._spec_problem()
        if problem is not None:
            self._fail_workflow(*problem, cancelled="cancelled: invalid workflow")
        else:
            self._observe()
            self._check_budget()
            if self.failed_step is None:
                self._check_deadline()
            if status.phase is not WorkflowPhase.FAILED and self.failed_step is None:
                self._launch()
            self._conclude()
        self._summarise()
        if self.finished_run:
            self.facts.append(WorkflowFinished(phase=status.phase, degraded=status.degraded))
        self._expire()
        return self._result()

    def _result(self) -> Plan:
        future = [(w - self.now).total_seconds() for w in self.wakeups if w > self.now]
        return Plan(
            status=self.status,
            actions=self.actions,
            requeue_after=min(future) if future else None,
            facts=self.facts,
            waiters=self.waiters,
        )

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(RecordEvent(type=type_, reason=reason, message=message))

    def _delete(self, name: str, reason: str) -> None:
        if name not in self.deleted:
            self.deleted.add(name)
            self.actions.append(DeleteJob(job_name=name, reason=reason))

    def _delete_stuck(self) -> None:
        """Every pass while it is seen: a stuck Job holds its namespace's Job slot until then."""
        for job in self.jobs:
            if job.stuck:
                self._delete(job.name, f"its pod cannot start ({job.reason})")

    def _wake(self, when: datetime) -> None:
        self.wakeups.append(when)

    # -- runs -------------------------------------------------------------------------------

    def _maybe_new_run(self) -> None:
        status = self.status
        meta = self.workflow.metadata
        rerun = meta.annotations.get(ANNOTATION_RERUN)
        retry = meta.annotations.get(ANNOTATION_RETRY)
        generation = meta.generation
        if (
            generation is not None
            and status.observed_generation is not None
            and generation != status.observed_generation
        ):
            if status.spec_digest is not None and status.spec_digest == run_spec_digest(self.spec):
                status.observed_generation = generation  # only `suspend` changed: same run
            else:
                self._new_run(keep=False, why=f"spec changed (generation {generation})")
        elif rerun and rerun != status.rerun_token:
            self._new_run(keep=False, why="rerun requested")
        elif retry and retry != status.retry_token:
            if status.phase is WorkflowPhase.FAILED:
                self._new_run(keep=True, why="retry of failed steps requested")
            else:
                status.retry_token = retry  # nothing to retry; don't act on it later

    def _new_run(self, *, keep: bool, why: str | None) -> None:
        status = self.status
        number = status.run + 1
        if status.run:
            reason = f"superseded by run {number}"
            for old_step in status.steps:
                for attempt in old_step.attempts:
                    if attempt.outcome == _RUNNING:
                        self._delete(attempt.job_name, reason)
            for job in self.jobs:
                if job.state is JobState.ACTIVE and job.run < number:
                    self._delete(job.name, reason)
        old = {s.name: s for s in status.steps}
        steps: list[StepStatus] = []
        for spec_step in self.spec.steps:
            previous = old.get(spec_step.name)
            if keep and previous is not None and previous.phase in _KEPT_ON_RETRY:
                steps.append(previous)
            else:
                steps.append(StepStatus(name=spec_step.name))
        annotations = self.workflow.metadata.annotations
        status.steps = steps
        status.run = number
        status.phase = WorkflowPhase.PENDING
        status.started_at = self.now
        status.finished_at = None
        status.message = None
        status.observed_generation = self.workflow.metadata.generation
        status.spec_digest = run_spec_digest(self.spec)
        status.usage = None  # the run's own, from the attempts it keeps (see _summarise)
        status.rerun_token = annotations.get(ANNOTATION_RERUN)
        status.retry_token = annotations.get(ANNOTATION_RETRY)
        self.started_run = True
        message = f"run {number} started" + (f": {why}" if why else "")
        self._event("Normal", "WorkflowStarted", message)

    def _sync_steps(self) -> None:
        """One status per spec step, in spec order (a hand-edited status can't confuse us)."""
        have = {s.name: s for s in self.status.steps}
        self.status.steps = [have.get(s.name) or StepStatus(name=s.name) for s in self.spec.steps]
        self.by_name = {s.name: s for s in self.status.steps}

    # -- validation -------------------------------------------------------------------------

    def _spec_problem(self) -> tuple[str, str, str] | None:
        errors = _validate(self.spec)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return "InvalidSpec", f"invalid spec: {errors[0]}{more}", "; ".join(errors)
        if self.limits.allowed_secrets is not None:
            refused = secret_references_not_allowed(self.spec, self.limits.allowed_secrets)
            if refused:
                more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
                return "SecretNotAllowed", f"{refused[0]}{more}", "; ".join(refused)
        if self.policy.error:
            return "InvalidFallbackPolicy", self.policy.error, self.policy.error
        undeclared = self._undeclared_fallbacks()
        if undeclared:
            return "InvalidFallbackPolicy", undeclared[0], "; ".join(undeclared)
        return None

    def _undeclared_fallbacks(self) -> list[str]:
        steps = (s.agent for s in self.spec.steps)
        return [
            f"fallback agent {fallback!r} of agent {agent!r} is not declared in spec.agents"
            for fallback, agent in undeclared_fallbacks(self.policy, steps, self.agent_names)
        ]

    # -- observing Jobs ---------------------------------------------------------------------

    def _observe(self) -> None:
        for status in self.status.steps:
            if status.phase is not StepPhase.RUNNING or not status.attempts:
                continue
            attempt = status.attempts[-1]
            if attempt.outcome != _RUNNING:
                continue
            step = self.steps[status.name]
            job = self.index.get((status.name, attempt.iteration, attempt.attempt))
            started = attempt.started_at or self.now
            if job is None:
                lost_at = started + timedelta(seconds=LOST_JOB_GRACE_SECONDS)
                if self.now >= lost_at:
                    self._attempt_failed(
                        step, status, attempt, None, "JobLost", None, "the Job disappeared"
                    )
                else:
                    self._wake(lost_at)
            elif job.state is JobState.ACTIVE:
                if step.timeout_seconds is None:
                    continue
                limit = started + timedelta(
                    seconds=step.timeout_seconds + STEP_TIMEOUT_GRACE_SECONDS
                )
                if self.now > limit:
                    self._delete(job.name, f"step timeout ({step.timeout_seconds}s) exceeded")
                    detail = f"still running {step.timeout_seconds}s after it was created"
                    self._attempt_failed(step, status, attempt, job, "Timeout", None, detail)
                else:
                    self._wake(limit)
            elif job.state is JobState.SUCCEEDED:
                self._job_succeeded(step, status, attempt, job)
            else:
                failure = job.failure_class or classify(None, job.reason).value
                self._attempt_failed(
                    step, status, attempt, job, failure, job.exit_code, job.message, job.reason
                )

    def _job_succeeded(
        self, step: Step, status: StepStatus, attempt: Attempt, job: ObservedJob
    ) -> None:
        result = self._job_result(job)
        if result.truncated and not result.output_ref:
            since = job.finished_at or attempt.started_at or self.now
            until = since + timedelta(seconds=TRUNCATED_REPORT_WAIT_SECONDS)
            if self.now < until:
                self._wake(until)
                return
        if (step.repeat is not None or step.accept is not None) and self.cel_budget.spent:
            # This pass has spent its time on CEL: accept and repeat.until are judged in the
            # next one.
            self._wait_for_cel()
            return
        if job.log_report is not None and job.output_ref is None:
            self.actions.append(
                StoreOutput(job_name=job.name, step=job.step, report=job.log_report)
            )
        rejected = self._gate(step, status, result)
        if rejected is not None:
            attempt.outcome = "Failed"
            attempt.finished_at = job.finished_at or self.now
            attempt.exit_code = job.exit_code if job.exit_code is not None else 0
            attempt.reason = FailureClass.QUALITY_GATE_FAILED.value
            attempt.message = _clip(f"{attempt.reason}: {rejected}", _MAX_DETAIL * 2)
            self._settled(status, attempt, job)
            self._after_failure(step, status, attempt)
            return
        attempt.outcome = "Succeeded"
        attempt.finished_at = job.finished_at or self.now
        attempt.exit_code = job.exit_code if job.exit_code is not None else 0
        self._record_usage(step, status, attempt, result)
        self._settled(status, attempt, job)
        self._iteration_done(step, status, result, cached=False, agent=attempt.agent)

    def _record_usage(
        self, step: Step, status: StepStatus, attempt: Attempt, result: StepResult
    ) -> None:
        """The attempt's usage from the tokens its agent reported, priced by its model."""
        try:
            agent = resolve_agent(self.spec, step, attempt.agent)
        except KeyError:  # no longer declared: its tokens count, without a price
            agent = AgentTemplate(name=attempt.agent)
        usage = attempt_usage(result.metrics, agent, self.limits.prices)
        attempt.usage = usage
        status.usage = step_usage(status)
        if usage is not None:
            self.usage_changed = True
            self.facts.append(
                UsageRecorded(
                    step=status.name,
                    agent=attempt.agent,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cost=decimal(usage.cost) if usage.cost is not None else None,
                )
            )

    def _tally(self) -> WorkflowUsage | None:
        """The run's usage: the status's when no attempt settled since it was written (a new
        run clears it), else added up from the attempts again."""
        currency = self.limits.prices.currency
        known = self.status.usage
        if not self.usage_changed and known is not None and known.currency == currency:
            self.run_usage = known
        else:
            self.run_usage = workflow_usage(self.status.steps, currency)
        self.tallied = True
        return self.run_usage

    def _check_budget(self) -> None:
        """Whether the run has reached its budget; the fact once, when it first does."""
        usage = self._tally()
        bound = budget_reached(self.spec.budget, usage)
        if bound is None or all(s.phase in TERMINAL_STEP_PHASES for s in self.status.steps):
            return  # within the budget, or nothing is left that it could stop
        self.budget_bound = bound
        before = self.status.usage
        if before is None or before.budget_exceeded is None:
            self.facts.append(BudgetExceeded(bound=bound))
            self._event("Warning", "BudgetExceeded", self._budget_message())

    def _budget_message(self) -> str:
        usage = self.run_usage
        budget = self.spec.budget
        if usage is None or budget is None or self.budget_bound is None:
            return "budget exceeded"
        if self.budget_bound == "maxTokens":
            return (
                f"budget exceeded: {usage.input_tokens + usage.output_tokens} tokens used, "
                f"spec.budget.maxTokens is {budget.max_tokens}"
            )
        currency = f" {self.limits.prices.currency}" if self.limits.prices.currency else ""
        return (
            f"budget exceeded: cost {usage.cost}{currency}, "
            f"spec.budget.maxCost is {budget.max_cost}{currency}"
        )

    @staticmethod
    def _job_result(job: ObservedJob) -> StepResult:
        """The result a succeeded Job reported.  With its full report from the pod log, the
        result refers to the output ConfigMap the plan stores it in."""
        result = job.result or StepResult()
        if job.log_report is not None:
            return result.model_copy(update={"output_ref": output_configmap_name(job.name)})
        if job.output_ref:
            result = result.model_copy(update={"output_ref": job.output_ref})
        return result

    def _attempt_failed(
        self,
        step: Step,
        status: StepStatus,
        attempt: Attempt,
        job: ObservedJob | None,
        reason: str,
        exit_code: int | None,
        summary: str,
        cause: str | None = None,
    ) -> None:
        """``reason`` is the failure class; ``cause`` the Kubernetes reason behind it."""
        attempt.outcome = "Failed"
        attempt.finished_at = self.now
        attempt.exit_code = exit_code
        attempt.reason = reason
        attempt.message = _describe(reason, exit_code, summary, cause)
        self._settled(status, attempt, job)
        retry_after = job.retry_after_seconds if job is not None else None
        self._after_failure(step, status, attempt, retry_after)

    def _settled(self, status: StepStatus, attempt: Attempt, job: ObservedJob | None) -> None:
        """The fact of an attempt that just got its outcome; ``job`` is its observed Job."""
        if attempt.outcome == "Succeeded":
            outcome = "fallback" if attempt.fallback else "succeeded"
        else:
            outcome = "failed"
        ran = job is not None and job.state is not JobState.ACTIVE
        job_finished_at = job.finished_at if ran and job is not None else None
        self.facts.append(
            AttemptFinished(
                step=status.name,
                agent=attempt.agent,
                outcome=outcome,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
                job_finished_at=job_finished_at,
                at=self.now,
                failure_class=attempt.reason if outcome == "failed" else None,
            )
        )

    def _step_finished(self, status: StepStatus, metrics: StepMetrics | None = None) -> None:
        """The fact of a step that just became Succeeded, Cached or Skipped."""
        first = status.attempts[0].agent if status.attempts else None
        self.facts.append(
            StepFinished(
                step=status.name,
                agent=status.agent or first or "unknown",
                phase=status.phase,
                metrics=metrics,
            )
        )

    def _attempts_allowed(self, step: Step, agent: str) -> int:
        rule = self.policy.rule_for(agent)
        if agent == step.agent:
            retries = step.retries or RetryPolicy()
            return max(retries.limit + 1, rule.max_attempts)
        return rule.max_attempts

    def _uncounted(self, rule: PolicyRule, attempts: list[Attempt]) -> dict[int, int]:
        """The failed ``attempts`` (one agent's, in one iteration) that its rule retried without
        counting them against its attempts: attempt number -> how many such retries its
        onFailure entry had made by then (each entry is bounded by its ``maxRetries``)."""
        used: dict[ClassRule, int] = {}
        uncounted: dict[int, int] = {}
        for earlier in attempts:
            if earlier.outcome != "Failed":
                continue
            entry = class_rule(rule.on_failure, earlier.reason)
            if entry is None or not entry.uncounted_retry:
                continue
            if used.get(entry, 0) < entry.max_retries:
                used[entry] = used.get(entry, 0) + 1
                uncounted[earlier.attempt] = used[entry]
        return uncounted

    def _after_failure(
        self, step: Step, status: StepStatus, attempt: Attempt, retry_after: float | None = None
    ) -> None:
        """The fallback tiers: retry, fallback agent, skip, fail; the rule's ``onFailure``
        entry (or the built-in one) for the failure class may retry without counting the
        attempt, go to the fallback at once, or fail the step."""
        name, agent = step.name, attempt.agent
        failure = attempt.message or attempt.reason or "failed"
        failure_class = attempt.reason or FailureClass.AGENT_ERROR.value
        this_iteration = [a for a in status.attempts if a.iteration == status.iteration]
        rule = self.policy.rule_for(agent)
        entry = class_rule(rule.on_failure, failure_class)
        mine = [a for a in this_iteration if a.agent == agent]
        uncounted = self._uncounted(rule, mine)
        tried = len(mine) - len(uncounted)
        if entry is not None and entry.action is FailureAction.FAIL:
            self._step_failed(
                status, f"{failure} (the fallback policy fails the step on {failure_class})"
            )
            return
        if entry is None or entry.action is FailureAction.RETRY_SAME_AGENT:
            number = uncounted.get(attempt.attempt)
            if number is not None or tried < self._attempts_allowed(step, agent):
                retries = step.retries or RetryPolicy()
                nth = number if number is not None else tried
                delay = min(
                    retries.backoff_seconds * retries.backoff_factor ** (nth - 1),
                    float(retries.max_backoff_seconds),
                )
                why = ""
                if entry is not None:
                    if retry_after is not None:
                        delay, why = retry_after, f"Retry-After {retry_after:g}s"
                    else:
                        why = "backoff"
                    if delay > entry.max_wait_seconds:
                        delay = float(entry.max_wait_seconds)
                        why += f", at most {entry.max_wait_seconds}s"
                    if number is not None:
                        why += (
                            f"; not counted against maxAttempts, retry {number} of "
                            f"{entry.max_retries}"
                        )
                    why = f" ({failure_class}: {why})"
                status.agent = agent
                status.next_attempt_at = self.now + timedelta(seconds=delay)
                status.message = (
                    f"attempt {attempt.attempt} failed: {failure}; retrying in {delay:g}s{why}"
                )
                self._event("Warning", "StepRetrying", f"step {name}: {status.message}")
                return
        visited = {a.agent for a in this_iteration} | {step.agent}
        fallback = self.policy.rule_for(agent).fallback
        if fallback is not None and fallback not in visited and fallback in self.agent_names:
            status.agent = fallback
            status.next_attempt_at = self.now
            status.fallback_used = True
            status.message = f"agent {agent} failed: {failure}; using fallback agent {fallback}"
            primary = f" (the step's agent is {step.agent})" if agent != step.agent else ""
            self._event(
                "Warning",
                "FallbackUsed",
                f"step {name}: agent {agent} failed{primary}: {failure}; "
                f"falling back to agent {fallback}",
            )
            return
        rule = self.policy.rule_for(step.agent)
        if rule.skip_if_unavailable and rule.criticality != "critical":
            self._skip(status, f"agent {agent} unavailable: {failure}", warning=True)
            return
        self._step_failed(status, failure)

    def _gate(self, step: Step, status: StepStatus, result: StepResult) -> str | None:
        """None when ``result`` passes the step's ``accept`` (or it has none), else why not:
        the expression and the values of the result it reads."""
        if step.accept is None:
            return None
        view = result_view(result, status.iteration)
        context = activation(
            ExpressionKind.ACCEPT,
            result=view,
            steps=self._steps_view(step),
            inputs=self.inputs,
            workflow=self._workflow_view(),
        )
        values = gate_values(step.accept, view)
        shown = f" ({values})" if values else ""
        try:
            if evaluate_bool(step.accept, context, pass_budget=self.cel_budget, may_defer=False):
                return None
        except ExpressionError as e:
            return f"accept: {step.accept} could not be judged: {e}{shown}"
        return f"accept: {step.accept} was false{shown}"

    # -- finishing steps --------------------------------------------------------------------

    def _iteration_done(
        self, step: Step, status: StepStatus, result: StepResult, *, cached: bool, agent: str
    ) -> None:
        status.result = result
        cache_policy = step.cache or CachePolicy()
        enabled = caching_enabled(self.spec, step)
        if not cached and agent == step.agent and enabled and status.cache_key:
            self.actions.append(
                WriteCache(
                    key=status.cache_key,
                    step=step.name,
                    result=result,
                    ttl_seconds=cache_policy.ttl_seconds,
                )
            )
        message: str | None = None
        if step.repeat is not None:
            context = activation(
                ExpressionKind.UNTIL,
                result=result_view(result, status.iteration),
                steps=self._steps_view(step),
                inputs=self.inputs,
                workflow=self._workflow_view(),
            )
            try:
                done = evaluate_bool(
                    step.repeat.until, context, pass_budget=self.cel_budget, may_defer=False
                )
            except ExpressionError as e:
                field = f"spec.steps[{self.step_index[step.name]}].repeat.until"
                self._step_failed(status, f"{field}: {e}")
                return
            if not done and status.iteration < step.repeat.max_iterations:
                status.iteration += 1
                status.agent = step.agent
                status.next_attempt_at = None
                status.message = f"iteration {status.iteration}: until was false"
                self._event(
                    "Normal",
                    "StepIterating",
                    f"step {step.name}: until was false after iteration "
                    f"{status.iteration - 1}; starting iteration {status.iteration}",
                )
                return
            if not done:
                message = "repeat: maxIterations reached before until was true"
        status.phase = StepPhase.CACHED if cached else StepPhase.SUCCEEDED
        status.message = message
        status.finished_at = self.now
        status.next_attempt_at = None
        self._step_finished(status, None if cached else result.metrics)
        if not cached:
            via = f" with fallback agent {agent}" if agent != step.agent else ""
            self._event("Normal", "StepSucceeded", f"step {step.name} succeeded{via}")

    def _skip(self, status: StepStatus, message: str, *, warning: bool) -> None:
        status.phase = StepPhase.SKIPPED
        status.message = message
        status.finished_at = self.now
        status.next_attempt_at = None
        self._step_finished(status)
        self._event(
            "Warning" if warning else "Normal",
            "StepSkipped",
            f"step {status.name} skipped: {message}",
        )

    def _step_failed(self, status: StepStatus, message: str) -> None:
        status.phase = StepPhase.FAILED
        status.message = message
        status.finished_at = self.now
        status.next_attempt_at = None
        self._event("Warning", "StepFailed", f"step {status.name} failed: {message}")
        if self.failed_step is None:
            self.failed_step = status.name

    # -- starting steps ---------------------------------------------------------------------

    def _launch(self) -> None:
        if self.spec.suspend:
            return
        if self.budget_bound is not None:
            self.waiting = WAITING_BUDGET.format(bound=self.budget_bound)
            return
        parallelism = self.spec.parallelism
        running = sum(1 for s in self.status.steps if s.phase is StepPhase.RUNNING)
        for name in topological_order(self.deps):
            status = self.by_name[name]
            step = self.steps[name]
            if status.phase is StepPhase.RUNNING:
                if status.attempts and status.attempts[-1].outcome == _RUNNING:
                    continue
                self._advance(step, status)
            elif status.phase is StepPhase.PENDING:
                if not self._ready(step, status):
                    continue
                if parallelism is not None and running >= parallelism:
                    continue
                if self.slots == 0:
                    self._hold(WAITING_NAMESPACE_LIMIT)
                    continue
                status.phase = StepPhase.RUNNING
                status.iteration = 1
                status.agent = step.agent
                status.started_at = self.now
                status.message = None
                running += 1
                self._advance(step, status)
            else:
                continue
            if status.phase is not StepPhase.RUNNING:
                running -= 1
            if self.failed_step is not None:
                return

    def _hold(self, why: str) -> None:
        self.waiting = why
        self._wake(self.now + timedelta(seconds=NAMESPACE_SLOT_RETRY_SECONDS))

    def _wait_for_cel(self) -> None:
        self.waiting = WAITING_CEL_TIME
        self._wake(self.now + timedelta(seconds=self.cel_budget.retry_seconds))

    def _ready(self, step: Step, status: StepStatus) -> bool:
        """True when the step should start now; settles it when it is skipped instead."""
        deps = self.deps[step.name]
        if any(self.by_name[d].phase not in TERMINAL_STEP_PHASES for d in deps):
            return False
        explicit = step.depends_on
        if explicit and all(self.by_name[d].phase is StepPhase.SKIPPED for d in explicit):
            self._skip(
                status,
                f"every dependency was skipped ({', '.join(explicit)})",
                warning=False,
            )
            return False
        if step.when is not None:
            context = activation(
                ExpressionKind.WHEN,
                steps=self._steps_view(step),
                inputs=self.inputs,
                workflow=self._workflow_view(),
            )
            try:
                go = evaluate_bool(step.when, context, pass_budget=self.cel_budget)
            except EvaluationDeferred:
                # This pass has spent its time on CEL; the step waits for the next one.
                self._wait_for_cel()
                return False
            except ExpressionError as e:
                self._step_failed(status, f"spec.steps[{self.step_index[step.name]}].when: {e}")
                return False
            if not go:
                self._skip(status, f"when: {step.when} was false", warning=False)
                return False
        return True

    def _advance(self, step: Step, status: StepStatus) -> None:
        """Start the step's next attempt, taking cached iterations as they come."""
        while status.phase is StepPhase.RUNNING:
            due = status.next_attempt_at
            if due is not None and due > self.now:
                self._wake(due)
                return
            agent_name = status.agent or step.agent
            own = agent_name == step.agent
            number = sum(1 for a in status.attempts if a.iteration == status.iteration) + 1
            try:
                agent = with_inputs(resolve_agent(self.spec, step, agent_name), self.inputs)
            except TemplateError as e:
                self._step_failed(status, f"agent {agent_name}: {e}")
                return
            allowed = self.limits.allowed_images
            if allowed is not None and agent.image not in allowed:
                self._step_failed(
                    status,
                    f"image {agent.image!r} of agent {agent_name!r} is not allowed "
                    f"(allowed: {', '.join(sorted(allowed)) or 'none'})",
                )
                return
            try:
                prompt = self._render(step, status)
            except TemplateError as e:
                self._step_failed(status, f"prompt: {e}")
                return
            key: str | None = None
            outcome: str | None = None
            if own and caching_enabled(self.spec, step):
                key = cache_key(
                    agent,
                    prompt,
                    self._upstream(step, status),
                    status.iteration,
                    inputs=self.inputs,
                )
                if number == 1:
                    entry = self.cache(key)
                    if entry is not None and entry.expires_at > self.now:
                        judged = step.repeat is not None or step.accept is not None
                        if judged and self.cel_budget.spent:
                            # As in _job_succeeded: until is judged in the next pass.
                            self._wait_for_cel()
                            return
                        if self._gate(step, status, entry.result) is None:
                            status.cache_key = key
                            self.facts.append(CacheOutcome(step=step.name, key=key, result="hit"))
                            self._event(
                                "Normal",
                                "CacheHit",
                                f"step {step.name}: result of iteration {status.iteration} "
                                f"reused from cache ({key[:19]}…)",
                            )
                            self._iteration_done(
                                step, status, entry.result, cached=True, agent=agent_name
                            )
                            continue
                        # Stored before the step's accept said what it says now: not reused.
                        entry = None
                    outcome = "expired" if entry is not None else "miss"
            if self.slots == 0:
                self._hold(WAITING_NAMESPACE_LIMIT)
                return
            rule = matching_rule(self.grant.rules, agent)
            if rule is not None and not self._take_slot(rule, step, status):
                self._wait_for_limit(rule, step, status)
                return
            if self.slots is not None:
                self.slots -= 1
            if key is not None:
                status.cache_key = key
            if outcome is not None and key is not None:
                self.facts.append(CacheOutcome(step=step.name, key=key, result=outcome))
            self._create(
                step, status, agent, agent_name, number, prompt, key, rule.name if rule else None
            )
            return

    def _queue_key(self, step: Step, status: StepStatus) -> QueueKey:
        """The waiting attempt's place in a limit's queue: since when it could start (its
        backoff's end, its previous attempt's end, or its dependencies' end), then who it is.
        All of it is in the status, so the order survives a restart of the operator."""
        since = (
            status.next_attempt_at
            or last_finished(status.attempts)
            or self._ready_at(step)
            or self.now
        )
        meta = self.workflow.metadata
        return (since, meta.namespace or "", meta.name, step.name)

    def _take_slot(self, rule: ConcurrencyRule, step: Step, status: StepStatus) -> bool:
        key = self._queue_key(step, status)
        taken = self.limit_used.get(rule.name, 0)
        owed = self.grant.waiters_before(rule.name, key)
        if owed + taken >= self.grant.free_slots(rule.name):
            return False
        self.limit_used[rule.name] = taken + 1
        return True

    def _wait_for_limit(self, rule: ConcurrencyRule, step: Step, status: StepStatus) -> None:
        since = self._queue_key(step, status)[0]
        self.waiters.append(Waiter(limit=rule.name, step=step.name, since=since))
        message = WAITING_LIMIT.format(limit=rule.name, max=rule.max)
        if not status.attempts:
            # It has not started: it stays Pending until its slot comes.
            status.phase = StepPhase.PENDING
            status.iteration = 0
            status.agent = None
            status.started_at = None
        status.message = message
        self._hold(message)

    def _create(
        self,
        step: Step,
        status: StepStatus,
        agent: AgentTemplate,
        agent_name: str,
        number: int,
        prompt: str,
        key: str | None,
        limit: str | None = None,
    ) -> None:
        fallback = agent_name != step.agent
        meta = self.workflow.metadata
        name = job_name(
            meta.name, step.name, self.status.run, status.iteration, number, uid=meta.uid or ""
        )
        if not status.attempts:
            self.facts.append(
                StepStarted(
                    step=step.name,
                    agent=agent_name,
                    ready_at=self._ready_at(step),
                    started_at=self.now,
                )
            )
        elif fallback and not any(a.fallback for a in status.attempts):
            self.facts.append(
                FallbackTaken(
                    step=step.name, agent=status.attempts[0].agent, fallback_agent=agent_name
                )
            )
        status.attempts.append(
            Attempt(
                attempt=number,
                agent=agent_name,
                job_name=name,
                iteration=status.iteration,
                fallback=fallback,
                started_at=self.now,
                outcome="Running",
                concurrency_limit=limit,
            )
        )
        status.agent = agent_name
        status.next_attempt_at = None
        if fallback:
            status.fallback_used = True
        price = self.limits.prices.price(
            agent.provider.value if agent.provider else None, agent.model
        )
        self.actions.append(
            CreateJob(
                job_name=name,
                step=step.name,
                run=self.status.run,
                iteration=status.iteration,
                attempt=number,
                agent=agent,
                fallback=fallback,
                prompt=prompt,
                cache_key=key,
                timeout_seconds=step.timeout_seconds,
                max_tokens=remaining_tokens(self.spec.budget, self.run_usage, price),
                concurrency_limit=limit,
                workspace_claim=self._workspace_claim(),
            )
        )
        detail = f"agent {agent_name}, attempt {number}"
        if step.repeat is not None:
            detail += f", iteration {status.iteration}"
        if fallback:
            detail += ", fallback"
        self._event("Normal", "StepStarted", f"step {step.name} started ({detail})")
        self._wake(self.now + timedelta(seconds=LOST_JOB_GRACE_SECONDS))

    def _claim_name(self) -> str | None:
        """The claim mounted at /workspace: the one the operator makes for the Workflow, the
        author's own (``claimName``), or None without a workspace."""
        workspace = self.spec.workspace
        if workspace is None:
            return None
        if workspace.volume_claim_template is not None:
            meta = self.workflow.metadata
            return workspace_claim_name(meta.name, uid=meta.uid or "")
        return workspace.claim_name

    def _workspace_claim(self) -> str | None:
        """The workspace claim a Job mounts; with it, ahead of the pass's first CreateJob, the
        action that makes sure the claim is there (once per pass)."""
        name = self._claim_name()
        workspace = self.spec.workspace
        if name is None or workspace is None:
            return None
        if not any(isinstance(a, EnsureWorkspaceClaim) for a in self.actions):
            template = workspace.volume_claim_template
            self.actions.insert(0, EnsureWorkspaceClaim(name=name, template=template))
        return name

    def _ready_at(self, step: Step) -> datetime | None:
        """When ``step`` could run: the run started and its last dependency finished."""
        ready = [self.status.started_at] + [
            self.by_name[d].finished_at for d in self.deps[step.name]
        ]
        return max((t for t in ready if t is not None), default=None)

    # -- views of the other steps -----------------------------------------------------------

    def _workflow_view(self) -> dict[str, Any]:
        meta = self.workflow.metadata
        return workflow_view(meta.name, meta.namespace or "")

    def _steps_view(self, step: Step) -> dict[str, Any]:
        return {
            name: step_view(self.by_name[name], self.by_name[name].phase in RESULT_STEP_PHASES)
            for name in self.ancestors(step.name)
        }

    def _render(self, step: Step, status: StepStatus) -> str:
        referenced = {r.step for r in _template_references(step.prompt) if r.step is not None}
        results: dict[str, StepResult] = {}
        phases: dict[str, str] = {}
        iterations: dict[str, int] = {}
        for name in sorted(referenced):
            if not self.ancestors.contains(step.name, name):
                continue
            other = self.by_name[name]
            phases[name] = str(other.phase)
            iterations[name] = other.iteration
            if other.phase in RESULT_STEP_PHASES and other.result is not None:
                results[name] = other.result
        if step.repeat is not None and status.iteration > 1 and status.result is not None:
            results[step.name] = status.result
        context = PromptContext(
            workflow=self.workflow.metadata.name,
            namespace=self.workflow.metadata.namespace or "",
            step=step.name,
            iteration=status.iteration,
            phases=phases,
            iterations=iterations,
            inputs=self.inputs,
        )
        return render_prompt(step.prompt, results, context)

    def _upstream(self, step: Step, status: StepStatus) -> dict[str, str]:
        digests: dict[str, str] = {}
        for name in self.deps[step.name]:
            other = self.by_name[name]
            if other.phase in RESULT_STEP_PHASES and other.result is not None:
                digests[name] = result_digest(other.result)
            else:
                digests[name] = f"phase:{other.phase}"
        if status.iteration > 1 and status.result is not None:
            digests[step.name] = result_digest(status.result)
        return digests

    # -- the Workflow's outcome -------------------------------------------------------------

    def _check_deadline(self) -> None:
        seconds = self.spec.active_deadline_seconds
        started = self.status.started_at
        if seconds is None or started is None:
            return
        if all(s.phase in TERMINAL_STEP_PHASES for s in self.status.steps):
            return
        deadline = started + timedelta(seconds=seconds)
        if self.now >= deadline:
            message = f"workflow exceeded activeDeadlineSeconds ({seconds}s)"
            self._fail_workflow(
                "DeadlineExceeded", message, message, cancelled="cancelled: deadline exceeded"
            )
        else:
            self._wake(deadline)

    def _fail_workflow(self, reason: str, message: str, detail: str, *, cancelled: str) -> None:
        status = self.status
        for step in status.steps:
            if step.phase is not StepPhase.RUNNING:
                continue
            for attempt in step.attempts:
                if attempt.outcome != _RUNNING:
                    continue
                job = self.index.get((step.name, attempt.iteration, attempt.attempt))
                if job is None or job.state is JobState.ACTIVE:
                    self._delete(attempt.job_name, "workflow failed")
                attempt.outcome = "Failed"
                attempt.reason = "Cancelled"
                attempt.message = "workflow failed"
                attempt.finished_at = self.now
                self._settled(step, attempt, job)
            step.phase = StepPhase.FAILED
            step.message = cancelled
            step.finished_at = self.now
            step.next_attempt_at = None
        status.phase = WorkflowPhase.FAILED
        status.message = message
        self.finished_run = True
        if status.finished_at is None:
            status.finished_at = self.now
        self.stall = (reason, detail)
        self._event("Warning", "WorkflowFailed", message)

    def _conclude(self) -> None:
        status = self.status
        if status.phase is WorkflowPhase.FAILED:
            return
        if self.failed_step is None:
            self.failed_step = next(
                (s.name for s in status.steps if s.phase is StepPhase.FAILED), None
            )
        if self.failed_step is not None:
            failed = self.by_name[self.failed_step]
            message = f"step {failed.name} failed: {failed.message or 'failed'}"
            self._fail_workflow(
                "StepFailed", message, message, cancelled="cancelled: workflow failed"
            )
            return
        finished = all(s.phase in TERMINAL_STEP_PHASES for s in status.steps)
        if self.budget_bound is not None and not finished and not self._attempt_running():
            message = self._budget_message()
            self._fail_workflow(
                "BudgetExceeded", message, message, cancelled="cancelled: budget exceeded"
            )
            return
        if all(s.phase in TERMINAL_STEP_PHASES for s in status.steps):
            status.phase = WorkflowPhase.SUCCEEDED
            status.finished_at = status.finished_at or self.now
            self.finished_run = True
            counts = step_counts(status.steps)
            self._event("Normal", "WorkflowSucceeded", f"workflow succeeded: {counts}")
            fallback, skipped = self._degraded_steps()
            if fallback or skipped:
                self._event("Warning", "WorkflowDegraded", _degraded_message(fallback, skipped))
            return
        started = any(s.phase is not StepPhase.PENDING for s in status.steps)
        status.phase = WorkflowPhase.RUNNING if started else WorkflowPhase.PENDING

    def _attempt_running(self) -> bool:
        return any(
            a.outcome == _RUNNING
            for s in self.status.steps
            if s.phase is StepPhase.RUNNING
            for a in s.attempts[-1:]
        )

    def _degraded_steps(self) -> tuple[list[str], list[str]]:
        steps = self.status.steps
        fallback = [s.name for s in steps if s.fallback_used]
        # Only a skip after failed attempts (agent unavailable) degrades; `when` skips do not.
        skipped = [s.name for s in steps if s.phase is StepPhase.SKIPPED and s.attempts]
        return fallback, skipped

    def _summarise(self) -> None:
        status = self.status
        steps = status.steps
        generation = status.observed_generation
        now = self.now
        # Steps' usage changes only when an attempt settles (_record_usage); the run's is the
        # tally _check_budget made after the attempts settled, when it made one.
        usage = self.run_usage if self.tallied else self._tally()
        if usage is not None and self.budget_bound is not None:
            usage = usage.model_copy(update={"budget_exceeded": self.budget_bound})
        status.usage = usage
        status.progress = progress(steps)
        fallback, skipped = self._degraded_steps()
        status.degraded = bool(fallback or skipped)
        counts = step_counts(steps)
        conditions = status.conditions
        if status.phase is WorkflowPhase.FAILED:
            reason, detail = self.stall or ("Failed", status.message or "failed")
            message = status.message or "failed"
            conditions = set_condition(
                conditions, ConditionType.READY, "False", "Failed", message, generation, now
            )
            conditions = set_condition(
                conditions,
                ConditionType.STALLED,
                "True",
                reason,
                _clip(detail, MAX_CONDITION_MESSAGE),
                generation,
                now,
            )
            conditions = set_condition(
                conditions, ConditionType.RECONCILING, "False", "Failed", message, generation, now
            )
        elif status.phase is WorkflowPhase.SUCCEEDED:
            status.message = counts
            conditions = set_condition(
                conditions, ConditionType.READY, "True", "Succeeded", counts, generation, now
            )
            conditions = set_condition(
                conditions, ConditionType.RECONCILING, "False", "Succeeded", "", generation, now
            )
            conditions = set_condition(
                conditions, ConditionType.STALLED, "False", "Succeeded", "", generation, now
            )
        else:
            parts = [counts]
            if self.spec.suspend:
                parts.append("suspended")
            if self.waiting:
                parts.append(self.waiting)
            status.message = "; ".join(parts)
            reconciling = (
                ("Suspended", "suspended")
                if self.spec.suspend
                else (
                    "Progressing",
                    status.progress,
                )
            )
            conditions = set_condition(
                conditions,
                ConditionType.READY,
                "False",
                "Progressing",
                status.message,
                generation,
                now,
            )
            conditions = set_condition(
                conditions, ConditionType.RECONCILING, "True", *reconciling, generation, now
            )
            conditions = set_condition(
                conditions, ConditionType.STALLED, "False", "Progressing", "", generation, now
            )
        if status.degraded:
            conditions = set_condition(
                conditions,
                ConditionType.DEGRADED,
                "True",
                "FallbackUsed" if fallback else "StepSkipped",
                _degraded_message(fallback, skipped),
                generation,
                now,
            )
        else:
            conditions = set_condition(
                conditions, ConditionType.DEGRADED, "False", "NotDegraded", "", generation, now
            )
        status.conditions = conditions

    def _expire(self) -> None:
        status = self.status
        ttl = self.spec.ttl_seconds_after_finished
        if ttl is None or status.phase not in TERMINAL_WORKFLOW_PHASES:
            return
        if status.finished_at is None:
            return
        expiry = status.finished_at + timedelta(seconds=ttl)
        if self.now >= expiry:
            self.actions.append(DeleteWorkflow(reason=f"ttlSecondsAfterFinished ({ttl}s) passed"))
        else:
            self._wake(expiry)


def _degraded_message(fallback: list[str], skipped: list[str]) -> str:
    parts = []
    if fallback:
        parts.append(f"fallback agent used by: {', '.join(fallback)}")
    if skipped:
        parts.append(f"skipped because their agent was unavailable: {', '.join(skipped)}")
    return "; ".join(parts)
