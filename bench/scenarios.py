"""The benchmark's scenarios, run the same way against each peer.

Times come from watches held by the harness: when a workflow was seen finished, when a step's
Job (agentflow) or Pod (Argo) was seen created and seen finished, all as local receive times
(``time.monotonic``), which avoids the one-second resolution of ``creationTimestamp``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import stats
from bench.cluster import BenchCluster
from bench.kubeapi import Obj, Watcher
from bench.peers import AgentflowPeer, Peer, http_get

log = logging.getLogger("bench")

TERMINAL = frozenset({"Succeeded", "Failed", "Error"})
LOOP_LAG = "agentflow_operator_event_loop_lag_seconds"
LOOP_LAG_MAX = "agentflow_operator_event_loop_lag_max_seconds"
LOOP_LAG_ON_CPU = "agentflow_operator_event_loop_lag_on_cpu_seconds"
LOOP_LAG_ON_CPU_MAX = "agentflow_operator_event_loop_lag_on_cpu_max_seconds"
GC_PAUSE = "agentflow_operator_gc_pause_seconds"


class Recorder:
    """Watches one peer's workflows and step objects during a run."""

    def __init__(self, peer: Peer, workflows: set[str]) -> None:
        self.peer = peer
        self.workflows = workflows  # only these count: earlier runs' objects may still exist
        self.lock = threading.Lock()
        self.workflow_done: dict[str, tuple[float, str]] = {}
        self.workflow_seen: dict[str, float] = {}
        self.child_created: dict[str, tuple[str, float]] = {}
        self.child_finished: dict[str, float] = {}
        # agentflow only: when each step Job's pod was seen Succeeded, by Job name.
        self.pod_finished: dict[str, float] = {}
        api = peer.api
        self.watchers = [
            Watcher(api, peer.workflows_path, self._on_workflow),
            Watcher(api, peer.child_path, self._on_child, peer.child_selector),
        ]
        if isinstance(peer, AgentflowPeer):
            pods = f"/api/v1/namespaces/{peer.namespace}/pods"
            self.watchers.append(Watcher(api, pods, self._on_pod, peer.child_selector))

    def __enter__(self) -> Recorder:
        for watcher in self.watchers:
            watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for watcher in self.watchers:
            watcher.stop()

    def _on_workflow(self, kind: str, obj: Obj, now: float) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if name not in self.workflows:
            return
        with self.lock:
            self.workflow_seen.setdefault(name, now)
            phase = self.peer.phase(obj)
            if phase in TERMINAL and name not in self.workflow_done:
                self.workflow_done[name] = (now, phase or "")

    def _on_child(self, kind: str, obj: Obj, now: float) -> None:
        if kind == "DELETED":
            return
        name = (obj.get("metadata") or {}).get("name", "")
        workflow = self.peer.child_workflow(obj) or ""
        if workflow not in self.workflows:
            return
        with self.lock:
            if name not in self.child_created:
                self.child_created[name] = (workflow, now)
            if name not in self.child_finished and self.peer.child_finished(obj):
                self.child_finished[name] = now

    def _on_pod(self, kind: str, obj: Obj, now: float) -> None:
        if kind == "DELETED" or (obj.get("status") or {}).get("phase") != "Succeeded":
            return
        labels = (obj.get("metadata") or {}).get("labels") or {}
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if job:
            with self.lock:
                self.pod_finished.setdefault(job, now)

    def done(self, names: set[str]) -> int:
        with self.lock:
            return sum(1 for n in names if n in self.workflow_done)

    def wait(self, names: set[str], timeout: float, progress: Callable[[int], None]) -> bool:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            finished = self.done(names)
            if finished == len(names):
                return True
            if time.monotonic() - last_report > 15:
                progress(finished)
                last_report = time.monotonic()
            if not self.peer.alive():
                raise RuntimeError(f"{self.peer.name}'s controller died during the run")
            time.sleep(0.1)
        return False

    def gaps(self, from_pod: bool = False) -> list[float]:
        """Finish of a step -> creation of the next one, in sequential workflows."""
        with self.lock:
            finished = self.pod_finished if from_pod else self.child_finished
            rows = [
                (workflow, created, finished.get(name))
                for name, (workflow, created) in self.child_created.items()
            ]
        return stats.sequential_gaps(rows)

    def first_step_latency(self) -> list[float]:
        """Workflow seen -> its first step object seen."""
        with self.lock:
            return stats.first_child_latencies(self.workflow_seen, self.child_created.values())


def full_collections(samples: dict[stats.SampleKey, float]) -> dict[stats.SampleKey, float]:
    """The samples of the garbage collector's full collections (generation 2) only."""
    return {key: value for key, value in samples.items() if ("generation", "2") in key[1]}


def loop_lag(
    before: dict[stats.SampleKey, float],
    after: dict[stats.SampleKey, float],
    lag_max: float | None,
    on_cpu_max: float | None,
) -> dict[str, Any]:
    """The event loop's lag over a run (p50, p99, and the ``lag_max`` the sampler saw), the
    same for its on-CPU part, and the garbage collector's full collections (how many, and the
    upper bound of the longest's bucket), between two scrapes of the operator's metrics."""
    on_cpu = stats.histogram_delta_quantiles(before, after, LOOP_LAG_ON_CPU, (0.99,))
    full = stats.histogram_delta_quantiles(
        full_collections(before), full_collections(after), GC_PAUSE, (1.0,)
    )
    return {
        **stats.histogram_delta_quantiles(before, after, LOOP_LAG, (0.5, 0.99)),
        "max": lag_max,
        "on_cpu_p99": on_cpu.get("p99"),
        "on_cpu_max": on_cpu_max,
        "gc_full_collections": full.get("n"),
        "gc_full_longest_at_most": full.get("p100"),
    }


class Sampler:
    """During a run: the controller's /healthz once a second and, for agentflow, the gauges of
    its largest event-loop lag of the last 10 s (and of that lag's on-CPU part) every
    ``metrics_interval`` seconds (shorter than that window, so no maximum is missed)."""

    def __init__(self, peer: Peer, interval: float = 1.0, metrics_interval: float = 5.0) -> None:
        self.peer = peer
        self.interval = interval
        self.metrics_interval = metrics_interval
        self.codes: list[int] = []
        self.latencies: list[float] = []
        self.lag_max: float | None = None
        self.on_cpu_max: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        url = self.peer.healthz_url
        last_scrape = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            if url is not None:
                code, _ = http_get(url, timeout=5.0)
                self.codes.append(code)
                self.latencies.append(time.monotonic() - began)
            if (
                isinstance(self.peer, AgentflowPeer)
                and began - last_scrape >= self.metrics_interval
            ):
                last_scrape = began
                self._lag(self.peer.metrics())
            self._stop.wait(self.interval)
        if isinstance(self.peer, AgentflowPeer):
            self._lag(self.peer.metrics())

    def _lag(self, samples: dict[stats.SampleKey, float]) -> None:
        value = stats.gauge_value(samples, LOOP_LAG_MAX)
        if value is not None:
            self.lag_max = value if self.lag_max is None else max(self.lag_max, value)
        on_cpu = stats.gauge_value(samples, LOOP_LAG_ON_CPU_MAX)
        if on_cpu is not None:
            self.on_cpu_max = on_cpu if self.on_cpu_max is None else max(self.on_cpu_max, on_cpu)

    def health(self) -> dict[str, Any] | None:
        if self.peer.healthz_url is None:
            return None
        return stats.health_summary(self.codes, self.latencies)


@dataclass
class Run:
    """What one scenario measured on one peer."""

    peer: str
    scenario: str
    workflows: int
    steps_per_workflow: int
    expected_steps: int
    seconds: float | None = None
    timed_out: bool = False
    succeeded: int = 0
    failed: int = 0
    steps_created: int = 0
    workflows_per_second: float | None = None
    steps_per_second: float | None = None
    overhead: dict[str, Any] | None = None
    overhead_from_pod: dict[str, Any] | None = None
    overhead_histogram: dict[str, Any] | None = None
    first_step: dict[str, Any] | None = None
    cpu_seconds: float | None = None
    cpu_ms_per_step: float | None = None
    own_requests: dict[str, float] | None = None
    apiserver_requests: dict[str, float] = field(default_factory=dict)
    events_by_component: dict[str, float] = field(default_factory=dict)
    rss_mib: float | None = None
    # /healthz during the run (stats.health_summary) and the event loop's lag (agentflow).
    healthz: dict[str, Any] | None = None
    loop_lag: dict[str, Any] | None = None
    # memory: RSS before the Workflows, per finished Workflow, idle CPU with them present.
    rss_before_mib: float | None = None
    kib_per_workflow: float | None = None
    idle_cpu_percent: float | None = None
    # scaling: one measure_window() per number of Workflows present.
    scaling: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def per_step(self, value: float | None) -> float | None:
        return None if value is None or not self.steps_created else value / self.steps_created


def _summary(values: list[float]) -> dict[str, Any] | None:
    summary = stats.summarize(values)
    return summary.as_dict() if summary else None


def apiserver_by_verb_resource(bench: BenchCluster) -> dict[tuple[str, ...], float]:
    return stats.sum_by(
        bench.apiserver_metrics(), "apiserver_request_total", ["verb", "resource", "subresource"]
    )


def events_by_component(peer: Peer) -> dict[tuple[str, ...], float]:
    """Events in the peer's namespace by the component that posted them (with repeats)."""
    counts: dict[tuple[str, ...], float] = {}
    for event in peer.api.items(f"/api/v1/namespaces/{peer.namespace}/events"):
        component = (
            event.get("reportingComponent")
            or (event.get("source") or {}).get("component")
            or "unknown"
        )
        counts[(component,)] = counts.get((component,), 0.0) + float(event.get("count") or 1)
    return counts


def run_workflows(
    bench: BenchCluster,
    peer: Peer,
    scenario: str,
    manifests_by_batch: list[list[Obj]],
    steps_per_workflow: int,
    timeout: float,
    sequential: bool = True,
    expected_steps: int | None = None,
    between_batches: Callable[[int], None] | None = None,
) -> Run:
    """Submit the batches (each one at once, the next when it finished) and measure.

    ``between_batches(submitted)`` runs after each finished batch but the last, with the
    number of workflows submitted so far; the time it takes is left out of ``seconds``.
    """
    names = {m["metadata"]["name"] for batch in manifests_by_batch for m in batch}
    run = Run(
        peer=peer.name,
        scenario=scenario,
        workflows=len(names),
        steps_per_workflow=steps_per_workflow,
        expected_steps=(
            len(names) * steps_per_workflow if expected_steps is None else expected_steps
        ),
    )
    own_before = peer.own_requests()
    hist_before = peer.metrics() if isinstance(peer, AgentflowPeer) else {}
    server_before = apiserver_by_verb_resource(bench)
    events_before = events_by_component(peer)
    cpu_before = peer.cpu_seconds()
    deadline = time.monotonic() + timeout
    paused = 0.0
    submitted = 0
    with Sampler(peer) as sampler, Recorder(peer, names) as recorder:
        started = time.monotonic()
        for index, batch in enumerate(manifests_by_batch):
            if index and between_batches is not None:
                pause_began = time.monotonic()
                between_batches(submitted)
                paused += time.monotonic() - pause_began
                deadline += time.monotonic() - pause_began
            submitted += len(batch)
            peer.submit(batch)
            batch_names = {m["metadata"]["name"] for m in batch}

            def progress(done: int, index: int = index, total: int = len(batch_names)) -> None:
                log.info(
                    "  %s %s batch %d: %d/%d finished",
                    peer.name,
                    scenario,
                    index + 1,
                    done,
                    total,
                )

            remaining = deadline - time.monotonic()
            if not recorder.wait(batch_names, max(remaining, 1.0), progress):
                run.timed_out = True
                run.notes.append(
                    f"timed out after {timeout:.0f}s: {recorder.done(names)}/{len(names)} finished"
                )
                break
        with recorder.lock:
            ends = [t for n, (t, _) in recorder.workflow_done.items() if n in names]
            phases = [p for n, (_, p) in recorder.workflow_done.items() if n in names]
        if ends and not run.timed_out:
            run.seconds = max(ends) - started - paused
        run.succeeded = sum(1 for p in phases if p == "Succeeded")
        run.failed = len(phases) - run.succeeded
        run.steps_created = len(recorder.child_created)
        if sequential:
            run.overhead = _summary(recorder.gaps())
            if isinstance(peer, AgentflowPeer):
                run.overhead_from_pod = _summary(recorder.gaps(from_pod=True))
        run.first_step = _summary(recorder.first_step_latency())
        # Let the last status writes and events land before the counters are read.
        time.sleep(2.0)
    run.healthz = sampler.health()
    run.cpu_seconds = peer.cpu_seconds() - cpu_before
    own_after = peer.own_requests()
    if own_before is not None and own_after is not None:
        run.own_requests = {
            verb: n for (verb,), n in stats.delta(_keyed(own_before), _keyed(own_after)).items()
        }
    server_after = apiserver_by_verb_resource(bench)
    run.events_by_component = {
        component: n
        for (component,), n in stats.delta(events_before, events_by_component(peer)).items()
    }
    run.apiserver_requests = {
        "/".join(part for part in key if part): n
        for key, n in stats.delta(server_before, server_after).items()
    }
    if isinstance(peer, AgentflowPeer):
        hist_after = peer.metrics()
        run.overhead_histogram = stats.histogram_delta_quantiles(
            hist_before, hist_after, "agentflow_operator_step_overhead_seconds"
        )
        run.loop_lag = loop_lag(hist_before, hist_after, sampler.lag_max, sampler.on_cpu_max)
    rss = peer.rss_kib()
    run.rss_mib = rss / 1024 if rss is not None else None
    if run.seconds:
        run.workflows_per_second = run.succeeded / run.seconds
        run.steps_per_second = run.steps_created / run.seconds
    if run.cpu_seconds is not None and run.steps_created:
        run.cpu_ms_per_step = run.cpu_seconds * 1000 / run.steps_created
    if run.steps_created != run.expected_steps:
        run.notes.append(f"{run.steps_created} step objects for {run.expected_steps} steps")
    if run.failed:
        run.notes.append(f"{run.failed} workflows failed")
    log.info(
        "%s %s: %s in %s s (%s wf/s), %d/%d succeeded",
        peer.name,
        scenario,
        f"{run.workflows} workflows x {steps_per_workflow} steps",
        stats.fmt(run.seconds),
        stats.fmt(run.workflows_per_second),
        run.succeeded,
        run.workflows,
    )
    return run


def _keyed(by_verb: dict[str, float]) -> dict[tuple[str, ...], float]:
    return {(verb,): n for verb, n in by_verb.items()}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (``--quick`` divides them by about ten)."""

    burst: int = 500
    chains: int = 50
    chain_steps: int = 10
    fanout: int = 200
    fanout_parallelism: int = 20
    latency_serial_runs: int = 10
    latency_concurrent: int = 20
    rss_workflows: int = 5000
    rss_batch: int = 500
    cache_steps: int = 5
    # Workflows present at each measurement of the scaling curve (on the way up to
    # rss_workflows, in the memory scenario's run).
    scaling_points: tuple[int, ...] = (100, 1000, 5000)
    scaling_window: float = 10.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            burst=50,
            chains=5,
            fanout=20,
            fanout_parallelism=4,
            latency_serial_runs=2,
            latency_concurrent=4,
            rss_workflows=500,
            rss_batch=250,
            scaling_points=(10, 100, 500),
            scaling_window=5.0,
        )


def throughput_burst(bench: BenchCluster, peer: Peer, sizes: Sizes, timeout: float) -> Run:
    tag = unique("burst")
    manifests = [peer.manifest(f"{tag}-{i}", 1, parallel=False) for i in range(sizes.burst)]
    return run_workflows(bench, peer, "burst", [manifests], 1, timeout, sequential=False)


def throughput_chains(bench: BenchCluster, peer: Peer, sizes: Sizes, timeout: float) -> Run:
    tag = unique("chain")
    manifests = [
        peer.manifest(f"{tag}-{i}", sizes.chain_steps, parallel=False) for i in range(sizes.chains)
    ]
    return run_workflows(bench, peer, "chains", [manifests], sizes.chain_steps, timeout)


def throughput_fanout(bench: BenchCluster, peer: Peer, sizes: Sizes, timeout: float) -> Run:
    manifest = peer.manifest(
        unique("fanout"), sizes.fanout, parallel=True, parallelism=sizes.fanout_parallelism
    )
    return run_workflows(bench, peer, "fanout", [[manifest]], sizes.fanout, timeout, False)


def latency_serial(bench: BenchCluster, peer: Peer, sizes: Sizes, timeout: float) -> Run:
    """One 10-step workflow at a time, several times."""
    tag = unique("serial")
    batches = [
        [peer.manifest(f"{tag}-{i}", sizes.chain_steps, parallel=False)]
        for i in range(sizes.latency_serial_runs)
    ]
    return run_workflows(bench, peer, "latency-1", batches, sizes.chain_steps, timeout)


def latency_concurrent(bench: BenchCluster, peer: Peer, sizes: Sizes, timeout: float) -> Run:
    tag = unique("conc")
    manifests = [
        peer.manifest(f"{tag}-{i}", sizes.chain_steps, parallel=False)
        for i in range(sizes.latency_concurrent)
    ]
    scenario = f"latency-{sizes.latency_concurrent}"
    return run_workflows(bench, peer, scenario, [manifests], sizes.chain_steps, timeout)


def caching(bench: BenchCluster, peer: AgentflowPeer, sizes: Sizes, timeout: float) -> list[Run]:
    """A workflow, then a second one with identical steps: the second should reuse every result."""
    seed = unique("cache")
    runs = []
    for label in ("cold", "warm"):
        manifest = peer.manifest(
            f"{seed}-{label}", sizes.cache_steps, parallel=False, cache=True, seed=seed
        )
        # Every step of the warm run should be a cache hit: no Job at all.
        expected = 0 if label == "warm" else sizes.cache_steps
        runs.append(
            run_workflows(
                bench,
                peer,
                f"cache-{label}",
                [[manifest]],
                sizes.cache_steps,
                timeout,
                expected_steps=expected,
            )
        )
    return runs


def measure_window(
    bench: BenchCluster, peer: Peer, present: int, settle: float, window: float, cpu_start: float
) -> dict[str, Any]:
    """The controller at rest with ``present`` workflows: CPU, RSS and API requests/s over
    ``window`` seconds, after ``settle`` seconds for the last events to land."""
    time.sleep(settle)
    own_before = peer.own_requests()
    server_before = sum(apiserver_by_verb_resource(bench).values())
    cpu_before = peer.cpu_seconds()
    began = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - began
    cpu_after = peer.cpu_seconds()
    own_after = peer.own_requests()
    server_after = sum(apiserver_by_verb_resource(bench).values())
    rss = peer.rss_kib()
    point: dict[str, Any] = {
        "workflows": present,
        "seconds": elapsed,
        "cpu_percent": (cpu_after - cpu_before) / elapsed * 100,
        "cpu_seconds_total": cpu_after - cpu_start,
        "rss_mib": rss / 1024 if rss is not None else None,
        "own_requests_per_second": None,
        # Every client of the API server, the harness's watches included.
        "cluster_requests_per_second": (server_after - server_before) / elapsed,
    }
    if own_before is not None and own_after is not None:
        point["own_requests_per_second"] = (
            sum(own_after.values()) - sum(own_before.values())
        ) / elapsed
    log.info(
        "  %s with %d workflows present: %.1f%% of a core, %s MiB, %s own requests/s",
        peer.name,
        present,
        point["cpu_percent"],
        stats.fmt(point["rss_mib"], "", 0),
        stats.fmt(point["own_requests_per_second"]),
    )
    return point


def memory(
    bench: BenchCluster,
    peer: Peer,
    sizes: Sizes,
    timeout: float,
    points: Sequence[int] = (),
) -> Run:
    """RSS with many Workflows present, nearly all finished (created in batches).

    With ``points`` (the scaling curve) the batches are cut so that exactly that many
    Workflows have been submitted and finished at each point, where the controller is
    measured at rest (:func:`measure_window`); the last point is the memory figure itself.
    """
    tag = unique("rss")
    batches: list[list[Obj]] = []
    start = 0
    for count in stats.batch_sizes(sizes.rss_workflows, sizes.rss_batch, points):
        batches.append(
            [peer.manifest(f"{tag}-{start + i}", 1, parallel=False) for i in range(count)]
        )
        start += count
    before = peer.rss_kib()
    cpu_start = peer.cpu_seconds()
    scaling: list[dict[str, Any]] = []

    def between(submitted: int) -> None:
        if submitted in points:
            settle = min(3.0, sizes.scaling_window)
            scaling.append(
                measure_window(bench, peer, submitted, settle, sizes.scaling_window, cpu_start)
            )

    run = run_workflows(
        bench, peer, "memory", batches, 1, timeout, sequential=False, between_batches=between
    )
    # The figure asked for is the steady state with the Workflows present, not the peak.
    final = measure_window(bench, peer, run.workflows, 10.0, 20.0, cpu_start)
    if sizes.rss_workflows in points and not run.timed_out:
        scaling.append(final)
    run.scaling = scaling
    run.rss_mib = final["rss_mib"]
    run.idle_cpu_percent = final["cpu_percent"]
    if before is not None:
        run.rss_before_mib = before / 1024
        if run.rss_mib is not None:
            run.kib_per_workflow = (run.rss_mib * 1024 - before) / max(run.workflows, 1)
    return run
