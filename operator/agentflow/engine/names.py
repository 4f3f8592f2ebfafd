"""Deterministic names of the objects the operator makes for a Workflow: step Jobs, output
ConfigMaps and cache ConfigMaps (whose manifests are in ``agentflow.children``)."""

from __future__ import annotations

import hashlib
import json
import re

# A Job's name becomes its pods' ``job-name`` label, so it must be a DNS-1123 label.
MAX_JOB_NAME_LENGTH = 63
# Hex digits of the digest that ends every name.  64 bits: a Workflow and step whose Job name
# shares the digest of a given Job's takes about 2**64 hashes to find.
DIGEST_LENGTH = 16
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")


def job_name(workflow: str, step: str, run: int, iteration: int, attempt: int, *, uid: str) -> str:
    """``<workflow>-<step>-<run>-<iteration>-<attempt>-<digest>``, cut to 63 characters.

    Job names share one namespace across Workflows, and the operator creates Jobs by name, so
    two attempts must never get the same one.  Joining the parts with ``-`` alone cannot
    promise that (workflow ``a`` step ``b-c`` and workflow ``a-b`` step ``c``; ``app.v2`` and
    ``app-v2`` once cleaned), and a workflow name of up to 253 characters cannot fit anyway.
    So ``<digest>``, the first 16 hex digits of the SHA-256 of the JSON array of the
    Workflow's ``uid`` and the five parts, is what tells names apart; the part before it is for
    people: the workflow and step names made a DNS label and shortened so that the numbers and
    the digest fit.

    The uid is in the digest because a Workflow deleted and created again under its name is
    another Workflow: the Jobs of the one before are still there until the garbage collector
    removes them, and they must not hold the new one's names (``JobConflict``).  The names
    stay deterministic for one Workflow object, whose uid never changes.
    """
    identity = json.dumps([uid, workflow, step, run, iteration, attempt], separators=(",", ":"))
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LENGTH]
    numbers = f"{run}-{iteration}-{attempt}"
    room = MAX_JOB_NAME_LENGTH - len(numbers) - len(digest) - 2
    readable = _NOT_LABEL_CHARS.sub("-", f"{workflow}-{step}".lower())[: max(room, 0)]
    name = "-".join(part for part in (readable.strip("-"), numbers, digest) if part)
    return name if len(name) <= MAX_JOB_NAME_LENGTH else digest


def output_configmap_name(job_name: str) -> str:
    """The ConfigMap that keeps the full report of Job ``job_name``'s attempt."""
    return f"{job_name}-output"


def cache_configmap_name(key: str) -> str:
    """The ConfigMap of the cache entry for ``key``: 40 hex digits of the key's SHA-256."""
    return "agentflow-cache-" + hashlib.sha256(key.encode()).hexdigest()[:40]


# The readable part of a workspace claim's name: the Workflow's name cut to this many characters
# (so that the name fits 63 characters; the admission policy checks the same shape).
WORKSPACE_NAME_PREFIX_LENGTH = 36
WORKSPACE_NAME_INFIX = "-workspace-"


def workspace_claim_name(workflow: str, *, uid: str) -> str:
    """The PersistentVolumeClaim the operator creates for Workflow ``workflow``'s workspace:
    ``<workflow, at most 36 characters>-workspace-<digest>``.

    One claim per Workflow object, kept across its runs (a retry keeps the steps that
    succeeded, so it needs their files).  ``<digest>``, 16 hex digits of the SHA-256 of the
    Workflow's uid and name, keeps a Workflow created again under the same name clear of the
    claim of the one before (which stays until the garbage collector deletes it).
    """
    identity = json.dumps([uid, workflow], separators=(",", ":"))
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LENGTH]
    return f"{workflow[:WORKSPACE_NAME_PREFIX_LENGTH]}{WORKSPACE_NAME_INFIX}{digest}"
