"""The garbage collector's pauses: measured, and kept short for the one event loop.

CPython's cyclic garbage collector runs inside whatever code allocates at the moment a
generation's threshold is crossed, so each collection is a synchronous stretch of the
operator's one event loop (see agentflow.looplag).  A full collection walks every object the
collector tracks; about 100,000 of the operator's are there once it has started (what it
imported: kopf, the kubernetes client's models, pydantic), and they live as long as the
process.

:func:`freeze_startup_heap` moves what exists once the operator has started into the
collector's permanent generation, so full collections walk only what was made since (above
all kopf's state of each watched Workflow, Job and pod).  :class:`GcPauseMonitor` records
every collection's duration by generation, which is how the effect shows in a running
operator.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object left; returns how many were frozen.

    Called once, when start-up is done: what is alive then (modules, classes, the
    configuration, the clients) stays alive, so no later collection needs to look at it.
    Objects frozen are still freed by reference counting; only a cycle among them that
    becomes garbage later would be kept, which start-up objects do not become.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauseMonitor:
    """Records each garbage collection's duration into ``histogram``, by generation.

    A callback of :data:`gc.callbacks`: the collector calls it right before and right after
    every collection, on the thread that triggered it.
    """

    def __init__(self, histogram: Histogram, clock: Callable[[], float] = time.perf_counter):
        self.histogram = histogram
        self.clock = clock
        self._started: float | None = None
        # One child per generation, made up front: the callback runs inside a collection.
        self._by_generation = [histogram.labels(generation=str(g)) for g in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.clock()
        elif phase == "stop" and self._started is not None:
            self._by_generation[info["generation"]].observe(self.clock() - self._started)
            self._started = None

    def install(self) -> None:
        """Start recording (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        """Stop recording."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)
