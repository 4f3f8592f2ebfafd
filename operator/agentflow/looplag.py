"""How late the operator's event loop runs what is due: a task that sleeps a fixed interval.

Everything the operator does (kopf's watches, the workers' passes, the HTTP server of the
probes) shares one asyncio event loop, so a callback that holds it (a long plan, a big JSON
decode) delays all of them.  :class:`LoopLagMonitor` sleeps ``interval`` seconds over and over
and records, each time it wakes, how much later than asked it woke: into a histogram, and
into a gauge of the largest lag seen in the last ``window`` seconds.

A late wake-up has two causes that call for different fixes: the loop's thread was running
code (a long callback, a garbage collection, many callbacks queued ahead of the timer), or
the process was waiting for a CPU that other processes held.  So each lag is also recorded
with the part of it the loop's thread can have spent on a CPU: at most the thread's CPU time
over the sleep (:func:`time.thread_time`).  The rest of the lag is the process kept off the
CPU, which no change of the operator's code shortens.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Gauge, Histogram

if TYPE_CHECKING:
    from agentflow.metrics import OperatorMetrics

# The monitor's sleep, and the span of the gauge of the largest lag.
INTERVAL_SECONDS = 0.05
WINDOW_SECONDS = 10.0


class WindowMax:
    """The largest of the values added in the last ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        # (time, value) pairs of the window with decreasing values: the first is the max.
        self._maxima: deque[tuple[float, float]] = deque()

    def add(self, value: float, now: float) -> float:
        """Add ``value`` seen at ``now``; returns the window's largest value."""
        while self._maxima and self._maxima[-1][1] <= value:
            self._maxima.pop()
        self._maxima.append((now, value))
        while self._maxima[0][0] < now - self.window:
            self._maxima.popleft()
        return self._maxima[0][1]


class LoopLagMonitor:
    """Records the event loop's lag into ``histogram`` and ``max_gauge``, and the part of
    each lag the loop's thread can have been on a CPU into ``on_cpu_histogram`` and
    ``on_cpu_max_gauge``."""

    def __init__(
        self,
        histogram: Histogram,
        max_gauge: Gauge,
        on_cpu_histogram: Histogram,
        on_cpu_max_gauge: Gauge,
        interval: float = INTERVAL_SECONDS,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.histogram = histogram
        self.max_gauge = max_gauge
        self.on_cpu_histogram = on_cpu_histogram
        self.on_cpu_max_gauge = on_cpu_max_gauge
        self.interval = interval
        self.clock = clock
        self.cpu_clock = cpu_clock
        self._lag_max = WindowMax(window)
        self._on_cpu_max = WindowMax(window)

    @classmethod
    def of(cls, metrics: OperatorMetrics) -> LoopLagMonitor:
        """A monitor of the operator's ``event_loop_lag`` metrics, with the default timing."""
        return cls(
            metrics.event_loop_lag,
            metrics.event_loop_lag_max,
            metrics.event_loop_lag_on_cpu,
            metrics.event_loop_lag_on_cpu_max,
        )

    def record(self, lag: float, now: float, cpu: float) -> None:
        """One observation: ``lag`` seconds late, noticed at ``now`` (the clock's time), after
        a sleep over which the loop's thread used ``cpu`` seconds of CPU time."""
        lag = max(0.0, lag)
        on_cpu = min(lag, max(0.0, cpu))
        self.histogram.observe(lag)
        self.max_gauge.set(self._lag_max.add(lag, now))
        self.on_cpu_histogram.observe(on_cpu)
        self.on_cpu_max_gauge.set(self._on_cpu_max.add(on_cpu, now))

    async def run(self) -> None:
        """Sleep and measure until cancelled."""
        while True:
            asked, cpu_before = self.clock(), self.cpu_clock()
            await asyncio.sleep(self.interval)
            woke, cpu_after = self.clock(), self.cpu_clock()
            self.record(woke - asked - self.interval, woke, cpu_after - cpu_before)
