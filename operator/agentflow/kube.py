"""The operator's only door to the Kubernetes API.

Requests are plain JSON over :mod:`agentflow.apitransport` (aiohttp, on the event loop); the
``kubernetes`` client only loads the credentials, and its models are not used: their
(de)serialization dominated the cost of hot paths.  Every request passes a client-side
token-bucket rate limiter, so a burst of Workflows cannot flood the API server, and is counted
in the metrics by verb and status code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
import kubernetes

from agentflow.apierror import ApiError
from agentflow.apitransport import ApiTransport
from agentflow.children import job_log_pod, job_pods_selector, owned_by

logger = logging.getLogger(__name__)

WORKFLOWS = "/apis/agentflow.dev/v1alpha1/namespaces/{namespace}/workflows"
POLICIES = "/apis/agentflow.dev/v1alpha1/namespaces/{namespace}/agentfallbackpolicies"
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
PODS = "/api/v1/namespaces/{namespace}/pods"
CONFIGMAPS = "/api/v1/namespaces/{namespace}/configmaps"
CLAIMS = "/api/v1/namespaces/{namespace}/persistentvolumeclaims"
EVENTS = "/api/v1/namespaces/{namespace}/events"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

MERGE_PATCH = "application/merge-patch+json"
# TokenReviews and SubjectAccessReviews answer whoever reaches the metrics port, so they have a
# bucket of their own: they can never take the reconcile loop's requests (a flood of bearer
# tokens would otherwise stall every Workflow).  A scraper costs two reviews per verdict TTL.
REVIEW_QPS = 5.0
REVIEW_BURST = 10


class RequestCounter(Protocol):
    def __call__(self, verb: str, code: int) -> None: ...


def is_too_large(error: ApiError) -> bool:
    """etcd's request limit (a 500 from the API server) or the API server's own body limit."""
    return error.status in (413, 500) and "too large" in str(error).lower()


def is_refusal(error: ApiError) -> bool:
    """Whether the API server refused the object itself, so that sending it again cannot help.

    That is any 4xx but a conflict (409: another writer, or the name is taken), a request
    timeout (408) or throttling (429), and an object too large to store.  Retrying a refusal
    would repeat the same request on every pass, forever.
    """
    if error.status in (408, 409, 429):
        return False
    return 400 <= error.status < 500 or is_too_large(error)


class TokenBucket:
    """Allows ``rate`` requests per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)

    def try_acquire(self) -> bool:
        """Take a token if one is there; never wait (for callers that must answer at once)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Throttled(ApiError):
    """A review was not sent: the reviews' own rate limit is spent (see ``Kube.review_token``)."""

    def __init__(self) -> None:
        super().__init__(429, "the rate limit of token and access reviews is reached")


class CreateOutcome(StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # already there and owned by the same owner: success
    FOREIGN = "foreign"  # already there but owned by someone else: an error on the step


@dataclass(frozen=True)
class CreateResult:
    outcome: CreateOutcome
    message: str = ""


@dataclass(frozen=True)
class UserInfo:
    """Who a bearer token belongs to, as a TokenReview says."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


def utf8_prefix(text: str, limit_bytes: int) -> str:
    """The longest prefix of ``text`` that is at most ``limit_bytes`` of UTF-8.

    A log of ``limit_bytes`` bytes decodes to more than that when it is not valid UTF-8: every
    invalid byte becomes U+FFFD, three bytes.  900 KiB of them would be 2.7 MB, more than a
    ConfigMap may hold (1 MiB), and the API server would refuse the output ConfigMap.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit_bytes:
        return text
    return data[:limit_bytes].decode("utf-8", "ignore")


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """The client configuration of the in-cluster service account, else of the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return configuration


def _parsed(data: bytes) -> dict[str, Any] | None:
    """The Status object of an error answer, if it is one."""
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class Kube:
    def __init__(
        self,
        transport: ApiTransport | None,
        *,
        qps: float = 50.0,
        burst: int = 100,
        count: RequestCounter | None = None,
    ) -> None:
        self.transport = transport
        self.limiter = TokenBucket(qps, burst)
        self.review_limiter = TokenBucket(REVIEW_QPS, REVIEW_BURST)
        # Events have a bucket of their own, as large: they are posted off the passes, and
        # waiting behind them would slow the Jobs and status writes the passes make.
        self.event_limiter = TokenBucket(qps, burst)
        self.count = count

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None,
        *,
        qps: float,
        burst: int,
        count: RequestCounter | None = None,
    ) -> Kube:
        """A client of the API server the service account, else ``kubeconfig``, names."""
        return cls(ApiTransport(load_configuration(kubeconfig)), qps=qps, burst=burst, count=count)

    # -- transport ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
        review: bool = False,
        event: bool = False,
    ) -> Any:
        if event:
            await self.event_limiter.acquire()
        elif review:
            # Never queue a review: a caller of /metrics waiting for a token would hold the
            # request (and a thread) open; it gets a quick 429 and tries again instead.
            if not self.review_limiter.try_acquire():
                raise Throttled()
        else:
            await self.limiter.acquire()
        verb = method.lower()
        if self.transport is None:
            raise RuntimeError(f"no transport to send {method} {path}")
        response = await self.transport.send(
            method, path, body=body, query=query, content_type=content_type
        )
        status, data = response.status, response.body
        if self.count:
            self.count(verb, status)
        if status >= 400 or status == 0:
            raise ApiError(status, "error", _parsed(data))
        if raw:
            return data
        return json.loads(data) if data else {}

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    # -- workflows ------------------------------------------------------------------------

    async def patch_workflow_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any] | None:
        """Merge-patch the status; with ``resource_version`` the write is conditional.

        Returns the updated object, or None when someone else changed the object first
        (409): the caller re-reads and plans again, so neither side's write is lost.
        """
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        path = WORKFLOWS.format(namespace=namespace) + f"/{name}/status"
        try:
            result: dict[str, Any] = await self.request(
                "PATCH", path, body=patch, content_type=MERGE_PATCH
            )
        except ApiError as e:
            if e.status in (404, 409):
                return None
            raise
        return result

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when there is none (404)."""
        try:
            result: dict[str, Any] = await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return result

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_or_none(WORKFLOWS.format(namespace=namespace) + f"/{name}")

    async def delete_workflow(self, namespace: str, name: str, uid: str) -> None:
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            await self.request(
                "DELETE", WORKFLOWS.format(namespace=namespace) + f"/{name}", body=body
            )
        except ApiError as e:
            if e.status not in (404, 409):
                raise

    async def patch_policy_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = POLICIES.format(namespace=namespace) + f"/{name}/status"
        try:
            await self.request("PATCH", path, body={"status": status}, content_type=MERGE_PATCH)
        except ApiError as e:
            if e.status != 404:
                raise

    # -- jobs -----------------------------------------------------------------------------

    async def create_job(self, manifest: dict[str, Any]) -> CreateResult:
        namespace = manifest["metadata"]["namespace"]
        try:
            await self.request("POST", JOBS.format(namespace=namespace), body=manifest)
            return CreateResult(CreateOutcome.CREATED)
        except ApiError as e:
            if e.status != 409:
                raise
        # Deterministic names make creation idempotent: an existing Job with our owner is
        # the one a previous pass (or a previous operator process) created.
        name = manifest["metadata"]["name"]
        existing = await self.request("GET", JOBS.format(namespace=namespace) + f"/{name}")
        want = manifest["metadata"]["ownerReferences"][0]["uid"]
        if owned_by(existing.get("metadata") or {}, want):
            return CreateResult(CreateOutcome.EXISTS)
        if existing.get("metadata", {}).get("deletionTimestamp"):
            return CreateResult(CreateOutcome.FOREIGN, f"job {name} is still being deleted")
        return CreateResult(
            CreateOutcome.FOREIGN, f"job {name} exists and is not owned by this run"
        )

    async def delete_job(
        self, namespace: str, name: str, *, owner_uid: str, uid: str | None = None
    ) -> bool:
        """Delete Job ``name`` only if the Workflow with uid ``owner_uid`` owns it.

        A name is not an identity: the Job under it now may be another Workflow's, or anyone's.
        The DELETE carries the Job's uid as a precondition: ``uid`` when the caller saw the Job
        (its index only holds this Workflow's Jobs), else the uid of the Job read just before,
        once its owner is checked.  So a Job swapped in under the name meanwhile is not touched
        either.  True when the Job was deleted.
        """
        path = JOBS.format(namespace=namespace) + f"/{name}"
        if uid is None:
            job = await self.get_or_none(path)
            if job is None:
                return False
            meta = job.get("metadata") or {}
            if not owned_by(meta, owner_uid):
                logger.warning("not deleting job %s/%s: it is not this workflow's", namespace, name)
                return False
            uid = str(meta.get("uid") or "")
        # Without a propagation policy, deleting a batch/v1 Job orphans its pods.
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as e:
            if e.status in (404, 409):  # gone, or the name is another Job's now
                return False
            raise
        return True

    async def read_job_log(
        self, namespace: str, job_name: str, job_uid: str, limit_bytes: int
    ) -> str | None:
        """The log of the Job's (only) pod, at most ``limit_bytes``; None when there is no pod.

        The pod must be the Job's by its ownerReference (the Job's uid), not only by the
        ``job-name`` label: a pod left from another Job of the same name is not this one's.
        """
        pods = await self.request(
            "GET",
            PODS.format(namespace=namespace),
            query=[("labelSelector", job_pods_selector(job_name))],
        )
        pod = job_log_pod(pods.get("items") or [], job_uid)
        if pod is None:
            return None
        try:
            data = await self.request(
                "GET",
                PODS.format(namespace=namespace) + f"/{pod}/log",
                query=[("limitBytes", limit_bytes)],
                raw=True,
            )
        except ApiError as e:
            if e.status in (400, 404):
                return None
            raise
        text: str = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        return utf8_prefix(text, limit_bytes)

    # -- workspace claims -------------------------------------------------------------------

    async def create_claim(self, manifest: dict[str, Any]) -> CreateResult:
        """Create the workspace claim of ``manifest``; one already there counts as created when
        the same Workflow owns it (an earlier pass, or process, made it), and as FOREIGN when
        it does not (it is neither adopted nor changed)."""
        meta = manifest["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            await self.request("POST", CLAIMS.format(namespace=namespace), body=manifest)
            return CreateResult(CreateOutcome.CREATED)
        except ApiError as e:
            if e.status != 409:
                raise
        existing = await self.get_claim(namespace, name)
        if existing is None:
            # Deleted between the two requests: the next pass creates it again.
            return CreateResult(CreateOutcome.FOREIGN, f"claim {name} is being deleted")
        want = meta["ownerReferences"][0]["uid"]
        existing_meta = existing.get("metadata") or {}
        if existing_meta.get("deletionTimestamp"):
            return CreateResult(CreateOutcome.FOREIGN, f"claim {name} is still being deleted")
        if owned_by(existing_meta, want):
            return CreateResult(CreateOutcome.EXISTS)
        return CreateResult(
            CreateOutcome.FOREIGN,
            f"PersistentVolumeClaim {name} exists and is not this Workflow's",
        )

    async def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_or_none(CLAIMS.format(namespace=namespace) + f"/{name}")

    # -- events -----------------------------------------------------------------------------

    async def create_event(self, manifest: dict[str, Any]) -> None:
        """Post an Event (rate-limited by a bucket of their own, see ``event_limiter``)."""
        namespace = manifest["metadata"]["namespace"]
        await self.request("POST", EVENTS.format(namespace=namespace), body=manifest, event=True)

    # -- config maps (step outputs and cache entries) ---------------------------------------

    async def create_configmap(self, manifest: dict[str, Any]) -> bool:
        """True when created, False when it already existed."""
        namespace = manifest["metadata"]["namespace"]
        try:
            await self.request("POST", CONFIGMAPS.format(namespace=namespace), body=manifest)
        except ApiError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def replace_configmap_data(self, manifest: dict[str, Any]) -> None:
        """Create, or overwrite data and labels of an existing ConfigMap (cache refresh)."""
        if await self.create_configmap(manifest):
            return
        meta = manifest["metadata"]
        patch = {
            "metadata": {
                "labels": meta.get("labels", {}),
                "annotations": meta.get("annotations", {}),
            },
            "data": manifest.get("data", {}),
        }
        path = CONFIGMAPS.format(namespace=meta["namespace"]) + f"/{meta['name']}"
        await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete_configmap(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """Delete a ConfigMap; with ``uid``/``resource_version``, only that very version of it.

        True when deleted; False when it is gone or (preconditions) changed since it was read.
        """
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        body = {"preconditions": preconditions} if preconditions else None
        try:
            await self.request(
                "DELETE", CONFIGMAPS.format(namespace=namespace) + f"/{name}", body=body
            )
        except ApiError as e:
            if e.status in (404, 409):
                return False
            raise
        return True

    async def list_configmaps(
        self, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        path = CONFIGMAPS.format(namespace=namespace) if namespace else "/api/v1/configmaps"
        result = await self.request("GET", path, query=[("labelSelector", label_selector)])
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    # -- leases (leader election and the watch heartbeat) -----------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_or_none(
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        )

    async def write_lease(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        """Create, or replace guarded by resourceVersion; None when another writer won."""
        meta = lease["metadata"]
        base = f"/apis/coordination.k8s.io/v1/namespaces/{meta['namespace']}/leases"
        try:
            if meta.get("resourceVersion"):
                result: dict[str, Any] = await self.request(
                    "PUT", f"{base}/{meta['name']}", body=lease
                )
            else:
                result = await self.request("POST", base, body=lease)
        except ApiError as e:
            if e.status == 409:
                return None
            raise
        return result

    async def watch_lease(
        self, namespace: str, name: str, *, timeout_seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events of one Lease, as they come, until the server ends the watch after
        ``timeout_seconds`` (or the connection is silent for that long, which raises)."""
        if self.transport is None:
            raise RuntimeError("no transport to watch a Lease")
        await self.limiter.acquire()
        query: list[tuple[str, Any]] = [
            ("watch", True),
            ("fieldSelector", f"metadata.name={name}"),
            ("timeoutSeconds", timeout_seconds),
        ]
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        answered = False
        try:
            async with self.transport.stream(
                path, query, read_timeout=timeout_seconds + 10.0
            ) as response:
                answered = True
                if self.count:
                    self.count("watch", response.status)
                if response.status >= 400:
                    raise ApiError(response.status, "error", _parsed(await response.read()))
                async for line in response.content:
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if item.get("type") == "ERROR":
                        status = item.get("object") or {}
                        raise ApiError(int(status.get("code") or 0), "watch error", status)
                    yield item
        except (aiohttp.ClientError, TimeoutError) as e:
            if self.count and not answered:
                self.count("watch", 0)
            raise ApiError(0, f"{type(e).__name__}: {e}") from None

    # -- authentication and authorization of callers (metrics) ------------------------------

    async def review_token(self, token: str) -> UserInfo | None:
        """The user a bearer token authenticates as (TokenReview), or None when it does not.

        The token goes only into the request body; it is never logged or put in an error.
        Raises :class:`Throttled`, without a request, when the reviews' rate limit is spent.
        """
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        result = await self.request("POST", TOKEN_REVIEWS, body=body, review=True)
        status = result.get("status") or {}
        user = status.get("user") or {}
        if not status.get("authenticated") or not user.get("username"):
            return None
        extra = user.get("extra") or {}
        return UserInfo(
            username=str(user["username"]),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra=tuple(sorted((str(k), tuple(str(v) for v in vs)) for k, vs in extra.items())),
        )

    async def may_access_path(self, user: UserInfo, path: str, verb: str) -> bool:
        """Whether ``user`` may ``verb`` the non-resource URL ``path`` (SubjectAccessReview)."""
        spec: dict[str, Any] = {
            "user": user.username,
            "groups": list(user.groups),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {key: list(values) for key, values in user.extra}
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        result = await self.request("POST", SUBJECT_ACCESS_REVIEWS, body=body, review=True)
        return bool((result.get("status") or {}).get("allowed"))
