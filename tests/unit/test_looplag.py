"""agentflow.looplag: the event-loop lag monitor records a loop that is held."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram

from agentflow.looplag import LoopLagMonitor
from agentflow.metrics import OperatorMetrics

HISTOGRAM = "agentflow_operator_event_loop_lag_seconds"
GAUGE = "agentflow_operator_event_loop_lag_max_seconds"


def _value(metrics: OperatorMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


def test_a_loop_held_for_300_ms_shows_as_lag_in_the_histogram_and_the_gauge() -> None:
    metrics = OperatorMetrics()
    monitor = LoopLagMonitor.of(metrics)

    async def scenario() -> None:
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.2)  # the monitor is asleep in its loop now
        # Hold the event loop, as a long synchronous callback would.
        time.sleep(0.3)  # noqa: ASYNC251 (blocking on purpose)
        await asyncio.sleep(0.2)  # let it wake and record
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    count = _value(metrics, f"{HISTOGRAM}_count")
    at_most_100ms = _value(metrics, f"{HISTOGRAM}_bucket", {"le": "0.1"})
    # The sleep that spanned the hold woke at least 300 ms - 50 ms late.
    assert count > at_most_100ms
    assert _value(metrics, f"{HISTOGRAM}_bucket", {"le": "0.25"}) < count
    assert _value(metrics, GAUGE) >= 0.25


def test_an_idle_loop_records_observations_with_little_lag() -> None:
    metrics = OperatorMetrics()
    monitor = LoopLagMonitor.of(metrics)

    async def scenario() -> None:
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert _value(metrics, f"{HISTOGRAM}_count") >= 1
    assert _value(metrics, GAUGE) < 0.25


def _monitor(window: float = 10.0) -> tuple[LoopLagMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    histogram = Histogram("lag", "lag", buckets=(0.1, 1.0), registry=registry)
    gauge = Gauge("lag_max", "max", registry=registry)
    return LoopLagMonitor(histogram, gauge, interval=0.05, window=window), registry


def _sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def test_the_gauge_is_the_largest_lag_of_the_last_window_only() -> None:
    monitor, registry = _monitor(window=10.0)
    monitor.record(0.5, now=0.0)
    monitor.record(0.1, now=5.0)
    assert _sample(registry, "lag_max") == 0.5
    monitor.record(0.2, now=9.0)
    assert _sample(registry, "lag_max") == 0.5
    monitor.record(0.05, now=10.5)  # the 0.5 at t=0 is older than the window now
    assert _sample(registry, "lag_max") == 0.2
    monitor.record(0.0, now=30.0)
    assert _sample(registry, "lag_max") == 0.0


def test_a_negative_lag_counts_as_none() -> None:
    monitor, registry = _monitor()
    monitor.record(-0.001, now=1.0)
    assert _sample(registry, "lag_max") == 0.0
    assert _sample(registry, "lag_sum") == 0.0
    assert _sample(registry, "lag_count") == 1.0
