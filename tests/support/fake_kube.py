"""An in-memory stand-in for :class:`agentflow.kube.Kube`, for driving the kopf shell
(``controller.reconcile``, the Workflow daemon) in-process.

It fakes the interface the operator calls, not the API server: each method keeps the contract
its docstring in ``agentflow.kube`` states (a conditional status write answers None on a stale
resourceVersion, creating a Job under a taken name says whose it is, deletes honour the owner
and uid), and tests can make the next calls fail the way the API server does (409, too large,
refused).  What Kubernetes itself does is proven on the real control plane, in
tests/integration.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentflow.children import owned_by
from agentflow.kube import ApiError, CreateOutcome, CreateResult, Kube, utf8_prefix
from agentflow.observe import JobSummary, PodSummary, summarize_job, summarize_pod

Key = tuple[str, str]


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386: ``patch`` applied to ``target`` (null removes a key)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Faults:
    """Failures the next calls meet, counted down as they happen."""

    # Conditional status writes answered as if another writer came first (409).
    status_conflicts: int = 0
    # Called with the status patch; an ApiError it returns is raised instead of the write.
    status_error: Callable[[dict[str, Any]], ApiError | None] | None = None
    # Raised by every Job creation (a quota, an object the API server refuses).
    job_error: ApiError | None = None
    # Raised by every ConfigMap creation (a quota, an invalid object).
    configmap_error: ApiError | None = None
    # Raised by every PersistentVolumeClaim creation (a quota, a storage class refused).
    claim_error: ApiError | None = None


class FakeKube(Kube):
    def __init__(self) -> None:
        super().__init__(None)
        self.workflows: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.configmaps: dict[Key, dict[str, Any]] = {}
        self.claims: dict[Key, dict[str, Any]] = {}
        self.logs: dict[Key, str] = {}  # (namespace, job name) -> its pod's log
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []  # (verb, what): what the operator asked for
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise AssertionError(f"the fake has no transport: {method} {path}")

    def _uid(self, kind: str) -> str:
        return f"{kind}-uid-{next(self._uids)}"

    # -- workflows ------------------------------------------------------------------------

    def add_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", self._uid("workflow"))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.workflows[(meta["namespace"], meta["name"])] = body
        return copy.deepcopy(body)

    async def patch_workflow_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any] | None:
        self.calls.append(("patch-status", name))
        current = self.workflows.get((namespace, name))
        if current is None:
            return None
        if self.faults.status_error is not None:
            error = self.faults.status_error(status)
            if error is not None:
                raise error
        if resource_version is not None:
            if self.faults.status_conflicts > 0:
                self.faults.status_conflicts -= 1
                current["metadata"]["resourceVersion"] = str(next(self._versions))
                return None
            if resource_version != current["metadata"]["resourceVersion"]:
                return None
        current["status"] = merge_patch(current.get("status") or {}, status)
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(current)

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get-workflow", name))
        found = self.workflows.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def delete_workflow(self, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete-workflow", name))
        found = self.workflows.get((namespace, name))
        if found is not None and found["metadata"]["uid"] == uid:
            del self.workflows[(namespace, name)]

    # -- workspace claims -------------------------------------------------------------------

    async def create_claim(self, manifest: dict[str, Any]) -> CreateResult:
        meta = manifest["metadata"]
        self.calls.append(("create-claim", meta["name"]))
        if self.faults.claim_error is not None:
            raise self.faults.claim_error
        key = (meta["namespace"], meta["name"])
        existing = self.claims.get(key)
        if existing is None:
            claim = copy.deepcopy(manifest)
            claim["metadata"]["uid"] = self._uid("claim")
            self.claims[key] = claim
            return CreateResult(CreateOutcome.CREATED)
        if owned_by(existing["metadata"], meta["ownerReferences"][0]["uid"]):
            return CreateResult(CreateOutcome.EXISTS)
        return CreateResult(
            CreateOutcome.FOREIGN,
            f"PersistentVolumeClaim {meta['name']} exists and is not this Workflow's",
        )

    async def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get-claim", name))
        found = self.claims.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def add_claim(self, namespace: str, name: str) -> None:
        """A claim of the namespace's own, owned by no Workflow."""
        self.claims[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "uid": self._uid("claim")}
        }

    # -- jobs -----------------------------------------------------------------------------

    async def create_job(self, manifest: dict[str, Any]) -> CreateResult:
        meta = manifest["metadata"]
        name = meta["name"]
        self.calls.append(("create-job", name))
        if self.faults.job_error is not None:
            raise self.faults.job_error
        key = (meta["namespace"], name)
        existing = self.jobs.get(key)
        if existing is None:
            job = copy.deepcopy(manifest)
            job["metadata"]["uid"] = self._uid("job")
            self.jobs[key] = job
            return CreateResult(CreateOutcome.CREATED)
        if owned_by(existing["metadata"], meta["ownerReferences"][0]["uid"]):
            return CreateResult(CreateOutcome.EXISTS)
        return CreateResult(
            CreateOutcome.FOREIGN, f"job {name} exists and is not owned by this run"
        )

    def add_foreign_job(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """A Job nobody's Workflow owns, under ``name``."""
        self.jobs[(namespace, name)] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": self._uid("job"),
                "labels": labels,
            }
        }

    async def delete_job(
        self, namespace: str, name: str, *, owner_uid: str, uid: str | None = None
    ) -> bool:
        self.calls.append(("delete-job", name))
        job = self.jobs.get((namespace, name))
        if job is None or not owned_by(job["metadata"], owner_uid):
            return False
        if uid is not None and uid != job["metadata"]["uid"]:
            return False
        del self.jobs[(namespace, name)]
        self.pods.pop((namespace, name), None)
        return True

    def finish_job(
        self,
        namespace: str,
        name: str,
        at: datetime,
        *,
        message: str = "",
        log: str | None = None,
        exit_code: int = 0,
    ) -> None:
        """What the Job controller and the kubelet would show once its one pod ended."""
        job = self.jobs[(namespace, name)]
        when = at.isoformat()
        kind = "Complete" if exit_code == 0 else "Failed"
        job["status"] = {
            "startTime": when,
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": when}],
        }
        if exit_code == 0:
            job["status"]["completionTime"] = when
        self.pods[(namespace, name)] = {
            "metadata": {
                "name": f"{name}-pod",
                "namespace": namespace,
                "labels": {"batch.kubernetes.io/job-name": name},
                "ownerReferences": [
                    {"kind": "Job", "uid": job["metadata"]["uid"], "controller": True}
                ],
            },
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "message": message,
                                "startedAt": when,
                                "finishedAt": when,
                            }
                        }
                    }
                ],
            },
        }
        if log is not None:
            self.logs[(namespace, name)] = log

    def summaries(
        self, namespace: str, owner_uid: str
    ) -> tuple[list[JobSummary], list[PodSummary]]:
        """The index entries of ``owner_uid``'s Jobs and their pods, as the handlers keep them."""
        jobs = [
            s
            for (ns, _), job in self.jobs.items()
            if ns == namespace
            and (s := summarize_job(job)) is not None
            and s.owner_uid == owner_uid
        ]
        names = {j.name for j in jobs}
        pods = [
            s
            for (ns, name), pod in self.pods.items()
            if ns == namespace and name in names and (s := summarize_pod(pod)) is not None
        ]
        return jobs, pods

    async def read_job_log(
        self, namespace: str, job_name: str, job_uid: str, limit_bytes: int
    ) -> str | None:
        self.calls.append(("read-log", job_name))
        job = self.jobs.get((namespace, job_name))
        if job is None or job["metadata"]["uid"] != job_uid:
            return None
        text = self.logs.get((namespace, job_name))
        return None if text is None else utf8_prefix(text, limit_bytes)

    # -- config maps ----------------------------------------------------------------------

    async def create_configmap(self, manifest: dict[str, Any]) -> bool:
        meta = manifest["metadata"]
        self.calls.append(("create-configmap", meta["name"]))
        if self.faults.configmap_error is not None:
            raise self.faults.configmap_error
        key = (meta["namespace"], meta["name"])
        if key in self.configmaps:
            return False
        self.configmaps[key] = copy.deepcopy(manifest)
        return True

    async def replace_configmap_data(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        self.calls.append(("replace-configmap", meta["name"]))
        if self.faults.configmap_error is not None:
            raise self.faults.configmap_error
        self.configmaps[(meta["namespace"], meta["name"])] = copy.deepcopy(manifest)

    async def delete_configmap(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        self.calls.append(("delete-configmap", name))
        return self.configmaps.pop((namespace, name), None) is not None

    async def list_configmaps(
        self, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(cm)
            for (ns, _), cm in self.configmaps.items()
            if namespace in (None, ns) and label_selector in (cm["metadata"].get("labels") or {})
        ]
