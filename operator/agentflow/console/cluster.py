"""The CLI's Kubernetes API client: plain JSON over the ``kubernetes`` client's transport.

Synchronous and small on purpose: the CLI makes a handful of requests per command.  Every
failure becomes a :class:`ConsoleError` carrying the exit code the CLI documents: 3 when the API
cannot be reached (or there is no usable kubeconfig), 4 when a named Workflow does not exist,
1 for any other refusal by the API server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from agentflow.api.models import GROUP, VERSION
from agentflow.apierror import ApiError
from agentflow.children import job_log_pod, job_pods_selector

# The client's functions are only partly typed; calls go through this untyped handle.
_k8s: Any = kubernetes

EXIT_FAILED = 1
EXIT_TIMEOUT = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4

WORKFLOWS = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/workflows"
ALL_WORKFLOWS = f"/apis/{GROUP}/{VERSION}/workflows"
CONFIGMAPS = "/api/v1/namespaces/{namespace}/configmaps"
ALL_CONFIGMAPS = "/api/v1/configmaps"
EVENTS = "/api/v1/namespaces/{namespace}/events"
PODS = "/api/v1/namespaces/{namespace}/pods"
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
SECRETS = "/api/v1/namespaces/{namespace}/secrets"

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "agentflow-cli"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


class ConsoleError(Exception):
    """A failure to show the user in one line, with the process exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def unreachable(server: str, reason: str) -> ConsoleError:
    return ConsoleError(
        f"cannot reach the Kubernetes API at {server}: {reason}. Is the cluster running? "
        "Try `make cluster-up`.",
        EXIT_UNREACHABLE,
    )


def _connection_reason(error: BaseException) -> str:
    """The innermost cause of a urllib3 failure, without the pool and URL noise."""
    inner: BaseException = error
    while isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    # NewConnectionError is a ConnectTimeoutError subclass, but "refused" is not a timeout.
    is_new_connection = isinstance(inner, urllib3.exceptions.NewConnectionError)
    if not is_new_connection and isinstance(
        inner, urllib3.exceptions.ConnectTimeoutError | TimeoutError
    ):
        return "connection timed out"
    if isinstance(inner, urllib3.exceptions.ReadTimeoutError):
        return "the API server did not answer in time"
    if isinstance(inner, urllib3.exceptions.SSLError):
        return f"TLS handshake failed ({inner})"
    text = str(inner)
    errno = re.search(r"\[Errno -?\d+\] (.+?)\)?'?$", text)
    if errno:
        return errno.group(1).rstrip("')").lower()
    return text.rsplit(": ", 1)[-1].strip() or type(inner).__name__


@dataclass(frozen=True)
class Target:
    """Which cluster and namespace, from the global options."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    try:
        contexts, active = _k8s.config.list_kube_config_contexts(config_file=kubeconfig)
    except (kubernetes.config.ConfigException, OSError, ValueError):
        return None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


class Cluster:
    """An API server, reached through a kubeconfig; see the module docstring."""

    def __init__(self, target: Target) -> None:
        configuration = _k8s.client.Configuration()
        try:
            _k8s.config.load_kube_config(
                config_file=target.kubeconfig,
                context=target.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (kubernetes.config.ConfigException, OSError, ValueError) as e:
            where = target.kubeconfig or "$KUBECONFIG or ~/.kube/config"
            raise ConsoleError(
                f"no usable kubeconfig ({where}): {str(e).rstrip('.')}. Is the cluster running? "
                "Try `make cluster-up` and `export KUBECONFIG=.agentflow/cluster/kubeconfig`.",
                EXIT_UNREACHABLE,
            ) from None
        # Fail fast when nothing listens: one retry, not urllib3's default of three.
        configuration.retries = 1
        self.server: str = configuration.host
        self.api: Any = _k8s.client.ApiClient(configuration)
        self.namespace = target.namespace or (
            _context_namespace(target.kubeconfig, target.context) or "default"
        )
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    def close(self) -> None:
        self.api.close()

    # -- transport ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = JSON,
        raw: bool = False,
    ) -> Any:
        """One request; the parsed JSON answer (or the text with ``raw``)."""
        method_, url, headers, body_, _ = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": JSON if not raw else "*/*", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                method_,
                url,
                header_params=headers,
                body=body_,
                _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
            data = response.read()
        except urllib3.exceptions.HTTPError as e:
            raise unreachable(self.server, _connection_reason(e)) from None
        except ApiException as e:  # raised by the client for TLS failures (status 0)
            reason = (e.reason or "error").splitlines()[-1]
            raise unreachable(self.server, reason) from None
        except OSError as e:
            raise unreachable(self.server, e.strerror or str(e)) from None
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
        if not 200 <= response.status < 300:
            raise api_error(response.status, text)
        if raw:
            return text
        return json.loads(text) if text else {}

    # -- discovery and apply --------------------------------------------------------------

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of ``kind`` from the API group's discovery document."""
        known = self._resources.get(api_version)
        if known is None:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                listing = self.request("GET", path)
            except ApiError as e:
                if e.status == 404:
                    raise ConsoleError(
                        f"the API server does not serve {api_version}"
                        + (" (are the CRDs installed?)" if api_version.startswith(GROUP) else "")
                    ) from None
                raise
            known = {
                r["kind"]: (r["name"], bool(r.get("namespaced")))
                for r in listing.get("resources") or []
                if "/" not in r.get("name", "")
            }
            self._resources[api_version] = known
        if kind not in known:
            raise ConsoleError(f"the API server does not serve kind {kind} in {api_version}")
        return known[kind]

    def object_path(self, api_version: str, kind: str, namespace: str | None, name: str) -> str:
        plural, namespaced = self._resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespaced:
            return f"{base}/namespaces/{namespace or self.namespace}/{plural}/{name}"
        return f"{base}/{plural}/{name}"

    def apply(
        self, body: dict[str, Any], namespace: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply of one object; (the object, whether it was created)."""
        meta = body.get("metadata") or {}
        api_version, kind, name = body.get("apiVersion"), body.get("kind"), meta.get("name")
        if not (api_version and kind and name):
            raise ConsoleError("cannot apply a document without apiVersion, kind and metadata.name")
        _, namespaced = self._resource(api_version, kind)
        target = namespace or meta.get("namespace") or self.namespace
        if namespaced:
            body = {**body, "metadata": {**meta, "namespace": target}}
        path = self.object_path(api_version, kind, target, name)
        before = self.get_optional(path)
        applied: dict[str, Any] = self.request(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=body,
            content_type=APPLY_PATCH,
        )
        return applied, before is None

    def create(self, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create one object (a POST: ``metadata.generateName`` gives it a fresh name)."""
        meta = body.get("metadata") or {}
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not (api_version and kind and (meta.get("name") or meta.get("generateName"))):
            raise ConsoleError(
                "cannot create a document without apiVersion, kind and metadata.name or "
                "metadata.generateName"
            )
        plural, namespaced = self._resource(api_version, kind)
        target = namespace or meta.get("namespace") or self.namespace
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespaced:
            body = {**body, "metadata": {**meta, "namespace": target}}
            path = f"{base}/namespaces/{target}/{plural}"
        else:
            path = f"{base}/{plural}"
        created: dict[str, Any] = self.request(
            "POST", path, query=[("fieldManager", FIELD_MANAGER)], body=body
        )
        return created

    # -- reads and writes -----------------------------------------------------------------

    def get_optional(self, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return found

    def workflow_path(self, namespace: str, name: str) -> str:
        return WORKFLOWS.format(namespace=namespace) + f"/{name}"

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.get_optional(self.workflow_path(namespace, name))
        if found is None:
            raise ConsoleError(
                f"workflow {name!r} not found in namespace {namespace!r}", EXIT_NOT_FOUND
            )
        return found

    def list_workflows(self, namespace: str | None) -> list[dict[str, Any]]:
        path = WORKFLOWS.format(namespace=namespace) if namespace else ALL_WORKFLOWS
        items: list[dict[str, Any]] = self.request("GET", path).get("items") or []
        return items

    def patch_workflow(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.get_workflow(namespace, name)  # a clear "not found" (exit 4) before patching
        patched: dict[str, Any] = self.request(
            "PATCH", self.workflow_path(namespace, name), body=patch, content_type=MERGE_PATCH
        )
        return patched

    def events(self, namespace: str, kind: str, name: str, uid: str | None) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        if uid:
            selector += f",involvedObject.uid={uid}"
        result = self.request(
            "GET", EVENTS.format(namespace=namespace), query=[("fieldSelector", selector)]
        )
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def list_configmaps(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        path = CONFIGMAPS.format(namespace=namespace) if namespace else ALL_CONFIGMAPS
        result = self.request("GET", path, query=[("labelSelector", selector)])
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get_optional(CONFIGMAPS.format(namespace=namespace) + f"/{name}")

    def delete_configmap(self, namespace: str, name: str) -> bool:
        try:
            self.request("DELETE", CONFIGMAPS.format(namespace=namespace) + f"/{name}")
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    def secret_exists(self, namespace: str, name: str) -> bool:
        return self.get_optional(SECRETS.format(namespace=namespace) + f"/{name}") is not None

    def job_pod_log(self, namespace: str, job_name: str) -> str | None:
        """The log of the Job's pod (``children.job_log_pod``), or None when it has none."""
        job = self.get_optional(JOBS.format(namespace=namespace) + f"/{job_name}")
        job_uid = (job.get("metadata") or {}).get("uid") if job is not None else None
        pods = (
            self.request(
                "GET",
                PODS.format(namespace=namespace),
                query=[("labelSelector", job_pods_selector(job_name))],
            ).get("items")
            or []
        )
        pod = job_log_pod(pods, job_uid)
        if pod is None:
            return None
        try:
            text: str = self.request(
                "GET", PODS.format(namespace=namespace) + f"/{pod}/log", raw=True
            )
        except ApiError as e:
            if e.status in (400, 404):
                return None
            raise
        return text


def api_error(status: int, text: str) -> ApiError:
    """The error of an answer ``status`` whose body is ``text`` (a Status object, or anything)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    reason = text.strip()[:300] or "no details"
    return ApiError(status, reason, body if isinstance(body, dict) else None)
