"""Times as the CLI prints them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """Like kubectl's ages: ``90s``, ``5m``, ``3h``, ``2d``: one unit, rounded down, and the
    next larger unit only from two of it on."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age(value: Any, now: datetime) -> str:
    when = parse_time(value)
    return duration((now - when).total_seconds()) if when else "-"
