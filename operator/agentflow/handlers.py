"""kopf wiring: indexes of what the operator watches, wake-ups, and the workers that reconcile.

Handlers stay thin: they keep small summaries in kopf indexes and queue the owning Workflow's
key when an event changes what a plan sees (see ``Runtime.child_changed`` and
``Runtime.is_own_write``); a fixed number of workers take keys from that queue
(:mod:`agentflow.workqueue`) and run :func:`controller.reconcile`, as Argo Workflows'
controller does with its workflow workers.  No kopf daemon, so no task, no kopf state and no
finalizer per Workflow: a finished Workflow costs its last body and what the indexes hold.
All handlers are coroutines: kopf runs plain functions in its thread pool, a hop per event.
Children (Jobs, Pods, ConfigMaps) are watched with indexes and event handlers only, which
persist nothing, so the operator never writes annotations onto them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from agentflow import children, controller, engine
from agentflow.api.models import (
    GROUP,
    VERSION,
    AgentFallbackPolicySpec,
    ConditionType,
)
from agentflow.config import ConfigError, OperatorConfig, load_config
from agentflow.controller import Key, Observations, Runtime
from agentflow.engine.types import LABEL_CACHE, LABEL_LIMIT, LABEL_WORKFLOW, CacheEntry, JobState
from agentflow.events import REPORTING_COMPONENT, EventRecorder, EventSender
from agentflow.gcpause import GcPauseMonitor, HeapFreezer, freeze_startup_heap
from agentflow.kube import Kube, load_configuration
from agentflow.leader import LeaderElector
from agentflow.looplag import LoopLagMonitor
from agentflow.metrics import MetricsServer, OperatorMetrics
from agentflow.metricsauth import MetricsAuthorizer
from agentflow.observe import JobSummary, PodSummary, summarize_job, summarize_pod
from agentflow.workqueue import ShutDown

logger = logging.getLogger("agentflow.handlers")

WORKFLOWS = (GROUP, VERSION, "workflows")
POLICIES = (GROUP, VERSION, "agentfallbackpolicies")
# An unfinished Workflow is re-planned at least this often even when nothing happens (level
# trigger); a pass that raised is tried again after RETRY_SECONDS.
RESYNC_SECONDS = 300.0
RETRY_SECONDS = 5.0
HEARTBEAT_STALE_FACTOR = 4.0
# Earlier versions ran a kopf daemon per Workflow, and kopf put this finalizer on each of them.
# Nothing of ours needs one now; kopf removes it from a Workflow it sees carrying it, which it
# can only do while it is told the name.
FINALIZER = f"{GROUP}/finalizer"


def _runtime(memo: Any) -> Runtime:
    rt: Runtime = memo.runtime
    return rt


class UnusedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff essence, left empty: no handler of ours compares one.

    kopf builds the essence of every watched object on every event (Jobs and Pods included),
    deep-copying the spec-level stanzas twice, so that on-create/update/delete/resume handlers
    can tell what changed.  The operator has none (its Workflows are reconciled level-triggered
    by the workers; ``test_no_handler_needs_a_diff_essence`` keeps it so): in a profile of 50
    chains the copies were about 4% of the operator's CPU for an essence nothing reads.  If a
    handler ever asks for extra fields, it gets kopf's essence.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        return cast(kopf.BodyEssence, {})


# The wake-up handlers run on every watch event of a Workflow and on each deletion of a Job or
# Pod; kopf logs each success at INFO, which was about 5% of the operator's CPU (15 lines per
# step, when every Job and Pod event had a handler) for no news.
QUIET_HANDLERS = frozenset({"child_deleted", "workflow_changed"})


class QuietWakeups(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.levelno != logging.INFO or not message.endswith(" succeeded."):
            return True
        return not any(f"'{name}' succeeded." in message for name in QUIET_HANDLERS)


def configure(settings: kopf.OperatorSettings) -> None:
    """Explicit kopf settings: our own prefixes, timeouts, and server-side watch filters."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = UnusedDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietWakeups) for f in objects.filters):
        objects.addFilter(QuietWakeups())
    # Without these, a watch stream can hang silently forever (kopf #585).
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # Events are for our state transitions, not for every handler's chatter.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.scanning.disabled = True
    # Leadership is our own Lease (see agentflow.leader), not kopf's peering CRDs.
    settings.peering.standalone = True
    settings.batching.worker_limit = 1000
    settings.watching.label_selectors["batch", "jobs"] = LABEL_WORKFLOW
    settings.watching.label_selectors["", "pods"] = LABEL_WORKFLOW
    settings.watching.label_selectors["", "configmaps"] = LABEL_CACHE


def health(rt: Runtime) -> tuple[bool, str]:
    age = time.monotonic() - rt.last_heartbeat
    limit = rt.config.renew_interval * HEARTBEAT_STALE_FACTOR + rt.config.lease_duration
    if age > limit:
        return False, f"no watch event for {age:.0f}s (heartbeat lease not seen)"
    return True, "ok"


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The configured kubeconfig; else in a pod its service account, else ~/.kube/config.

    kopf logs in after the start-up handler, so the configuration is in the memo by then.
    """
    config: OperatorConfig = memo.config
    if config.kubeconfig is not None:
        return kubeconfig_login(config.kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):  # set by the kubelet, not a setting
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


def kubeconfig_login(kubeconfig: str) -> kopf.ConnectionInfo:
    """kopf's credentials from the same kubeconfig file the operator's own client uses."""
    client = load_configuration(kubeconfig)
    header = client.get_api_key_with_prefix("BearerToken") or client.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=client.host,
        ca_path=client.ssl_ca_cert,
        insecure=not client.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=client.cert_file,
        private_key_path=client.key_file,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config: OperatorConfig | None = memo.get("config")
    if config is None:
        # `kopf run -m agentflow.main`: no flags, so the environment is the only source.
        try:
            config = load_config(os.environ)
        except ConfigError as e:
            raise kopf.PermanentError(str(e)) from None
        memo.config = config
    configure(settings)
    metrics = OperatorMetrics()
    gc_pauses = GcPauseMonitor(metrics.gc_pause)
    gc_pauses.install()
    memo.gc_pauses = gc_pauses

    def count(verb: str, code: int) -> None:
        metrics.api_requests.labels(verb=verb, code=str(code)).inc()

    kube = Kube.connect(config.kubeconfig, qps=config.qps, burst=config.burst, count=count)
    sender = EventSender(
        kube.create_event, count=lambda type_: metrics.events_posted.labels(type=type_).inc()
    )
    events = EventRecorder(sender.post)  # aggregates Events in front of the sender
    rt = Runtime(kube=kube, metrics=metrics, config=config, post_event=events.post, events=events)
    rt.is_leader = False
    memo.runtime = rt

    def leadership(leading: bool) -> None:
        rt.is_leader = leading
        if leading:
            rt.wake_all()  # what the last leader left, and what this replica waited on

    elector = LeaderElector(
        kube,
        namespace=config.lease_namespace,
        name=config.lease_name,
        identity=config.identity,
        duration=config.lease_duration,
        renew_interval=config.renew_interval,
        on_change=leadership,
    )
    server = MetricsServer(
        metrics,
        host=config.metrics_host,
        port=config.metrics_port,
        health=lambda: health(rt),
        authorizer=MetricsAuthorizer(kube) if config.metrics_auth else None,
    )
    await server.start()
    memo.metrics_server = server
    memo.elector = elector
    memo.event_sender = sender
    memo.tasks = [
        asyncio.create_task(sender.run(), name="event-sender"),
        asyncio.create_task(elector.run(), name="leader-election"),
        asyncio.create_task(sweep_cache(rt), name="cache-sweeper"),
        asyncio.create_task(watch_heartbeat(rt), name="heartbeat"),
        asyncio.create_task(LoopLagMonitor.of(metrics).run(), name="loop-lag"),
    ]
    indexes = WorkflowIndexes.of(kwargs)
    memo.tasks += [
        asyncio.create_task(work(rt, indexes), name=f"worker-{n}") for n in range(config.workers)
    ]
    # Last: what start-up made lives as long as the process, and from now on what survives a
    # full collection is frozen after it (see agentflow.gcpause).
    frozen = freeze_startup_heap()
    logger.debug("froze %d start-up objects out of garbage collection", frozen)
    freezer = HeapFreezer()
    freezer.install()
    memo.heap_freezer = freezer
    memo.tasks.append(asyncio.create_task(freezer.run(), name="heap-thaw"))


# How long one watch of the Lease lasts before the API server ends it and it is opened again.
HEARTBEAT_WATCH_SECONDS = 240


async def watch_heartbeat(rt: Runtime) -> None:
    """/healthz's heartbeat: the leader Lease's renewals, as a watch of it delivers them.

    The operator's own watch, not one of kopf's: kopf watches every resource in the same
    namespaces, and the Lease is in the operator's namespace, which in namespaced mode is not
    one of them (see agentflow.leader).  So the heartbeat shows that this process still gets
    watch events from the API server (and runs its event loop); kopf's own streams are kept
    from hanging silently by their server and client timeouts (see ``configure``).
    """
    config = rt.config
    while True:
        try:
            async for _ in rt.kube.watch_lease(
                config.lease_namespace,
                config.lease_name,
                timeout_seconds=HEARTBEAT_WATCH_SECONDS,
            ):
                rt.last_heartbeat = time.monotonic()
                rt.metrics.watch_events.labels(resource="leases").inc()
                rt.metrics.last_watch_event.set(time.time())
        except Exception as e:  # reconnect; /healthz turns 503 if this goes on
            logger.warning("watch of the Lease failed: %s", e)
            await asyncio.sleep(config.renew_interval)


async def sweep_cache(rt: Runtime) -> None:
    """Delete expired cache entries (a stale entry is never used, but it takes space).

    One LIST per interval, rather than a kopf timer per entry: timers put a finalizer on each
    ConfigMap, which would block deleting cache entries while the operator is down.  Only the
    operator's own entries are deleted (``children.cache_configmap_to_sweep``), and only the
    very version that was judged (uid and resourceVersion preconditions): a ConfigMap that
    changed since the LIST is judged again next round.
    """
    while True:
        await asyncio.sleep(rt.config.cache_sweep_interval)
        if not rt.is_leader:
            continue
        try:
            scopes: list[str | None] = list(rt.config.namespaces) or [None]
            now = datetime.now(UTC)
            for scope in scopes:
                for cm in await rt.kube.list_configmaps(scope, LABEL_CACHE):
                    if children.cache_configmap_to_sweep(cm, now):
                        meta = cm["metadata"]
                        await rt.kube.delete_configmap(
                            meta["namespace"],
                            meta["name"],
                            uid=meta.get("uid"),
                            resource_version=meta.get("resourceVersion"),
                        )
        except Exception as e:  # the next round tries again
            logger.warning("cache sweep failed: %s", e)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is not None:
        rt.queue.shut_down()
    for task in getattr(memo, "tasks", []):
        task.cancel()
    sender: EventSender | None = getattr(memo, "event_sender", None)
    if sender is not None:
        await sender.close()  # what is queued, then what is held: nothing a user reads is lost
    if rt is not None and rt.events is not None:
        await rt.events.close(rt.kube.create_event)
    elector: LeaderElector | None = getattr(memo, "elector", None)
    if elector is not None:
        try:
            await elector.release()
        except Exception as e:  # shutting down; the lease expires by itself
            logger.info("could not release the lease: %s", e)
    server: MetricsServer | None = getattr(memo, "metrics_server", None)
    if server is not None:
        await server.stop()
    if rt is not None:
        await rt.kube.close()
    freezer: HeapFreezer | None = getattr(memo, "heap_freezer", None)
    if freezer is not None:
        freezer.uninstall()
    gc_pauses: GcPauseMonitor | None = getattr(memo, "gc_pauses", None)
    if gc_pauses is not None:
        gc_pauses.uninstall()


# ---- indexes ------------------------------------------------------------------------------


# The keys of the step-Job index.  kopf runs every index function of a resource on each of its
# events, and builds the function's arguments each time: one index with three kinds of key is
# one such call per Job event where three indexes were three (kopf's indexing fell from 12 to
# 8.6 % of the operator's samples; the Jobs' watch events are the most the operator gets).
JOBS_OF = "owner"  # (JOBS_OF, namespace, the owning Workflow's uid): all its Jobs
ACTIVE_IN = "namespace"  # (ACTIVE_IN, namespace): the namespace's active Jobs (its Job limit)
ACTIVE_UNDER = "limit"  # (ACTIVE_UNDER, limit): a concurrency limit's active Jobs, cluster-wide
JobKey = tuple[str, ...]


@kopf.index("batch", "v1", "jobs", labels={LABEL_WORKFLOW: kopf.PRESENT})
async def step_jobs(
    body: kopf.Body,
    uid: str | None,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> dict[JobKey, JobSummary]:
    summary = summarize_job(body)
    job_seen(_runtime(memo), owner_key(namespace, labels), uid, summary, labels)
    return job_entries(summary, namespace, labels)


def job_entries(
    summary: JobSummary | None, namespace: str | None, labels: Mapping[str, str]
) -> dict[JobKey, JobSummary]:
    """A step Job's entries in the step-Job index, from its summary.

    By the owner's uid, not the workflow label: labels can be copied onto any Job, and a
    Workflow deleted and made again under its name is another Workflow.  A Job without such an
    owner is nobody's attempt and counts against no limit (``{}`` drops every entry the Job
    had).  A Job that finishes leaves the active keys (kopf drops the entries an index
    function no longer returns), so a pass counts a limit's active Jobs with ``len``, not by
    walking every Job the namespace has run.
    """
    if summary is None or summary.owner_uid is None:
        return {}
    ns = namespace or ""
    entries: dict[JobKey, JobSummary] = {(JOBS_OF, ns, summary.owner_uid): summary}
    if summary.state is JobState.ACTIVE:
        entries[(ACTIVE_IN, ns)] = summary
        limit = labels.get(LABEL_LIMIT)
        if limit:
            entries[(ACTIVE_UNDER, limit)] = summary
    return entries


@kopf.index("", "v1", "pods", labels={LABEL_WORKFLOW: kopf.PRESENT})
async def step_pods(
    body: kopf.Body,
    uid: str | None,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> dict[Key, PodSummary] | None:
    summary = summarize_pod(body)
    key = owner_key(namespace, labels)
    pod_seen(_runtime(memo), key, uid, summary)
    return {key: summary} if summary else None


@kopf.index(*POLICIES)
async def fallback_policies(
    spec: kopf.Spec, namespace: str | None, name: str, **_: Any
) -> dict[Key, dict[str, Any]]:
    return {(namespace or "", name): dict(spec)}


@kopf.index("", "v1", "configmaps", labels={LABEL_CACHE: kopf.PRESENT})
async def cache_entries(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Key, CacheEntry]:
    # {} rather than None: an entry edited into one that is not ours must lose its old value.
    entry = children.cache_entry_from_configmap(body)
    return {(namespace or "", entry.key): entry} if entry else {}


@kopf.on.event("", "v1", "configmaps", labels={LABEL_CACHE: kopf.PRESENT})
async def cache_entry_changed(
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    rt = _runtime(memo)
    key = (namespace or "", name)
    if type == "DELETED" or not children.is_cache_configmap(body):
        rt.cache_names.discard(key)
    else:
        rt.cache_names.add(key)
    rt.metrics.cache_entries.set(len(rt.cache_names))


# ---- wake-ups -------------------------------------------------------------------------------


# A Job's or pod's watch event wakes its Workflow from the index function, which kopf calls on
# every event but a deletion, right before it stores what the function returned (it does not
# yield to the loop in between, so the pass woken runs with the new entry).  An event handler
# as well would be a second call per event, with kopf's handler machinery around it (state,
# outcome, an INFO line dropped by QuietWakeups): about ten a step.  The event handler below
# takes the deletions only; its ``when`` filter is all the other events cost.
def owner_key(namespace: str | None, labels: Mapping[str, str]) -> Key:
    """The key of the Workflow a step Job or pod belongs to (the watches select them by that
    label), which is the key its wake-ups queue."""
    return (namespace or "", labels[LABEL_WORKFLOW])


def job_seen(
    rt: Runtime,
    key: Key,
    uid: str | None,
    summary: JobSummary | None,
    labels: Mapping[str, str],
    deleted: bool = False,
) -> None:
    rt.metrics.watch_events.labels(resource="jobs").inc()
    if not rt.child_changed(key, uid or "", summary, deleted):
        return
    rt.wake(key)
    limit = labels.get(LABEL_LIMIT)
    rule = next((r for r in rt.config.concurrency_rules if r.name == limit), None)
    if rule is not None:
        # A slot of the limit may have come free: only its first waiters can take it.
        rt.wake_waiters(rule.name, first=rule.max)


def pod_seen(
    rt: Runtime, key: Key, uid: str | None, summary: PodSummary | None, deleted: bool = False
) -> None:
    rt.metrics.watch_events.labels(resource="pods").inc()
    if rt.child_changed(key, uid or "", summary, deleted):
        rt.wake(key)


def is_deletion(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_WORKFLOW: kopf.PRESENT}, when=is_deletion)
@kopf.on.event("", "v1", "pods", labels={LABEL_WORKFLOW: kopf.PRESENT}, when=is_deletion)
async def child_deleted(
    resource: kopf.Resource,
    body: kopf.Body,
    uid: str | None,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    rt = _runtime(memo)
    key = owner_key(namespace, labels)
    if resource.plural == "jobs":
        job_seen(rt, key, uid, summarize_job(body), labels, deleted=True)
    else:
        pod_seen(rt, key, uid, summarize_pod(body), deleted=True)


@kopf.on.event(*WORKFLOWS)
async def workflow_changed(
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    rt = _runtime(memo)
    rt.metrics.watch_events.labels(resource="workflows").inc()
    key = (namespace or "", name)
    if type == "DELETED":
        # Its Jobs, pods and ConfigMaps go with it (owner references); a pass running now
        # finds it gone when it ends, and forgets it again.
        rt.forget(key)
        return
    own = rt.is_own_write(key, (body.get("metadata") or {}).get("resourceVersion"))
    if own and key in rt.resting:
        return  # the echo of the write that finished it: it rests (see Runtime.rest)
    # A plain dict, not kopf's Body: a Body is a reference cycle (its meta, spec and status
    # views point back at it), so one kept until the next event is freed only by a garbage
    # collection, by then most often a full one (it has outlived two younger ones), and one
    # frozen alive waits for the next thaw (see agentflow.gcpause).
    rt.saw_workflow(key, dict(body))
    if own:
        return  # the echo of our own status write: the pass that wrote it planned from it
    rt.wake(key)


@kopf.on.event(*POLICIES)
async def policy_changed(
    type: str | None,
    body: kopf.Body,
    spec: kopf.Spec,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Validate the policy into its status, and let this namespace's Workflows re-plan."""
    rt = _runtime(memo)
    rt.wake_namespace(namespace or "")
    if type == "DELETED" or not rt.is_leader:
        return
    try:
        problems = engine.validate_policy(AgentFallbackPolicySpec.model_validate(dict(spec)))
    except Exception as e:  # pydantic's error text names the field
        problems = [str(e)]
    now = datetime.now(UTC)
    generation = body.get("metadata", {}).get("generation")
    if problems:
        text = "; ".join(problems)
        conditions = engine.set_condition(
            [], ConditionType.READY, "False", "InvalidPolicy", text, generation, now
        )
        conditions = engine.set_condition(
            conditions, ConditionType.STALLED, "True", "InvalidPolicy", text, generation, now
        )
    else:
        conditions = engine.set_condition(
            [], ConditionType.READY, "True", "Valid", "", generation, now
        )
    old = body.get("status") or {}
    old_summary = [
        (c.get("type"), c.get("status"), c.get("message")) for c in old.get("conditions", [])
    ]
    new_summary = [(c.type, c.status, c.message) for c in conditions]
    if old_summary == new_summary and old.get("observedGeneration") == generation:
        return
    await rt.kube.patch_policy_status(
        namespace or "",
        name,
        {
            "observedGeneration": generation,
            "conditions": [c.model_dump(by_alias=True, mode="json") for c in conditions],
        },
    )


# ---- the workers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowIndexes:
    """The kopf indexes a pass gathers its observations from (kopf hands them to every
    handler, the start-up handler included, and keeps filling the same objects)."""

    step_jobs: kopf.Index[JobKey, JobSummary]
    step_pods: kopf.Index[Key, PodSummary]
    fallback_policies: kopf.Index[Key, dict[str, Any]]
    cache_entries: kopf.Index[Key, CacheEntry]

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> WorkflowIndexes:
        return cls(**{f.name: kwargs[f.name] for f in fields(cls)})


def gather(rt: Runtime, indexes: WorkflowIndexes, key: Key, uid: str) -> Observations:
    """What the indexes hold for the Workflow ``key`` (whose uid is ``uid``) and its namespace."""
    namespace = key[0]
    policies = {
        n: spec
        for (ns, n), specs in indexes.fallback_policies.items()
        if ns == namespace
        for spec in specs
    }

    def lookup(cache_key: str) -> CacheEntry | None:
        freshest: CacheEntry | None = None
        for entry in indexes.cache_entries.get((namespace, cache_key), []):
            if freshest is None or entry.expires_at > freshest.expires_at:
                freshest = entry
        return freshest

    def shown(owner: Key, job_name: str) -> bool:
        jobs = indexes.step_jobs.get((JOBS_OF, *owner), ())
        return any(job.name == job_name for job in jobs)

    active = indexes.step_jobs.get((ACTIVE_IN, namespace), ())
    active_in_namespace = rt.active_jobs(namespace, active, shown)
    rt.metrics.jobs_active.labels(namespace=namespace).set(active_in_namespace)
    running_by_limit: dict[str, int] = {}
    for rule in rt.config.concurrency_rules:
        running = rt.active_jobs(
            controller.limit_scope(rule.name),
            indexes.step_jobs.get((ACTIVE_UNDER, rule.name), ()),
            shown,
        )
        running_by_limit[rule.name] = running
        rt.metrics.concurrency_running.labels(limit=rule.name).set(running)
    return Observations(
        # Jobs are indexed by their owner's uid (see job_entries); a Workflow's uid never changes.
        jobs=list(indexes.step_jobs.get((JOBS_OF, namespace, uid), [])),
        pods=list(indexes.step_pods.get(key, [])),
        policies=policies,
        cache=lookup,
        active_jobs_in_namespace=active_in_namespace,
        running_by_limit=running_by_limit,
    )


async def work(rt: Runtime, indexes: WorkflowIndexes) -> None:
    """One worker: take a woken Workflow's key from the queue, run its pass, repeat."""
    while True:
        try:
            key = await rt.queue.get()
        except ShutDown:
            return
        try:
            await reconcile_key(rt, indexes, key)
        finally:
            rt.queue.done(key)


async def reconcile_key(rt: Runtime, indexes: WorkflowIndexes, key: Key) -> None:
    """One pass of the Workflow ``key`` as the watch last delivered it, and its next wake-up."""
    body = rt.workflows.get(key)
    if body is None or not rt.is_leader:
        return  # gone; or left to the leader (a replica that takes the lead wakes them all)
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return  # being deleted (another finalizer holds it): nothing more starts
    uid = meta.get("uid") or ""
    try:
        done = await controller.reconcile(rt, key, body, lambda: gather(rt, indexes, key, uid))
    except Exception:
        logger.exception("reconcile of %s/%s failed; retrying in %gs", *key, RETRY_SECONDS)
        rt.queue.add_after(key, RETRY_SECONDS)
        return
    if key not in rt.workflows:
        rt.forget(key)  # deleted during the pass: drop what the pass kept of it
        return
    if done.requeue_after is not None:
        rt.queue.add_after(key, max(min(done.requeue_after, RESYNC_SECONDS), 0.05))
    elif not done.finished:
        rt.queue.add_after(key, RESYNC_SECONDS)
    else:
        rt.rest(key)
    # A finished Workflow is not planned again until it changes (a rerun, a retry, a new spec:
    # all watch events that wake it).  Re-planning every finished Workflow each RESYNC_SECONDS
    # was ~5% of a core with 5,000 of them (make bench, memory scenario).
