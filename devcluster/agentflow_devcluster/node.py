"""The local node: a kubelet that runs the pods bound to it as host processes.

Run as ``python -m agentflow_devcluster.node --kubeconfig K --state-dir S [--name N]
[--instant]``.  It

* registers the Node ``agentflow-local`` (Ready, capacity from the host) and renews its Lease in
  ``kube-node-lease``;
* stands in for the scheduler: it binds every unscheduled pod whose ``schedulerName`` is its own
  (``default-scheduler`` unless ``--scheduler-name``; ``--no-bind`` turns this off), honouring
  ``nodeSelector`` and required node affinity;
* runs each pod bound to it: init containers one after the other, then the containers side by
  side, each as a process in its own session, with the command line, env and working directory
  of the container translated for the host (see :mod:`agentflow_devcluster.images`), and
  reports pod status the way the kubelet does;
* serves ``GET /containerLogs/{namespace}/{pod}/{container}`` over HTTPS with client-certificate
  authentication, so ``kubectl logs`` and the ``pods/log`` API work through the API server.

With ``--instant`` no process runs: a pod goes straight to Succeeded or Failed with the exit
code and termination message of its annotations (``agentflow.dev/instant-exit-code``,
``agentflow.dev/instant-termination-message``).  That mode exists for scale tests.

Files, under ``<state>/pods/<namespace>_<pod>_<uid>/``: ``<container>.log`` (stdout and stderr),
``termination/<container>`` (the termination message file, given to the process as
``$AGENTFLOW_TERMINATION_MESSAGE_PATH``), ``scratch/`` (``$HOME``; ``$TMPDIR`` is ``scratch/tmp``
unless a volume is mounted at ``/tmp``), ``volumes/<volume>/`` (``$AGENTFLOW_VOLUME_<NAME>``:
emptyDir, or the files of a configMap/secret volume).  The directory goes when the pod is deleted.
A persistentVolumeClaim volume is the host directory of the hostPath PersistentVolume its claim
names in ``spec.volumeName``; no other claim can be mounted (the pod waits with
``CreateContainerConfigError`` saying so): there is no provisioner here.

Where it differs from a real kubelet, on purpose:

* There is no isolation: a container is a host process with the node's user and filesystem.
  Mount paths do not exist; ``workingDir`` and ``/tmp`` map to volume directories when a volume
  is mounted there, and programs should write their termination message to
  ``$AGENTFLOW_TERMINATION_MESSAGE_PATH``.
* Containers are never restarted: ``restartPolicy`` ``OnFailure`` and ``Always`` behave like
  ``Never`` (Jobs use ``Never``; the Job controller makes a new pod).
* When the node process restarts, the processes of pods that were running are gone (the node
  kills them on exit and again on start).  Such pods become Failed with reason
  ``NodeRestarted`` rather than being restarted, so the Job controller or the operator decides.
* A process does not inherit the node's environment: it gets ``PATH`` (the node interpreter's
  directory first, then the usual system directories), ``HOSTNAME``, the container's ``envFrom``
  and ``env`` (``$(VAR)`` expanded as the kubelet does, also in ``command``/``args``), then the
  node's own ``HOME``, ``TMPDIR`` and ``AGENTFLOW_*`` paths.
* Probes, resource limits, ``resourceFieldRef`` env, ``exec``/``attach``/``port-forward`` and
  previous-container logs are not supported.

SIGTERM (or SIGINT) stops the node: it stops every pod process (SIGTERM, then SIGKILL after
two seconds) and exits with status 0, leaving pod status as it was for the next start to settle.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import platform
import shutil
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from agentflow_devcluster.images import (
    ImageNotAvailableError,
    container_argv,
    expand_references,
    lookup_image,
)
from agentflow_devcluster.pki import CA_CERT, KUBELET_CERT, KUBELET_KEY

log = logging.getLogger("agentflow_devcluster.node")

Obj = dict[str, Any]
T = TypeVar("T")

DEFAULT_NODE_NAME = "agentflow-local"
DEFAULT_SCHEDULER = "default-scheduler"
LABEL_LOCAL_NODE = "agentflow.dev/local-node"
ANNOTATION_INSTANT_EXIT_CODE = "agentflow.dev/instant-exit-code"
ANNOTATION_INSTANT_MESSAGE = "agentflow.dev/instant-termination-message"
# What an instant pod reports by default: a complete, untruncated agent result in the runner's
# termination-message format (see agentflow.report), so the operator never reads its log.
DEFAULT_INSTANT_MESSAGE = (
    '{"v":1,"status":"success","truncated":false,"size":0,"summary":"instant"}'
)
DEFAULT_INSTANT_FAILURE_MESSAGE = (
    '{"v":1,"status":"failure","truncated":false,"size":0,"summary":"instant failure"}'
)

RUNTIME = "agentflow-local"
RUNTIME_VERSION = f"{RUNTIME}://0.1.0"
POD_IP = "127.0.0.1"
MAX_PODS = 500
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
NODE_STATUS_SECONDS = 60.0

# The kubelet's limits for termination messages (pkg/kubelet/container).
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

# Deletion and deadlines give processes the pod's grace period, but never longer than this:
# nothing the local node runs needs long to stop, and tests wait on it.
MAX_KILL_GRACE_SECONDS = 5.0
SHUTDOWN_GRACE_SECONDS = 2.0
IMAGE_PULL_BACKOFF_SECONDS = 5.0
# Short, because the cluster is local: after an API server restart the node is back quickly.
MAX_RETRY_DELAY_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
WATCH_TIMEOUT_SECONDS = 300
LOG_FOLLOW_POLL_SECONDS = 0.2

# The exit code and reason the kubelet reports for a container that was never seen to finish.
UNKNOWN_EXIT_CODE = 137
UNKNOWN_REASON = "ContainerStatusUnknown"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BOUND = "bound"
UNBOUND = "unbound"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pod_key(pod: Obj) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    """``<namespace>_<name>_<uid>``, with the name shortened to keep within a file name's limit."""
    return f"{namespace}_{name[:150]}_{uid}"


def _resource_version(obj: Obj) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


def _env_suffix(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


# ---------------------------------------------------------------------------------------------
# The API client: raw REST over aiohttp (one session, pooled connections, streamed watches)
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An HTTP error answer from the API server."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.reason = ""
        message = body.strip()
        with contextlib.suppress(ValueError, AttributeError):
            parsed = json.loads(body)
            self.reason = str(parsed.get("reason", ""))
            message = str(parsed.get("message", message))
        self.message = message
        super().__init__(f"{status} {self.reason}: {message}".strip())

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class KubeClient:
    """Just enough of the Kubernetes REST API, asynchronously: requests and watches."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 64,
    ) -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl_context
        self._headers = dict(headers or {})
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, max_connections: int = 64) -> KubeClient:
        # The kubernetes client's loader understands every kubeconfig form (files, inline data,
        # tokens); it writes inline credentials to temporary files, which is all we need.
        from kubernetes import client, config

        cfg = client.Configuration()
        load: Callable[..., None] = config.load_kube_config
        load(config_file=str(path), client_configuration=cfg)
        if cfg.verify_ssl:
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers: dict[str, str] = {}
        token = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
        if token:
            headers["Authorization"] = str(token)
        return cls(str(cfg.host), ctx, headers, max_connections)

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("KubeClient is not open")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Obj | None = None,
        patch: str | None = None,
    ) -> Obj:
        """One request; raises :class:`ApiError` for an error status."""
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = PATCH_TYPES[patch] if patch else "application/json"
            data = json.dumps(body).encode()
        async with self.session.request(
            method,
            self.server + path,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, text)
            result: Obj = json.loads(text) if text else {}
            return result

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Obj]:
        """The events of one watch request, until the server ends it."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=REQUEST_TIMEOUT_SECONDS, sock_read=WATCH_TIMEOUT_SECONDS + 30
        )
        query = {**params, "watch": "true", "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS)}
        async with self.session.get(self.server + path, params=query, timeout=timeout) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.text())
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        event: Obj = json.loads(line)
                        yield event


async def with_retries(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until it succeeds or fails for a reason that retrying will not fix."""
    delay = 0.2
    while True:
        try:
            return await call()
        except ApiError as err:
            if not err.transient:
                raise
            problem: Exception = err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            problem = err
        log.warning("%s failed (%s); retrying in %.1fs", what, problem, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)


# ---------------------------------------------------------------------------------------------
# Work queue and pod informer
# ---------------------------------------------------------------------------------------------


class WorkQueue:
    """De-duplicating queue of keys; a key being worked on is not handed out a second time.

    A key added while it is being processed is queued again when :meth:`done` is called, so
    the latest state is always looked at (the contract of client-go's workqueue).
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._queued)


PodCallback = Callable[[str, Obj], None]


class PodInformer:
    """List, then watch, the pods of one field selector; relist on 410 Gone, back off on errors.

    ``on_pod(source, pod)`` is called for every pod seen (listed, added, modified) and
    ``on_gone(source, pod)`` when a pod leaves the selection (deleted, or no longer matching).
    """

    def __init__(
        self,
        client: KubeClient,
        source: str,
        field_selector: str,
        on_pod: PodCallback,
        on_gone: PodCallback,
    ) -> None:
        self.client = client
        self.source = source
        self.field_selector = field_selector
        self.on_pod = on_pod
        self.on_gone = on_gone
        self.synced = asyncio.Event()
        self._known: dict[str, Obj] = {}

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                version = await self._list()
                self.synced.set()
                delay = 0.5
                while True:
                    version = await self._watch(version)
            except WatchExpiredError:
                log.info("pod watch (%s) expired; listing again", self.source)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                log.warning(
                    "pod watch (%s) failed (%s); retrying in %.1fs", self.source, err, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    async def _list(self) -> str:
        listing = await self.client.request(
            "GET", "/api/v1/pods", params={"fieldSelector": self.field_selector}
        )
        current: dict[str, Obj] = {}
        for pod in listing.get("items") or []:
            current[pod["metadata"]["uid"]] = pod
        for uid, pod in self._known.items():
            if uid not in current:
                self.on_gone(self.source, pod)
        self._known = current
        for pod in current.values():
            self.on_pod(self.source, pod)
        return str(listing["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        params = {
            "fieldSelector": self.field_selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
        }
        try:
            async for event in self.client.watch("/api/v1/pods", params):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpiredError
                    raise ApiError(int(obj.get("code") or 500), json.dumps(obj))
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                uid = obj["metadata"]["uid"]
                if kind == "DELETED":
                    self._known.pop(uid, None)
                    self.on_gone(self.source, obj)
                else:
                    self._known[uid] = obj
                    self.on_pod(self.source, obj)
        except ApiError as err:
            if err.status == 410:
                raise WatchExpiredError from err
            raise
        return version


# ---------------------------------------------------------------------------------------------
# Pod status, as the kubelet reports it (pure)
# ---------------------------------------------------------------------------------------------


@dataclass
class ContainerRun:
    """What the node knows about one container of a pod."""

    name: str
    image: str
    init: bool = False
    waiting_reason: str = "ContainerCreating"
    waiting_message: str | None = None
    container_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.exit_code is None

    @property
    def terminated(self) -> bool:
        return self.exit_code is not None

    @property
    def waiting(self) -> bool:
        return self.started_at is None and self.exit_code is None

    def wait(self, reason: str, message: str | None = None) -> None:
        self.waiting_reason, self.waiting_message = reason, message

    def finish(
        self, exit_code: int, reason: str, message: str | None, finished_at: datetime
    ) -> None:
        self.exit_code, self.reason, self.message = exit_code, reason, message
        self.finished_at = finished_at

    def abandon(self, finished_at: datetime) -> None:
        """The container will not run (any more): report it the way the kubelet does."""
        if not self.terminated:
            self.finish(
                UNKNOWN_EXIT_CODE,
                UNKNOWN_REASON,
                "The container could not be located when the pod was terminated",
                finished_at,
            )


def exit_code_of(returncode: int) -> int:
    """A process's return code as a container exit code (a signal N is 128+N, as in a shell)."""
    return returncode if returncode >= 0 else 128 - returncode


def container_state(run: ContainerRun) -> Obj:
    # Every state key is present, the two unused ones as null, so that a strategic merge patch
    # replaces the state rather than merging e.g. `running` into `waiting`.
    state: Obj = {"waiting": None, "running": None, "terminated": None}
    if run.terminated:
        terminated: Obj = {
            "exitCode": run.exit_code,
            "reason": run.reason,
            "finishedAt": rfc3339(run.finished_at or utcnow()),
        }
        if run.message:
            terminated["message"] = run.message
        if run.started_at is not None:
            terminated["startedAt"] = rfc3339(run.started_at)
        if run.container_id:
            terminated["containerID"] = run.container_id
        state["terminated"] = terminated
    elif run.started_at is not None:
        state["running"] = {"startedAt": rfc3339(run.started_at)}
    else:
        waiting: Obj = {"reason": run.waiting_reason}
        if run.waiting_message:
            waiting["message"] = run.waiting_message
        state["waiting"] = waiting
    return state


def container_status(run: ContainerRun) -> Obj:
    ready = (run.exit_code == 0) if run.init else run.running
    status: Obj = {
        "name": run.name,
        "image": run.image,
        "imageID": f"{RUNTIME}://{run.image}" if run.container_id else "",
        "ready": ready,
        "restartCount": 0,
        "started": run.running,
        "state": container_state(run),
        "lastState": {},
    }
    if run.container_id:
        status["containerID"] = run.container_id
    return status


def pod_phase(inits: Sequence[ContainerRun], mains: Sequence[ContainerRun]) -> str:
    """The kubelet's phase rule for restartPolicy Never."""
    if any(run.terminated and run.exit_code != 0 for run in inits):
        return "Failed"
    if not all(run.terminated for run in inits):
        return "Pending"
    if any(run.waiting for run in mains):
        return "Pending"
    if any(run.running for run in mains):
        return "Running"
    if all(run.exit_code == 0 for run in mains):
        return "Succeeded"
    return "Failed"


class ConditionClock:
    """Remembers when each pod condition last changed status (its lastTransitionTime)."""

    def __init__(self, existing: Iterable[Obj] = ()) -> None:
        self._seen: dict[str, tuple[str, str]] = {}
        for cond in existing:
            if cond.get("type") and cond.get("lastTransitionTime"):
                self._seen[cond["type"]] = (cond.get("status", ""), cond["lastTransitionTime"])

    def stamp(self, type_: str, status: str, now: datetime) -> str:
        previous = self._seen.get(type_)
        if previous is not None and previous[0] == status:
            return previous[1]
        stamped = rfc3339(now)
        self._seen[type_] = (status, stamped)
        return stamped


def _condition(
    clock: ConditionClock,
    now: datetime,
    type_: str,
    ok: bool,
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    status = "True" if ok else "False"
    # reason/message are sent as null when unset, so a strategic merge patch clears old ones.
    return {
        "type": type_,
        "status": status,
        "reason": None if ok else reason,
        "message": None if ok else message,
        "lastProbeTime": None,
        "lastTransitionTime": clock.stamp(type_, status, now),
    }


def render_pod_status(
    inits: Sequence[ContainerRun],
    mains: Sequence[ContainerRun],
    *,
    start_time: datetime,
    clock: ConditionClock,
    now: datetime,
    reason: str | None = None,
    message: str | None = None,
    failed: bool = False,
) -> Obj:
    """The pod's status from its containers' states (``failed`` forces phase Failed)."""
    phase = "Failed" if failed else pod_phase(inits, mains)
    terminal = phase in TERMINAL_PHASES
    incomplete = [run.name for run in inits if run.exit_code != 0]
    unready = [run.name for run in mains if not run.running]
    if terminal:
        ready_reason, ready_message = "PodCompleted", None
    else:
        ready_reason = "ContainersNotReady"
        ready_message = f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        _condition(clock, now, "PodScheduled", True),
        _condition(
            clock,
            now,
            "Initialized",
            not incomplete,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
        _condition(
            clock, now, "ContainersReady", not unready and not terminal, ready_reason, ready_message
        ),
        _condition(clock, now, "Ready", not unready and not terminal, ready_reason, ready_message),
    ]
    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": POD_IP,
        "hostIPs": [{"ip": POD_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": rfc3339(start_time),
        "containerStatuses": [container_status(run) for run in mains],
        "reason": reason,
        "message": message,
    }
    if inits:
        status["initContainerStatuses"] = [container_status(run) for run in inits]
    return status


def container_runs(pod: Obj) -> tuple[list[ContainerRun], list[ContainerRun]]:
    """Fresh (waiting) container records for the init containers and containers of ``pod``."""
    spec = pod.get("spec", {})
    inits = [
        ContainerRun(c["name"], c.get("image", ""), init=True)
        for c in spec.get("initContainers") or []
    ]
    first_wait = "PodInitializing" if inits else "ContainerCreating"
    mains = [
        ContainerRun(c["name"], c.get("image", ""), waiting_reason=first_wait)
        for c in spec.get("containers") or []
    ]
    return inits, mains


def instant_result(annotations: Mapping[str, str]) -> tuple[int, str]:
    """Exit code and termination message of an instant pod, from its annotations."""
    raw = annotations.get(ANNOTATION_INSTANT_EXIT_CODE, "0")
    try:
        code = int(raw)
    except ValueError:
        return 1, f"invalid {ANNOTATION_INSTANT_EXIT_CODE} annotation: {raw!r}"
    if not 0 <= code <= 255:
        return 1, f"invalid {ANNOTATION_INSTANT_EXIT_CODE} annotation: {raw!r} (0-255)"
    default = DEFAULT_INSTANT_MESSAGE if code == 0 else DEFAULT_INSTANT_FAILURE_MESSAGE
    message = annotations.get(ANNOTATION_INSTANT_MESSAGE, default)
    return code, message.encode()[:MAX_TERMINATION_MESSAGE_BYTES].decode(errors="ignore")


def instant_pod_status(pod: Obj, now: datetime) -> Obj:
    """Succeeded or Failed at once, with the annotated exit code and message (``--instant``)."""
    code, message = instant_result(pod.get("metadata", {}).get("annotations") or {})
    inits, mains = container_runs(pod)
    uid = pod["metadata"]["uid"]
    for run in inits:
        run.container_id = f"{RUNTIME}://{uid}/{run.name}"
        run.started_at = now
        run.finish(0, "Completed", None, now)
    for run in mains:
        run.container_id = f"{RUNTIME}://{uid}/{run.name}"
        run.started_at = now
        run.finish(code, "Completed" if code == 0 else "Error", message or None, now)
    clock = ConditionClock(pod.get("status", {}).get("conditions") or [])
    return render_pod_status(inits, mains, start_time=now, clock=clock, now=now)


def looks_started(pod: Obj) -> bool:
    """Whether a node (this one, before a restart) has started any container of ``pod``."""
    status = pod.get("status", {})
    if status.get("phase") == "Running":
        return True
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("running") is not None or state.get("terminated") is not None:
            return True
    return False


def abandoned_pod_status(pod: Obj, now: datetime, reason: str | None, message: str | None) -> Obj:
    """Failed, with every container that has not finished reported as gone (kubelet style).

    For pods this node knows it can no longer run: it restarted while they ran, or they are
    deleted before they started.
    """
    status = pod.get("status", {})
    old = {
        cs["name"]: cs
        for cs in (status.get("initContainerStatuses") or [])
        + (status.get("containerStatuses") or [])
    }
    inits, mains = container_runs(pod)
    for run in [*inits, *mains]:
        previous = old.get(run.name, {})
        state = previous.get("state") or {}
        run.container_id = previous.get("containerID")
        if (state.get("running") or {}).get("startedAt"):
            run.started_at = parse_time(state["running"]["startedAt"])
        terminated = state.get("terminated")
        if terminated:
            run.exit_code = int(terminated.get("exitCode", UNKNOWN_EXIT_CODE))
            run.reason = terminated.get("reason")
            run.message = terminated.get("message")
            if terminated.get("startedAt"):
                run.started_at = parse_time(terminated["startedAt"])
            run.finished_at = parse_time(terminated.get("finishedAt") or rfc3339(now))
        else:
            run.abandon(now)
    start = status.get("startTime")
    return render_pod_status(
        inits,
        mains,
        start_time=parse_time(start) if start else now,
        clock=ConditionClock(status.get("conditions") or []),
        now=now,
        reason=reason,
        message=message,
        failed=True,
    )


# ---------------------------------------------------------------------------------------------
# Termination messages and logs (files)
# ---------------------------------------------------------------------------------------------


def last_lines(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data`` (a final line without newline counts)."""
    if lines <= 0:
        return b""
    return b"".join(data.splitlines(keepends=True)[-lines:])


def read_tail(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The last ``lines`` lines of a file (all of it for None) and the file size read up to."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if lines is None:
            f.seek(0)
            return f.read(size), size
        position, data = size, b""
        # Read backwards until there are more newlines than lines wanted (or the file's start).
        while position > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
        return last_lines(data, lines), size


def termination_message(
    message_file: Path, policy: str | None, exit_code: int, log_file: Path
) -> str:
    """The kubelet's termination message: the file's first 4096 bytes; with
    ``FallbackToLogsOnError``, an empty file and a failure, the log's last 80 lines / 2048 bytes."""
    try:
        with message_file.open("rb") as f:
            data = f.read(MAX_TERMINATION_MESSAGE_BYTES)
    except OSError:
        data = b""
    if not data and policy == "FallbackToLogsOnError" and exit_code != 0:
        try:
            data = read_tail(log_file, FALLBACK_LOG_LINES)[0][-FALLBACK_LOG_BYTES:]
        except OSError:
            data = b""
    return data.decode("utf-8", errors="replace")


def _process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces, so split after it.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def kill_leftover_processes(pods_dir: Path) -> int:
    """Kill the process groups an earlier run of the node left behind (it was killed itself).

    Each started container leaves ``<container>.pid`` with its pid and start time; a pid is only
    killed when the process with that pid started at that time.
    """
    killed = 0
    for pid_file in pods_dir.glob("*/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
            if _process_start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed += 1
        pid_file.unlink(missing_ok=True)
    return killed


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# ---------------------------------------------------------------------------------------------
# Scheduling: does a pod fit this node? (pure)
# ---------------------------------------------------------------------------------------------


def _expression_matches(expr: Obj, values: Mapping[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    wanted = expr.get("values") or []
    present = key in values
    if op == "In":
        return present and values[key] in wanted
    if op == "NotIn":
        return not present or values[key] not in wanted
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and wanted:
        try:
            have, limit = int(values[key]), int(wanted[0])
        except ValueError:
            return False
        return have > limit if op == "Gt" else have < limit
    return False


def fits_node(pod: Obj, node_name: str, labels: Mapping[str, str]) -> bool:
    """``nodeSelector`` and required node affinity, against this node's name and labels."""
    spec = pod.get("spec", {})
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": node_name}
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        and all(_expression_matches(e, fields) for e in term.get("matchFields") or [])
        for term in terms
    )


# ---------------------------------------------------------------------------------------------
# Running one pod
# ---------------------------------------------------------------------------------------------


class ContainerConfigError(Exception):
    """The container cannot be configured yet (a missing Secret or ConfigMap, ...)."""


class PodRunner:
    """Runs one pod's containers as processes and keeps its status up to date."""

    def __init__(self, node: LocalNode, pod: Obj) -> None:
        self.node = node
        self.pod = pod
        meta, spec = pod["metadata"], pod.get("spec", {})
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.key = f"{self.namespace}/{self.name}"
        self.dir = node.pods_dir / pod_dir_name(self.namespace, self.name, self.uid)
        self.scratch = self.dir / "scratch"
        self.inits, self.mains = container_runs(pod)
        self.all_runs = [*self.inits, *self.mains]
        self.runs = {run.name: run for run in self.all_runs}
        self.specs: dict[str, Obj] = {
            c["name"]: c
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
        }
        status = pod.get("status", {})
        self.start_time = parse_time(status["startTime"]) if status.get("startTime") else utcnow()
        self.clock = ConditionClock(status.get("conditions") or [])
        self.reason: str | None = None
        self.message: str | None = None
        self.failed = False
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.kill_grace = MAX_KILL_GRACE_SECONDS
        self.task: asyncio.Task[None] | None = None
        self._volumes: dict[str, Path] = {}
        self._objects: dict[tuple[str, str], Obj] = {}
        self._version = 0
        self._synced = 0
        self._sync_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod {self.key}")

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    async def terminate(self, grace: float) -> None:
        """Stop the pod (it is being deleted): stop its processes and report a final status."""
        self.kill_grace = max(0.0, min(grace, MAX_KILL_GRACE_SECONDS))
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task])
        if self._sync_task is not None:
            await asyncio.wait([self._sync_task])

    async def _run(self) -> None:
        delay = self._deadline_delay()
        deadline = None
        if delay is not None:
            deadline = asyncio.get_running_loop().call_later(delay, self._deadline_exceeded)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "termination").mkdir(exist_ok=True)
            (self.scratch / "tmp").mkdir(parents=True, exist_ok=True)
            self.publish()
            await self.prepare_volumes()
            async with self.node.slots:
                await self._run_containers()
        except asyncio.CancelledError:
            if self.node.stopping:
                raise
            # Stopped by terminate() or by the deadline (which set the reason first).
        except Exception as err:  # one bad pod must not take the node down
            log.exception("pod %s: the node failed to run it", self.key)
            self.failed, self.reason, self.message = True, "NodeError", str(err)[:1024]
            for proc in list(self.processes.values()):
                _signal_group(proc.pid, signal.SIGKILL)
        finally:
            if deadline is not None:
                deadline.cancel()
        self._abandon_waiting()
        await self.flush()
        phase = "Failed" if self.failed else pod_phase(self.inits, self.mains)
        log.info("pod %s: %s%s", self.key, phase, f" ({self.reason})" if self.reason else "")

    def _deadline_delay(self) -> float | None:
        ads = self.pod.get("spec", {}).get("activeDeadlineSeconds")
        if ads is None:
            return None
        deadline = self.start_time + timedelta(seconds=int(ads))
        return max(0.0, (deadline - utcnow()).total_seconds())

    def _deadline_exceeded(self) -> None:
        """spec.activeDeadlineSeconds has passed: the pod fails, its processes are stopped."""
        if self.task is None or self.task.done():
            return
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        log.info("pod %s: active deadline (%ss) exceeded", self.key, ads)
        # Reason first, so that no status without it is ever published for a killed process.
        self.failed = True
        self.reason = "DeadlineExceeded"
        self.message = f"Pod was active on the node longer than the specified deadline ({ads}s)"
        grace = self.pod["spec"].get("terminationGracePeriodSeconds", MAX_KILL_GRACE_SECONDS)
        self.kill_grace = max(0.0, min(float(grace), MAX_KILL_GRACE_SECONDS))
        self.task.cancel()

    def _abandon_waiting(self) -> None:
        now = utcnow()
        for run in [*self.inits, *self.mains]:
            if not run.terminated:
                run.abandon(now)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> Obj:
        return render_pod_status(
            self.inits,
            self.mains,
            start_time=self.start_time,
            clock=self.clock,
            now=utcnow(),
            reason=self.reason,
            message=self.message,
            failed=self.failed,
        )

    def publish(self) -> None:
        """Send the current status soon (updates in quick succession are coalesced)."""
        if self.node.stopping:
            return  # the node is going away; a restarted node reports these pods
        self._version += 1
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._sync(), name=f"status {self.key}")

    async def flush(self) -> None:
        self.publish()
        if self._sync_task is not None:
            await asyncio.shield(self._sync_task)

    async def _sync(self) -> None:
        while self._synced < self._version:
            version = self._version
            if not await self.node.patch_pod_status(self.pod, self.status()):
                return
            self._synced = version

    # -- containers ------------------------------------------------------------------------

    async def _run_containers(self) -> None:
        for run in self.inits:
            await self._run_container(self.specs[run.name], run)
            if run.exit_code != 0:
                return
        if self.inits:
            for run in self.mains:
                run.wait("ContainerCreating")
            self.publish()
        async with asyncio.TaskGroup() as group:
            for run in self.mains:
                group.create_task(self._run_container(self.specs[run.name], run))

    async def _run_container(self, spec: Obj, run: ContainerRun) -> None:
        try:
            lookup_image(run.image)
        except ImageNotAvailableError as err:
            await self._image_not_available(run, err)
        env = await self._until_configured(
            [run], "CreateContainerConfigError", functools.partial(self.environment, spec)
        )
        command = spec.get("command")
        args = spec.get("args")
        try:
            argv = container_argv(
                run.image,
                [expand_references(a, env) for a in command] if command else None,
                [expand_references(a, env) for a in args] if args else None,
                python=self.node.config.python,
            )
        except ValueError as err:
            run.wait("CreateContainerError", str(err))
            self.publish()
            await asyncio.get_running_loop().create_future()  # like the kubelet: wait forever
            return
        message_file = self.dir / "termination" / run.name
        message_file.write_bytes(b"")
        log_file = self.dir / f"{run.name}.log"
        cwd = self.working_dir(spec)
        run.container_id = f"{RUNTIME}://{self.uid}/{run.name}"
        started = utcnow()
        try:
            with log_file.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                )
        except OSError as err:
            run.started_at = started
            run.finish(128, "StartError", f'exec: "{argv[0]}": {err.strerror}', utcnow())
            self.publish()
            log.info("pod %s container %s: failed to start: %s", self.key, run.name, err.strerror)
            return
        pid_file = self.dir / f"{run.name}.pid"
        pid_file.write_text(f"{proc.pid} {_process_start_time(proc.pid) or ''}")
        self.processes[run.name] = proc
        run.started_at = started
        self.publish()
        log.info("pod %s container %s: started pid %d", self.key, run.name, proc.pid)
        try:
            returncode = await proc.wait()
        except asyncio.CancelledError:
            returncode = await self._stop_process(proc)
            self._finish(spec, run, returncode, message_file, log_file)
            raise
        finally:
            # The container is done when its main process is: take its children with it.
            _signal_group(proc.pid, signal.SIGKILL)
            self.processes.pop(run.name, None)
            pid_file.unlink(missing_ok=True)
        self._finish(spec, run, returncode, message_file, log_file)

    def _finish(
        self, spec: Obj, run: ContainerRun, returncode: int, message_file: Path, log_file: Path
    ) -> None:
        code = exit_code_of(returncode)
        message = termination_message(
            message_file, spec.get("terminationMessagePolicy"), code, log_file
        )
        run.finish(code, "Completed" if code == 0 else "Error", message or None, utcnow())
        self.publish()
        log.info("pod %s container %s: exited with %d", self.key, run.name, code)

    async def _stop_process(self, proc: asyncio.subprocess.Process) -> int:
        if self.node.stopping:
            _signal_group(proc.pid, signal.SIGKILL)
            return await proc.wait()
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), self.kill_grace)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            return await proc.wait()

    async def _image_not_available(self, run: ContainerRun, err: ImageNotAvailableError) -> None:
        log.info("pod %s container %s: %s", self.key, run.name, err)
        run.wait("ErrImagePull", str(err))
        self.publish()
        await asyncio.sleep(IMAGE_PULL_BACKOFF_SECONDS)
        run.wait("ImagePullBackOff", f'Back-off pulling image "{run.image}": {err}')
        self.publish()
        # The image will never appear: wait (as the kubelet would keep backing off) until the
        # pod is deleted or its deadline passes.
        await asyncio.get_running_loop().create_future()

    async def _until_configured(
        self, runs: Sequence[ContainerRun], reason: str, configure: Callable[[], Awaitable[T]]
    ) -> T:
        """``configure()``, again and again while it fails, with ``runs`` waiting on ``reason``
        (the kubelet retries too: a missing Secret may yet be created)."""
        delay = 1.0
        while True:
            try:
                return await configure()
            except ContainerConfigError as err:
                message = str(err)
                if any((r.waiting_reason, r.waiting_message) != (reason, message) for r in runs):
                    log.info("pod %s: %s", self.key, message)
                    for run in runs:
                        run.wait(reason, message)
                    self.publish()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    # -- configuration ---------------------------------------------------------------------

    async def _object(self, kind: str, name: str) -> Obj | None:
        """A Secret or ConfigMap of the pod's namespace (None if it does not exist yet).

        Found objects are kept for the pod's lifetime (all its containers see the same data, as
        they would on a kubelet); a missing one is asked for again on the next attempt.
        """
        key = (kind, name)
        if key in self._objects:
            return self._objects[key]
        resource = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = await self.node.client.request(
                "GET", f"/api/v1/namespaces/{self.namespace}/{resource}/{name}"
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise ContainerConfigError(f"failed to read {kind} {name!r}: {err.message}") from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ContainerConfigError(f"failed to read {kind} {name!r}: {err}") from err
        self._objects[key] = obj
        return obj

    async def _object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = await self._object(kind, name)
        if obj is None:
            if optional:
                return None
            noun = "secret" if kind == "Secret" else "configmap"
            raise ContainerConfigError(f'{noun} "{name}" not found')
        data: dict[str, str] = {}
        if kind == "Secret":
            for k, v in (obj.get("data") or {}).items():
                data[k] = base64.b64decode(v).decode("utf-8", errors="replace")
        else:
            data.update(obj.get("data") or {})
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v).decode("utf-8", errors="replace")
        return data

    async def _key_ref(self, kind: str, ref: Obj) -> str | None:
        name, key = ref.get("name", ""), ref.get("key", "")
        optional = bool(ref.get("optional"))
        data = await self._object_data(kind, name, optional)
        if data is None:
            return None
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {self.namespace}/{name}")
        return data[key]

    def _field_ref(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.config.name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": POD_IP,
            "status.hostIPs": POD_IP,
            "status.podIP": POD_IP,
            "status.podIPs": POD_IP,
        }
        if path in simple:
            return str(simple[path])
        for prefix, values in (
            ("metadata.labels", meta.get("labels") or {}),
            ("metadata.annotations", meta.get("annotations") or {}),
        ):
            if path.startswith(prefix + "['") and path.endswith("']"):
                return str(values.get(path[len(prefix) + 2 : -2], ""))
        raise ContainerConfigError(f"unsupported fieldRef {path!r} on the local node")

    async def environment(self, spec: Obj) -> dict[str, str]:
        """The process environment: a minimal base, the container's env, then the node's own."""
        # The interpreter's directory comes first, so that `python3` in a shell script and the
        # project's console scripts are the node's own.
        python_bin = Path(self.node.config.python).parent
        env: dict[str, str] = {"PATH": f"{python_bin}:{DEFAULT_PATH}", "HOSTNAME": self.name}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, ref_key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                ref = source.get(ref_key)
                if ref is None:
                    continue
                data = await self._object_data(kind, ref.get("name", ""), bool(ref.get("optional")))
                for k, v in (data or {}).items():
                    env[prefix + k] = v
        for var in spec.get("env") or []:
            name = var["name"]
            source = var.get("valueFrom")
            if source is None:
                env[name] = expand_references(var.get("value", ""), env)
                continue
            value: str | None
            if "secretKeyRef" in source:
                value = await self._key_ref("Secret", source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = await self._key_ref("ConfigMap", source["configMapKeyRef"])
            elif "fieldRef" in source:
                value = self._field_ref(source["fieldRef"].get("fieldPath", ""))
            else:
                raise ContainerConfigError(
                    f"env {name}: {', '.join(source)} is not supported on the local node"
                )
            if value is not None:
                env[name] = value
        # What the node owns comes last: these paths only exist on this node.
        env["HOME"] = str(self.scratch)
        env["TMPDIR"] = str(self._mapped_path(spec, "/tmp") or self.scratch / "tmp")
        env["AGENTFLOW_TERMINATION_MESSAGE_PATH"] = str(self.dir / "termination" / spec["name"])
        # The operator's workspace path (/workspace), as the directory mounted there.
        workspace = env.get("AGENTFLOW_WORKSPACE")
        if workspace:
            mapped = self._mapped_path(spec, workspace)
            if mapped is not None:
                env["AGENTFLOW_WORKSPACE"] = str(mapped)
        for volume, path in self._volumes.items():
            env[f"AGENTFLOW_VOLUME_{_env_suffix(volume)}"] = str(path)
        return env

    def _mapped_path(self, spec: Obj, path: str) -> Path | None:
        """The host directory for ``path`` inside the container, if a volume is mounted there."""
        mounts = sorted(
            spec.get("volumeMounts") or [],
            key=lambda m: len(m.get("mountPath", "")),
            reverse=True,
        )
        for mount in mounts:
            mount_path = mount.get("mountPath", "").rstrip("/") or "/"
            volume = self._volumes.get(mount.get("name", ""))
            if volume is None:
                continue
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                base = volume / mount.get("subPath", "")
                rest = path[len(mount_path) :].lstrip("/")
                target: Path = base / rest if rest else base
                target.mkdir(parents=True, exist_ok=True)
                return target
        return None

    def working_dir(self, spec: Obj) -> Path:
        wanted = spec.get("workingDir")
        if wanted:
            mapped = self._mapped_path(spec, wanted)
            if mapped is not None:
                return mapped
            if Path(wanted).is_dir():
                return Path(wanted)
        return self.scratch

    async def prepare_volumes(self) -> None:
        """A directory per volume; configMap and secret volumes get their files; a
        persistentVolumeClaim volume is the host directory of the hostPath (or local)
        PersistentVolume the claim names in ``spec.volumeName`` (there is no provisioner and no
        binding controller here), and any other claim keeps the pod from starting, saying why."""
        for volume in self.pod.get("spec", {}).get("volumes") or []:
            name = volume["name"]
            claim = volume.get("persistentVolumeClaim")
            if claim is not None:
                find = functools.partial(self._claim_directory, name, claim.get("claimName", ""))
                self._volumes[name] = await self._until_configured(
                    self.all_runs, "CreateContainerConfigError", find
                )
                continue
            path = self.dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            self._volumes[name] = path
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if volume.get(key) is not None:
                    fill = functools.partial(self._fill_volume, name, kind, volume[key], path)
                    await self._until_configured(self.all_runs, "ContainerCreating", fill)

    async def _claim_directory(self, volume: str, claim: str) -> Path:
        """The host directory behind PersistentVolumeClaim ``claim`` (see prepare_volumes)."""
        failed = f'MountVolume.SetUp failed for volume "{volume}"'
        needs = (
            "the local node mounts only a claim whose spec.volumeName names a hostPath"
            " PersistentVolume (a provisioned claim, such as a Workflow's"
            " spec.workspace.volumeClaimTemplate, needs a real node)"
        )
        try:
            pvc = await self.node.client.request(
                "GET", f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}"
            )
            pv_name = (pvc.get("spec") or {}).get("volumeName") or ""
            if not pv_name:
                raise ContainerConfigError(f"{failed}: claim {claim!r} names no volume; {needs}")
            pv = await self.node.client.request("GET", f"/api/v1/persistentvolumes/{pv_name}")
        except ApiError as err:
            raise ContainerConfigError(f"{failed}: {err.message}; {needs}") from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ContainerConfigError(f"{failed}: {err}") from err
        spec = pv.get("spec") or {}
        ref = spec.get("claimRef") or {}
        if ref and (ref.get("namespace"), ref.get("name")) != (self.namespace, claim):
            raise ContainerConfigError(
                f"{failed}: PersistentVolume {pv_name!r} is reserved for another claim"
            )
        host = (spec.get("hostPath") or spec.get("local") or {}).get("path") or ""
        if not host:
            raise ContainerConfigError(
                f"{failed}: PersistentVolume {pv_name!r} is not a hostPath volume; {needs}"
            )
        path = Path(host)
        if not await asyncio.to_thread(path.is_dir):
            raise ContainerConfigError(
                f"{failed}: the directory {host} of PersistentVolume {pv_name!r} does not exist"
            )
        return path

    async def _fill_volume(self, volume: str, kind: str, source: Obj, path: Path) -> None:
        object_name = source.get("secretName" if kind == "Secret" else "name", "")
        try:
            data = await self._object_data(kind, object_name, bool(source.get("optional")))
        except ContainerConfigError as err:
            raise ContainerConfigError(
                f'MountVolume.SetUp failed for volume "{volume}": {err}'
            ) from err
        items = source.get("items")
        if items:
            files = {i["path"]: (data or {}).get(i["key"], "") for i in items}
        else:
            files = dict(data or {})
        for relative, content in files.items():
            target = path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            if kind == "Secret":
                target.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    state_dir: Path
    name: str = DEFAULT_NODE_NAME
    pki_dir: Path | None = None
    instant: bool = False
    bind: bool = True
    scheduler_name: str = DEFAULT_SCHEDULER
    max_running_pods: int = 64
    workers: int = 64
    log_port: int = 0
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def pki(self) -> Path:
        return self.pki_dir or self.state_dir / "pki"


def _memory_kib() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 4 * 1024 * 1024


def _os_image() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return "Linux"


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _read_first(*paths: str) -> str:
    for p in paths:
        with contextlib.suppress(OSError):
            return Path(p).read_text().strip()
    return ""


class LocalNode:
    """The node agent: registration, heartbeat, binding, pods and the log endpoint."""

    def __init__(self, config: NodeConfig, client: KubeClient) -> None:
        self.config = config
        self.client = client
        self.pods_dir = config.state_dir / "pods"
        self.labels = {
            "kubernetes.io/hostname": config.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _architecture(),
            LABEL_LOCAL_NODE: "true",
        }
        self.pods: dict[str, Obj] = {}
        self.by_name: dict[tuple[str, str], str] = {}
        self.runners: dict[str, PodRunner] = {}
        self.handled: set[str] = set()
        self.deleting: set[str] = set()
        self.queue = WorkQueue()
        self.stopping = False
        self.slots = asyncio.Semaphore(config.max_running_pods)
        self.log_port = 0
        self.kubelet_version = ""
        self.ready_since = utcnow()
        self.informers: list[PodInformer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._site_runner: web.AppRunner | None = None

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything and serve until cancelled (see :meth:`shutdown`)."""
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        killed = kill_leftover_processes(self.pods_dir)
        if killed:
            log.warning("killed %d process group(s) left by an earlier run of the node", killed)
        self.log_port = await self._start_log_server()
        log.info("log endpoint on https://127.0.0.1:%d", self.log_port)
        version = await with_retries(
            "reading the API server version", lambda: self.client.request("GET", "/version")
        )
        self.kubelet_version = str(version.get("gitVersion", ""))
        await with_retries("registering the node", self._register)
        await with_retries("renewing the node lease", self._renew_lease)
        log.info(
            "node %s registered (%s mode%s)",
            self.config.name,
            "instant" if self.config.instant else "process",
            f", binding pods of {self.config.scheduler_name}" if self.config.bind else "",
        )
        self.informers = [
            PodInformer(
                self.client, BOUND, f"spec.nodeName={self.config.name}", self._on_pod, self._on_gone
            )
        ]
        if self.config.bind:
            selector = (
                f"spec.nodeName=,spec.schedulerName={self.config.scheduler_name},"
                "status.phase!=Succeeded,status.phase!=Failed"
            )
            self.informers.append(
                PodInformer(self.client, UNBOUND, selector, self._on_pod, self._on_gone)
            )
        async with asyncio.TaskGroup() as group:
            group.create_task(self._heartbeat(), name="heartbeat")
            for informer in self.informers:
                group.create_task(informer.run(), name=f"informer {informer.source}")
            group.create_task(self._remove_orphaned_pod_dirs(self.informers[0]), name="cleanup")
            for i in range(self.config.workers):
                group.create_task(self._worker(), name=f"worker {i}")

    async def shutdown(self) -> None:
        """Stop every pod process (SIGTERM, then SIGKILL) and the log endpoint."""
        self.stopping = True
        processes = [p for r in self.runners.values() for p in r.processes.values()]
        for proc in processes:
            _signal_group(proc.pid, signal.SIGTERM)
        if processes:
            waits = [asyncio.ensure_future(p.wait()) for p in processes]
            _, pending = await asyncio.wait(waits, timeout=SHUTDOWN_GRACE_SECONDS)
            for proc in processes:
                _signal_group(proc.pid, signal.SIGKILL)
            for w in pending:
                w.cancel()
        tasks = [r.task for r in self.runners.values() if r.task is not None and not r.task.done()]
        tasks += [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None
        log.info("node %s stopped (%d process(es) killed)", self.config.name, len(processes))

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- informer callbacks ----------------------------------------------------------------

    def _on_pod(self, source: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        cached = self.pods.get(uid)
        if cached is not None and _resource_version(cached) > _resource_version(pod):
            return  # the other watch already delivered a newer state
        self.pods[uid] = pod
        self.by_name[(meta.get("namespace", ""), meta["name"])] = uid
        self.queue.add(uid)

    def _on_gone(self, source: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if source == UNBOUND:
            # The pod left the unbound selection: it was bound, finished or deleted.  The watch
            # of bound pods reports what matters; only forget pods that are not ours.
            if pod.get("spec", {}).get("nodeName") == self.config.name:
                self._on_pod(BOUND, pod)
                return
            cached = self.pods.get(uid)
            if cached is not None and cached.get("spec", {}).get("nodeName") != self.config.name:
                self._forget(uid)
            return
        self._forget(uid)
        self.queue.add(uid)

    def _forget(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is not None:
            meta = pod["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            if self.by_name.get(key) == uid:
                del self.by_name[key]

    # -- reconciling -----------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            uid = await self.queue.get()
            try:
                await self._reconcile(uid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling pod %s failed", uid)
            finally:
                self.queue.done(uid)

    async def _reconcile(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is None:
            await self._pod_gone(uid)
            return
        meta, spec = pod["metadata"], pod.get("spec", {})
        node_name = spec.get("nodeName")
        if not node_name:
            if self._should_bind(pod):
                await self._bind(pod)
            return
        if node_name != self.config.name:
            return
        phase = pod.get("status", {}).get("phase")
        if meta.get("deletionTimestamp"):
            if uid not in self.deleting:
                self.deleting.add(uid)
                self._spawn(self._finish_deletion(pod), f"delete {pod_key(pod)}")
            return
        if phase in TERMINAL_PHASES or uid in self.runners or uid in self.handled:
            return
        if self.config.instant:
            self.handled.add(uid)
            await self.patch_pod_status(pod, instant_pod_status(pod, utcnow()))
        elif looks_started(pod):
            self.handled.add(uid)
            log.info(
                "pod %s was running before the node restarted: marking it Failed", pod_key(pod)
            )
            status = abandoned_pod_status(
                pod,
                utcnow(),
                "NodeRestarted",
                "The local node restarted while the pod was running; its processes are gone",
            )
            await self.patch_pod_status(pod, status)
        else:
            runner = PodRunner(self, pod)
            self.runners[uid] = runner
            runner.start()

    def _should_bind(self, pod: Obj) -> bool:
        spec = pod.get("spec", {})
        return (
            self.config.bind
            and not pod["metadata"].get("deletionTimestamp")
            and spec.get("schedulerName", DEFAULT_SCHEDULER) == self.config.scheduler_name
            and not spec.get("schedulingGates")
            and pod.get("status", {}).get("phase") not in TERMINAL_PHASES
        )

    async def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid, namespace, name = meta["uid"], meta.get("namespace", "default"), meta["name"]
        if not fits_node(pod, self.config.name, self.labels):
            if uid not in self.handled:
                self.handled.add(uid)
                message = (
                    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
                )
                log.info("pod %s does not fit the node: %s", pod_key(pod), message)
                condition = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": rfc3339(utcnow()),
                }
                await self.patch_pod_status(pod, {"conditions": [condition]})
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.name},
        }
        try:
            await with_retries(
                f"binding pod {namespace}/{name}",
                lambda: self.client.request(
                    "POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body=binding
                ),
            )
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("binding pod %s/%s failed: %s", namespace, name, err)
            return
        log.debug("bound pod %s/%s", namespace, name)

    async def _finish_deletion(self, pod: Obj) -> None:
        """Stop a pod that is being deleted, report its final status, then delete it for good."""
        meta = pod["metadata"]
        uid, namespace, name = meta["uid"], meta.get("namespace", "default"), meta["name"]
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        runner = self.runners.get(uid)
        if runner is not None:
            await runner.terminate(grace)
        elif pod.get("status", {}).get("phase") not in TERMINAL_PHASES and uid not in self.handled:
            await self.patch_pod_status(pod, abandoned_pod_status(pod, utcnow(), None, None))
        # As the kubelet does once a pod's containers are stopped: delete with grace period 0.
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            await with_retries(
                f"deleting pod {namespace}/{name}",
                lambda: self.client.request(
                    "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=options
                ),
            )
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("deleting pod %s/%s failed: %s", namespace, name, err)
                self.deleting.discard(uid)  # try again on the next event
                return
        log.info("pod %s/%s deleted", namespace, name)

    async def _pod_gone(self, uid: str) -> None:
        """The pod object is gone: stop anything still running and remove its files."""
        self.handled.discard(uid)
        self.deleting.discard(uid)
        runner = self.runners.pop(uid, None)
        if runner is not None and not runner.done:
            await runner.terminate(0)
        for pod_dir in self.pods_dir.glob(f"*_{uid}"):
            await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    async def _remove_orphaned_pod_dirs(self, bound: PodInformer) -> None:
        """Once the bound pods are known: remove the files of pods deleted while the node was
        not running."""
        await bound.synced.wait()
        for pod_dir in list(self.pods_dir.iterdir()):
            if pod_dir.is_dir() and pod_dir.name.rsplit("_", 1)[-1] not in self.pods:
                log.info("removing %s: its pod is gone", pod_dir.name)
                await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    async def patch_pod_status(self, pod: Obj, status: Obj) -> bool:
        """Patch ``pods/status`` (strategic merge); False when the pod no longer exists."""
        meta = pod["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        body = {"metadata": {"uid": meta["uid"]}, "status": status}
        try:
            await with_retries(
                f"updating the status of pod {namespace}/{name}",
                lambda: self.client.request(
                    "PATCH",
                    f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                    body=body,
                    patch="strategic",
                ),
            )
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("status of pod %s/%s not updated: %s", namespace, name, err)
            return err.status not in (404, 409)
        return True

    # -- node object and lease -------------------------------------------------------------

    def node_status(self) -> Obj:
        now = rfc3339(utcnow())
        since = rfc3339(self.ready_since)

        def condition(type_: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }

        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_kib()}Ki",
            "pods": str(MAX_PODS),
            "ephemeral-storage": f"{shutil.disk_usage(self.config.state_dir).total // 1024}Ki",
        }
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "the agentflow local node is posting ready status",
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": POD_IP},
                {"type": "Hostname", "address": socket.gethostname()},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
            "nodeInfo": {
                "machineID": _read_first("/etc/machine-id", "/var/lib/dbus/machine-id"),
                "systemUUID": _read_first("/sys/class/dmi/id/product_uuid"),
                "bootID": _read_first("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _architecture(),
            },
        }

    async def _register(self) -> None:
        """Create the Node, or take over an existing one (labels), then post its status."""
        name = self.config.name
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": self.labels},
        }
        try:
            await self.client.request("POST", "/api/v1/nodes", body=node)
        except ApiError as err:
            if err.status != 409:
                raise
            await self.client.request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                body={"metadata": {"labels": self.labels}},
                patch="merge",
            )
        await self._post_node_status()

    async def _post_node_status(self) -> None:
        await self.client.request(
            "PATCH",
            f"/api/v1/nodes/{self.config.name}/status",
            body={"status": self.node_status()},
            patch="merge",
        )

    async def _renew_lease(self) -> None:
        name = self.config.name
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": micro_time(utcnow()),
        }
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        try:
            await self.client.request("PATCH", f"{path}/{name}", body={"spec": spec}, patch="merge")
        except ApiError as err:
            if err.status != 404:
                raise
            node = await self.client.request("GET", f"/api/v1/nodes/{name}")
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": name,
                "uid": node["metadata"]["uid"],
            }
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [owner],
                },
                "spec": spec,
            }
            await self.client.request("POST", path, body=lease)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        last_status = loop.time()
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                await self._renew_lease()
                if loop.time() - last_status >= NODE_STATUS_SECONDS:
                    try:
                        await self._post_node_status()
                    except ApiError as err:
                        if err.status != 404:
                            raise
                        log.warning("node %s disappeared; registering it again", self.config.name)
                        await self._register()
                    last_status = loop.time()
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
                log.warning("node heartbeat failed: %s", err)

    # -- log endpoint ----------------------------------------------------------------------

    async def _start_log_server(self) -> int:
        pki = self.config.pki
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / KUBELET_CERT, pki / KUBELET_KEY)
        # Only the API server (its kubelet client certificate) and cluster admins may read logs.
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki / CA_CERT)
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.config.log_port))
        site = web.SockSite(runner, sock, ssl_context=ctx)
        await site.start()
        self._site_runner = runner
        port: int = sock.getsockname()[1]
        return port

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod_name = request.match_info["pod"]
        container = request.match_info["container"]
        query = request.query
        try:
            tail = int(query["tailLines"]) if "tailLines" in query else None
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
        except ValueError:
            return web.Response(status=400, text="tailLines and limitBytes must be integers")
        follow = query.get("follow", "").lower() in ("true", "1")
        uid = self.by_name.get((namespace, pod_name))
        pod = self.pods.get(uid) if uid else None
        if pod is None or uid is None:
            return web.Response(status=404, text=f'pod "{pod_name}" not found on this node')
        spec = pod.get("spec", {})
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        names = [c["name"] for c in containers]
        if container not in names:
            return web.Response(
                status=400, text=f'container "{container}" is not valid for pod "{pod_name}"'
            )
        if query.get("previous", "").lower() in ("true", "1"):
            return web.Response(
                status=400,
                text=f'previous terminated container "{container}" in pod "{pod_name}" not found',
            )
        if self.config.instant:
            _, message = instant_result(pod["metadata"].get("annotations") or {})
            data = message.encode()
            if tail is not None:
                data = last_lines(data, tail)
            return web.Response(body=data[:limit] if limit is not None else data)
        runner = self.runners.get(uid)
        # Without a runner (the node restarted since) the files of a finished pod still serve.
        path = self.pods_dir / pod_dir_name(namespace, pod_name, uid) / f"{container}.log"
        if not path.exists():
            return web.Response(
                status=400,
                text=f'container "{container}" in pod "{pod_name}" is waiting to start',
            )
        data, offset = await asyncio.to_thread(read_tail, path, tail)
        if limit is not None:
            data = data[:limit]
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = len(data)
        await response.write(data)
        run = runner.runs[container] if runner is not None else None
        while limit is None or sent < limit:
            finished = run is None or run.terminated or runner is None or runner.done
            chunk = await asyncio.to_thread(_read_from, path, offset)
            if chunk:
                offset += len(chunk)
                if limit is not None:
                    chunk = chunk[: limit - sent]
                sent += len(chunk)
                await response.write(chunk)
            elif finished:
                break
            else:
                await asyncio.sleep(LOG_FOLLOW_POLL_SECONDS)
        await response.write_eof()
        return response


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(1024 * 1024)
    except OSError:
        return b""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentflow_devcluster.node",
        description="The agentflow local node: runs the pods bound to it as local processes.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--name", default=DEFAULT_NODE_NAME, help="Node name")
    parser.add_argument(
        "--instant",
        action="store_true",
        help="run no process: pods finish at once with the exit code and termination message "
        f"of their annotations {ANNOTATION_INSTANT_EXIT_CODE} and {ANNOTATION_INSTANT_MESSAGE}",
    )
    parser.add_argument(
        "--bind",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bind unscheduled pods of --scheduler-name to this node (default: yes)",
    )
    parser.add_argument("--scheduler-name", default=DEFAULT_SCHEDULER)
    parser.add_argument("--pki-dir", type=Path, help="default: <state-dir>/pki")
    parser.add_argument("--log-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--max-running-pods", type=int, default=64)
    parser.add_argument("--workers", type=int, default=64, help="pods handled concurrently")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(config: NodeConfig, kubeconfig: Path, stop: asyncio.Event) -> int:
    """Run the node until ``stop`` is set; then stop every pod process."""
    async with KubeClient.from_kubeconfig(kubeconfig, max_connections=config.workers + 8) as client:
        node = LocalNode(config, client)
        run = asyncio.create_task(node.run(), name="node")
        stopped = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        run.cancel()
        await node.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        if run.done() and not run.cancelled() and run.exception() is not None:
            log.error("the node failed", exc_info=run.exception())
            return 1
    return 0


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = NodeConfig(
        state_dir=args.state_dir.resolve(),
        name=args.name,
        pki_dir=args.pki_dir.resolve() if args.pki_dir else None,
        instant=args.instant,
        bind=args.bind,
        scheduler_name=args.scheduler_name,
        max_running_pods=args.max_running_pods,
        workers=args.workers,
        log_port=args.log_port,
    )
    return await serve(config, args.kubeconfig, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
