"""How late the operator's event loop runs what is due: a task that sleeps a fixed interval.

Everything the operator does (kopf's watches, the workers' passes, the HTTP server of the
probes) shares one asyncio event loop, so a callback that holds it (a long plan, a big JSON
decode) delays all of them.  :class:`LoopLagMonitor` sleeps ``interval`` seconds over and over
and records, each time it wakes, how much later than asked it woke: into a histogram, and
into a gauge of the largest lag seen in the last ``window`` seconds.
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


class LoopLagMonitor:
    """Records the event loop's lag into ``histogram`` and ``max_gauge``."""

    def __init__(
        self,
        histogram: Histogram,
        max_gauge: Gauge,
        interval: float = INTERVAL_SECONDS,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.histogram = histogram
        self.max_gauge = max_gauge
        self.interval = interval
        self.window = window
        self.clock = clock
        # (time, lag) pairs of the window with decreasing lags: the first is the window's max.
        self._maxima: deque[tuple[float, float]] = deque()

    @classmethod
    def of(cls, metrics: OperatorMetrics) -> LoopLagMonitor:
        """A monitor of the operator's ``event_loop_lag`` metrics, with the default timing."""
        return cls(metrics.event_loop_lag, metrics.event_loop_lag_max)

    def record(self, lag: float, now: float) -> None:
        """One observation: ``lag`` seconds late, noticed at ``now`` (the clock's time)."""
        lag = max(0.0, lag)
        self.histogram.observe(lag)
        while self._maxima and self._maxima[-1][1] <= lag:
            self._maxima.pop()
        self._maxima.append((now, lag))
        while self._maxima[0][0] < now - self.window:
            self._maxima.popleft()
        self.max_gauge.set(self._maxima[0][1])

    async def run(self) -> None:
        """Sleep and measure until cancelled."""
        while True:
            asked = self.clock()
            await asyncio.sleep(self.interval)
            woke = self.clock()
            self.record(woke - asked - self.interval, woke)
