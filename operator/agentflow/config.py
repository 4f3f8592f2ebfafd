"""Operator settings, from the command line (``agentflow operator``) or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agentflow.jobspec import JobSettings
from agentflow.metrics import AGENTS_PER_NAMESPACE


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    log_format: str = "json"  # json | text
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    metrics_auth: bool = False
    # Agent names per namespace that keep their own metric label value; the rest are "other".
    metrics_agents_per_namespace: int = AGENTS_PER_NAMESPACE
    allowed_images: frozenset[str] | None = None
    max_jobs_per_namespace: int | None = None
    job: JobSettings = field(default_factory=JobSettings)
    qps: float = 50.0
    burst: int = 100
    # Largest full report read from a pod log and stored in an output ConfigMap.
    output_limit_bytes: int = 900 * 1024
    # The Lease used for leader election and as the watch heartbeat.
    lease_name: str = "agentflow-operator"
    lease_namespace: str = "default"
    identity: str = field(
        default_factory=lambda: os.environ.get("HOSTNAME", "agentflow") + f"-{os.getpid()}"
    )
    lease_duration: float = 15.0
    renew_interval: float = 5.0
    cache_sweep_interval: float = 300.0
    kubeconfig: str | None = None

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """Settings for ``kopf run -m agentflow.main`` (the CLI sets these variables too)."""
        images = _env_list("AGENTFLOW_ALLOWED_IMAGES")
        max_jobs = os.environ.get("AGENTFLOW_MAX_JOBS_PER_NAMESPACE")
        return cls(
            namespaces=_env_list("AGENTFLOW_NAMESPACES"),
            log_format=os.environ.get("AGENTFLOW_LOG_FORMAT", "json"),
            metrics_host=os.environ.get("AGENTFLOW_METRICS_HOST", "0.0.0.0"),
            metrics_port=int(os.environ.get("AGENTFLOW_METRICS_PORT", "8080")),
            metrics_auth=os.environ.get("AGENTFLOW_METRICS_AUTH", "") in ("1", "true"),
            metrics_agents_per_namespace=int(
                os.environ.get("AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE") or AGENTS_PER_NAMESPACE
            ),
            allowed_images=frozenset(images) if images else None,
            max_jobs_per_namespace=int(max_jobs) if max_jobs else None,
            job=JobSettings(
                ttl_seconds_after_finished=int(os.environ.get("AGENTFLOW_JOB_TTL_SECONDS", "3600")),
                service_account_name=os.environ.get("AGENTFLOW_STEP_SERVICE_ACCOUNT") or None,
            ),
            qps=float(os.environ.get("AGENTFLOW_API_QPS", "50")),
            burst=int(os.environ.get("AGENTFLOW_API_BURST", "100")),
            lease_name=os.environ.get("AGENTFLOW_LEASE_NAME") or "agentflow-operator",
            lease_namespace=os.environ.get("AGENTFLOW_LEASE_NAMESPACE")
            or os.environ.get("POD_NAMESPACE", "default"),
            lease_duration=float(os.environ.get("AGENTFLOW_LEASE_DURATION", "15")),
            renew_interval=float(os.environ.get("AGENTFLOW_LEASE_RENEW_INTERVAL", "5")),
            kubeconfig=os.environ.get("KUBECONFIG") or None,
        )
