"""The garbage collector's pauses: measured, and kept short for the one event loop.

CPython's cyclic garbage collector runs inside whatever code allocates at the moment a
generation's threshold is crossed, so each collection is a synchronous stretch of the
operator's one event loop (see agentflow.looplag).  A full collection walks every object the
collector tracks: about 100,000 of the operator's once it has started (what it imported:
kopf, the kubernetes client's models, pydantic), and then kopf's state of every Workflow, Job
and pod it watches, about 9 objects each for as long as the object exists.  With 5,000
finished Workflows kept that is some 300,000 objects and 200 to 350 ms a walk, every few
seconds while Workflows run.

:func:`freeze_startup_heap` moves what exists once the operator has started into the
collector's permanent generation.  :class:`HeapFreezer` goes on from there: after each full
collection it freezes what survived it (all of it alive, the collection having just freed
every cycle of garbage), so the next full collection walks only what was made since.  A
frozen object is still freed by reference counting; only a cycle among frozen objects that
dies later waits, and :meth:`HeapFreezer.run` thaws the heap every ``interval`` so that one
full collection then walks everything and frees those.  :class:`GcPauseMonitor` records every
collection's duration by generation, which is how the effect shows in a running operator.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

logger = logging.getLogger("agentflow.gcpause")

# How often the frozen heap is thawed for one full collection of everything.  Under a
# steady load the cycles that die frozen were a few thousand objects a minute (kopf's bodies
# and patches of the events in flight at a freeze), so ten minutes keep that to a few MiB;
# the price is one walk of the whole heap per interval instead of one every few seconds.
THAW_INTERVAL_SECONDS = 600.0


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object left; returns how many were frozen.

    Called once, when start-up is done: what is alive then (modules, classes, the
    configuration, the clients) stays alive, so no later collection needs to look at it
    (but the full one of each thaw, see :class:`HeapFreezer`).
    Objects frozen are still freed by reference counting; only a cycle among them that
    becomes garbage later would be kept, which start-up objects do not become.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcCallback:
    """A callback of :data:`gc.callbacks`: the collector calls it right before ("start") and
    right after ("stop") every collection, on the thread that triggered it."""

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        raise NotImplementedError

    def install(self) -> None:
        """Start being called (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class GcPauseMonitor(GcCallback):
    """Records each garbage collection's duration into ``histogram``, by generation."""

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


class HeapFreezer(GcCallback):
    """Freezes the heap after every full collection; thaws it every ``interval``.

    What the operator keeps across passes must not be reference cycles for this to hold
    memory flat: a cycle frozen while alive is only freed at the next thaw (kopf's ``Body``
    is one, so the Workflows kept for the next pass are plain dicts, see
    ``handlers.workflow_changed``).
    """

    def __init__(self, interval: float = THAW_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.thaws = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            # Everything still tracked survived the collection that just ended: alive.
            gc.freeze()

    def thaw(self) -> int:
        """Unfreeze, collect everything once (which freezes again), return what it freed."""
        thawed = gc.get_freeze_count()
        gc.unfreeze()
        freed = gc.collect()
        self.thaws += 1
        logger.debug("thawed %d objects; the full collection freed %d", thawed, freed)
        return freed

    async def run(self) -> None:
        """Thaw every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.thaw()
