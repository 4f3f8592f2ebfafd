"""Quality gates: what a step's ``accept`` read of a result, for the message of a failed gate."""

from __future__ import annotations

import json
import re
from typing import Any

# result.metrics.<name> and result.metrics.extra.<name>, and the result's other fields.
_METRIC = re.compile(r"\bresult\.metrics\.(extra\.)?([A-Za-z_][A-Za-z0-9_]*)")
_FIELD = re.compile(r"\bresult\.(summary|status|artifacts|iteration)\b")
MAX_VALUES = 8
MAX_VALUE_CHARS = 60


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def gate_values(expression: str, view: dict[str, Any]) -> str:
    """``score = 42, size(artifacts) = 0``: the values of the result (as CEL sees it, ``view``)
    that ``expression`` names, at most :data:`MAX_VALUES`, each cut short; a metric the
    result lacks is ``missing``."""
    parts: list[str] = []
    seen: set[str] = set()
    metrics = view.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    extra = metrics.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    for match in _METRIC.finditer(expression):
        in_extra, name = match.group(1) is not None, match.group(2)
        if name in seen or (name == "extra" and not in_extra):
            continue
        seen.add(name)
        source = extra if in_extra else metrics
        value = source.get(name)
        parts.append(f"{name} missing" if value is None else f"{name} = {_shown(value)}")
    for match in _FIELD.finditer(expression):
        name = match.group(1)
        if name in seen:
            continue
        seen.add(name)
        value = view.get(name)
        if name == "artifacts":
            parts.append(f"size(artifacts) = {len(value) if isinstance(value, list) else 0}")
        else:
            parts.append(f"{name} = {_shown(value)}")
    return ", ".join(parts[:MAX_VALUES])
