"""agentflow.metrics: the registry matches docs/metrics.md, labels stay bounded, the HTTP
server serves metrics and probes, and the exposition passes ``promtool check metrics``."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from agentflow.metrics import (
    ALLOWED_LABELS,
    CACHE_RESULTS,
    OTHER_AGENT,
    RECONCILE_OUTCOMES,
    STEP_OUTCOMES,
    MetricsServer,
    OperatorMetrics,
    TooManyRequests,
    bearer_token,
)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "metrics.md"
BIN_DIR = Path(os.environ.get("AGENTFLOW_BIN_DIR", Path.home() / ".cache/agentflow/bin"))

# How each prometheus_client type appears in the docs table.
DOC_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "info": "info"}


def exposed_name(family_name: str, family_type: str) -> str:
    """The name a family is scraped under (prometheus_client drops the suffix internally)."""
    return {"counter": family_name + "_total", "info": family_name + "_info"}.get(
        family_type, family_name
    )


def registered(metrics: OperatorMetrics) -> dict[str, tuple[str, frozenset[str]]]:
    """Exposed name -> (type, label names) for every metric the registry holds."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            kind = str(value._type)
            # Info labels come from its value, not from the definition.
            labels = frozenset({"version"}) if kind == "info" else frozenset(value._labelnames)
            out[exposed_name(value._name, kind)] = (kind, labels)
    # Nothing registered behind the attributes' back.
    in_registry = {exposed_name(f.name, f.type) for f in metrics.registry.collect()}
    assert in_registry == set(out)
    return out


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Rows of the metrics table in docs/metrics.md: name -> (type, label names)."""
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    in_table = False
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| Metric |"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if set(cells[0]) <= {"-", " "}:
            continue
        name = cells[0].strip("`")
        labels = frozenset(re.findall(r"`([a-z_]+)`", cells[2]))
        assert name not in rows, f"{name} is documented twice"
        rows[name] = (cells[1], labels)
    assert rows, "docs/metrics.md has no metrics table (a header row starting '| Metric |')"
    return rows


def exercise_all(m: OperatorMetrics) -> None:
    """Touch every metric once with realistic label values."""
    m.workflows.labels(namespace="team-a", phase="Running").set(3)
    m.workflows_finished.labels(namespace="team-a", phase="Succeeded", degraded="true").inc()
    m.step_attempts.labels(namespace="team-a", agent="coder", outcome="fallback").inc()
    m.step_attempt_failures.labels(
        namespace="team-a", agent="coder", **{"class": "RateLimited"}
    ).inc()
    m.fallbacks.labels(namespace="team-a", agent="coder", fallback_agent="coder-small").inc()
    m.step_duration.labels(namespace="team-a", agent="coder").observe(42.0)
    m.step_queue_latency.labels(namespace="team-a", agent="coder").observe(0.2)
    m.step_overhead.observe(0.012)
    m.event_loop_lag.observe(0.002)
    m.event_loop_lag_max.set(0.002)
    m.event_loop_lag_on_cpu.observe(0.001)
    m.event_loop_lag_on_cpu_max.set(0.001)
    m.gc_pause.labels(generation="2").observe(0.03)
    m.reconcile_duration.labels(outcome="success").observe(0.004)
    m.api_requests.labels(verb="patch", code="200").inc()
    m.events_posted.labels(type="Normal").inc()
    m.cache_requests.labels(result="hit").inc()
    m.cache_entries.set(7)
    m.agent_tool_calls.labels(namespace="team-a", agent="coder").inc(5)
    m.agent_tokens.labels(namespace="team-a", agent="coder", direction="input").inc(100)
    m.agent_cost.labels(namespace="team-a", agent="coder").inc(0.25)
    m.budgets_exceeded.labels(namespace="team-a", bound="maxTokens").inc()
    m.concurrency_running.labels(limit="anthropic").set(2)
    m.concurrency_waiting.labels(limit="anthropic").set(8)
    m.jobs_active.labels(namespace="team-a").set(2)
    m.watch_events.labels(resource="workflows").inc()
    m.last_watch_event.set(1_700_000_000.0)


def test_every_registered_metric_is_documented_and_every_documented_metric_is_registered() -> None:
    reg = registered(OperatorMetrics())
    doc = documented()
    assert sorted(set(reg) - set(doc)) == [], "registered but missing from docs/metrics.md"
    assert sorted(set(doc) - set(reg)) == [], "documented in docs/metrics.md but not registered"
    for name, (kind, labels) in reg.items():
        doc_kind, doc_labels = doc[name]
        assert doc_kind == DOC_TYPES[kind], f"{name}: documented as {doc_kind}, is {kind}"
        assert doc_labels == labels, f"{name}: documented labels {doc_labels}, real {labels}"


@pytest.mark.parametrize(
    ("metric", "label", "values"),
    [
        ("agentflow_reconcile_duration_seconds", "outcome", RECONCILE_OUTCOMES),
        ("agentflow_step_attempts_total", "outcome", STEP_OUTCOMES),
        ("agentflow_cache_requests_total", "result", CACHE_RESULTS),
    ],
)
def test_the_documented_label_values_are_the_ones_the_code_emits(
    metric: str, label: str, values: tuple[str, ...]
) -> None:
    """docs/metrics.md once said success|requeue|error where the code emitted ok|conflict."""
    [row] = [line for line in DOCS.read_text().splitlines() if line.startswith(f"| `{metric}` |")]
    meaning = row.strip().strip("|").split("|")[-1]
    listed = meaning[meaning.index(f"`{label}` is") + len(f"`{label}` is") :]
    # The values are the backticked words of that sentence, outside the parenthesised notes.
    listed = re.sub(r"\([^)]*\)", "", listed.split(". ")[0])
    assert tuple(re.findall(r"`([a-z_]+)`", listed)) == values


def test_the_brief_metric_set_is_registered() -> None:
    names = set(registered(OperatorMetrics()))
    assert {
        "agentflow_workflows",
        "agentflow_workflows_finished_total",
        "agentflow_step_attempts_total",
        "agentflow_fallbacks_total",
        "agentflow_step_duration_seconds",
        "agentflow_step_queue_latency_seconds",
        "agentflow_operator_step_overhead_seconds",
        "agentflow_reconcile_duration_seconds",
        "agentflow_kubernetes_api_requests_total",
        "agentflow_events_posted_total",
        "agentflow_cache_requests_total",
        "agentflow_cache_entries",
        "agentflow_agent_tool_calls_total",
        "agentflow_agent_tokens_total",
        "agentflow_jobs_active",
        "agentflow_watch_events_total",
        "agentflow_last_watch_event_timestamp_seconds",
        "agentflow_build_info",
    } <= names


def test_exercise_touches_every_metric_and_labels_stay_within_the_allowed_set() -> None:
    m = OperatorMetrics()
    exercise_all(m)
    families = list(m.registry.collect())
    assert len(families) == len(registered(m))
    for family in families:
        assert family.samples, f"{family.name} has no samples: extend exercise_all for it"
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}
            assert labels <= ALLOWED_LABELS, f"{sample.name} has unbounded labels {labels}"
    # The same holds for what a scraper parses back from the exposition.
    body, _ = m.render()
    for parsed in text_string_to_metric_families(body.decode()):
        for sample in parsed.samples:
            assert set(sample.labels) - {"le"} <= ALLOWED_LABELS, sample


def test_each_instance_has_its_own_registry_unless_one_is_injected() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()
    a.cache_entries.set(5)
    assert b.registry.get_sample_value("agentflow_cache_entries") == 0.0
    shared = CollectorRegistry()
    m = OperatorMetrics(shared)
    m.cache_requests.labels(result="miss").inc(2)
    assert shared.get_sample_value("agentflow_cache_requests_total", {"result": "miss"}) == 2.0


def test_build_info_carries_the_package_version() -> None:
    from agentflow import __version__

    m = OperatorMetrics()
    assert m.registry.get_sample_value("agentflow_build_info", {"version": __version__}) == 1.0


def test_step_overhead_buckets_resolve_five_milliseconds() -> None:
    m = OperatorMetrics()
    m.step_overhead.observe(0.004)
    value = m.registry.get_sample_value(
        "agentflow_operator_step_overhead_seconds_bucket", {"le": "0.005"}
    )
    assert value == 1.0


def test_render_negotiates_openmetrics() -> None:
    m = OperatorMetrics()
    exercise_all(m)
    text, text_type = m.render()
    om, om_type = m.render("application/openmetrics-text; version=1.0.0")
    assert text_type.startswith("text/plain")
    assert om_type.startswith("application/openmetrics-text")
    assert b"agentflow_step_attempts_total{" in text
    assert om.rstrip().endswith(b"# EOF")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# --------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------

Fetch = Callable[[str, dict[str, str] | None], Awaitable[tuple[int, str, str]]]


def serve(server: MetricsServer, scenario: Callable[[Fetch], Awaitable[None]]) -> None:
    """Start the server on a free port, run the scenario against it, stop it."""

    async def main() -> None:
        await server.start()
        try:
            assert server.port != 0
            async with aiohttp.ClientSession() as session:

                async def fetch(path: str, headers: dict[str, str] | None) -> tuple[int, str, str]:
                    url = f"http://127.0.0.1:{server.port}{path}"
                    async with session.get(url, headers=headers or {}) as response:
                        return (
                            response.status,
                            response.headers.get("Content-Type", ""),
                            await response.text(),
                        )

                await scenario(fetch)
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_server_serves_metrics_and_probes() -> None:
    m = OperatorMetrics()
    m.jobs_active.labels(namespace="team-a").set(4)

    async def scenario(fetch: Fetch) -> None:
        status, content_type, body = await fetch("/metrics", None)
        assert status == 200
        assert content_type.startswith("text/plain")
        assert 'agentflow_jobs_active{namespace="team-a"} 4.0' in body
        for path in ("/healthz", "/readyz"):
            status, _, body = await fetch(path, None)
            assert (status, body.strip()) == (200, "ok")
        status, _, _ = await fetch("/nope", None)
        assert status == 404

    serve(MetricsServer(m, host="127.0.0.1", port=0), scenario)


def test_probes_report_503_with_the_reason() -> None:
    state = {"healthy": False}

    def health() -> tuple[bool, str]:
        return (True, "ok") if state["healthy"] else (False, "watch stream stalled for 120s")

    def ready() -> tuple[bool, str]:
        return False, "not the leader"

    async def scenario(fetch: Fetch) -> None:
        status, _, body = await fetch("/healthz", None)
        assert (status, body.strip()) == (503, "watch stream stalled for 120s")
        status, _, body = await fetch("/readyz", None)
        assert (status, body.strip()) == (503, "not the leader")
        state["healthy"] = True
        status, _, _ = await fetch("/healthz", None)
        assert status == 200

    serve(
        MetricsServer(OperatorMetrics(), host="127.0.0.1", port=0, health=health, ready=ready),
        scenario,
    )


def test_readyz_follows_health_by_default_and_a_raising_check_is_unhealthy() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    async def scenario(fetch: Fetch) -> None:
        for path in ("/healthz", "/readyz"):
            status, _, body = await fetch(path, None)
            assert status == 503
            assert "boom" in body

    serve(MetricsServer(OperatorMetrics(), host="127.0.0.1", port=0, health=broken), scenario)


def test_metrics_auth() -> None:
    seen: list[str | None] = []

    async def authorizer(token: str | None) -> bool:
        seen.append(token)
        if token == "explode":
            raise RuntimeError("token review failed")
        return token == "scraper-token"

    async def scenario(fetch: Fetch) -> None:
        status, _, _ = await fetch("/metrics", None)
        assert status == 401
        status, _, _ = await fetch("/metrics", {"Authorization": "Basic dXNlcjpwYXNz"})
        assert status == 401
        status, _, _ = await fetch("/metrics", {"Authorization": "Bearer someone-else"})
        assert status == 403
        status, _, _ = await fetch("/metrics", {"Authorization": "Bearer explode"})
        assert status == 503
        status, _, body = await fetch("/metrics", {"Authorization": "Bearer scraper-token"})
        assert status == 200
        assert "agentflow_build_info" in body
        # The probes are for the kubelet, which has no token.
        status, _, _ = await fetch("/healthz", None)
        assert status == 200

    serve(
        MetricsServer(OperatorMetrics(), host="127.0.0.1", port=0, authorizer=authorizer),
        scenario,
    )
    assert seen == [None, None, "someone-else", "explode", "scraper-token"]


def test_a_check_that_cannot_be_made_now_is_429_with_retry_after() -> None:
    async def authorizer(token: str | None) -> bool:
        raise TooManyRequests(1)

    async def scenario(fetch: Fetch) -> None:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/metrics"
            headers = {"Authorization": "Bearer a.b.c"}
            async with session.get(url, headers=headers) as response:
                assert response.status == 429
                assert response.headers["Retry-After"] == "1"
        status, _, _ = await fetch("/healthz", None)
        assert status == 200

    server = MetricsServer(OperatorMetrics(), host="127.0.0.1", port=0, authorizer=authorizer)
    serve(server, scenario)


def test_server_start_reports_a_busy_port() -> None:
    async def main() -> None:
        first = MetricsServer(OperatorMetrics(), host="127.0.0.1", port=0)
        await first.start()
        try:
            second = MetricsServer(OperatorMetrics(), host="127.0.0.1", port=first.port)
            with pytest.raises(OSError):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(asyncio.wait_for(main(), timeout=30))


# --------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool", path=str(BIN_DIR)) or shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not built: run `make binaries` (looked in {BIN_DIR})")
    return path


def test_exposition_passes_promtool_check_metrics() -> None:
    m = OperatorMetrics()
    exercise_all(m)
    body, _ = m.render()
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    report: Any = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, report


# --------------------------------------------------------------------------------------------
# Label values that come from users
# --------------------------------------------------------------------------------------------


def label_values(m: OperatorMetrics, metric: str, label: str, **match: str) -> set[str]:
    """The values ``label`` takes among the samples of family ``metric`` matching ``match``."""
    return {
        sample.labels[label]
        for family in m.registry.collect()
        if family.name == metric
        for sample in family.samples
        if all(sample.labels.get(k) == v for k, v in match.items())
    }


def test_each_namespace_keeps_its_first_agent_names_and_reports_the_rest_as_other() -> None:
    m = OperatorMetrics()
    assert [m.agent_label("a", f"agent-{i}", limit=3) for i in range(5)] == [
        "agent-0",
        "agent-1",
        "agent-2",
        OTHER_AGENT,
        OTHER_AGENT,
    ]
    # Admitted names stay admitted; "other" itself takes no place; other namespaces have their
    # own budget, so one namespace's Workflows cannot take another's.
    assert m.agent_label("a", "agent-1", limit=3) == "agent-1"
    assert m.agent_label("b", OTHER_AGENT, limit=3) == OTHER_AGENT
    assert [m.agent_label("b", f"x-{i}", limit=3) for i in range(4)] == [
        "x-0",
        "x-1",
        "x-2",
        OTHER_AGENT,
    ]


def test_workflow_series_of_a_namespace_without_workflows_are_removed() -> None:
    from agentflow.config import OperatorConfig
    from agentflow.controller import Runtime

    rt = Runtime(
        kube=None,  # type: ignore[arg-type]
        metrics=OperatorMetrics(),
        config=OperatorConfig(),
        post_event=lambda *_: None,
    )
    reg = rt.metrics.registry
    rt.record_phase(("gone", "w1"), "Running")
    rt.record_phase(("gone", "w2"), "Succeeded")
    rt.record_phase(("stays", "w"), "Running")
    for ns in ("gone", "stays"):
        rt.metrics.jobs_active.labels(namespace=ns).set(1)
    assert reg.get_sample_value("agentflow_workflows", {"namespace": "gone", "phase": "Running"})

    rt.forget(("gone", "w1"))
    assert label_values(rt.metrics, "agentflow_workflows", "phase", namespace="gone") == {
        "Succeeded"
    }
    assert reg.get_sample_value("agentflow_jobs_active", {"namespace": "gone"}) == 1
    rt.forget(("gone", "w2"))
    assert label_values(rt.metrics, "agentflow_workflows", "namespace") == {"stays"}
    assert label_values(rt.metrics, "agentflow_jobs_active", "namespace") == {"stays"}


def test_workflows_with_ever_new_agent_names_keep_the_series_bounded() -> None:
    """A loop of Workflows whose agents have random names: the agent-labelled metrics have at
    most ``limit`` + 1 agent values per namespace, and no attempt goes uncounted."""
    from datetime import UTC, datetime, timedelta

    from agentflow.api.models import StepMetrics, StepPhase, WorkflowPhase
    from agentflow.engine.types import (
        AttemptFinished,
        Fact,
        FallbackTaken,
        StepFinished,
        StepStarted,
        UsageRecorded,
        WorkflowFinished,
    )
    from agentflow.metrics import metric_updates

    limit = 4
    metrics = OperatorMetrics()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    runs = 60
    for i in range(runs):
        primary, backup = f"p-{os.urandom(4).hex()}", f"b-{os.urandom(4).hex()}"
        done = t0 + timedelta(seconds=5)
        failed_at = t0 + timedelta(seconds=2)
        reported = StepMetrics(tool_calls=1, input_tokens=10, output_tokens=2)
        facts: list[Fact] = [
            StepStarted(step="s", agent=primary, ready_at=t0, started_at=t0),
            AttemptFinished("s", primary, "failed", t0, failed_at, failed_at, failed_at),
            FallbackTaken(step="s", agent=primary, fallback_agent=backup),
            AttemptFinished("s", backup, "fallback", failed_at, done, done, done),
            StepFinished(step="s", agent=backup, phase=StepPhase.SUCCEEDED, metrics=reported),
            UsageRecorded(step="s", agent=backup, input_tokens=10, output_tokens=2, cost=None),
            StepFinished(step="skipped", agent=f"s-{i}", phase=StepPhase.SKIPPED),
            WorkflowFinished(phase=WorkflowPhase.SUCCEEDED, degraded=True),
        ]
        metrics.apply(metric_updates("team", facts), limit)
    m = metrics
    per_agent = {
        "agentflow_step_attempts": "agent",
        "agentflow_fallbacks": "agent",
        "agentflow_step_duration_seconds": "agent",
        "agentflow_step_queue_latency_seconds": "agent",
        "agentflow_agent_tool_calls": "agent",
        "agentflow_agent_tokens": "agent",
    }
    seen: set[str] = set()
    for metric, label in per_agent.items():
        values = label_values(m, metric, label, namespace="team")
        assert values, metric
        assert OTHER_AGENT in values, metric
        seen |= values
    seen |= label_values(m, "agentflow_fallbacks", "fallback_agent", namespace="team")
    assert len(seen) <= limit + 1, seen
    # Nothing is lost: "other" carries the rest.
    total = sum(
        m.registry.get_sample_value(
            "agentflow_step_attempts_total", {"namespace": "team", "agent": a, "outcome": o}
        )
        or 0.0
        for a in seen
        for o in ("failed", "fallback", "skipped")
    )
    assert total == 3 * runs


def test_each_transition_fact_maps_to_its_metric_updates() -> None:
    """The pure mapping from a pass's facts to metric updates: names, labels and values."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from agentflow.api.models import StepMetrics, StepPhase, WorkflowPhase
    from agentflow.engine.types import (
        AttemptFinished,
        BudgetExceeded,
        CacheOutcome,
        FallbackTaken,
        StepFinished,
        StepStarted,
        UsageRecorded,
        WorkflowFinished,
    )
    from agentflow.metrics import MetricUpdate, metric_updates

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    def update(metric: str, amount: float = 1.0, **labels: str) -> MetricUpdate:
        return MetricUpdate(metric, tuple(labels.items()), amount)

    ns = {"namespace": "team"}
    reported = StepMetrics(tool_calls=3, input_tokens=100, output_tokens=0)
    facts = [
        StepStarted(step="s", agent="a", ready_at=at(0), started_at=at(2)),
        StepStarted(step="t", agent="a", ready_at=None, started_at=at(2)),
        # A Job that finished 0.25 s before the pass that settled it.
        AttemptFinished("s", "a", "failed", at(2), at(10), at(9.75), at(10), "RateLimited"),
        # An attempt without a Job that finished (lost, timed out): no overhead.
        AttemptFinished("s", "b", "fallback", at(10), at(70), None, at(70)),
        FallbackTaken(step="s", agent="a", fallback_agent="b"),
        StepFinished(step="s", agent="b", phase=StepPhase.SUCCEEDED, metrics=reported),
        UsageRecorded(step="s", agent="b", input_tokens=100, output_tokens=0, cost=Decimal("0.3")),
        UsageRecorded(step="t", agent="a", input_tokens=0, output_tokens=7, cost=None),
        BudgetExceeded(bound="maxTokens"),
        StepFinished(step="c", agent="a", phase=StepPhase.CACHED),
        StepFinished(step="k", agent="unknown", phase=StepPhase.SKIPPED),
        CacheOutcome(step="s", key="sha256:k", result="miss"),
        WorkflowFinished(phase=WorkflowPhase.SUCCEEDED, degraded=True),
    ]
    assert metric_updates("team", facts) == [
        update("step_queue_latency", 2.0, **ns, agent="a"),
        update("step_attempts", **ns, agent="a", outcome="failed"),
        update("step_attempt_failures", **ns, agent="a", **{"class": "RateLimited"}),
        update("step_duration", 8.0, **ns, agent="a"),
        update("step_overhead", 0.25),
        update("step_attempts", **ns, agent="b", outcome="fallback"),
        update("step_duration", 60.0, **ns, agent="b"),
        update("fallbacks", **ns, agent="a", fallback_agent="b"),
        update("agent_tool_calls", 3, **ns, agent="b"),
        update("agent_tokens", 100, **ns, agent="b", direction="input"),
        update("agent_cost", 0.3, **ns, agent="b"),
        update("agent_tokens", 7, **ns, agent="a", direction="output"),
        update("budgets_exceeded", **ns, bound="maxTokens"),
        update("step_attempts", **ns, agent="a", outcome="cached"),
        update("step_attempts", **ns, agent="unknown", outcome="skipped"),
        update("cache_requests", result="miss"),
        update("workflows_finished", **ns, phase="Succeeded", degraded="true"),
    ]
    # Carried out on the registry under the exposed names.
    m = OperatorMetrics()
    m.apply(metric_updates("team", facts))
    sample = m.registry.get_sample_value
    assert sample("agentflow_step_attempts_total", {**ns, "agent": "b", "outcome": "fallback"}) == 1
    assert sample("agentflow_step_duration_seconds_sum", {**ns, "agent": "a"}) == 8.0
    assert sample("agentflow_operator_step_overhead_seconds_count", {}) == 1
    assert sample("agentflow_agent_tokens_total", {**ns, "agent": "b", "direction": "input"}) == 100
    assert sample("agentflow_agent_cost_total", {**ns, "agent": "b"}) == 0.3
    assert sample("agentflow_budgets_exceeded_total", {**ns, "bound": "maxTokens"}) == 1
    assert sample("agentflow_cache_requests_total", {"result": "miss"}) == 1
    finished = {**ns, "phase": "Succeeded", "degraded": "true"}
    assert sample("agentflow_workflows_finished_total", finished) == 1
