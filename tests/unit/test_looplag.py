"""agentflow.looplag: the event-loop lag monitor records a loop that is held."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram

from agentflow.looplag import LoopLagMonitor
from agentflow.metrics import OperatorMetrics

HISTOGRAM = "agentflow_operator_event_loop_lag_seconds"
GAUGE = "agentflow_operator_event_loop_lag_max_seconds"


def _value(metrics: OperatorMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


ON_CPU = "agentflow_operator_event_loop_lag_on_cpu_seconds"
ON_CPU_GAUGE = "agentflow_operator_event_loop_lag_on_cpu_max_seconds"


def _hold(seconds: float, *, busy: bool) -> None:
    """Hold the event loop: spinning on the CPU, or blocked as if the CPU were elsewhere."""
    if not busy:
        time.sleep(seconds)
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class _Noting(LoopLagMonitor):
    """A monitor that says when it has recorded a sleep."""

    recorded: asyncio.Event

    def record(self, lag: float, now: float, cpu: float) -> None:
        super().record(lag, now, cpu)
        self.recorded.set()


def _held_loop(metrics: OperatorMetrics, *, busy: bool) -> None:
    monitor = _Noting.of(metrics)

    async def scenario() -> None:
        assert isinstance(monitor, _Noting)
        monitor.recorded = asyncio.Event()
        task = asyncio.create_task(monitor.run())
        # Once one sleep is recorded the monitor is in its next one: the hold spans it.
        await asyncio.wait_for(monitor.recorded.wait(), timeout=10)
        monitor.recorded.clear()
        _hold(0.3, busy=busy)
        await asyncio.wait_for(monitor.recorded.wait(), timeout=10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_loop_held_by_its_own_code_shows_the_lag_as_on_cpu() -> None:
    metrics = OperatorMetrics()
    _held_loop(metrics, busy=True)
    assert _value(metrics, GAUGE) >= 0.25
    # The thread spun for the whole hold: nearly all of the lag is on the CPU.
    assert _value(metrics, ON_CPU_GAUGE) >= 0.2


def test_a_loop_kept_off_the_cpu_shows_the_lag_but_not_as_on_cpu() -> None:
    metrics = OperatorMetrics()
    _held_loop(metrics, busy=False)  # the thread slept: what a process kept off the CPU sees
    assert _value(metrics, GAUGE) >= 0.25
    assert _value(metrics, ON_CPU_GAUGE) < 0.1
    assert _value(metrics, f"{ON_CPU}_count") == _value(metrics, f"{HISTOGRAM}_count")


def test_the_on_cpu_part_is_at_most_the_lag_and_at_most_the_cpu_time() -> None:
    monitor, registry = _monitor()
    monitor.record(0.3, now=1.0, cpu=0.05)
    assert _sample(registry, "on_cpu_max") == 0.05
    monitor.record(0.02, now=2.0, cpu=0.07)  # busy before the timer was due, then on time
    assert _sample(registry, "on_cpu_sum") == pytest.approx(0.07)
    monitor.record(0.1, now=3.0, cpu=-0.01)  # a clock that went backwards counts as none
    assert _sample(registry, "on_cpu_sum") == pytest.approx(0.07)


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
    on_cpu = Histogram("on_cpu", "on cpu", buckets=(0.1, 1.0), registry=registry)
    on_cpu_gauge = Gauge("on_cpu_max", "max", registry=registry)
    monitor = LoopLagMonitor(histogram, gauge, on_cpu, on_cpu_gauge, interval=0.05, window=window)
    return monitor, registry


def _sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def test_the_gauge_is_the_largest_lag_of_the_last_window_only() -> None:
    monitor, registry = _monitor(window=10.0)
    monitor.record(0.5, now=0.0, cpu=0.5)
    monitor.record(0.1, now=5.0, cpu=0.1)
    assert _sample(registry, "lag_max") == 0.5
    monitor.record(0.2, now=9.0, cpu=0.2)
    assert _sample(registry, "lag_max") == 0.5
    monitor.record(0.05, now=10.5, cpu=0.05)  # the 0.5 at t=0 is older than the window now
    assert _sample(registry, "lag_max") == 0.2
    monitor.record(0.0, now=30.0, cpu=0.0)
    assert _sample(registry, "lag_max") == 0.0


def test_a_negative_lag_counts_as_none() -> None:
    monitor, registry = _monitor()
    monitor.record(-0.001, now=1.0, cpu=0.0)
    assert _sample(registry, "lag_max") == 0.0
    assert _sample(registry, "lag_sum") == 0.0
    assert _sample(registry, "lag_count") == 1.0
