"""agentflow.gcpause: collections are recorded by generation; a frozen heap is skipped, not lost;
what survives a full collection is frozen after it, and a thaw frees what died frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from agentflow.gcpause import GcPauseMonitor, HeapFreezer, freeze_startup_heap
from agentflow.metrics import OperatorMetrics

HISTOGRAM = "agentflow_operator_gc_pause_seconds"


class Node:
    """Something the collector tracks that can take part in a cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test's process is unfrozen again afterwards, whatever the test froze."""
    yield
    gc.unfreeze()


def _count(metrics: OperatorMetrics, generation: str) -> float:
    value = metrics.registry.get_sample_value(f"{HISTOGRAM}_count", {"generation": generation})
    return value or 0.0


def test_each_collection_is_recorded_under_its_generation() -> None:
    metrics = OperatorMetrics()
    monitor = GcPauseMonitor(metrics.gc_pause)
    monitor.install()
    try:
        gc.collect(2)
        gc.collect(2)
        gc.collect(0)
    finally:
        monitor.uninstall()
    assert _count(metrics, "2") == 2
    assert _count(metrics, "0") >= 1  # and any the interpreter ran by itself meanwhile
    total = metrics.registry.get_sample_value(f"{HISTOGRAM}_sum", {"generation": "2"})
    assert total is not None and total > 0

    gc.collect(2)  # after uninstall: not recorded
    assert _count(metrics, "2") == 2


def test_install_twice_records_each_collection_once() -> None:
    metrics = OperatorMetrics()
    monitor = GcPauseMonitor(metrics.gc_pause)
    monitor.install()
    monitor.install()
    try:
        gc.collect(2)
    finally:
        monitor.uninstall()
    assert _count(metrics, "2") == 1
    assert monitor not in gc.callbacks


def test_the_startup_heap_is_frozen_out_of_collections(unfrozen: None) -> None:
    before = Node()
    assert any(o is before for o in gc.get_objects())
    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > 0
    # Not in any generation: no collection, full or not, walks it any more.
    assert not any(o is before for o in gc.get_objects())
    after = Node()
    assert any(o is after for o in gc.get_objects())


def _garbage_cycle() -> weakref.ref[Node]:
    """A cycle of two nodes, garbage once this returns; a weak reference to one of them."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_cycle_made_after_the_freeze_is_still_collected(unfrozen: None) -> None:
    freeze_startup_heap()
    gone = _garbage_cycle()
    gc.collect()
    assert gone() is None


def test_a_frozen_object_is_still_freed_by_reference_counting(unfrozen: None) -> None:
    kept = Node()
    gone = weakref.ref(kept)
    freeze_startup_heap()

    del kept
    assert gone() is None


@pytest.fixture
def freezer(unfrozen: None) -> Iterator[HeapFreezer]:
    freezer = HeapFreezer(interval=0.01)
    freezer.install()
    yield freezer
    freezer.uninstall()


def _tracked(obj: object) -> bool:
    """Whether a collection would walk ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_what_survives_a_full_collection_is_frozen_after_it(freezer: HeapFreezer) -> None:
    survivor = Node()
    gc.collect(1)
    assert _tracked(survivor)  # a younger collection freezes nothing
    gc.collect(2)
    assert not _tracked(survivor)
    made_since = Node()
    assert _tracked(made_since)


def test_a_cycle_made_after_a_freeze_is_collected_by_the_next_full_collection(
    freezer: HeapFreezer,
) -> None:
    gc.collect()
    gone = _garbage_cycle()
    gc.collect()
    assert gone() is None


def test_a_cycle_that_died_frozen_waits_for_the_thaw(freezer: HeapFreezer) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.collect()  # alive: frozen after it
    del a, b
    gc.collect()
    assert gone() is not None  # frozen: no collection walks it

    freed = freezer.thaw()
    assert gone() is None
    assert freed >= 2
    assert gc.get_freeze_count() > 0  # the thaw's own full collection froze the rest again


def test_the_heap_is_thawed_every_interval(unfrozen: None) -> None:
    class Counting(HeapFreezer):
        def thaw(self) -> int:
            freed = super().thaw()
            if self.thaws == 2:
                twice.set()
            return freed

    freezer = Counting(interval=0.01)

    async def main() -> None:
        task = asyncio.create_task(freezer.run())
        try:
            await asyncio.wait_for(twice.wait(), timeout=10)
        finally:
            task.cancel()

    twice = asyncio.Event()
    asyncio.run(main())
    assert freezer.thaws >= 2


def test_uninstalled_it_freezes_nothing(unfrozen: None) -> None:
    freezer = HeapFreezer()
    freezer.install()
    freezer.install()
    freezer.uninstall()
    assert freezer not in gc.callbacks
    survivor = Node()
    gc.collect()
    assert _tracked(survivor)
