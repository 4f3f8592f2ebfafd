"""Deterministic names for step Jobs."""

from __future__ import annotations

import hashlib
import re

# A Job's name becomes its pods' ``job-name`` label, so it must be a DNS-1123 label.
MAX_JOB_NAME_LENGTH = 63
_HASH_LENGTH = 8
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")


def job_name(workflow: str, step: str, run: int, iteration: int, attempt: int) -> str:
    """``<workflow>-<step>-<run>-<iteration>-<attempt>``, or a hashed form when that won't do.

    When the plain name is longer than 63 characters or not a DNS-1123 label (a workflow name
    may contain dots), the result is a cleaned, truncated prefix, ``-`` and the first 8 hex
    digits of the SHA-256 of the plain name: still deterministic, and distinct inputs stay
    distinct with overwhelming probability.
    """
    full = f"{workflow}-{step}-{run}-{iteration}-{attempt}"
    if len(full) <= MAX_JOB_NAME_LENGTH and _LABEL.match(full):
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:_HASH_LENGTH]
    cleaned = _NOT_LABEL_CHARS.sub("-", full.lower())
    prefix = cleaned[: MAX_JOB_NAME_LENGTH - _HASH_LENGTH - 1].strip("-")
    return f"{prefix}-{digest}" if prefix else digest
