"""The operator's Prometheus metrics and the small HTTP server that exposes them.

Every metric lives in one injected :class:`prometheus_client.CollectorRegistry` (never the
process-wide default), so tests and several operators in one process do not share counters.

Label values must stay bounded: namespaces, agent names, phases, outcomes, API verbs and status
codes.  Workflow names, UIDs, Job names and free-form messages never become labels, because each
distinct value is a new time series that lives for the life of the process.  Agent names are
chosen by whoever writes a Workflow, so they pass through :meth:`OperatorMetrics.agent_label`,
which keeps a bounded number of them per namespace.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import kopf
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder

from agentflow import __version__
from agentflow.api.models import FailureClass, StepPhase
from agentflow.engine.types import (
    AttemptFinished,
    BudgetExceeded,
    CacheOutcome,
    Fact,
    FallbackTaken,
    StepFinished,
    StepStarted,
    UsageRecorded,
    WorkflowFinished,
)

log = logging.getLogger(__name__)

# The only label names any agentflow metric may carry (see the module docstring).
ALLOWED_LABELS = frozenset(
    {
        "namespace",
        "agent",
        "fallback_agent",
        "outcome",
        "class",
        "phase",
        "degraded",
        "verb",
        "code",
        "result",
        "direction",
        "resource",
        "version",
        "limit",
        "bound",
        "type",
        "generation",
    }
)

# Values of the enumerated labels, for callers and for documentation.
STEP_OUTCOMES = ("succeeded", "failed", "fallback", "skipped", "cached")
CACHE_RESULTS = ("hit", "miss", "expired")
TOKEN_DIRECTIONS = ("input", "output")
RECONCILE_OUTCOMES = ("success", "requeue", "error")
# The values of the ``class`` label: the failure classes.
FAILURE_CLASSES = tuple(c.value for c in FailureClass)
BUDGET_BOUNDS = ("maxTokens", "maxCost")

# The label value of every agent past a namespace's limit of agent names.
OTHER_AGENT = "other"
# Distinct agent names per namespace that keep their own label value (the setting
# AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE).  At 20, a namespace's agent-labelled metrics have at
# most 21 agent values (and 21 x 21 fallback pairs), whatever its Workflows call their agents.
AGENTS_PER_NAMESPACE = 20

# Seconds.  A step runs an agent: seconds to hours.
STEP_DURATION_BUCKETS = (
    *(1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    *(1200.0, 1800.0, 3600.0, 7200.0, 14400.0),
)
# From a step becoming ready to its Job existing: normally well under a second, minutes when a
# namespace's job limit holds it back.
QUEUE_LATENCY_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    *(5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
# What the operator itself adds between steps: a Job finished -> the next action taken.
OVERHEAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# How late the event loop wakes a 50 ms sleep (agentflow.looplag): milliseconds to seconds.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One reconcile: a pure plan plus a few API calls.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The labels whose values are agent names, bounded per namespace (OperatorMetrics.agent_label).
AGENT_LABELS = ("agent", "fallback_agent")

Health = Callable[[], tuple[bool, str]]
Authorizer = Callable[[str | None], Awaitable[bool]]


@dataclass(frozen=True)
class MetricUpdate:
    """One change to a metric: ``metric`` (an :class:`OperatorMetrics` attribute) with
    ``labels`` is incremented by ``amount`` (a counter) or observes it (a histogram)."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    amount: float = 1.0


def _update(metric: str, amount: float = 1.0, **labels: str) -> MetricUpdate:
    return MetricUpdate(metric, tuple(labels.items()), amount)


def metric_updates(namespace: str, facts: Iterable[Fact]) -> list[MetricUpdate]:
    """The metric updates that a pass's transition facts in ``namespace`` amount to (pure)."""
    updates: list[MetricUpdate] = []
    ns = namespace
    for fact in facts:
        if isinstance(fact, StepStarted):
            if fact.ready_at is not None:
                latency = max(0.0, (fact.started_at - fact.ready_at).total_seconds())
                updates.append(
                    _update("step_queue_latency", latency, namespace=ns, agent=fact.agent)
                )
        elif isinstance(fact, AttemptFinished):
            agent = fact.agent
            updates.append(
                _update("step_attempts", namespace=ns, agent=agent, outcome=fact.outcome)
            )
            if fact.outcome == "failed":
                known = fact.failure_class in FAILURE_CLASSES
                failure = fact.failure_class if known else FailureClass.AGENT_ERROR.value
                labels = (("namespace", ns), ("agent", agent), ("class", str(failure)))
                updates.append(MetricUpdate("step_attempt_failures", labels))
            if fact.started_at and fact.finished_at:
                duration = max(0.0, (fact.finished_at - fact.started_at).total_seconds())
                updates.append(_update("step_duration", duration, namespace=ns, agent=agent))
            if fact.job_finished_at is not None:
                overhead = max(0.0, (fact.at - fact.job_finished_at).total_seconds())
                updates.append(_update("step_overhead", overhead))
        elif isinstance(fact, StepFinished):
            agent = fact.agent
            if fact.phase in (StepPhase.SKIPPED, StepPhase.CACHED):
                outcome = fact.phase.value.lower()
                updates.append(_update("step_attempts", namespace=ns, agent=agent, outcome=outcome))
            reported = fact.metrics if fact.phase is StepPhase.SUCCEEDED else None
            if reported is not None and reported.tool_calls:
                updates.append(
                    _update("agent_tool_calls", reported.tool_calls, namespace=ns, agent=agent)
                )
        elif isinstance(fact, UsageRecorded):
            # Every attempt's tokens (each iteration of a repeated step), not only a step's last.
            agent = fact.agent
            for direction, tokens in (
                ("input", fact.input_tokens),
                ("output", fact.output_tokens),
            ):
                if tokens:
                    updates.append(
                        _update(
                            "agent_tokens", tokens, namespace=ns, agent=agent, direction=direction
                        )
                    )
            if fact.cost is not None and fact.cost > 0:
                updates.append(_update("agent_cost", float(fact.cost), namespace=ns, agent=agent))
        elif isinstance(fact, BudgetExceeded):
            updates.append(_update("budgets_exceeded", namespace=ns, bound=fact.bound))
        elif isinstance(fact, FallbackTaken):
            updates.append(
                _update(
                    "fallbacks", namespace=ns, agent=fact.agent, fallback_agent=fact.fallback_agent
                )
            )
        elif isinstance(fact, CacheOutcome):
            updates.append(_update("cache_requests", result=fact.result))
        elif isinstance(fact, WorkflowFinished):
            updates.append(
                _update(
                    "workflows_finished",
                    namespace=ns,
                    phase=fact.phase.value,
                    degraded=str(fact.degraded).lower(),
                )
            )
    return updates


class TooManyRequests(Exception):
    """An authorizer cannot check a token now; the caller gets 429 and tries again later."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests: retry after {retry_after}s")
        self.retry_after = retry_after


class OperatorMetrics:
    """All metrics of the operator, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        self.workflows = Gauge(
            "agentflow_workflows",
            "Workflows known to the operator, by namespace and phase.",
            ["namespace", "phase"],
            registry=r,
        )
        self.workflows_finished = Counter(
            "agentflow_workflows_finished",
            "Workflows that reached a terminal phase; degraded=true when a fallback or a "
            "skipped step was needed.",
            ["namespace", "phase", "degraded"],
            registry=r,
        )
        self.step_attempts = Counter(
            "agentflow_step_attempts",
            "Finished step attempts by outcome (succeeded, failed, fallback, skipped, cached).",
            ["namespace", "agent", "outcome"],
            registry=r,
        )
        self.step_attempt_failures = Counter(
            "agentflow_step_attempt_failures",
            "Failed step attempts by failure class (RateLimited, Timeout, QualityGateFailed...).",
            ["namespace", "agent", "class"],
            registry=r,
        )
        self.fallbacks = Counter(
            "agentflow_fallbacks",
            "Times a step switched from an agent to its fallback agent.",
            ["namespace", "agent", "fallback_agent"],
            registry=r,
        )
        self.step_duration = Histogram(
            "agentflow_step_duration_seconds",
            "Wall time of a step attempt, from its Job starting to it finishing.",
            ["namespace", "agent"],
            buckets=STEP_DURATION_BUCKETS,
            registry=r,
        )
        self.step_queue_latency = Histogram(
            "agentflow_step_queue_latency_seconds",
            "Time from a step becoming ready to its Job being created.",
            ["namespace", "agent"],
            buckets=QUEUE_LATENCY_BUCKETS,
            registry=r,
        )
        self.step_overhead = Histogram(
            "agentflow_operator_step_overhead_seconds",
            "Time from a step Job finishing to the operator taking the next action.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        # The event loop's lag, recorded by agentflow.looplag.LoopLagMonitor.
        self.event_loop_lag = Histogram(
            "agentflow_operator_event_loop_lag_seconds",
            "How much later than asked the event loop woke a fixed short sleep.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.event_loop_lag_max = Gauge(
            "agentflow_operator_event_loop_lag_max_seconds",
            "The largest event-loop lag seen in the last 10 seconds.",
            registry=r,
        )
        self.event_loop_lag_on_cpu = Histogram(
            "agentflow_operator_event_loop_lag_on_cpu_seconds",
            "Of each event-loop lag, the part the loop's thread can have spent running code (at "
            "most its CPU time over the sleep); the rest was the process waiting for a CPU.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.event_loop_lag_on_cpu_max = Gauge(
            "agentflow_operator_event_loop_lag_on_cpu_max_seconds",
            "The largest on-CPU part of an event-loop lag seen in the last 10 seconds.",
            registry=r,
        )
        # Garbage collections, recorded by agentflow.gcpause.GcPauseMonitor.
        self.gc_pause = Histogram(
            "agentflow_operator_gc_pause_seconds",
            "How long each garbage collection held the process, by generation (2 is a full one).",
            ["generation"],
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "agentflow_reconcile_duration_seconds",
            "Duration of one reconcile of a Workflow, by outcome (success, requeue, error).",
            ["outcome"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "agentflow_kubernetes_api_requests",
            "Requests the operator made to the Kubernetes API, by verb and HTTP status code.",
            ["verb", "code"],
            registry=r,
        )
        self.events_posted = Counter(
            "agentflow_events_posted",
            "Kubernetes Events the operator posted about Workflows, by type (Normal, Warning); "
            "each is one of the API requests, rate-limited by a bucket of its own.",
            ["type"],
            registry=r,
        )
        self.cache_requests = Counter(
            "agentflow_cache_requests",
            "Step result cache lookups by result (hit, miss, expired).",
            ["result"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "agentflow_cache_entries",
            "Step result cache entries currently stored.",
            registry=r,
        )
        self.agent_tool_calls = Counter(
            "agentflow_agent_tool_calls",
            "Tool calls reported by agents in their step results.",
            ["namespace", "agent"],
            registry=r,
        )
        self.agent_tokens = Counter(
            "agentflow_agent_tokens",
            "Model tokens reported by agents in their step results, by direction.",
            ["namespace", "agent", "direction"],
            registry=r,
        )
        self.agent_cost = Counter(
            "agentflow_agent_cost",
            "Cost of the model tokens agents reported, in the currency of the operator's price "
            "table (tokens of models without a price count nothing here).",
            ["namespace", "agent"],
            registry=r,
        )
        self.budgets_exceeded = Counter(
            "agentflow_budgets_exceeded",
            "Workflow runs that reached their spec.budget, by the bound reached "
            "(maxTokens, maxCost).",
            ["namespace", "bound"],
            registry=r,
        )
        self.concurrency_running = Gauge(
            "agentflow_concurrency_limit_running",
            "Step Jobs running under each of the operator's concurrency limits, cluster-wide.",
            ["limit"],
            registry=r,
        )
        self.concurrency_waiting = Gauge(
            "agentflow_concurrency_limit_waiting",
            "Step attempts waiting for a slot of each of the operator's concurrency limits.",
            ["limit"],
            registry=r,
        )
        self.jobs_active = Gauge(
            "agentflow_jobs_active",
            "Step Jobs currently running, by namespace.",
            ["namespace"],
            registry=r,
        )
        self.watch_events = Counter(
            "agentflow_watch_events",
            "Watch events the operator received, by resource.",
            ["resource"],
            registry=r,
        )
        self.last_watch_event = Gauge(
            "agentflow_last_watch_event_timestamp_seconds",
            "Unix time of the last watch event received.",
            registry=r,
        )
        self.build_info = Info(
            "agentflow_build",
            "The running operator's version (the value is always 1).",
            registry=r,
        )
        self.build_info.info({"version": __version__})
        # namespace -> the agent names that keep their own label value there.
        self._agent_names: dict[str, set[str]] = {}

    def agent_label(self, namespace: str, agent: str, limit: int = AGENTS_PER_NAMESPACE) -> str:
        """The ``agent`` (or ``fallback_agent``) label value for ``agent`` in ``namespace``.

        Anyone who may create a Workflow names its agents, and every new name would be a new
        set of series kept for the life of the process (and in Prometheus).  The first
        ``limit`` names a namespace uses keep their value; later ones become ``other``.  The
        names stay admitted while the process runs: forgetting them would let a loop of
        Workflows admit new names for ever.  Namespaces are the cluster administrator's.
        """
        names = self._agent_names.setdefault(namespace, set())
        if agent in names:
            return agent
        if agent == OTHER_AGENT or len(names) >= limit:
            return OTHER_AGENT
        names.add(agent)
        return agent

    def apply(
        self, updates: Iterable[MetricUpdate], agents_per_namespace: int = AGENTS_PER_NAMESPACE
    ) -> None:
        """Carry out ``updates``; agent label values pass through :meth:`agent_label`."""
        for update in updates:
            labels = dict(update.labels)
            for name in AGENT_LABELS:
                if name in labels:
                    labels[name] = self.agent_label(
                        labels["namespace"], labels[name], agents_per_namespace
                    )
            metric = getattr(self, update.metric)
            target = metric.labels(**labels) if labels else metric
            if isinstance(metric, Histogram):
                target.observe(update.amount)
            else:
                target.inc(update.amount)

    def set_workflow_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Set ``agentflow_workflows`` to ``counts`` ((namespace, phase) -> Workflows).

        Series of namespaces (and phases) with no Workflow left are removed, and so is a
        namespace's ``agentflow_jobs_active``: its Jobs go with its Workflows, and a deleted
        namespace must not stay on the dashboard.
        """
        self.workflows.clear()
        for (namespace, phase), n in counts.items():
            self.workflows.labels(namespace=namespace, phase=phase).set(n)
        known = {namespace for namespace, _ in counts}
        for family in self.jobs_active.collect():
            for sample in family.samples:
                if sample.labels["namespace"] not in known:
                    self.jobs_active.remove(sample.labels["namespace"])

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when ``accept`` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class MetricsPortInUse(kopf.PermanentError, OSError):
    """The metrics port is taken.  Permanent: kopf would otherwise retry the start-up forever,
    with no /healthz and no exit, and the operator must not quietly move to another port."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(port_in_use_message(host, port))
        self.host = host
        self.port = port


def port_in_use_message(host: str, port: int) -> str:
    return (
        f"metrics port {port} on {host} is already in use by another process: choose another "
        "with --metrics-port or AGENTFLOW_METRICS_PORT (0 picks a free port)"
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails with EADDRINUSE, as the metrics server binds it.

    Like asyncio's server, the probe sets SO_REUSEADDR, so a port whose last connections are
    only in TIME_WAIT (a just-stopped operator) counts as free; a listening socket does not.
    Any other bind error (an unknown host, say) is left for the server to report.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
    return False


def _always_healthy() -> tuple[bool, str]:
    return True, "ok"


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on the operator's event loop.

    ``health`` (and ``ready``, which defaults to ``health``) returns ``(ok, reason)``.  With an
    ``authorizer`` the ``/metrics`` endpoint requires a bearer token the authorizer accepts
    (the operator checks it with a TokenReview and a SubjectAccessReview for ``get /metrics``);
    the probes stay open because the kubelet calls them without credentials.
    """

    def __init__(
        self,
        metrics: OperatorMetrics,
        *,
        host: str = "0.0.0.0",
        port: int = 8080,
        health: Health | None = None,
        authorizer: Authorizer | None = None,
        ready: Health | None = None,
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._health = health or _always_healthy
        self._ready = ready or self._health
        self._authorizer = authorizer
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_healthz)
        app.router.add_get("/readyz", self._serve_readyz)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            if e.errno == errno.EADDRINUSE:
                log.error(port_in_use_message(self.host, self.port))
                raise MetricsPortInUse(self.host, self.port) from e
            raise
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # With port 0 the OS picked a free port: report the one actually bound.
        self.port = int(runner.addresses[0][1])
        log.info("metrics server listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        if self._authorizer is not None:
            token = bearer_token(request.headers.get("Authorization"))
            try:
                allowed = await self._authorizer(token)
            except TooManyRequests as e:
                return web.Response(
                    status=429,
                    text="Too many requests: try again later\n",
                    headers={"Retry-After": str(e.retry_after)},
                )
            except Exception:
                log.exception("metrics authorization check failed")
                return web.Response(status=503, text="authorization check failed\n")
            if not allowed:
                if token is None:
                    return web.Response(
                        status=401,
                        text="Unauthorized: a bearer token is required\n",
                        headers={"WWW-Authenticate": 'Bearer realm="agentflow-metrics"'},
                    )
                return web.Response(status=403, text="Forbidden\n")
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _serve_healthz(self, _request: web.Request) -> web.Response:
        return _probe(self._health)

    async def _serve_readyz(self, _request: web.Request) -> web.Response:
        return _probe(self._ready)


def _probe(check: Health) -> web.Response:
    try:
        ok, reason = check()
    except Exception as exc:  # a failing check is an unhealthy operator, not a crashed server
        log.exception("health check raised")
        ok, reason = False, f"health check raised: {exc}"
    if ok:
        return web.Response(status=200, text="ok\n")
    return web.Response(status=503, text=f"{reason}\n")
