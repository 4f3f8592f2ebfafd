"""The agentflow API (group ``agentflow.dev``, version ``v1alpha1``) as pydantic v2 models.

These models are the single source of the API: the CRDs in ``crds/`` are generated from them
(``agentflow.api.crdgen``), the operator parses and writes status through them, and the CLI
validates files with them.  Field names are camelCase on the wire.

Every string and list has a bound, so that a Workflow stays far below the 256 KiB
``last-applied-configuration`` annotation budget and the 1.5 MiB etcd request limit.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "agentflow.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# The project's own agent runner image: the default container for an agent.
DEFAULT_AGENT_IMAGE = "agentflow/agent-runner:0.1.0"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"

# Size limits, named so that docs, schema and validation messages agree.
MAX_STEPS = 256
MAX_AGENTS = 32
MAX_PROMPT_LENGTH = 16_384
MAX_EXPRESSION_LENGTH = 1_024
MAX_DEPENDS_ON = 32
MAX_ENV = 64
MAX_ARGS = 64
MAX_ARG_LENGTH = 4_096
MAX_IMAGE_LENGTH = 512
MAX_RULES = 64

StepName = Annotated[str, Field(min_length=1, max_length=40, pattern=DNS_LABEL)]
AgentName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
Expression = Annotated[str, Field(min_length=1, max_length=MAX_EXPRESSION_LENGTH)]
Arg = Annotated[str, Field(max_length=MAX_ARG_LENGTH)]


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is sent to the API server: camelCase, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(Model):
    """Status is written by the operator; unknown fields from newer versions are tolerated."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


# --------------------------------------------------------------------------------------------
# Workflow spec
# --------------------------------------------------------------------------------------------


class Strategy(StrEnum):
    SEQUENTIAL = "Sequential"
    PARALLEL = "Parallel"
    DAG = "DAG"


class Provider(StrEnum):
    """How the default agent runner produces its report."""

    SCRIPT = "script"
    COMMAND = "command"
    ANTHROPIC = "anthropic"
    OPENAI = "openai"


class SecretKeySelector(Model):
    name: ObjectName
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class EnvVarSource(Model):
    """Secrets reach agents only through a Secret reference, never as literal values."""

    secret_key_ref: SecretKeySelector


class EnvVar(Model):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=ENV_NAME)]
    value: Annotated[str, Field(max_length=MAX_ARG_LENGTH)] | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env {self.name}: set exactly one of value or valueFrom")
        return self


class ResourceRequirements(Model):
    requests: dict[str, Annotated[str, Field(max_length=32, pattern=QUANTITY)]] = Field(
        default_factory=dict, max_length=8
    )
    limits: dict[str, Annotated[str, Field(max_length=32, pattern=QUANTITY)]] = Field(
        default_factory=dict, max_length=8
    )


class AgentTemplate(Model):
    """A named agent: the container that runs a step.

    With no ``image`` it is the project's agent runner, and ``provider``/``model`` select what
    the runner does; with an ``image`` it is any container that prints an agent report.
    """

    name: AgentName
    image: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_LENGTH)] | None = None
    provider: Provider | None = None
    model: Annotated[str, Field(max_length=128)] | None = None
    command: list[Arg] | None = Field(default=None, max_length=MAX_ARGS)
    args: list[Arg] | None = Field(default=None, max_length=MAX_ARGS)
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    resources: ResourceRequirements | None = None


class AgentOverride(Model):
    """Per-step changes to the step's agent template (merged over it)."""

    image: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_LENGTH)] | None = None
    model: Annotated[str, Field(max_length=128)] | None = None
    args: list[Arg] | None = Field(default=None, max_length=MAX_ARGS)
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    resources: ResourceRequirements | None = None


class Repeat(Model):
    """Run a step again until ``until`` (CEL over ``result``) is true, or ``maxIterations``."""

    until: Expression
    max_iterations: int = Field(default=5, ge=1, le=100)


class RetryPolicy(Model):
    """Retries of the same agent before the fallback policy is consulted."""

    limit: int = Field(default=0, ge=0, le=10)
    backoff_seconds: int = Field(default=10, ge=0, le=3600)
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff_seconds: int = Field(default=600, ge=0, le=86_400)


class CachePolicy(Model):
    enabled: bool = True
    ttl_seconds: int = Field(default=86_400, ge=1, le=31_536_000)


class Step(Model):
    name: StepName
    agent: AgentName
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_LENGTH)] = ""
    depends_on: list[StepName] = Field(default_factory=list, max_length=MAX_DEPENDS_ON)
    when: Expression | None = None
    repeat: Repeat | None = None
    retries: RetryPolicy | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=86_400)
    cache: CachePolicy | None = None
    override: AgentOverride | None = None


class LocalObjectReference(Model):
    name: ObjectName


class WorkflowSpec(Model):
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    strategy: Strategy = Strategy.SEQUENTIAL
    parallelism: int | None = Field(default=None, ge=1, le=1000)
    fallback_policy_ref: LocalObjectReference | None = None
    agents: list[AgentTemplate] = Field(default_factory=list, max_length=MAX_AGENTS)
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=604_800)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31_536_000)
    suspend: bool = False

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"duplicate step name {step.name!r}")
            seen.add(step.name)
        return steps

    @field_validator("agents")
    @classmethod
    def _unique_agent_names(cls, agents: list[AgentTemplate]) -> list[AgentTemplate]:
        seen: set[str] = set()
        for agent in agents:
            if agent.name in seen:
                raise ValueError(f"duplicate agent name {agent.name!r}")
            seen.add(agent.name)
        return agents


# --------------------------------------------------------------------------------------------
# Workflow status
# --------------------------------------------------------------------------------------------


class WorkflowPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_WORKFLOW_PHASES = frozenset({WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED})


class StepPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CACHED = "Cached"


TERMINAL_STEP_PHASES = frozenset(
    {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CACHED}
)
# Phases whose result later steps may read.
RESULT_STEP_PHASES = frozenset({StepPhase.SUCCEEDED, StepPhase.CACHED})


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    DEGRADED = "Degraded"


class Condition(StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32_768)
    last_transition_time: datetime
    observed_generation: int | None = None


class Artifact(StatusModel):
    path: str = Field(max_length=1024)
    action: Literal["created", "modified", "deleted"] = "modified"


class StepMetrics(StatusModel):
    tool_calls: int | None = None
    files_read: int | None = None
    lines_generated: int | None = None
    errors: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    extra: dict[str, float] = Field(default_factory=dict)


class StepResult(StatusModel):
    status: str | None = None
    summary: str = ""
    artifacts: list[Artifact] = Field(default_factory=list)
    metrics: StepMetrics = Field(default_factory=StepMetrics)
    digest: str | None = None
    truncated: bool = False
    output_ref: str | None = None


class Attempt(StatusModel):
    attempt: int
    agent: str
    job_name: str
    iteration: int = 1
    fallback: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: Literal["Running", "Succeeded", "Failed"] = "Running"
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None


class StepStatus(StatusModel):
    name: str
    phase: StepPhase = StepPhase.PENDING
    agent: str | None = None
    iteration: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    fallback_used: bool = False
    cache_key: str | None = None
    result: StepResult | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None


class WorkflowStatus(StatusModel):
    phase: WorkflowPhase = WorkflowPhase.PENDING
    degraded: bool = False
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    run: int = 0
    progress: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    # Tokens of the last rerun/retry request (annotations) this status has acted on.
    rerun_token: str | None = None
    retry_token: str | None = None
    steps: list[StepStatus] = Field(default_factory=list)

    def step(self, name: str) -> StepStatus | None:
        return next((s for s in self.steps if s.name == name), None)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --------------------------------------------------------------------------------------------
# AgentFallbackPolicy
# --------------------------------------------------------------------------------------------


class Criticality(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class FallbackRule(Model):
    agent: AgentName
    fallback: AgentName | None = None
    criticality: Criticality = Criticality.MEDIUM
    skip_if_unavailable: bool = False
    max_attempts: int = Field(default=1, ge=1, le=10)


class DefaultFallbackRule(Model):
    """Applies to agents without a rule of their own."""

    fallback: AgentName | None = None
    criticality: Criticality = Criticality.MEDIUM
    skip_if_unavailable: bool = False
    max_attempts: int = Field(default=1, ge=1, le=10)


class AgentFallbackPolicySpec(Model):
    rules: list[FallbackRule] = Field(default_factory=list, max_length=MAX_RULES)
    default: DefaultFallbackRule | None = None

    @field_validator("rules")
    @classmethod
    def _unique_rule_agents(cls, rules: list[FallbackRule]) -> list[FallbackRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.agent in seen:
                raise ValueError(f"duplicate rule for agent {rule.agent!r}")
            seen.add(rule.agent)
        return rules


class AgentFallbackPolicyStatus(StatusModel):
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


# --------------------------------------------------------------------------------------------
# Whole objects
# --------------------------------------------------------------------------------------------


class ObjectMeta(StatusModel):
    """The part of metadata the operator reads; the rest is ignored."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None


class Workflow(Model):
    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta
    spec: WorkflowSpec
    status: WorkflowStatus | None = None


class AgentFallbackPolicy(Model):
    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["AgentFallbackPolicy"] = "AgentFallbackPolicy"
    metadata: ObjectMeta
    spec: AgentFallbackPolicySpec
    status: AgentFallbackPolicyStatus | None = None
