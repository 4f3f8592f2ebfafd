"""agentflow.gcpause: collections are recorded by generation; a frozen heap is skipped, not lost."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from agentflow.gcpause import GcPauseMonitor, freeze_startup_heap
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


def test_a_cycle_made_after_the_freeze_is_still_collected(unfrozen: None) -> None:
    freeze_startup_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b

    gc.collect()
    assert gone() is None


def test_a_frozen_object_is_still_freed_by_reference_counting(unfrozen: None) -> None:
    kept = Node()
    gone = weakref.ref(kept)
    freeze_startup_heap()

    del kept
    assert gone() is None
