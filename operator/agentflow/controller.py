"""One reconcile pass for one Workflow: gather, observe (pure), plan (pure), execute, write the
status once.

The handlers' workers call :func:`reconcile` for a Workflow's key whenever the Workflow or one
of its Jobs or Pods changes, or when the plan asked to be called again (backoff, deadlines,
TTL).
All progress lives in the Workflow status and the Jobs, so a restarted operator carries on
where the last one stopped: Job names are deterministic and creating an existing Job that we
own counts as success, so no step attempt ever gets two Jobs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agentflow import engine
from agentflow.api.models import (
    TERMINAL_WORKFLOW_PHASES,
    AgentFallbackPolicySpec,
    ConditionType,
    StepStatus,
    Workflow,
    WorkflowPhase,
    WorkflowSpec,
    WorkflowStatus,
)
from agentflow.apierror import ApiError
from agentflow.children import (
    WorkflowRef,
    build_step_job,
    cache_configmap,
    output_configmap,
    output_configmap_name,
    workspace_claim,
)
from agentflow.config import OperatorConfig
from agentflow.engine.conditions import ConditionStatus, set_condition
from agentflow.engine.expressions import CelTime, PassBudget
from agentflow.engine.types import (
    Action,
    CacheEntry,
    CreateJob,
    DeleteJob,
    DeleteWorkflow,
    EnsureWorkspaceClaim,
    Fact,
    FallbackPolicy,
    JobState,
    Limits,
    ObservedJob,
    Plan,
    RecordEvent,
    StoreOutput,
    WorkflowFinished,
    WriteCache,
)
from agentflow.engine.usage import ConcurrencyGrant, QueueKey, Waiter
from agentflow.events import EventRecorder
from agentflow.kube import CreateOutcome, Kube, is_refusal, is_too_large
from agentflow.metrics import OperatorMetrics, metric_updates
from agentflow.observe import JobSummary, PodSummary, observe, recheck_at, with_log_report
from agentflow.workqueue import WorkQueue

logger = logging.getLogger("agentflow.controller")

Key = tuple[str, str]  # (namespace, workflow name)
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]

# Reasons of what the API server refused (see ``kube.is_refusal``).
JOB_REFUSED = "JobRefused"
OUTPUT_REFUSED = "OutputRefused"
CACHE_WRITE_REFUSED = "CacheWriteRefused"
MAX_CONFLICT_RETRIES = 5
# A Job name held by a Job that is not this Workflow's fails that attempt (never adopted, never
# deleted); the plan made after that may start attempts whose names are taken too.
JOB_CONFLICT = "JobConflict"
JOB_CONFLICT_DETAIL = "it is left alone, neither adopted nor deleted"
MAX_JOB_CONFLICT_REPLANS = 3
# The workspace claim cannot be had (another's claim under the name, an existing claim that is
# missing, a claim the API server refused): the Jobs that would mount it are not created, and
# their attempts fail with this reason.
WORKSPACE_UNAVAILABLE = "WorkspaceUnavailable"
# A step Job this process created counts against its namespace's limit until the Job watch
# shows it, or for this long at most (it may have been deleted before it was ever seen).
LAUNCH_VISIBLE_SECONDS = 30.0


def now_utc() -> datetime:
    return datetime.now(UTC)


def refused_output(job: ObservedJob, message: str) -> ObservedJob:
    """``job`` as an attempt that failed (reason ``OutputRefused``, ``message``): its full report
    cannot be kept, since the API server refused the output ConfigMap.

    The planner then retries or falls back as after any failure (under the built-in policy the
    step and the Workflow fail, with the server's message), instead of the pass trying to store
    the same refused object again every few seconds.
    """
    return replace(
        job,
        state=JobState.FAILED,
        reason=OUTPUT_REFUSED,
        message=message,
        result=None,
        log_report=None,
    )


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
    # Conditions other clients own are kept; ours are set.
    conditions = status.conditions
    settings: tuple[tuple[ConditionType, ConditionStatus, str], ...] = (
        (ConditionType.READY, "False", message),
        (ConditionType.STALLED, "True", message),
        (ConditionType.RECONCILING, "False", ""),
    )
    for type_, value, text in settings:
        conditions = set_condition(conditions, type_, value, "InvalidSpec", text, generation, now)
    status.conditions = conditions
    return status


def status_too_large(
    new: WorkflowStatus, error: str, generation: int | None, now: datetime
) -> WorkflowStatus:
    """A small Failed status for a Workflow whose full status cannot be stored."""
    message = (
        "the Workflow's status no longer fits in the API server's storage limit "
        f"({error}); reduce the number or size of steps, prompts or results"
    )
    status = new.model_copy(deep=True)
    status.phase = WorkflowPhase.FAILED
    status.message = message
    status.finished_at = status.finished_at or now
    status.steps = [StepStatus(name=s.name, phase=s.phase) for s in new.steps]
    status.conditions = invalid_object_status(status, generation, message, now).conditions
    for condition in status.conditions:
        if condition.reason == "InvalidSpec":
            condition.reason = "StatusTooLarge"
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
        older = revision_before(
            resource_version, (self.body.get("metadata") or {}).get("resourceVersion")
        )
        return resource_version == self.previous_resource_version if older is None else older


def revision_before(a: str | None, b: str | None) -> bool | None:
    """Whether resourceVersion ``a`` comes before ``b``; None when one is not a number.

    On etcd, resourceVersions are revisions that only grow; the API does not promise it, so a
    caller decides what a version that is not a number means.
    """
    try:
        return int(a or 0) < int(b or 0)
    except ValueError:
        return None


def is_older(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether object ``a`` is an older version than ``b`` of the same object (same uid); if a
    version is not a number, neither is taken as older."""
    meta_a, meta_b = a.get("metadata") or {}, b.get("metadata") or {}
    if meta_a.get("uid") != meta_b.get("uid"):
        return False
    return bool(revision_before(meta_a.get("resourceVersion"), meta_b.get("resourceVersion")))


@dataclass(frozen=True)
class ParsedSpec:
    """A Workflow's spec as validated for one generation of it (see :func:`parse_workflow`)."""

    uid: str
    generation: int
    spec: WorkflowSpec


@dataclass(frozen=True)
class Launch:
    """A step Job this process created, which the watch may not have shown yet."""

    at: float  # time.monotonic() when it was created
    owner: Key  # its Workflow's (namespace, uid)
    job_name: str


# Whether the watch shows Job ``job_name`` among the Jobs of the Workflow (namespace, uid).
JobShown = Callable[[Key, str], bool]


@dataclass
class Runtime:
    """Operator-wide state shared by the handlers (kopf's ``memo``)."""

    kube: Kube
    metrics: OperatorMetrics
    config: OperatorConfig
    post_event: EventPoster
    # The recorder behind post_event, when there is one: it holds Events to merge them, and a
    # deleted Workflow's are dropped (see agentflow.events).
    events: EventRecorder | None = None
    # The Workflows to reconcile: woken keys wait here for one of the workers.
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    # Each Workflow as the watch last delivered it: what a worker's pass plans from.
    workflows: dict[Key, Mapping[str, Any]] = field(default_factory=dict)
    # Finished Workflows with nothing due, whose bodies are not kept (see rest): a pass would
    # plan nothing until the Workflow itself changes, and that watch event brings the body.
    resting: set[Key] = field(default_factory=set)
    written: dict[Key, Written] = field(default_factory=dict)
    # The last summary of each watched step Job and pod, per Workflow and by the child's uid: a
    # watch event that leaves it unchanged (a Job's ready count, a pod's node) changes no plan.
    children_seen: dict[Key, dict[str, JobSummary | PodSummary]] = field(default_factory=dict)
    # Output ConfigMaps this process has stored, per Workflow (dropped when it is deleted).
    outputs_stored: dict[Key, set[str]] = field(default_factory=dict)
    phases: dict[Key, str] = field(default_factory=dict)
    # The validated spec of each unfinished Workflow, for its current generation.
    specs: dict[Key, ParsedSpec] = field(default_factory=dict)
    # The status each unfinished Workflow's last write stored, as the model it was written
    # from, by the resourceVersion the write gave the object: a pass from that very version
    # plans from it rather than validating the same status again (see status_of).
    stored_statuses: dict[Key, tuple[str, WorkflowStatus]] = field(default_factory=dict)
    last_heartbeat: float = field(default_factory=time.monotonic)
    cache_names: set[Key] = field(default_factory=set)
    # The workspace claim this process has seen in place, per Workflow (by its uid and the
    # claim's name): later passes do not ask the API again.
    claims_ready: dict[Key, tuple[str, str]] = field(default_factory=dict)
    # Step Jobs created by this process and not yet seen by the watch: scope (a namespace, or
    # a concurrency limit's limit_scope) -> (its Workflow's uid, the Job's name) -> the launch.
    launched: dict[str, dict[tuple[str, str], Launch]] = field(default_factory=dict)
    is_leader: bool = True
    # Each namespace's CEL time, from which every pass draws its budget.
    cel_time: CelTime = field(default_factory=CelTime)
    # The step attempts waiting for each concurrency limit: limit -> Workflow -> their places.
    # Rebuilt by every pass of each Workflow from its plan (the places come from the status).
    limit_waiters: dict[str, dict[Key, list[QueueKey]]] = field(default_factory=dict)
    # Each limit's waiters, sorted (see limit_queue).
    limit_queues: dict[str, list[QueueKey]] = field(default_factory=dict)
    # The time a pass plans at (tests set a fake clock).
    clock: Callable[[], datetime] = now_utc

    def wake(self, key: Key) -> None:
        """Queue a pass of ``key``, if the watch has delivered such a Workflow."""
        if key in self.workflows:
            self.queue.add(key)

    def saw_workflow(self, key: Key, body: Mapping[str, Any]) -> None:
        """Keep ``body`` as the Workflow to plan from, unless what is kept is newer.

        A pass that lost a write read the Workflow again; the watch may deliver older versions
        after that (it lags behind a client that writes the Workflow all the time), and a pass
        started from one of those would plan, and lose its write, from a state long gone.
        """
        kept = self.workflows.get(key)
        if kept is None or not is_older(body, kept):
            self.workflows[key] = body
            self.resting.discard(key)

    def rest(self, key: Key) -> None:
        """Drop the body of a finished Workflow that has nothing due.

        Thousands of finished Workflows stay around; their bodies were most of what the
        operator kept of them.  Wake-ups by their Jobs and pods (the Job controller marking a
        Job Complete after its step was done) find no body and plan nothing, as a pass would
        not either; a change of the Workflow itself (a rerun, a new spec) comes as a watch
        event with the new body and plans as any other.
        """
        if self.workflows.pop(key, None) is not None:
            self.resting.add(key)

    def wake_all(self) -> None:
        for key in self.workflows:
            self.queue.add(key)

    def child_changed(
        self, key: Key, uid: str, summary: JobSummary | PodSummary | None, deleted: bool
    ) -> bool:
        """Whether a watch event of a step Job or pod changed what a plan sees of it.

        About a dozen watch events arrive per step (the Job controller's status updates, the
        kubelet's pod phases, the tracking finalizer coming off); a pass for each one that
        leaves the child's summary as it was would only plan the same again.  An object we
        cannot summarize, or one deleted, always counts as a change.
        """
        seen = self.children_seen.get(key)
        if deleted or summary is None or not uid:
            if seen is not None:
                seen.pop(uid, None)
                if not seen:
                    del self.children_seen[key]
            return True
        if seen is None:
            seen = self.children_seen[key] = {}
        elif seen.get(uid) == summary:
            return False
        seen[uid] = summary
        return True

    def is_own_write(self, key: Key, resource_version: str | None) -> bool:
        """Whether a watch event of ``key`` delivers the very status this process last wrote.

        The pass that wrote it planned from it already, so the event needs no pass of its own;
        the copy kept for planning until the watch caught up is dropped here (see reconcile).
        """
        written = self.written.get(key)
        if written is None or resource_version is None:
            return False
        if (written.body.get("metadata") or {}).get("resourceVersion") != resource_version:
            return False
        del self.written[key]
        return True

    def wake_namespace(self, namespace: str) -> None:
        for key in self.workflows:
            if key[0] == namespace:
                self.queue.add(key)

    def note_launched(self, scope: str, owner: Key, job_name: str) -> None:
        """Job ``job_name`` of the Workflow ``owner`` (namespace, uid) was just created; it
        counts against ``scope``."""
        launch = Launch(time.monotonic(), owner, job_name)
        self.launched.setdefault(scope, {})[(owner[1], job_name)] = launch

    def forget_launched(self, scope: str, owner: Key, job_name: str) -> None:
        """A Job noted as launched was not created after all (its name was taken)."""
        self.launched.get(scope, {}).pop((owner[1], job_name), None)

    def active_jobs(self, scope: str, active: Collection[JobSummary], shown: JobShown) -> int:
        """Step Jobs that count against ``scope``'s limit: the active ones the watch shows
        (``active``; finished Jobs leave that index), and the ones this process created that
        the watch has not shown yet.

        Our own status write comes back before the watch delivers the Jobs just created;
        counting only what the watch shows would then start more than the limit.  A launched
        Job stops counting as such once the watch shows it: among the active ones, or among
        its Workflow's Jobs (``shown``), when it finished before any pass saw it active.
        """
        pending = self.launched.get(scope)
        if not pending:
            return len(active)
        watched = {(j.owner_uid, j.name) for j in active}  # bounded: only active Jobs
        expired = time.monotonic() - LAUNCH_VISIBLE_SECONDS
        for launched, launch in list(pending.items()):
            if launched in watched or launch.at < expired or shown(launch.owner, launch.job_name):
                del pending[launched]
        return len(active) + len(pending)

    def concurrency_grant(self, key: Key, running: Mapping[str, int]) -> ConcurrencyGrant:
        """What ``key``'s pass may start under the concurrency limits: each limit's free slots
        (its maximum less its ``running`` Jobs, cluster-wide) and the queue of its waiters."""
        rules = self.config.concurrency_rules
        if not rules:
            return ConcurrencyGrant()
        return ConcurrencyGrant(
            rules=rules,
            free={r.name: max(0, r.max - running.get(r.name, 0)) for r in rules},
            queue={limit: self.limit_queue(limit) for limit in self.limit_waiters},
            own={
                limit: waiters[key]
                for limit, waiters in self.limit_waiters.items()
                if key in waiters
            },
        )

    def limit_queue(self, limit: str) -> list[QueueKey]:
        """Every waiter of ``limit``, sorted; kept until a pass changes the waiters."""
        queue = self.limit_queues.get(limit)
        if queue is None:
            waiters = self.limit_waiters.get(limit, {})
            queue = self.limit_queues[limit] = sorted(p for ps in waiters.values() for p in ps)
        return queue

    def set_waiters(self, key: Key, waiters: Sequence[Waiter]) -> None:
        """``key``'s waiters after its pass, in place of those of its previous pass."""
        namespace, name = key
        places: dict[str, list[QueueKey]] = {}
        for waiter in waiters:
            places.setdefault(waiter.limit, []).append((waiter.since, namespace, name, waiter.step))
        for limit in set(self.limit_waiters) | set(places):
            by_workflow = self.limit_waiters.setdefault(limit, {})
            new = places.get(limit)
            if by_workflow.get(key) == new:
                continue
            if new is None:
                del by_workflow[key]
            else:
                by_workflow[key] = new
            self.limit_queues.pop(limit, None)
            if not by_workflow:
                del self.limit_waiters[limit]
        for rule in self.config.concurrency_rules:
            count = sum(len(p) for p in self.limit_waiters.get(rule.name, {}).values())
            self.metrics.concurrency_waiting.labels(limit=rule.name).set(count)

    def wake_waiters(self, limit: str, first: int | None = None, but: Key | None = None) -> None:
        """Wake the Workflows of the first ``first`` waiters of ``limit`` (all: None), never
        ``but``: a freed slot can only go to the first waiters, so the rest sleep on."""
        woken: set[Key] = set()
        for _, namespace, name, _step in self.limit_queue(limit):
            key = (namespace, name)
            if key == but:
                continue
            if first is not None and len(woken) >= first:
                break
            if key not in woken:
                woken.add(key)
                self.wake(key)

    def forget(self, key: Key) -> None:
        """Drop all that is kept of a Workflow that is gone."""
        self.set_waiters(key, [])
        self.queue.forget(key)
        self.workflows.pop(key, None)
        self.resting.discard(key)
        self.written.pop(key, None)
        self.children_seen.pop(key, None)
        self.outputs_stored.pop(key, None)
        self.claims_ready.pop(key, None)
        self.phases.pop(key, None)
        self.specs.pop(key, None)
        self.stored_statuses.pop(key, None)
        if self.events is not None:
            self.events.forget(*key)
        self._refresh_phase_gauge()

    def record_phase(self, key: Key, phase: str) -> None:
        if self.phases.get(key) != phase:
            self.phases[key] = phase
            self._refresh_phase_gauge()

    def _refresh_phase_gauge(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (ns, _), phase in self.phases.items():
            counts[(ns, phase)] = counts.get((ns, phase), 0) + 1
        self.metrics.set_workflow_counts(counts)


@dataclass
class Observations:
    """What the indexes hold for one Workflow and its namespace."""

    jobs: Sequence[JobSummary]
    pods: Sequence[PodSummary]
    policies: Mapping[str, Mapping[str, Any]]  # policy name -> spec (this namespace)
    cache: Callable[[str], CacheEntry | None]
    active_jobs_in_namespace: int
    # Running step Jobs of each concurrency limit, cluster-wide (observed, and created by this
    # process but not yet observed).
    running_by_limit: Mapping[str, int] = field(default_factory=dict)


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


async def read_full_reports(
    rt: Runtime,
    wf: WorkflowRef,
    status: WorkflowStatus | None,
    jobs: list[ObservedJob],
    uids: Mapping[str, str],
) -> list[ObservedJob]:
    """``jobs``, each succeeded one whose termination message could not carry its report with
    the full report read from its pod log (``log_report``), for the plan to store
    (``StoreOutput``) and refer to.

    That is a report the runner marked truncated, or an agent image that printed its report
    and wrote no termination message at all.  Attempts already settled in the status are left
    alone, so a log is read once per attempt; a report this process stored already is only
    referred to (``output_ref``), and read again only if it is the result itself (no
    termination message).  ``uids`` holds the uid of each of the Workflow's Jobs by name: the
    log read is that Job's pod's.
    """
    stored = rt.outputs_stored.get((wf.namespace, wf.name), set())
    result: list[ObservedJob] = []
    for job in jobs:
        step = status.step(job.step) if status else None
        settled = step is not None and any(
            a.job_name == job.name and a.outcome != "Running" for a in step.attempts
        )
        if job.state is not JobState.SUCCEEDED or job.output_ref is not None or settled:
            result.append(job)
            continue
        if job.result is not None and not job.result.truncated:
            result.append(job)
            continue
        name = output_configmap_name(job.name)
        if name in stored:
            job = replace(job, output_ref=name)
            if job.result is not None:
                result.append(job)
                continue
        text = await rt.kube.read_job_log(
            wf.namespace, job.name, uids.get(job.name, ""), rt.config.output_limit_bytes
        )
        result.append(job if text is None else with_log_report(job, text))
    return result


async def store_outputs(
    rt: Runtime, wf: WorkflowRef, stores: Sequence[StoreOutput]
) -> dict[str, str]:
    """Create the output ConfigMaps of ``stores``; returns why the API server refused some, by
    Job name (refused once, refused on every pass: the attempt fails, with the reason)."""
    stored = rt.outputs_stored.setdefault((wf.namespace, wf.name), set())
    refused: dict[str, str] = {}
    for store in stores:
        manifest = output_configmap(wf, store.job_name, store.step, store.report)
        try:
            await rt.kube.create_configmap(manifest)
        except ApiError as e:
            if not is_refusal(e):
                raise
            message = f"the API server refused output ConfigMap {manifest['metadata']['name']}: {e}"
            refused[store.job_name] = message
            continue
        stored.add(manifest["metadata"]["name"])
    return refused


async def ensure_claim(rt: Runtime, wf: WorkflowRef, action: EnsureWorkspaceClaim) -> str | None:
    """Make sure the workspace claim of ``action`` is there; returns why it cannot be had (a
    message naming the field), or None."""
    key = (wf.namespace, wf.name)
    if rt.claims_ready.get(key) == (wf.uid, action.name):
        return None
    try:
        if action.template is None:
            found = await rt.kube.get_claim(wf.namespace, action.name)
            if found is None:
                return (
                    f"spec.workspace.claimName: PersistentVolumeClaim {action.name} not found"
                    f" in namespace {wf.namespace}"
                )
        else:
            manifest = workspace_claim(wf, action.name, action.template)
            created = await rt.kube.create_claim(manifest)
            if created.outcome is CreateOutcome.FOREIGN:
                return (
                    f"spec.workspace.volumeClaimTemplate: {created.message}; {JOB_CONFLICT_DETAIL}"
                )
            logger.info(
                "workspace claim %s: %s",
                action.name,
                created.outcome.value,
                extra={"workflow": wf.name, "namespace": wf.namespace},
            )
    except ApiError as e:
        if not is_refusal(e):
            raise
        field_name = "claimName" if action.template is None else "volumeClaimTemplate"
        return (
            f"spec.workspace.{field_name}: the API server refused PersistentVolumeClaim"
            f" {action.name}: {e}"
        )
    rt.claims_ready[key] = (wf.uid, action.name)
    return None


async def execute(
    rt: Runtime,
    body: Mapping[str, Any],
    wf: WorkflowRef,
    actions: Sequence[Action],
    now: datetime,
    uids: Mapping[str, str],
) -> list[tuple[CreateJob, str, str]]:
    """Carry out ``actions``; returns the CreateJobs whose name another's Job holds, or whose
    Job the API server refused (``kube.is_refusal``), with the reason and why.

    ``uids`` are the uids of the Workflow's Jobs by name (from its index): a Job is deleted
    only under its uid, or after the API says it is this Workflow's (see ``Kube.delete_job``).
    """
    fields = {"workflow": wf.name, "namespace": wf.namespace}
    conflicts: list[tuple[CreateJob, str, str]] = []
    claim_problem: str | None = None
    for action in actions:
        if isinstance(action, EnsureWorkspaceClaim):
            claim_problem = await ensure_claim(rt, wf, action)
            if claim_problem is not None:
                rt.post_event(body, "Warning", WORKSPACE_UNAVAILABLE, claim_problem)
                logger.warning(claim_problem, extra=fields)
        elif isinstance(action, CreateJob):
            if claim_problem is not None and action.workspace_claim is not None:
                # A pod that mounts a claim that is not there would wait for it forever.
                conflicts.append((action, WORKSPACE_UNAVAILABLE, claim_problem))
                continue
            if action.job_name in uids:
                # The watch shows this Workflow's Job under that name already (the status write
                # that recorded it was lost): asking the API would only cost a 409 and a GET,
                # time in which another client's write makes this pass's write lose again.
                logger.info("step job exists: %s", action.job_name, extra=fields)
                continue
            try:
                created = await rt.kube.create_job(build_step_job(wf, action, rt.config.job))
            except ApiError as e:
                if not is_refusal(e):
                    raise
                # The same Job would be refused on every pass: the attempt fails instead.
                # The attempt records the Job's name; the server's message is what matters.
                message = f"the API server refused the Job: {e}"
                rt.post_event(body, "Warning", JOB_REFUSED, message)
                logger.warning(message, extra={**fields, "job": action.job_name})
                conflicts.append((action, JOB_REFUSED, message))
                continue
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
                message = f"{created.message}; {JOB_CONFLICT_DETAIL}"
                rt.post_event(body, "Warning", JOB_CONFLICT, message)
                conflicts.append((action, JOB_CONFLICT, message))
        elif isinstance(action, DeleteJob):
            deleted = await rt.kube.delete_job(
                wf.namespace,
                action.job_name,
                owner_uid=wf.uid,
                uid=uids.get(action.job_name),
            )
            logger.info(
                "step job %s: %s (%s)",
                "deleted" if deleted else "not deleted (gone, or not this workflow's)",
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
            manifest = cache_configmap(wf.namespace, action, now)
            try:
                await rt.kube.replace_configmap_data(manifest)
            except ApiError as e:
                if not is_refusal(e):
                    raise
                # The step's result stands; only its cache entry is lost.  Failing the Workflow
                # would let whoever fills the namespace's ConfigMap quota fail others' steps.
                message = (
                    f"step {action.step}: the API server refused cache ConfigMap "
                    f"{manifest['metadata']['name']}: {e}; the result is not cached"
                )
                rt.post_event(body, "Warning", CACHE_WRITE_REFUSED, message)
                logger.warning(message, extra={**fields, "step": action.step})
        elif isinstance(action, DeleteWorkflow):
            logger.info("deleting finished workflow: %s", action.reason, extra=fields)
            await rt.kube.delete_workflow(wf.namespace, wf.name, wf.uid)
    return conflicts


def limit_scope(limit: str) -> str:
    """The key under which Jobs of concurrency limit ``limit`` are noted as launched (no
    namespace has a ``/`` in its name, so it never meets a namespace's)."""
    return f"limit/{limit}"


def conflicting_job(action: CreateJob, reason: str, message: str, now: datetime) -> ObservedJob:
    """What an attempt whose Job name is held by a Job that is not ours (``JobConflict``), or
    whose Job the API server refused (``JobRefused``), amounts to: a Job that failed at once,
    with that reason and ``message``.

    The planner then retries or falls back as after any failure; the next attempt has another
    name (the attempt number is part of it).  The Job under the name is left alone.
    """
    # No finished_at: no Job of this attempt ran, so none finished, and the operator's step
    # overhead (from a Job finishing to the next action) is not observed for it.
    return action.observed(JobState.FAILED, now, reason=reason, message=message)


@dataclass(frozen=True)
class Planning:
    """What a pass planned from, to plan again from the plan's own status."""

    workflow: Workflow
    policy: FallbackPolicy
    observed: list[ObservedJob]
    observations: Observations
    limits: Limits
    now: datetime
    # Shared by the pass's plans: planning again spends what is left of it.
    cel_budget: PassBudget = field(default_factory=PassBudget)


async def act(
    rt: Runtime, body: Mapping[str, Any], wf: WorkflowRef, plan: Plan, planning: Planning
) -> Plan:
    """Execute ``plan``; when a Job could not be created because the name is another's or the
    API server refused it, plan again from the plan's own status with that attempt failed
    (``conflicting_job``), and execute what that adds.  Returns the plan whose status is to be
    written.

    Planning from its own output adds only what the new failure causes (a retry, a fallback,
    the step's failure), so the same pass settles the attempt: the status never records an
    attempt as running under a Job that is not ours.
    """
    namespace, now = wf.namespace, planning.now
    uids = {job.name: job.uid for job in planning.observations.jobs}
    observed = list(planning.observed)
    slots = planning.limits.namespace_job_slots
    stores = [a for a in plan.actions if isinstance(a, StoreOutput)]
    if stores:
        # Before anything else: a refused output fails its attempt, and the pass is planned
        # again from the status it started from (nothing of the first plan is carried out).
        refused = await store_outputs(rt, wf, stores)
        kept = {s.job_name for s in stores if s.job_name not in refused}
        observed = [
            refused_output(j, refused[j.name])
            if j.name in refused
            else replace(j, output_ref=output_configmap_name(j.name))
            if j.name in kept
            else j
            for j in observed
        ]
        if refused:
            plan = engine.plan(
                planning.workflow,
                planning.policy,
                observed,
                planning.observations.cache,
                now,
                planning.limits,
                planning.cel_budget,
            )
    actions: Sequence[Action] = [a for a in plan.actions if not isinstance(a, StoreOutput)]
    grant = planning.limits.concurrency
    for _ in range(MAX_JOB_CONFLICT_REPLANS + 1):
        creates = [a for a in actions if isinstance(a, CreateJob)]
        owner = (namespace, wf.uid)
        if slots is not None:
            for create in creates:
                rt.note_launched(namespace, owner, create.job_name)
        for create in creates:
            if create.concurrency_limit is not None:
                rt.note_launched(limit_scope(create.concurrency_limit), owner, create.job_name)
        conflicts = await execute(rt, body, wf, actions, now, uids)
        if not conflicts:
            break
        for create, reason, message in conflicts:
            rt.forget_launched(namespace, owner, create.job_name)
            if create.concurrency_limit is not None:
                rt.forget_launched(limit_scope(create.concurrency_limit), owner, create.job_name)
            observed.append(conflicting_job(create, reason, message, now))
        if slots is not None:
            slots = max(0, slots - len(creates) + len(conflicts))
        # The slots the Jobs just created took are no longer free for the plan made again.
        taken = Counter(c.concurrency_limit for c in creates if c.concurrency_limit)
        taken.subtract(c.concurrency_limit for c, _, _ in conflicts if c.concurrency_limit)
        grant = replace(
            grant,
            free={n: max(0, f - taken.get(n, 0)) for n, f in grant.free.items()},
        )
        again = engine.plan(
            planning.workflow.model_copy(update={"status": plan.status}),
            planning.policy,
            observed,
            planning.observations.cache,
            now,
            replace(planning.limits, namespace_job_slots=slots, concurrency=grant),
            planning.cel_budget,
        )
        plan = Plan(
            status=again.status,
            actions=[*plan.actions, *again.actions],
            requeue_after=again.requeue_after,
            facts=[*plan.facts, *again.facts],
            waiters=again.waiters,
        )
        actions = again.actions
    return plan


def failed_by_the_controller(
    old: WorkflowStatus | None, new: WorkflowStatus, facts: Sequence[Fact]
) -> list[Fact]:
    """The facts of a pass whose status the controller failed itself (a spec the models reject,
    a status too large to store): what the plan did stands, and the run finished Failed, unless
    the status already said so."""
    kept: list[Fact] = [f for f in facts if not isinstance(f, WorkflowFinished)]
    if old is not None and old.phase is new.phase:
        return kept
    return [*kept, WorkflowFinished(phase=new.phase, degraded=new.degraded)]


def parse_workflow(rt: Runtime, key: Key, body: Mapping[str, Any]) -> Workflow:
    """``body`` as a Workflow without its status; raises ValidationError.

    The spec is validated once per generation: the API server gives every change of a spec a
    new ``metadata.generation``, so a spec valid for a generation stays valid, and the passes of
    that generation share the object (pydantic takes a model instance for a field without
    validating it again).  The metadata, whose annotations start reruns and retries without a
    new generation, is validated on every pass; so is the status, unless the pass starts from
    the version our last write stored (``status_of``).  The
    shared spec is never changed: the planner copies the status it changes and only reads the
    spec (``engine.planner._copy_status``), and the Workflow is copied with ``model_copy``, which
    shares the spec, never changes it (a test checks the spec after a Workflow's passes).
    """
    meta = body.get("metadata") or {}
    uid, generation = meta.get("uid") or "", meta.get("generation")
    cached = rt.specs.get(key)
    if cached is not None and (cached.uid, cached.generation) == (uid, generation):
        return Workflow.model_validate({"metadata": meta, "spec": cached.spec, "status": None})
    rt.specs.pop(key, None)
    workflow = Workflow.model_validate(
        {"metadata": meta, "spec": body.get("spec") or {}, "status": None}
    )
    if isinstance(generation, int):
        rt.specs[key] = ParsedSpec(uid, generation, workflow.spec)
    return workflow


def status_of(rt: Runtime, key: Key, body: Mapping[str, Any]) -> WorkflowStatus | None:
    """The status of ``body`` as a model: the one our last write was made from when ``body``
    is the very version that write stored, else ``body``'s status validated.

    A resourceVersion names one stored object, and the model is kept only when the API server
    answered the write with exactly the status the model wires to (``remember_stored``); a
    model validated from its own wire form equals it (a property test checks that on every
    pass it plans), and the planner copies what it changes, never changing its input.
    """
    version = (body.get("metadata") or {}).get("resourceVersion")
    stored = rt.stored_statuses.get(key)
    if stored is not None and version and stored[0] == version:
        return stored[1]
    return parse_status(body.get("status"))


def remember_stored(
    rt: Runtime, key: Key, status: WorkflowStatus, wired: dict[str, Any], written: Mapping[str, Any]
) -> None:
    """Keep ``status`` for the next pass if ``written`` (the API server's answer to the write
    of ``wired``) stored exactly that; forget the older one otherwise."""
    version = (written.get("metadata") or {}).get("resourceVersion")
    if version and written.get("status") == wired:
        rt.stored_statuses[key] = (str(version), status)
    else:
        rt.stored_statuses.pop(key, None)


def parse_status(raw: Mapping[str, Any] | None) -> WorkflowStatus | None:
    if not raw:
        return None
    try:
        return WorkflowStatus.model_validate(raw)
    except ValidationError:
        logger.warning("status of a workflow does not parse; planning from scratch")
        return None


@dataclass(frozen=True)
class PassResult:
    """What a pass tells the worker that ran it."""

    # Seconds until the pass must run again even if nothing changes (backoff, deadlines, TTL,
    # a grace period of observe()), or None.
    requeue_after: float | None
    # Nothing is left to do until the Workflow changes: it is Succeeded or Failed, or gone.
    finished: bool = False


GONE = PassResult(requeue_after=None, finished=True)


async def reconcile(
    rt: Runtime, key: Key, body: Mapping[str, Any], gather: Callable[[], Observations]
) -> PassResult:
    """One pass (retried on write conflicts)."""
    started = time.monotonic()
    outcome = "success"  # the values are metrics.RECONCILE_OUTCOMES
    try:
        current: Mapping[str, Any] = body
        written = rt.written.get(key)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if written is not None and written.is_newer_than(rv):
            current = written.body  # the watch has not caught up with our own write yet
        elif written is not None:
            # The watch has delivered our write: the copy would only double the memory of
            # every finished Workflow (thousands of them stay around).
            del rt.written[key]
        for _ in range(MAX_CONFLICT_RETRIES):
            result = await _reconcile_once(rt, key, current, gather)
            if not isinstance(result, Conflict):
                return result
            fresh = result.fresh if result.fresh is not None else await rt.kube.get_workflow(*key)
            if fresh is None:
                return GONE
            current = fresh
            rt.saw_workflow(key, fresh)  # the next pass starts from it, not from an older event
        outcome = "requeue"  # still conflicting: called again soon
        return PassResult(requeue_after=1.0)
    except Exception:
        outcome = "error"
        raise
    finally:
        rt.metrics.reconcile_duration.labels(outcome=outcome).observe(time.monotonic() - started)


@dataclass
class Conflict:
    fresh: Mapping[str, Any] | None = None  # the object as read again, if it was


# Metadata that may change under a status write without changing what a plan is made from.
_UNPLANNED_METADATA = frozenset({"resourceVersion", "finalizers", "managedFields"})


def _planned_from_the_same(planned: Mapping[str, Any], fresh: Mapping[str, Any]) -> bool:
    """Whether ``fresh`` differs from the object a plan was made from only in bookkeeping."""
    a, b = planned.get("metadata") or {}, fresh.get("metadata") or {}
    keys = (set(a) | set(b)) - _UNPLANNED_METADATA
    return (
        all(a.get(k) == b.get(k) for k in keys)
        and planned.get("spec") == fresh.get("spec")
        and (planned.get("status") or {}) == (fresh.get("status") or {})
    )


async def _write_again(
    rt: Runtime, key: Key, planned: Mapping[str, Any], patch: dict[str, Any]
) -> dict[str, Any] | Conflict | None:
    """Retry a status write that lost only to bookkeeping, such as a finalizer coming off.

    kopf removes the finalizer that earlier versions of the operator put on every Workflow (a
    kopf daemon per Workflow needed it) while the first pass after an upgrade plans, so that
    pass's status write meets a 409; so does one that races another client's finalizer.
    Planning again would not yet see the Job just created, and would create it (409, GET) and
    post its Events a second time; if only bookkeeping changed, the same status is written
    again on the fresh resourceVersion.
    Returns the written object, a Conflict carrying the fresh object to plan from, or None
    when the Workflow is gone.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        fresh = await rt.kube.get_workflow(*key)
        if fresh is None:
            return None
        if not _planned_from_the_same(planned, fresh):
            return Conflict(fresh)
        version = (fresh.get("metadata") or {}).get("resourceVersion")
        patched = await rt.kube.patch_workflow_status(*key, patch, version)
        if patched is not None:
            return patched
    return Conflict()


async def _reconcile_once(
    rt: Runtime, key: Key, body: Mapping[str, Any], gather: Callable[[], Observations]
) -> PassResult | Conflict:
    namespace, name = key
    meta = body.get("metadata") or {}
    now = rt.clock()
    wf_ref = WorkflowRef(name=name, namespace=namespace, uid=meta.get("uid", ""))
    old_raw: dict[str, Any] = dict(body.get("status") or {})
    old = status_of(rt, key, body)
    try:
        workflow = parse_workflow(rt, key, body)
    except ValidationError as e:
        error = "; ".join(engine.model_error_messages(e)[:5])
        new = invalid_object_status(old, meta.get("generation"), error, now)
        plan = Plan(status=new, facts=failed_by_the_controller(old, new, []))
        rt.set_waiters(key, [])  # it waits for nothing any more
        recheck: datetime | None = None
    else:
        workflow = workflow.model_copy(update={"status": old})
        obs = gather()
        observed = observe(obs.jobs, obs.pods, now)
        recheck = recheck_at(obs.jobs, obs.pods, now)
        uids = {job.name: job.uid for job in obs.jobs}
        observed = await read_full_reports(rt, wf_ref, old, observed, uids)
        ref = workflow.spec.fallback_policy_ref
        policy = resolve_fallback_policy(ref.name if ref else None, obs.policies)
        slots = None
        if rt.config.max_jobs_per_namespace is not None:
            slots = max(0, rt.config.max_jobs_per_namespace - obs.active_jobs_in_namespace)
        limits = Limits(
            namespace_job_slots=slots,
            allowed_images=rt.config.allowed_images,
            allowed_secrets=rt.config.allowed_secrets,
            prices=rt.config.price_table,
            concurrency=rt.concurrency_grant(key, obs.running_by_limit),
        )
        cel_budget = rt.cel_time.pass_budget(namespace)
        plan = engine.plan(workflow, policy, observed, obs.cache, now, limits, cel_budget)
        planning = Planning(workflow, policy, observed, obs, limits, now, cel_budget)
        # The Jobs are created before the status that records them is written.  If that write
        # is lost (a crash, a conflict), the next pass plans the same attempts under the same
        # deterministic names and finds their Jobs (CreateOutcome.EXISTS): nothing doubles.
        # Written first, a status could record an attempt whose Job never came to be, and it
        # would cost a retry (JobLost) for an attempt that never ran.
        plan = await act(rt, body, wf_ref, plan, planning)
        new = plan.status
        rt.set_waiters(key, plan.waiters)
        # Slots left over (this Workflow's waiters were not first): the waiters they are owed
        # to plan now rather than at their next timed look.
        for limit in {w.limit for w in plan.waiters}:
            free = limits.concurrency.free_slots(limit) - sum(
                1 for a in plan.actions if isinstance(a, CreateJob) and a.concurrency_limit == limit
            )
            if free > 0:
                rt.wake_waiters(limit, first=free, but=key)

    new_raw = new.wire()
    if new_raw != old_raw:
        patch = merge_patch_status(old_raw, new_raw)
        try:
            written = await rt.kube.patch_workflow_status(
                namespace, name, patch, meta.get("resourceVersion")
            )
        except ApiError as e:
            if not is_too_large(e):
                raise
            # Spec plus status no longer fit in etcd: say so in a status that does, rather
            # than retry a write that can never succeed.
            new = status_too_large(new, str(e), meta.get("generation"), now)
            plan.facts = failed_by_the_controller(old, new, plan.facts)
            new_raw = new.wire()
            patch = merge_patch_status(old_raw, new_raw)
            written = await rt.kube.patch_workflow_status(namespace, name, patch, None)
            rt.post_event(body, "Warning", "StatusTooLarge", new.message or "")
        if written is None:
            again = await _write_again(rt, key, body, patch)
            if again is None:
                return GONE
            if isinstance(again, Conflict):
                return again
            written = again
        rt.written[key] = Written(meta.get("resourceVersion"), written)
        remember_stored(rt, key, new, new_raw, written)
        # The pass's changes count once their status is stored (a lost write is planned again).
        rt.metrics.apply(
            metric_updates(namespace, plan.facts), rt.config.metrics_agents_per_namespace
        )
    rt.record_phase(key, new.phase.value)
    if new.phase in TERMINAL_WORKFLOW_PHASES:
        # A finished Workflow is not planned again until it changes: thousands of them stay
        # around, and their specs would only take memory.
        rt.specs.pop(key, None)
        rt.stored_statuses.pop(key, None)
    requeue = plan.requeue_after
    if recheck is not None:
        # A grace period of observe() ends then, and no watch event may mark it.
        until = (recheck - now).total_seconds()
        requeue = until if requeue is None else min(until, requeue)
    return PassResult(requeue_after=requeue, finished=new.phase in TERMINAL_WORKFLOW_PHASES)
