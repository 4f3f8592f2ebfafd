"""The pure arithmetic of the benchmark: percentiles, metric deltas, ratios and tables.

Nothing here talks to a cluster or reads the clock, so all of it is unit-tested
(``tests/unit/test_bench.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

WRITE_VERBS = frozenset(
    {"post", "put", "patch", "delete", "create", "update", "apply", "deletecollection"}
)
READ_VERBS = frozenset({"get", "list", "watch"})

# One sample of a Prometheus text exposition: (metric name, sorted label pairs).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    This is the usual definition (numpy's default, "type 7"): the median of ``[1, 2, 3, 4]``
    is 2.5 and the 100th percentile is the maximum.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    weight = rank - low
    return float(ordered[low] * (1.0 - weight) + ordered[high] * weight)


@dataclass(frozen=True)
class Summary:
    """Distribution of a sample, in the sample's unit."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary | None:
    """p50/p95/p99, mean and max of ``values``; None for an empty sample."""
    if not values:
        return None
    return Summary(
        n=len(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        mean=sum(values) / len(values),
        max=float(max(values)),
    )


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` (0..1) quantile of a cumulative histogram, as Prometheus estimates it.

    ``buckets`` are ``(upper bound, cumulative count)`` pairs, ``+Inf`` included.  Within a
    bucket the observations are assumed evenly spread; a quantile that falls in the ``+Inf``
    bucket is reported as the largest finite bound.  None when there are no observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    target = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= target:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (target - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def parse_metrics(text: str) -> dict[SampleKey, float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = float(sample.value)
    return samples


def sum_by(
    samples: Mapping[SampleKey, float],
    name: str,
    by: Sequence[str],
    where: Mapping[str, str] | None = None,
) -> dict[tuple[str, ...], float]:
    """Sum of the samples called ``name``, grouped by the values of the labels ``by``.

    ``where`` keeps only samples whose labels have the given values.
    """
    result: dict[tuple[str, ...], float] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name != name:
            continue
        label_map = dict(labels)
        if where and any(label_map.get(k) != v for k, v in where.items()):
            continue
        group = tuple(label_map.get(label, "") for label in by)
        result[group] = result.get(group, 0.0) + value
    return result


def delta(
    before: Mapping[tuple[str, ...], float], after: Mapping[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    """``after - before`` per group (a group missing before counts from zero); zeros dropped."""
    result: dict[tuple[str, ...], float] = {}
    for key, value in after.items():
        change = value - before.get(key, 0.0)
        if change:
            result[key] = change
    return result


def histogram_buckets(samples: Mapping[SampleKey, float], name: str) -> dict[float, float]:
    """Cumulative bucket counts of the histogram ``name`` (summed over its other labels)."""
    buckets: dict[float, float] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name != f"{name}_bucket":
            continue
        bound = float(dict(labels)["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def histogram_delta_quantiles(
    before: Mapping[SampleKey, float],
    after: Mapping[SampleKey, float],
    name: str,
    quantiles: Iterable[float] = (0.5, 0.95, 0.99),
) -> dict[str, float | None]:
    """Quantiles of what a histogram observed between two scrapes, e.g. ``{"p50": 0.01}``."""
    old = histogram_buckets(before, name)
    new = histogram_buckets(after, name)
    diff = [(bound, count - old.get(bound, 0.0)) for bound, count in new.items()]
    result: dict[str, float | None] = {}
    for q in quantiles:
        result[f"p{round(q * 100):d}"] = histogram_quantile(diff, q)
    count = max((c for _, c in diff), default=0.0)
    result["n"] = count
    return result


def split_reads_writes(by_verb: Mapping[str, float]) -> tuple[float, float]:
    """(reads, writes) of request counts keyed by verb, in any letter case."""
    reads = sum(v for verb, v in by_verb.items() if verb.lower() in READ_VERBS)
    writes = sum(v for verb, v in by_verb.items() if verb.lower() in WRITE_VERBS)
    return reads, writes


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``, or None when either is missing or ``theirs`` is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def sequential_gaps(
    children: Iterable[tuple[str, float | None, float | None]],
) -> list[float]:
    """Gaps between one child finishing and the next one appearing, per workflow.

    ``children`` are ``(workflow, seen created at, seen finished at)`` of the step Jobs (or
    pods) of sequential workflows.  Within a workflow the children are ordered by creation; a
    gap is the next child's creation minus this child's finish.  Children never seen
    finishing end the chain of their workflow (a later gap would span a failure).
    """
    by_workflow: dict[str, list[tuple[float, float | None]]] = {}
    for workflow, created, finished in children:
        if created is None:
            continue
        by_workflow.setdefault(workflow, []).append((created, finished))
    gaps: list[float] = []
    for chain in by_workflow.values():
        chain.sort()
        for (_, finished), (next_created, _) in itertools.pairwise(chain):
            if finished is None:
                break
            gaps.append(next_created - finished)
    return gaps


def first_child_latencies(
    workflow_seen: Mapping[str, float], children: Iterable[tuple[str, float]]
) -> list[float]:
    """Per workflow: its first child (Job or pod) seen created minus the workflow seen created.

    ``children`` are ``(workflow, seen created at)``; workflows with no child are left out.
    """
    first: dict[str, float] = {}
    for workflow, created in children:
        first[workflow] = min(created, first.get(workflow, created))
    return [first[name] - seen for name, seen in workflow_seen.items() if name in first]


def batch_sizes(total: int, batch: int, points: Iterable[int] = ()) -> list[int]:
    """Sizes of batches of at most ``batch`` that add up to ``total``, and whose running sums
    pass through every one of ``points`` (those within 1..total), so that a measurement can
    be taken when exactly that many have been submitted."""
    if total <= 0:
        return []
    if batch <= 0:
        raise ValueError(f"batch size {batch} is not positive")
    cuts = {p for p in points if 0 < p < total}
    cuts.update(range(batch, total, batch))
    cuts.add(total)
    sizes: list[int] = []
    done = 0
    for cut in sorted(cuts):
        while cut - done > batch:
            sizes.append(batch)
            done += batch
        sizes.append(cut - done)
        done = cut
    return sizes


def health_summary(codes: Sequence[int], latencies: Sequence[float] = ()) -> dict[str, Any]:
    """What a run of /healthz samples showed: how many, how many not 200 (0: no answer)."""
    return {
        "samples": len(codes),
        "non_200": sum(1 for c in codes if c != 200),
        "no_answer": sum(1 for c in codes if c == 0),
        "slowest_seconds": max(latencies, default=None),
    }


def gauge_value(samples: Mapping[SampleKey, float], name: str) -> float | None:
    """The value of an unlabelled gauge (or the largest one of a labelled family)."""
    values = [v for (sample_name, _), v in samples.items() if sample_name == name]
    return max(values) if values else None


# ---- rendering -------------------------------------------------------------------------------


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """A number for a table cell: ``-`` for missing, thousands separators, fixed decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "-"
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def fmt_ms(seconds: float | None) -> str:
    """Seconds shown as milliseconds."""
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside cells is escaped."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)}: {row!r}")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)
