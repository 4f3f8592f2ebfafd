"""The result cache as the CLI sees it: ConfigMaps labelled ``agentflow.dev/cache``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentflow.children import (
    CACHE_CREATED_ANNOTATION,
    CACHE_EXPIRES_ANNOTATION,
    CACHE_KEY_ANNOTATION,
)
from agentflow.console.timefmt import parse_time
from agentflow.engine.types import LABEL_CACHE, LABEL_STEP

CACHE_SELECTOR = LABEL_CACHE


@dataclass(frozen=True)
class CacheRow:
    namespace: str
    name: str
    step: str
    key: str | None
    created: datetime | None
    expires: datetime | None

    @classmethod
    def of(cls, cm: Mapping[str, Any]) -> CacheRow:
        meta = cm.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            step=labels.get(LABEL_STEP, ""),
            key=annotations.get(CACHE_KEY_ANNOTATION),
            created=parse_time(annotations.get(CACHE_CREATED_ANNOTATION))
            or parse_time(meta.get("creationTimestamp")),
            expires=parse_time(annotations.get(CACHE_EXPIRES_ANNOTATION)),
        )

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now
