"""The operator's configuration: built once at start-up, validated, then handed to the handlers.

``agentflow operator`` builds it from its flags over the environment (:func:`load_config`) and
passes it to kopf in the memo; ``kopf run -m agentflow.main`` has no flags, so the start-up
handler builds it from the environment alone, with the same function.  Nothing else reads the
operator's settings from the environment.  A bad value fails the start with a message naming
the setting and the value (``AGENTFLOW_API_QPS='abc': not a number``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from agentflow.api.models import DNS_LABEL, Provider
from agentflow.children import JobSettings
from agentflow.engine.usage import ConcurrencyRule, Price, PriceTable
from agentflow.metrics import AGENTS_PER_NAMESPACE

Name = Annotated[str, Field(min_length=1, max_length=253)]
PerMillion = Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=12)]
# Most concurrency limits and priced models: each limit is a metric label value.
MAX_CONCURRENCY_LIMITS = 32
MAX_PRICES = 1000


class ModelPrice(BaseModel):
    """The price of one model's tokens, per million (a row of the price table)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # The agent's provider (anthropic, openai, ...); "" for agents with an image of their own.
    provider: Annotated[str, Field(max_length=32)] = ""
    # The model name as agents write it; "*" for every model of the provider.
    model: Annotated[str, Field(min_length=1, max_length=128)]
    input_per_million: PerMillion = Field(alias="inputPerMillion")
    output_per_million: PerMillion = Field(alias="outputPerMillion")


class Prices(BaseModel):
    """The price table (AGENTFLOW_PRICES, JSON): per provider and model, per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: Annotated[str, Field(min_length=1, max_length=8)] | None = None
    models: tuple[ModelPrice, ...] = Field(default=(), max_length=MAX_PRICES)


class ConcurrencyLimit(BaseModel):
    """At most ``max`` step attempts at once, across all Workflows, whose agent matches every
    field that is set: ``provider``, ``model`` (a pattern) and ``secret`` (a pattern of the
    name of a Secret the agent's env references: the credential)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
    max: int = Field(ge=1, le=100_000)
    provider: Provider | None = None
    model: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    secret: Annotated[str, Field(min_length=1, max_length=253)] | None = None


class ConfigError(ValueError):
    """A setting with a value the operator cannot run with; the message names both."""


class OperatorConfig(BaseModel):
    """Every setting of the operator, typed and bounded (the environment variable in brackets)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Namespaces to watch (AGENTFLOW_NAMESPACES, comma-separated); empty: all namespaces.
    namespaces: tuple[Name, ...] = ()
    log_format: Literal["json", "text"] = "json"  # AGENTFLOW_LOG_FORMAT
    metrics_host: str = "0.0.0.0"  # AGENTFLOW_METRICS_HOST
    metrics_port: int = Field(8080, ge=0, le=65535)  # AGENTFLOW_METRICS_PORT; 0: a free port
    metrics_auth: bool = False  # AGENTFLOW_METRICS_AUTH
    # Agent names per namespace that keep their own metric label value; the rest are "other".
    metrics_agents_per_namespace: int = Field(AGENTS_PER_NAMESPACE, ge=1, le=1000)
    # Images agents may use, exact strings (AGENTFLOW_ALLOWED_IMAGES); None: any image.
    allowed_images: frozenset[Name] | None = None
    # Names or fnmatch patterns of the Secrets agents may reference (AGENTFLOW_ALLOWED_SECRETS);
    # None: any Secret of the Workflow's namespace.  Set but empty: none at all.
    allowed_secrets: tuple[Name, ...] | None = None
    max_jobs_per_namespace: int | None = Field(None, ge=1)  # AGENTFLOW_MAX_JOBS_PER_NAMESPACE
    # The price table (AGENTFLOW_PRICES, JSON); None: tokens are counted without a cost.
    prices: Prices | None = None
    # Limits on step attempts at once per provider, model or Secret, cluster-wide
    # (AGENTFLOW_CONCURRENCY_LIMITS, a JSON list); an attempt counts against the first it matches.
    concurrency_limits: tuple[ConcurrencyLimit, ...] = Field((), max_length=MAX_CONCURRENCY_LIMITS)
    job_ttl_seconds: int = Field(3600, ge=0)  # AGENTFLOW_JOB_TTL_SECONDS
    step_service_account: Name | None = None  # AGENTFLOW_STEP_SERVICE_ACCOUNT
    qps: float = Field(50.0, gt=0)  # AGENTFLOW_API_QPS
    burst: int = Field(100, ge=1)  # AGENTFLOW_API_BURST
    # Workflows reconciled at once (AGENTFLOW_WORKERS); each pass is a few API calls, and the
    # calls of all workers share the rate limit above.
    workers: int = Field(8, ge=1, le=100)
    # The leader Lease: its name (AGENTFLOW_LEASE_NAME), and its namespace, which is always the
    # operator's own (POD_NAMESPACE): a Lease anywhere else could be written by a tenant.
    lease_name: Name = "agentflow-operator"
    lease_namespace: Name = "default"
    identity: Name = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Seconds; the operator's own duration, whatever a Lease's leaseDurationSeconds says.
    lease_duration: float = Field(15.0, gt=0)  # AGENTFLOW_LEASE_DURATION
    renew_interval: float = Field(5.0, gt=0)  # AGENTFLOW_LEASE_RENEW_INTERVAL
    cache_sweep_interval: float = Field(60.0, gt=0)  # AGENTFLOW_CACHE_SWEEP_SECONDS
    kubeconfig: str | None = None  # KUBECONFIG; None: in-cluster, else ~/.kube/config
    # Not a setting: the largest full report read from a pod log into an output ConfigMap.
    output_limit_bytes: int = 900 * 1024

    @model_validator(mode="after")
    def _renewed_within_the_duration(self) -> OperatorConfig:
        if self.renew_interval >= self.lease_duration:
            raise ValueError(
                f"{VARIABLES['renew_interval']}={self.renew_interval:g} must be shorter than "
                f"{VARIABLES['lease_duration']}={self.lease_duration:g}, or the Lease expires "
                "between renewals"
            )
        return self

    @model_validator(mode="after")
    def _unique_limit_names(self) -> OperatorConfig:
        names = [limit.name for limit in self.concurrency_limits]
        if len(names) != len(set(names)):
            raise ValueError(
                f"{VARIABLES['concurrency_limits']}: each concurrency limit needs a name of its own"
            )
        return self

    @property
    def price_table(self) -> PriceTable:
        if self.prices is None:
            return PriceTable()
        return PriceTable(
            prices={
                (p.provider, p.model): Price(p.input_per_million, p.output_per_million)
                for p in self.prices.models
            },
            currency=self.prices.currency,
        )

    @property
    def concurrency_rules(self) -> tuple[ConcurrencyRule, ...]:
        return tuple(
            ConcurrencyRule(
                name=limit.name,
                max=limit.max,
                provider=limit.provider.value if limit.provider else None,
                model=limit.model,
                secret=limit.secret,
            )
            for limit in self.concurrency_limits
        )

    @property
    def job(self) -> JobSettings:
        return JobSettings(
            ttl_seconds_after_finished=self.job_ttl_seconds,
            service_account_name=self.step_service_account,
        )


# The environment variable of each setting (the chart sets some of these, the flags of
# `agentflow operator` the others).
VARIABLES: dict[str, str] = {
    "namespaces": "AGENTFLOW_NAMESPACES",
    "log_format": "AGENTFLOW_LOG_FORMAT",
    "metrics_host": "AGENTFLOW_METRICS_HOST",
    "metrics_port": "AGENTFLOW_METRICS_PORT",
    "metrics_auth": "AGENTFLOW_METRICS_AUTH",
    "metrics_agents_per_namespace": "AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE",
    "allowed_images": "AGENTFLOW_ALLOWED_IMAGES",
    "allowed_secrets": "AGENTFLOW_ALLOWED_SECRETS",
    "max_jobs_per_namespace": "AGENTFLOW_MAX_JOBS_PER_NAMESPACE",
    "prices": "AGENTFLOW_PRICES",
    "concurrency_limits": "AGENTFLOW_CONCURRENCY_LIMITS",
    "job_ttl_seconds": "AGENTFLOW_JOB_TTL_SECONDS",
    "step_service_account": "AGENTFLOW_STEP_SERVICE_ACCOUNT",
    "qps": "AGENTFLOW_API_QPS",
    "burst": "AGENTFLOW_API_BURST",
    "workers": "AGENTFLOW_WORKERS",
    "lease_name": "AGENTFLOW_LEASE_NAME",
    "lease_namespace": "POD_NAMESPACE",
    "lease_duration": "AGENTFLOW_LEASE_DURATION",
    "renew_interval": "AGENTFLOW_LEASE_RENEW_INTERVAL",
    "cache_sweep_interval": "AGENTFLOW_CACHE_SWEEP_SECONDS",
    "kubeconfig": "KUBECONFIG",
}
LISTS = frozenset({"namespaces", "allowed_images", "allowed_secrets"})
# Settings where a variable that is set but empty means something (an empty allow-list).
EMPTY_IS_A_VALUE = frozenset({"allowed_secrets"})
# Settings whose value is JSON (the chart renders them with toJson).
JSON_SETTINGS = frozenset({"prices", "concurrency_limits"})


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, variable in VARIABLES.items():
        value = environ.get(variable)
        if value is None or (not value.strip() and name not in EMPTY_IS_A_VALUE):
            continue
        if name in LISTS:
            items = [v.strip() for v in value.split(",") if v.strip()]
            raw[name] = items if items or name in EMPTY_IS_A_VALUE else None
        elif name in JSON_SETTINGS:
            raw[name] = _json(variable, value)
        else:
            raw[name] = value.strip()
    return raw


def _json(source: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as e:
        raise ConfigError(f"invalid operator configuration: {source}: not JSON ({e})") from None


def _reason(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("float_parsing", "float_type"):
        return "not a number"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "not a whole number"
    if kind == "bool_parsing":
        return "not true or false"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    message = error["msg"].removeprefix("Value error, ")
    return message.replace("Input should be", "must be").replace("String should", "must")


def _describe(error: ValidationError, raw: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    problems = []
    for detail in error.errors():
        loc = detail["loc"]
        if not loc:  # a rule across settings: its message names them
            problems.append(_reason(detail))
            continue
        name = str(loc[0])
        source = flags.get(name) or VARIABLES.get(name, name)
        if name in JSON_SETTINGS:  # the value is long: name the place within it instead
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
            problems.append(f"{source}{where}: {_reason(detail)}")
            continue
        value = raw.get(name)
        shown = ",".join(value) if isinstance(value, list) else value
        problems.append(f"{source}={shown!r}: {_reason(detail)}")
    return "invalid operator configuration: " + "; ".join(problems)


def load_config(
    environ: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> OperatorConfig:
    """The configuration from ``environ``, with ``flags`` (settings given on the command line,
    by setting name; None values are not given) taking precedence.

    ``flag_names`` (setting name to flag, e.g. ``--metrics-port``) lets an error name the flag
    the bad value came from.  Raises :class:`ConfigError`.
    """
    raw = _from_environment(environ)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for name in JSON_SETTINGS & set(given):
        if isinstance(given[name], str):
            given[name] = _json((flag_names or {}).get(name, name), given[name])
    raw.update(given)
    named = {k: v for k, v in (flag_names or {}).items() if k in given}
    try:
        return OperatorConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw, named)) from None
