"""Turn the Job and Pod objects the operator watches into small observations (pure).

The indexes keep only these summaries, not whole objects, so memory stays proportional to the
number of step attempts, and planning reads plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from agentflow.api.models import StepResult
from agentflow.engine.caching import bounded_result
from agentflow.engine.failures import classify
from agentflow.engine.types import (
    LABEL_AGENT,
    LABEL_ATTEMPT,
    LABEL_ITERATION,
    LABEL_RUN,
    LABEL_STEP,
    LABEL_WORKFLOW,
    JobState,
    ObservedJob,
)
from agentflow.report import decode_termination_message, parse_report, reported_failure

# Waiting reasons after which a pod will not start by itself within a step's lifetime.
STUCK_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
STUCK_GRACE = timedelta(seconds=60)
# How long a finished Job may lack its pod's terminated state before we stop waiting for it.
POD_STATUS_GRACE = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class PodSummary:
    job_name: str
    # The uid of the Job that owns the pod: pods join their Job by it, never by name alone.
    job_uid: str
    name: str
    created_at: datetime | None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    terminated: bool = False
    waiting_reason: str | None = None
    waiting_message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    succeeded: bool = False  # the pod's phase is Succeeded


@dataclass(frozen=True, slots=True)
class JobSummary:
    name: str
    uid: str
    # The uid of the Workflow that controls the Job (its ownerReference), or None.  Labels say
    # which attempt a Job is, but anyone who can create Jobs can copy them: a Job belongs to a
    # Workflow only through this reference, which names the Workflow's uid.
    owner_uid: str | None
    workflow: str
    step: str
    run: int
    iteration: int
    attempt: int
    agent: str
    created_at: datetime | None
    state: JobState
    reason: str | None
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    deleting: bool = False


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def controller_uid(meta: Mapping[str, Any], kind: str) -> str | None:
    """The uid in ``meta``'s controlling ownerReference when it is of ``kind``, else None."""
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == kind and owner.get("uid"):
            return str(owner["uid"])
    return None


def summarize_job(job: Mapping[str, Any]) -> JobSummary | None:
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    if LABEL_WORKFLOW not in labels or LABEL_STEP not in labels:
        return None
    status = job.get("status") or {}
    state, reason, message, finished = JobState.ACTIVE, None, None, None
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            state, finished = JobState.SUCCEEDED, _time(condition.get("lastTransitionTime"))
        elif condition.get("type") == "Failed":
            state = JobState.FAILED
            reason, message = condition.get("reason"), condition.get("message")
            finished = _time(condition.get("lastTransitionTime"))
    return JobSummary(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        owner_uid=controller_uid(meta, "Workflow"),
        workflow=labels[LABEL_WORKFLOW],
        step=labels[LABEL_STEP],
        run=_int(labels.get(LABEL_RUN), 1),
        iteration=_int(labels.get(LABEL_ITERATION), 1),
        attempt=_int(labels.get(LABEL_ATTEMPT), 1),
        agent=labels.get(LABEL_AGENT, ""),
        created_at=_time(meta.get("creationTimestamp")),
        state=state,
        reason=reason,
        message=message,
        started_at=_time(status.get("startTime")),
        finished_at=_time(status.get("completionTime")) or finished,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def summarize_pod(pod: Mapping[str, Any]) -> PodSummary | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    job_name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    job_uid = controller_uid(meta, "Job")
    if not job_name or not job_uid:
        return None
    summary = PodSummary(
        job_name=job_name,
        job_uid=job_uid,
        name=meta.get("name", ""),
        created_at=_time(meta.get("creationTimestamp")),
        succeeded=(pod.get("status") or {}).get("phase") == "Succeeded",
    )
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if not statuses:
        return summary
    state = statuses[0].get("state") or {}
    if "terminated" in state:
        t = state["terminated"] or {}
        return replace(
            summary,
            terminated=True,
            exit_code=t.get("exitCode"),
            reason=t.get("reason"),
            message=t.get("message"),
            started_at=_time(t.get("startedAt")),
            finished_at=_time(t.get("finishedAt")),
        )
    if "waiting" in state:
        w = state["waiting"] or {}
        return replace(summary, waiting_reason=w.get("reason"), waiting_message=w.get("message"))
    return summary


def _pods_by_job(pods: Iterable[PodSummary]) -> dict[str, PodSummary]:
    """Each Job's pod by the Job's uid, preferring one that has terminated.

    By uid, not by name: a pod of another Job that had the same name (a Job deleted and made
    again, by us or by someone else) must never lend its exit code to ours.
    """
    by_job: dict[str, PodSummary] = {}
    for candidate in pods:
        current = by_job.get(candidate.job_uid)
        if current is None or candidate.terminated or not current.terminated:
            by_job[candidate.job_uid] = candidate
    return by_job


def _held_until(job: JobSummary, pod: PodSummary | None) -> datetime | None:
    """Until when a finished Job is still shown active while its pod's final state is missing."""
    if job.state is JobState.ACTIVE or job.finished_at is None:
        return None
    if pod is not None and pod.terminated:
        return None
    return job.finished_at + POD_STATUS_GRACE


def _stuck_from(pod: PodSummary | None) -> datetime | None:
    """When a pod waiting on an error it will not get over counts as stuck."""
    if pod is None or pod.waiting_reason not in STUCK_WAITING_REASONS or pod.created_at is None:
        return None
    return pod.created_at + STUCK_GRACE


def recheck_at(
    jobs: Iterable[JobSummary], pods: Iterable[PodSummary], now: datetime
) -> datetime | None:
    """The next moment a grace period of :func:`observe` runs out and its answer changes.

    No watch event marks that moment (a deleted pod never reports a final state, a pod stuck
    on an image may not change again), so the caller must plan again then.
    """
    pods_by_job = _pods_by_job(pods)
    moments: list[datetime] = []
    for job in jobs:
        pod = pods_by_job.get(job.uid)
        for moment in (_held_until(job, pod), _stuck_from(pod)):
            if moment is not None and moment > now:
                moments.append(moment)
    return min(moments, default=None)


def observe(
    jobs: Iterable[JobSummary], pods: Iterable[PodSummary], now: datetime
) -> list[ObservedJob]:
    """Observations for the planner.

    A Job is reported finished only together with its pod's terminated state (exit code and
    termination message), since the two arrive on different watches; after a short grace the
    Job's own verdict is used alone.  A pod that Succeeded finishes its Job at once.  A pod
    stuck on an image or config error is reported as a failed attempt marked ``stuck``: the
    plan deletes its Job.  :func:`recheck_at` says when these graces end.

    A failed attempt gets its failure class: the one its report or termination message states
    (``failureClass``), else the one its pod's reason (``OOMKilled``) or its Job's
    (``DeadlineExceeded``, an image pull error) implies, else ``AgentError``.
    """
    pods_by_job = _pods_by_job(pods)
    observed: list[ObservedJob] = []
    for job in jobs:
        pod = pods_by_job.get(job.uid)
        state, reason, message = job.state, job.reason, job.message
        finished = job.finished_at
        held = _held_until(job, pod)
        if held is not None and now < held:
            state = JobState.ACTIVE
        if (
            state is JobState.ACTIVE
            and not job.deleting
            and pod is not None
            and pod.succeeded
            and pod.terminated
            and pod.exit_code == 0
        ):
            # The Job controller marks the Job Complete about a second later (it batches pod
            # updates); with backoffLimit 0 and restartPolicy Never the pod has decided already.
            state, finished = JobState.SUCCEEDED, pod.finished_at
        if state is JobState.ACTIVE and job.deleting:
            state, reason = JobState.FAILED, "JobDeleted"
            message = "the step's Job was deleted before it finished"
        stuck_from = _stuck_from(pod)
        stuck = False
        if state is JobState.ACTIVE and pod and stuck_from is not None and now >= stuck_from:
            state, reason, message = JobState.FAILED, pod.waiting_reason, pod.waiting_message
            stuck = True
        exit_code = pod.exit_code if pod is not None else None
        termination = (pod.message if pod is not None else None) or message
        if state is JobState.FAILED and pod is not None and pod.terminated and reason is None:
            reason = pod.reason
        result, failure = reported(state, termination)
        failure_class: str | None = None
        retry_after: float | None = None
        if state is JobState.FAILED:
            said = reported_failure(termination)
            pod_reason = pod.reason if pod is not None and pod.terminated else None
            stated = said.failure_class.value if said.failure_class is not None else None
            failure_class = classify(stated, pod_reason, reason).value
            retry_after = said.retry_after_seconds
        observed.append(
            ObservedJob(
                name=job.name,
                step=job.step,
                run=job.run,
                iteration=job.iteration,
                attempt=job.attempt,
                agent=job.agent,
                state=state,
                started_at=(pod.started_at if pod else None) or job.started_at or job.created_at,
                finished_at=(pod.finished_at if pod else None) or finished,
                exit_code=exit_code,
                reason=reason if state is JobState.FAILED else None,
                message=failure,
                result=result,
                stuck=stuck,
                failure_class=failure_class,
                retry_after_seconds=retry_after,
            )
        )
    return observed


def reported(state: JobState, termination_message: str | None) -> tuple[StepResult | None, str]:
    """What an attempt in ``state`` reported in ``termination_message``, parsed once: the result
    of a succeeded attempt (None when it wrote none), the failure message of a failed one."""
    if not (termination_message or "").strip():
        return None, ""
    parsed = decode_termination_message(termination_message)
    if state is JobState.SUCCEEDED:
        return parsed, ""
    if state is JobState.FAILED:
        return None, parsed.summary
    return None, ""


def with_log_report(job: ObservedJob, text: str) -> ObservedJob:
    """``job`` with its full report ``text``, read from its pod log, for the plan to store.

    An attempt that wrote no termination message reported only there: that report, parsed and
    cut to a result's bounds, is its result.
    """
    if job.result is not None:
        return replace(job, log_report=text)
    size = len(text.encode("utf-8", "surrogatepass"))
    return replace(job, log_report=text, result=bounded_result(parse_report(text), full_size=size))
