"""The agentflow API (group ``agentflow.dev``, version ``v1alpha1``) as pydantic v2 models.

These models are the single source of the API: the CRDs in ``crds/`` are generated from them
(``agentflow.api.crdgen``), the operator parses and writes status through them, and the CLI
validates files with them.  Field names are camelCase on the wire.

Every string and list has a bound.  A typical Workflow is a few KiB; one at every maximum
is about 1 MiB, which still fits etcd's 1.5 MiB request limit (its status grows as steps
finish).  Client-side ``kubectl apply`` keeps a copy of the object in an annotation limited to
256 KiB, so apply large Workflows with ``kubectl apply --server-side``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "agentflow.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# The project's own agent runner image: the default container for an agent.
DEFAULT_AGENT_IMAGE = "agentflow/agent-runner:0.1.0"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
# A non-negative decimal amount of money, written as a string so that no float rounding
# touches it (``"2.50"``); at most 12 digits before the point and 12 after.
DECIMAL = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

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
MAX_ARGUMENTS = 64
MAX_INPUT_NAME_LENGTH = 63
MAX_INPUT_VALUE_LENGTH = 4_096
MAX_INPUT_DESCRIPTION_LENGTH = 1_024

# An input's name is read as ``inputs.<name>`` in CEL and templates: an identifier, and none of
# the words CEL reserves (``inputs.in`` would not parse).
INPUT_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
CEL_RESERVED_WORDS = (
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
    "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
    "void", "while",
)  # fmt: skip
MAX_FAILURE_RULES = 16
# Bounds of a RetrySameAgent entry of a fallback rule's onFailure.
MAX_FAILURE_WAIT_SECONDS = 3_600
MAX_FAILURE_RETRIES = 20

StepName = Annotated[str, Field(min_length=1, max_length=40, pattern=DNS_LABEL)]
AgentName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
Expression = Annotated[str, Field(min_length=1, max_length=MAX_EXPRESSION_LENGTH)]
Arg = Annotated[str, Field(max_length=MAX_ARG_LENGTH)]
Amount = Annotated[str, Field(min_length=1, max_length=25, pattern=DECIMAL)]
# Tokens of one run: 10^15 is far beyond any budget and still exact in a float64 (CEL, JSON).
MAX_TOKENS = 10**15


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        # Attribute docstrings become field descriptions in the CRDs and docs/api.md.
        use_attribute_docstrings=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is sent to the API server: camelCase, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(Model):
    """Status is written by the operator; unknown fields from newer versions are tolerated."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# --------------------------------------------------------------------------------------------
# Workflow spec
# --------------------------------------------------------------------------------------------


class Strategy(StrEnum):
    """How steps are ordered: one after another, all at once, or by ``dependsOn``."""

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
    """A key of a Secret in the Workflow's namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key within the Secret."""


class EnvVarSource(Model):
    """Secrets reach agents only through a Secret reference, never as literal values."""

    secret_key_ref: SecretKeySelector
    """The Secret key whose value becomes the variable."""


class EnvVar(Model):
    """An environment variable of the agent container: a literal value or a Secret reference."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.value) != has(self.valueFrom)",
                    "message": "env: set exactly one of value or valueFrom",
                }
            ]
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=ENV_NAME)]
    """Variable name."""
    value: Annotated[str, Field(max_length=MAX_ARG_LENGTH)] | None = None
    """Literal value, which may refer to inputs (``{{ inputs.<name> }}``); never put secrets
    here, use ``valueFrom``."""
    value_from: EnvVarSource | None = None
    """Where the value comes from (a Secret key)."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env {self.name}: set exactly one of value or valueFrom")
        return self


class ResourceRequirements(Model):
    """Compute resources of the agent container, as in a Pod (e.g. ``cpu: 500m``)."""

    requests: dict[str, Annotated[str, Field(max_length=32, pattern=QUANTITY)]] = Field(
        default_factory=dict, max_length=8
    )
    """Resources the scheduler reserves, by resource name."""
    limits: dict[str, Annotated[str, Field(max_length=32, pattern=QUANTITY)]] = Field(
        default_factory=dict, max_length=8
    )
    """Upper bounds, by resource name."""


class AgentTemplate(Model):
    """A named agent: the container that runs a step.

    With no ``image`` it is the project's agent runner, and ``provider``/``model`` select what
    the runner does; with an ``image`` it is any container that prints an agent report.
    """

    name: AgentName
    """Name that steps use in ``agent`` (unique within the Workflow)."""
    image: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_LENGTH)] | None = None
    """Container image; unset means the project's agent runner."""
    provider: Provider | None = None
    """What the agent runner uses to produce its report (only without ``image``)."""
    model: Annotated[str, Field(max_length=128)] | None = None
    """Model name passed to the provider."""
    command: list[Arg] | None = Field(default=None, max_length=MAX_ARGS)
    """Container entrypoint; unset keeps the image's."""
    args: list[Arg] | None = Field(default=None, max_length=MAX_ARGS)
    """Arguments to the entrypoint."""
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    """Environment variables of the agent container."""
    resources: ResourceRequirements | None = None
    """Compute resources of the agent container."""


class AgentOverride(Model):
    """Per-step changes to the step's agent template (merged over it)."""

    image: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_LENGTH)] | None = None
    """Replaces the agent's image."""
    model: Annotated[str, Field(max_length=128)] | None = None
    """Replaces the agent's model."""
    args: list[Arg] | None = Field(default=None, max_length=MAX_ARGS)
    """Replaces the agent's arguments."""
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    """Added to the agent's environment (same name: this value wins)."""
    resources: ResourceRequirements | None = None
    """Replaces the agent's resources."""


class Repeat(Model):
    """Run a step again until ``until`` (CEL over ``result``) is true, or ``maxIterations``."""

    until: Expression
    """CEL condition over ``result`` (this iteration's report), ``steps``, ``inputs`` and
    ``workflow`` (see "CEL expressions" in docs/api.md); true ends the repetition.  Only a result
    that passed the step's ``accept`` gate is judged by ``until``."""
    max_iterations: int = Field(default=5, ge=1, le=100)
    """Upper bound on runs of the step, the first one included."""


class RetryPolicy(Model):
    """Retries of the same agent before the fallback policy is consulted."""

    limit: int = Field(default=0, ge=0, le=10)
    """How many times a failed step is retried with the same agent."""
    backoff_seconds: int = Field(default=10, ge=0, le=3600)
    """Delay before the first retry."""
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    """Each further delay is the previous one times this factor."""
    max_backoff_seconds: int = Field(default=600, ge=0, le=86_400)
    """Upper bound on the delay."""


class CachePolicy(Model):
    """Reuse of an earlier result of the same step with the same inputs."""

    enabled: bool | None = None
    """Look up and store results in the cache.  Unset: on, except in a Workflow with a
    ``workspace``, whose steps are cached only when they set ``true`` (a cached step writes no
    files, so a later step would not find them)."""
    ttl_seconds: int = Field(default=86_400, ge=1, le=31_536_000)
    """How long a stored result may be reused."""


class Step(Model):
    """One unit of work: a run of an agent on a prompt, as a Kubernetes Job."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
                    "message": "a step must not list itself in dependsOn",
                    "fieldPath": ".dependsOn",
                }
            ]
        }
    )

    name: StepName
    """Step name, unique within the Workflow (a DNS label)."""
    agent: AgentName
    """Name of the agent in ``spec.agents`` that runs the step."""
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_LENGTH)] = ""
    """Prompt given to the agent; may refer to results of earlier steps and to inputs."""
    depends_on: list[StepName] = Field(
        default_factory=list,
        max_length=MAX_DEPENDS_ON,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Names of steps that must finish first (strategy DAG)."""
    when: Expression | None = None
    """CEL condition over ``steps``, ``inputs`` and ``workflow`` (see "CEL expressions" in
    docs/api.md); when false the step is skipped."""
    accept: Expression | None = None
    """Quality gate: CEL over ``result`` (the attempt's report), ``steps``, ``inputs`` and
    ``workflow``, e.g. ``result.metrics.extra.score >= 80 && size(result.artifacts) > 0``.  An
    attempt whose result makes it false (or whose result lacks what it reads) failed with reason
    ``QualityGateFailed`` and goes through retries and the fallback policy like any failure; its
    result is not cached."""
    repeat: Repeat | None = None
    """Run the step again until a condition holds."""
    retries: RetryPolicy | None = None
    """Retries with the same agent before the fallback policy applies."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=86_400)
    """Deadline of one attempt (the Job's activeDeadlineSeconds)."""
    cache: CachePolicy | None = None
    """Result caching of this step."""
    override: AgentOverride | None = None
    """Changes to the agent for this step only."""


class Parameter(Model):
    """A named string input of the Workflow, read as ``inputs.<name>`` by prompts, ``when``,
    ``repeat.until`` and agents' literal ``env`` values.

    Its value is ``value`` when set, else ``default``; with neither it is required, and the
    Workflow is rejected until one is given (``agentflow submit -p <name>=<value>``).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.value) || has(self.default)",
                    "message": "an input without a default is required: set its value"
                    " (agentflow submit -p <name>=...) or a default",
                    # The API server says this instead, with the input's name.
                    "messageExpression": "'input ' + self.name + ' is required: set its value"
                    " (agentflow submit -p ' + self.name + '=...) or a default'",
                },
                {
                    "rule": "!(self.name in " + repr(list(CEL_RESERVED_WORDS)) + ")",
                    "message": "an input must not be named after a word CEL reserves",
                    "fieldPath": ".name",
                },
            ]
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=MAX_INPUT_NAME_LENGTH, pattern=INPUT_NAME)]
    """Name of the input (an identifier, unique within the Workflow)."""
    value: Annotated[str, Field(max_length=MAX_INPUT_VALUE_LENGTH)] | None = None
    """The value given for this run."""
    default: Annotated[str, Field(max_length=MAX_INPUT_VALUE_LENGTH)] | None = None
    """The value when none is given."""
    description: Annotated[str, Field(max_length=MAX_INPUT_DESCRIPTION_LENGTH)] | None = None
    """What the input is for."""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in CEL_RESERVED_WORDS:
            raise ValueError(f"{name!r} is a word CEL reserves; choose another name")
        return name

    @model_validator(mode="after")
    def _has_value(self) -> Parameter:
        if self.value is None and self.default is None:
            raise ValueError(
                f"input {self.name} is required: set its value"
                f" (agentflow submit -p {self.name}=...) or a default"
            )
        return self

    @property
    def effective(self) -> str:
        """``value``, else ``default``."""
        value = self.value if self.value is not None else self.default
        assert value is not None  # _has_value
        return value


class Budget(Model):
    """Upper bounds on what one run of the Workflow may consume.

    The usage is the sum over the run's attempts of the tokens their agents reported
    (``status.usage``); the cost is what the operator's price table says those tokens cost.
    Once either bound is reached no new step attempt starts; attempts already running finish,
    and then the Workflow fails with reason ``BudgetExceeded``.  Each attempt's agent is given
    what is left of ``maxTokens`` (and of ``maxCost``, at its model's output price) as its
    max-tokens bound.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.maxTokens) || has(self.maxCost)",
                    "message": "budget: set maxTokens, maxCost or both",
                }
            ]
        }
    )

    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Most input plus output tokens the run's attempts may use together."""
    max_cost: Amount | None = None
    """Most the run's tokens may cost, in the currency of the operator's price table, as a
    decimal string (``"2.50"``).  Tokens of models without a price count nothing here."""

    @model_validator(mode="after")
    def _a_bound(self) -> Budget:
        if self.max_tokens is None and self.max_cost is None:
            raise ValueError("budget: set maxTokens, maxCost or both")
        return self


# Where every step of a Workflow with a workspace finds it (the Job's volume mount and working
# directory, and the runner's AGENTFLOW_WORKSPACE).
WORKSPACE_PATH = "/workspace"
MAX_ACCESS_MODES = 3


class AccessMode(StrEnum):
    """How a workspace volume may be mounted (a PersistentVolumeClaim's access mode)."""

    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"
    READ_WRITE_MANY = "ReadWriteMany"


# Access modes under which pods on different nodes, or two pods at all, may not share the claim.
SINGLE_NODE_ACCESS_MODES = frozenset({AccessMode.READ_WRITE_ONCE, AccessMode.READ_WRITE_ONCE_POD})


class WorkspaceClaimTemplate(Model):
    """The PersistentVolumeClaim the operator creates for a Workflow's workspace: a bounded
    subset of a claim's spec."""

    access_modes: list[AccessMode] = Field(
        default_factory=lambda: [AccessMode.READ_WRITE_ONCE],
        min_length=1,
        max_length=MAX_ACCESS_MODES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Access modes of the claim.  ``ReadWriteOnce`` and ``ReadWriteOncePod`` (one node, or one
    pod, at a time) need steps that never run at once: strategy Sequential, or parallelism 1."""
    storage_class_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)] | None
    ) = None
    """StorageClass of the claim; unset: the cluster's default StorageClass."""
    storage: Annotated[str, Field(max_length=32, pattern=QUANTITY)]
    """Requested size, e.g. ``1Gi`` (the claim's ``resources.requests.storage``)."""
    volume_mode: Literal["Filesystem"] = "Filesystem"
    """Only ``Filesystem``: steps see the workspace as a directory."""


class Workspace(Model):
    """A directory shared by every step of the Workflow, mounted at ``/workspace``: a claim the
    operator creates from ``volumeClaimTemplate``, or an existing claim named by ``claimName``."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.volumeClaimTemplate) != has(self.claimName)",
                    "message": "workspace: set exactly one of volumeClaimTemplate or claimName",
                }
            ]
        }
    )

    volume_claim_template: WorkspaceClaimTemplate | None = None
    """The claim the operator creates, one per Workflow, owned by it (deleted with it) and kept
    across its runs: a retry keeps the steps that succeeded, and so the files they wrote."""
    claim_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)] | None
    ) = None
    """An existing PersistentVolumeClaim in the Workflow's namespace; the operator neither
    creates nor deletes it."""

    @model_validator(mode="after")
    def _one_source(self) -> Workspace:
        if (self.volume_claim_template is None) == (self.claim_name is None):
            raise ValueError("set exactly one of volumeClaimTemplate or claimName")
        return self


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: ObjectName
    """Name of the object."""


SINGLE_NODE_WORKSPACE_MESSAGE = (
    "spec.workspace.volumeClaimTemplate.accessModes: ReadWriteOnce and ReadWriteOncePod claims"
    " cannot serve steps that run at once; use strategy Sequential, set spec.parallelism to 1,"
    " or ask for ReadWriteMany"
)
_SINGLE_NODE_WORKSPACE_RULE: JsonDict = {
    "rule": "!has(self.workspace) || !has(self.workspace.volumeClaimTemplate)"
    " || self.strategy == 'Sequential'"
    " || (has(self.parallelism) && self.parallelism == 1)"
    " || (has(self.workspace.volumeClaimTemplate.accessModes)"
    " && self.workspace.volumeClaimTemplate.accessModes.all(m, m == 'ReadWriteMany'))",
    "message": SINGLE_NODE_WORKSPACE_MESSAGE,
    "fieldPath": ".workspace",
}


class WorkflowSpec(Model):
    """The desired run: steps, the agents that run them and how failures are handled."""

    # Rules the schema alone cannot state; the API server checks them on every write.  Step
    # and agent names are unique through x-kubernetes-list-type map (cheaper than CEL).
    # sets.contains keeps the cost estimate of the reference check (256 steps x 32 names)
    # near a third of the API server's per-rule budget, where nested all/exists exceeds it
    # about five times; it needs Kubernetes 1.29 or later.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.steps.all(s, !has(s.dependsOn)"
                    " || sets.contains(self.steps.map(t, t.name), s.dependsOn))",
                    "message": "every name in steps[].dependsOn must be a step of this Workflow",
                    "fieldPath": ".steps",
                },
                {
                    "rule": "has(self.agents)"
                    " && sets.contains(self.agents.map(a, a.name), self.steps.map(s, s.agent))",
                    "message": "every steps[].agent must be declared in spec.agents"
                    " (which must not be empty)",
                    "fieldPath": ".steps",
                },
                _SINGLE_NODE_WORKSPACE_RULE,
            ]
        }
    )

    steps: list[Step] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The steps, in order for strategy Sequential."""
    strategy: Strategy = Strategy.SEQUENTIAL
    """Sequential: one after another; Parallel: all at once; DAG: as ``dependsOn`` allows."""
    parallelism: int | None = Field(default=None, ge=1, le=1000)
    """Upper bound on steps running at once (unset: no bound)."""
    fallback_policy_ref: LocalObjectReference | None = None
    """The AgentFallbackPolicy that says what to do when an agent fails."""
    agents: list[AgentTemplate] = Field(
        default_factory=list,
        max_length=MAX_AGENTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The agents that steps (and fallbacks) refer to by name."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=604_800)
    """Deadline of the whole run; when it passes, the Workflow fails."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31_536_000)
    """Delete the Workflow this long after it succeeds or fails."""
    suspend: bool = False
    """While true no new step Jobs start; running ones finish."""
    arguments: list[Parameter] = Field(
        default_factory=list,
        max_length=MAX_ARGUMENTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The Workflow's inputs: ``{{ inputs.<name> }}`` in prompts and env values, ``inputs.<name>``
    in CEL."""

    budget: Budget | None = None
    """Upper bounds on the tokens and the cost of one run.  Once the run's usage
    (``status.usage``) reaches one, no new attempt starts, running attempts finish, and the
    Workflow fails with reason ``BudgetExceeded``; each attempt's agent gets what is left as its
    max-tokens bound."""

    workspace: Workspace | None = None
    """A directory shared by the steps of a run, mounted at ``/workspace`` in every step pod."""

    def inputs(self) -> dict[str, str]:
        """Every input's value by name (``value``, else ``default``)."""
        return {p.name: p.effective for p in self.arguments}

    @model_validator(mode="after")
    def _workspace_serves_the_strategy(self) -> WorkflowSpec:
        template = self.workspace.volume_claim_template if self.workspace else None
        if (
            template is not None
            and self.strategy is not Strategy.SEQUENTIAL
            and self.parallelism != 1
            and any(m in SINGLE_NODE_ACCESS_MODES for m in template.access_modes)
        ):
            raise ValueError(SINGLE_NODE_WORKSPACE_MESSAGE)
        return self

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"duplicate step name {step.name!r}")
            seen.add(step.name)
        return steps

    @field_validator("arguments")
    @classmethod
    def _unique_input_names(cls, arguments: list[Parameter]) -> list[Parameter]:
        seen: set[str] = set()
        for parameter in arguments:
            if parameter.name in seen:
                raise ValueError(f"duplicate input name {parameter.name!r}")
            seen.add(parameter.name)
        return arguments

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
    """Where the Workflow is in its life."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_WORKFLOW_PHASES = frozenset({WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED})


class StepPhase(StrEnum):
    """Where a step is in its life."""

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
    """A standard Kubernetes condition."""

    type: str
    """Ready, Reconciling, Stalled or Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(max_length=1024)
    """Machine-readable reason, in CamelCase."""
    message: str = Field(default="", max_length=32_768)
    """Human-readable details."""
    last_transition_time: datetime
    """When ``status`` last changed."""
    observed_generation: int | None = None
    """The ``metadata.generation`` the condition was computed from."""


class Artifact(StatusModel):
    """A file the agent reported touching."""

    path: str = Field(max_length=1024)
    """Path of the file."""
    action: Literal["created", "modified", "deleted"] = "modified"
    """What the agent did to it."""


class StepMetrics(StatusModel):
    """Counters the agent reported."""

    tool_calls: int | None = None
    files_read: int | None = None
    lines_generated: int | None = None
    errors: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    extra: dict[str, float] = Field(default_factory=dict)
    """Further numeric metrics, by name."""


class StepResult(StatusModel):
    """The agent's report of a finished step."""

    status: str | None = None
    """The status word the agent reported."""
    summary: str = ""
    """Short summary of the work done."""
    artifacts: list[Artifact] = Field(default_factory=list)
    """Files the agent reported touching."""
    metrics: StepMetrics = Field(default_factory=StepMetrics)
    """Counters the agent reported."""
    digest: str | None = None
    """Digest of the full report."""
    truncated: bool = False
    """True when the report was cut to fit into status; the full one is in ``outputRef``."""
    output_ref: str | None = None
    """Name of the ConfigMap that holds the full report."""


class Usage(StatusModel):
    """Model tokens used, and what they cost when the operator's price table has their model."""

    input_tokens: int = 0
    """Input (prompt) tokens."""
    output_tokens: int = 0
    """Output (completion) tokens."""
    cost: str | None = None
    """Cost of the priced tokens in the price table's currency, a decimal string; unset when
    no token here has a price."""
    unpriced_tokens: int = 0
    """Tokens of models the price table has no price for: counted, without a cost."""


class AgentUsage(Usage):
    """The usage of one agent's attempts."""

    agent: str
    """The agent."""


class WorkflowUsage(Usage):
    """The usage of the run: every attempt's, in total and by agent."""

    total_tokens: int = 0
    """Input plus output tokens."""
    currency: str | None = None
    """The price table's currency (e.g. USD), when it has one."""
    agents: list[AgentUsage] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["agent"],
        },
    )
    """The usage by agent (at most one entry per agent of ``spec.agents``)."""
    budget_exceeded: str | None = None
    """Set when the run reached its budget with steps left to run, which it then stopped: the
    bound reached (``maxTokens`` or ``maxCost``)."""


class Attempt(StatusModel):
    """One Job run for a step."""

    attempt: int
    """Attempt number within the iteration, from 1."""
    agent: str
    """The agent that ran."""
    job_name: str
    """Name of the Job."""
    iteration: int = 1
    """Iteration of a repeated step, from 1."""
    fallback: bool = False
    """True when the agent is a fallback from the policy."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: Literal["Running", "Succeeded", "Failed"] = "Running"
    """How the Job ended, or Running."""
    exit_code: int | None = None
    """Exit code of the agent container."""
    reason: str | None = None
    """Why it failed: its failure class (see ``FailureClass``), e.g. ``RateLimited``, ``Timeout``,
    ``QualityGateFailed``; ``Cancelled`` when the Workflow failed while it ran."""
    message: str | None = None
    """Details of the failure: the class, the Kubernetes reason where it adds one, the exit
    code and what the agent said (a quality gate's expression and the values it read)."""
    usage: Usage | None = None
    """The tokens the attempt reported, and their cost."""
    concurrency_limit: str | None = None
    """The operator's concurrency limit the attempt's Job counted against."""


class StepStatus(StatusModel):
    """The observed state of one step."""

    name: str
    """The step's name."""
    phase: StepPhase = StepPhase.PENDING
    agent: str | None = None
    """The agent of the latest attempt."""
    iteration: int = 0
    """The current iteration of a repeated step."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every Job run for the step, oldest first."""
    fallback_used: bool = False
    """True once a fallback agent has run the step."""
    cache_key: str | None = None
    """Key of the step's inputs in the result cache."""
    result: StepResult | None = None
    """The report of the finished step."""
    message: str | None = None
    """Human-readable details of the phase."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    """When the next retry may start (during backoff)."""
    usage: Usage | None = None
    """The tokens of the step's attempts in this run, and their cost."""


class WorkflowStatus(StatusModel):
    """The observed state of the Workflow, written by the operator."""

    phase: WorkflowPhase = WorkflowPhase.PENDING
    degraded: bool = False
    """True when a fallback agent was used or a step was skipped under the fallback policy."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = None
    """The ``metadata.generation`` this status was computed from."""
    run: int = 0
    """Run number; a rerun request starts the next one."""
    progress: str | None = None
    """Finished steps of all steps, e.g. ``3/5``: those that succeeded, came from the cache, were
    skipped, or failed after running a Job. A step that failed before it ran (at its ``when``, its
    prompt or its agent) is not counted."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    """Human-readable details of the phase."""
    spec_digest: str | None = None
    """Digest of the spec this run executes, leaving out `suspend`: a change to `suspend`
    alone pauses or resumes the run instead of starting a new one."""
    # Tokens of the last rerun/retry request (annotations) this status has acted on.
    rerun_token: str | None = None
    """The last ``agentflow.dev/rerun`` annotation value acted on."""
    retry_token: str | None = None
    """The last ``agentflow.dev/retry`` annotation value acted on."""
    usage: WorkflowUsage | None = None
    """The tokens of the run's attempts and their cost, in total and by agent."""
    workspace_claim: str | None = None
    """The PersistentVolumeClaim mounted at ``/workspace`` in the steps' pods."""
    steps: list[StepStatus] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """The state of each step that has been considered."""

    def step(self, name: str) -> StepStatus | None:
        return next((s for s in self.steps if s.name == name), None)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --------------------------------------------------------------------------------------------
# AgentFallbackPolicy
# --------------------------------------------------------------------------------------------


class Criticality(StrEnum):
    """How much the Workflow's outcome depends on the agent."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class FailureClass(StrEnum):
    """How a step attempt failed: a bounded set, the ``reason`` of a failed attempt and the
    classes an ``onFailure`` entry of a fallback rule matches.

    Reported by the agent runner (from the provider's answer), by any agent in its JSON report
    or termination message (``failureClass``), or derived from the pod: ``OOMKilled``, image
    pull errors (``ImagePullFailed``), container config errors (``ConfigError``), the Job's
    ``DeadlineExceeded`` (``Timeout``), any other non-zero exit (``AgentError``).  The last
    group is the operator's own.
    """

    RATE_LIMITED = "RateLimited"
    """The provider said too many requests (HTTP 429); its Retry-After is honoured."""
    OVERLOADED = "Overloaded"
    """The provider is overloaded or failing (HTTP 529, 503 and other 5xx)."""
    TIMEOUT = "Timeout"
    """The provider did not answer in time, or the attempt ran past ``timeoutSeconds``."""
    AUTH_FAILED = "AuthFailed"
    """The provider refused the credentials (HTTP 401, 403)."""
    QUOTA_EXCEEDED = "QuotaExceeded"
    """Billing or quota exhausted (HTTP 402, the providers' quota and credit errors)."""
    CONTEXT_TOO_LONG = "ContextTooLong"
    """The prompt is longer than the model's context (HTTP 400 or 413 of that kind)."""
    INVALID_REQUEST = "InvalidRequest"
    """The provider rejected the request itself (other HTTP 4xx, e.g. an unknown model)."""
    CONTENT_FILTERED = "ContentFiltered"
    """The provider's content filter refused the prompt or the answer."""
    NETWORK_ERROR = "NetworkError"
    """The provider could not be reached (DNS, connection refused or reset)."""
    BAD_OUTPUT = "BadOutput"
    """The agent or the model ended, but its answer is unusable as a report."""
    AGENT_ERROR = "AgentError"
    """Any other failure of the agent: a non-zero exit code without a class."""
    CONFIG_ERROR = "ConfigError"
    """The agent is configured wrongly (a missing API key, a missing Secret or ConfigMap)."""
    OOM_KILLED = "OOMKilled"
    """The agent container ran out of memory."""
    IMAGE_PULL_FAILED = "ImagePullFailed"
    """The agent's image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName)."""
    QUALITY_GATE_FAILED = "QualityGateFailed"
    """The attempt's result made the step's ``accept`` expression false."""
    JOB_LOST = "JobLost"
    """The attempt's Job disappeared before it finished."""
    JOB_DELETED = "JobDeleted"
    """The attempt's Job was deleted before it finished."""
    JOB_CONFLICT = "JobConflict"
    """Another object holds the attempt's Job name."""
    JOB_REFUSED = "JobRefused"
    """The API server refused to create the attempt's Job."""
    OUTPUT_REFUSED = "OutputRefused"
    """The API server refused the attempt's output ConfigMap."""
    WORKSPACE_UNAVAILABLE = "WorkspaceUnavailable"
    """The Workflow's workspace claim cannot be had (missing, another's, or refused)."""
    CANCELLED = "Cancelled"
    """The Workflow failed while the attempt ran (never handed to the fallback policy)."""


class FailureAction(StrEnum):
    """What a fallback rule does with a failure of the classes an ``onFailure`` entry lists."""

    RETRY_SAME_AGENT = "RetrySameAgent"
    """Wait (the provider's Retry-After, or the step's backoff, at most ``maxWaitSeconds``) and
    run the same agent again."""
    FALLBACK = "Fallback"
    """No more attempts with this agent: its fallback runs at once (then skip or fail as
    usual when there is none)."""
    FAIL = "Fail"
    """The step fails at once: no retry, no fallback, no skip."""


class FailureRule(Model):
    """How a fallback rule handles failures of some classes (each class, where it comes from
    and its default: docs/writing-agents.md, "Failure classes")."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.action == 'RetrySameAgent' || (!has(self.maxWaitSeconds)"
                    " && !has(self.countsAgainstAttempts) && !has(self.maxRetries))",
                    "message": "maxWaitSeconds, countsAgainstAttempts and maxRetries apply only"
                    " to action RetrySameAgent",
                },
            ]
        }
    )

    classes: list[FailureClass] = Field(
        min_length=1,
        max_length=len(FailureClass),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """The failure classes this entry handles (a class may appear in one entry of a rule)."""
    action: FailureAction
    """RetrySameAgent, Fallback or Fail."""
    max_wait_seconds: int | None = Field(default=None, ge=0, le=MAX_FAILURE_WAIT_SECONDS)
    """RetrySameAgent: the longest wait before the retry, whatever Retry-After asks (default
    300)."""
    counts_against_attempts: bool | None = None
    """RetrySameAgent: whether these retries use up ``maxAttempts`` (default false)."""
    max_retries: int | None = Field(default=None, ge=1, le=MAX_FAILURE_RETRIES)
    """RetrySameAgent without counting against attempts: at most this many such retries per
    agent and iteration (default 5); after them a failure counts as usual."""

    @model_validator(mode="after")
    def _retry_settings_only_for_retry(self) -> FailureRule:
        if self.action is not FailureAction.RETRY_SAME_AGENT:
            given = [
                name
                for name, value in (
                    ("maxWaitSeconds", self.max_wait_seconds),
                    ("countsAgainstAttempts", self.counts_against_attempts),
                    ("maxRetries", self.max_retries),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply only to action RetrySameAgent, "
                    f"not {self.action.value}"
                )
        return self


_ONE_ENTRY_PER_CLASS: JsonDict = {
    "rule": "!has(self.onFailure) || self.onFailure.all(e, e.classes.all(c,"
    " self.onFailure.exists_one(f, c in f.classes)))",
    "message": "a failure class may appear in one onFailure entry only",
    "fieldPath": ".onFailure",
}


def _unique_failure_classes(entries: list[FailureRule]) -> list[FailureRule]:
    seen: set[FailureClass] = set()
    for entry in entries:
        for failure_class in entry.classes:
            if failure_class in seen:
                raise ValueError(f"failure class {failure_class.value} is listed twice")
            seen.add(failure_class)
    return entries


# criticality and skipIfUnavailable have defaults, so the API server has set both when it runs.
_CRITICAL_IS_NOT_SKIPPED: JsonDict = {
    "rule": "!(self.criticality == 'critical' && self.skipIfUnavailable)",
    "message": "skipIfUnavailable must be false for a critical agent",
    "fieldPath": ".skipIfUnavailable",
}


class FallbackRule(Model):
    """What to do when one agent fails."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.fallback) || self.fallback != self.agent",
                    "message": "fallback must differ from the rule's agent",
                    "fieldPath": ".fallback",
                },
                _CRITICAL_IS_NOT_SKIPPED,
                _ONE_ENTRY_PER_CLASS,
            ]
        }
    )

    agent: AgentName
    """The agent the rule is for (one rule per agent)."""
    fallback: AgentName | None = None
    """Agent that runs the step instead once the attempts are used up."""
    criticality: Criticality = Criticality.MEDIUM
    """How much the Workflow's outcome depends on the agent."""
    skip_if_unavailable: bool = False
    """Skip the step (and mark the Workflow degraded) rather than fail it."""
    max_attempts: int = Field(default=1, ge=1, le=10)
    """Attempts with this agent before the fallback runs."""
    on_failure: list[FailureRule] = Field(default_factory=list, max_length=MAX_FAILURE_RULES)
    """Per failure class: retry the same agent, fall back at once, or fail.  Classes not listed
    get the built-in defaults: RateLimited and Overloaded wait and retry the same agent (not
    counted, at most 5 times, waits up to 300 s); AuthFailed, QuotaExceeded and ContextTooLong
    fall back at once; the rest retry up to ``maxAttempts``, then fall back."""

    @field_validator("on_failure")
    @classmethod
    def _unique_classes(cls, entries: list[FailureRule]) -> list[FailureRule]:
        return _unique_failure_classes(entries)


class DefaultFallbackRule(Model):
    """Applies to agents without a rule of their own."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _CRITICAL_IS_NOT_SKIPPED,
                _ONE_ENTRY_PER_CLASS,
            ]
        }
    )

    fallback: AgentName | None = None
    """Agent that runs the step instead once the attempts are used up."""
    criticality: Criticality = Criticality.MEDIUM
    """How much the Workflow's outcome depends on the agent."""
    skip_if_unavailable: bool = False
    """Skip the step (and mark the Workflow degraded) rather than fail it."""
    max_attempts: int = Field(default=1, ge=1, le=10)
    """Attempts with the agent before the fallback runs."""
    on_failure: list[FailureRule] = Field(default_factory=list, max_length=MAX_FAILURE_RULES)
    """Per failure class: retry the same agent, fall back at once, or fail.  Classes not listed
    get the built-in defaults: RateLimited and Overloaded wait and retry the same agent (not
    counted, at most 5 times, waits up to 300 s); AuthFailed, QuotaExceeded and ContextTooLong
    fall back at once; the rest retry up to ``maxAttempts``, then fall back."""

    @field_validator("on_failure")
    @classmethod
    def _unique_classes(cls, entries: list[FailureRule]) -> list[FailureRule]:
        return _unique_failure_classes(entries)


class AgentFallbackPolicySpec(Model):
    """Per-agent fallback rules, referenced by Workflows through ``spec.fallbackPolicyRef``."""

    rules: list[FallbackRule] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["agent"],
        },
    )
    """One rule per agent."""
    default: DefaultFallbackRule | None = None
    """The rule for agents without a rule of their own."""

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
    """The observed state of the policy, written by the operator."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = None
    """The ``metadata.generation`` this status was computed from."""


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


# A Workflow's name is the value of the agentflow.dev/workflow label on its Jobs (the operator
# selects them by it), and a label value has at most 63 characters: a longer name could never
# start a step.
MAX_WORKFLOW_NAME_LENGTH = 63
WORKFLOW_NAME_MESSAGE = (
    f"metadata.name may have at most {MAX_WORKFLOW_NAME_LENGTH} characters: it is the value of"
    " the agentflow.dev/workflow label on the Workflow's Jobs"
)


class Workflow(Model):
    """A multi-step AI-agent workflow: each step runs as a Kubernetes Job."""

    # A rule at the root may read metadata.name; the API server bounds the name (253), so the
    # rule's cost is small.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.metadata.name.size() <= {MAX_WORKFLOW_NAME_LENGTH}",
                    "message": WORKFLOW_NAME_MESSAGE,
                }
            ]
        }
    )

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta
    spec: WorkflowSpec
    status: WorkflowStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _name_fits_a_label_value(cls, metadata: ObjectMeta) -> ObjectMeta:
        if len(metadata.name) > MAX_WORKFLOW_NAME_LENGTH:
            raise ValueError(WORKFLOW_NAME_MESSAGE)
        return metadata


class AgentFallbackPolicy(Model):
    """What Workflows do when an agent fails: retry, fall back to another agent, or skip."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["AgentFallbackPolicy"] = "AgentFallbackPolicy"
    metadata: ObjectMeta
    spec: AgentFallbackPolicySpec
    status: AgentFallbackPolicyStatus | None = None
