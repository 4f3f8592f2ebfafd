"""agentflow.gcpause: each garbage collection is recorded under its generation."""

from __future__ import annotations

import gc

from agentflow.gcpause import GcPauseMonitor
from agentflow.metrics import OperatorMetrics

HISTOGRAM = "agentflow_operator_gc_pause_seconds"


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
