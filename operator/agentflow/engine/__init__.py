"""The pure reconcile core: what a Workflow's status and step Jobs should be, and why.

Nothing here talks to Kubernetes (an import-linter contract keeps kopf and the client out).
:func:`plan` is the entry point; the rest is what it is built from and what the CLI and the
admission checks reuse.
"""

from agentflow.engine.agents import resolve_agent
from agentflow.engine.caching import CACHE_KEY_VERSION, cache_key, result_digest
from agentflow.engine.conditions import progress, set_condition, step_counts
from agentflow.engine.expressions import ExpressionError
from agentflow.engine.graph import step_dependencies, topological_order
from agentflow.engine.names import MAX_JOB_NAME_LENGTH, job_name
from agentflow.engine.planner import (
    LOST_JOB_GRACE_SECONDS,
    NAMESPACE_SLOT_RETRY_SECONDS,
    STEP_TIMEOUT_GRACE_SECONDS,
    TRUNCATED_REPORT_WAIT_SECONDS,
    WAITING_NAMESPACE_LIMIT,
    plan,
)
from agentflow.engine.policy import resolve_policy, undeclared_fallbacks, validate_policy
from agentflow.engine.templating import PromptContext, TemplateError, render_prompt
from agentflow.engine.validation import field_path, model_error_messages, validate_workflow

__all__ = [
    "CACHE_KEY_VERSION",
    "LOST_JOB_GRACE_SECONDS",
    "MAX_JOB_NAME_LENGTH",
    "NAMESPACE_SLOT_RETRY_SECONDS",
    "STEP_TIMEOUT_GRACE_SECONDS",
    "TRUNCATED_REPORT_WAIT_SECONDS",
    "WAITING_NAMESPACE_LIMIT",
    "ExpressionError",
    "PromptContext",
    "TemplateError",
    "cache_key",
    "field_path",
    "job_name",
    "model_error_messages",
    "plan",
    "progress",
    "render_prompt",
    "resolve_agent",
    "resolve_policy",
    "result_digest",
    "set_condition",
    "step_counts",
    "step_dependencies",
    "topological_order",
    "undeclared_fallbacks",
    "validate_policy",
    "validate_workflow",
]
