"""Prometheus' HTTP API, for the end-to-end tests, through the API server's service proxy.

``hack/monitoring/install.sh`` runs one Prometheus in namespace ``monitoring``: ServiceAccount
``prometheus`` (the chart's ``metrics.auth.scrapers`` entry), Service ``prometheus`` port 9090,
selecting the ServiceMonitors and PrometheusRules labelled ``agentflow.dev/e2e: "true"`` in any
namespace.  Every call here is a GET on
``/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/<path>`` with the kubeconfig's
credentials, so the tests need no port-forward and no route to the pod network.

Prometheus itself scrapes the ``prometheus`` and ``prometheus-operator`` jobs; agentflow's job is
its metrics Service's name (``<release fullname>-metrics``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict, TypeVar, cast

from kubernetes import client, config

NAMESPACE = "monitoring"
SERVICE = "prometheus"
PORT = 9090
SERVICE_ACCOUNT = "prometheus"
# What the Prometheus' serviceMonitorSelector and ruleSelector match.
SELECTOR_LABELS: Mapping[str, str] = {"agentflow.dev/e2e": "true"}
PROXY = f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}:{PORT}/proxy"

T = TypeVar("T")


class Series(TypedDict):
    """One element of an instant vector: its labels and ``[unix time, "value"]``."""

    metric: dict[str, str]
    value: tuple[float, str]


class Target(TypedDict, total=False):
    """An active target of ``/api/v1/targets``."""

    labels: dict[str, str]
    discoveredLabels: dict[str, str]
    scrapePool: str
    scrapeUrl: str
    globalUrl: str
    health: str  # "up", "down" or "unknown"
    lastError: str
    lastScrape: str
    lastScrapeDuration: float
    scrapeInterval: str
    scrapeTimeout: str


class Rule(TypedDict, total=False):
    """A rule of ``/api/v1/rules``: an alerting rule has ``state`` and ``alerts``."""

    name: str
    query: str
    type: str  # "alerting" or "recording"
    health: str  # "ok", "err" or "unknown"
    lastError: str
    labels: dict[str, str]
    annotations: dict[str, str]
    duration: float
    state: str  # "inactive", "pending" or "firing"
    alerts: list[dict[str, Any]]


class RuleGroup(TypedDict, total=False):
    """A rule group of ``/api/v1/rules``; ``file`` names the PrometheusRule it came from."""

    name: str
    file: str
    rules: list[Rule]
    interval: float
    lastEvaluation: str
    evaluationTime: float


class PrometheusError(RuntimeError):
    """Prometheus (or the API server's proxy in front of it) answered with an error."""


_clients: dict[Path, client.ApiClient] = {}


def _api(kubeconfig: Path) -> client.ApiClient:
    key = Path(kubeconfig).resolve()
    if key not in _clients:
        _clients[key] = config.new_client_from_config(config_file=str(key))  # type: ignore[no-untyped-call]
    return _clients[key]


def _get(kubeconfig: Path, path: str, params: Mapping[str, str] | None, timeout: float) -> bytes:
    """``GET <proxy>/<path>``'s body; a status other than 200 is a ``PrometheusError``."""
    api = _api(kubeconfig)
    method, url, headers, _, _ = api.param_serialize(
        "GET",
        f"{PROXY}/{path.lstrip('/')}",
        query_params=list((params or {}).items()),
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, _request_timeout=timeout)
    data: bytes = response.read() or b""  # type: ignore[no-untyped-call]
    if response.status != 200:
        raise PrometheusError(f"GET {url}: {response.status} {response.reason}: {data[:500]!r}")
    return data


def get(kubeconfig: Path, path: str, params: Mapping[str, str] | None = None) -> Any:
    """The ``data`` of Prometheus' JSON answer to ``GET <path>`` (e.g. ``api/v1/query``)."""
    body = json.loads(_get(kubeconfig, path, params, timeout=30))
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusError(f"GET {path} {dict(params or {})}: {body!r}")
    return body["data"]


def ready(kubeconfig: Path) -> bool:
    """Whether Prometheus answers ``/-/ready`` (its storage is open and its rules loaded)."""
    try:
        _get(kubeconfig, "-/ready", None, timeout=10)
    except PrometheusError:
        return False
    return True


def query(kubeconfig: Path, promql: str) -> list[Series]:
    """The instant vector of ``promql`` now; a scalar or string result is an error."""
    data = get(kubeconfig, "api/v1/query", {"query": promql})
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{promql!r} is a {data.get('resultType')}, not an instant vector")
    return [
        Series(metric=dict(s["metric"]), value=(float(s["value"][0]), str(s["value"][1])))
        for s in data["result"]
    ]


def targets(kubeconfig: Path) -> list[Target]:
    """The active targets, every scrape pool's."""
    data = get(kubeconfig, "api/v1/targets", {"state": "active"})
    return cast(list[Target], data["activeTargets"])


def rules(kubeconfig: Path) -> list[RuleGroup]:
    """The loaded rule groups, alerting and recording."""
    data = get(kubeconfig, "api/v1/rules")
    return cast(list[RuleGroup], data["groups"])


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 1.0,
) -> T:
    """Poll ``check`` until it returns something other than None or False, for ``timeout`` s.

    A ``PrometheusError`` from ``check`` (Prometheus not up yet, a restart) is retried; the last
    one, or the last value, is in the ``TimeoutError`` raised at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
            last = value
        except PrometheusError as error:
            last = error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what}: not within {timeout:g} s (last: {last!r})")
        time.sleep(min(interval, remaining))


def wait_ready(kubeconfig: Path, timeout: float = 120) -> None:
    wait_for(lambda: ready(kubeconfig) or None, timeout, "Prometheus /-/ready")


def wait_target_up(kubeconfig: Path, job: str, timeout: float = 120) -> list[Target]:
    """The active targets of ``job``, once there is one and all of them are up."""

    def up() -> list[Target] | None:
        found = [t for t in targets(kubeconfig) if t.get("labels", {}).get("job") == job]
        return found if found and all(t.get("health") == "up" for t in found) else None

    return wait_for(up, timeout, f"the targets of job {job!r} up")


def wait_series(kubeconfig: Path, promql: str, timeout: float = 120) -> list[Series]:
    """The result of ``promql``, once it is not empty."""
    return wait_for(lambda: query(kubeconfig, promql) or None, timeout, f"series of {promql!r}")


def wait_rule_group(kubeconfig: Path, name: str, timeout: float = 120) -> RuleGroup:
    """The loaded rule group ``name``, once it is there."""

    def group() -> RuleGroup | None:
        return next((g for g in rules(kubeconfig) if g.get("name") == name), None)

    return wait_for(group, timeout, f"rule group {name!r} loaded")
