"""Failure classes: what a failed attempt's Kubernetes reason amounts to, and what the fallback
policy does with each class (pure).

The class of a failed attempt is, in order: the one the agent reported (``failureClass`` in its
report or termination message; the agent runner reports one for every failure it knows), the
one the pod's or the Job's reason implies (:func:`classify`), else ``AgentError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.api.models import FailureAction, FailureClass

# Kubernetes' and the operator's reasons, by the class they amount to.
_REASON_CLASSES: dict[str, FailureClass] = {
    "OOMKilled": FailureClass.OOM_KILLED,
    "DeadlineExceeded": FailureClass.TIMEOUT,
    "Timeout": FailureClass.TIMEOUT,
    "ErrImagePull": FailureClass.IMAGE_PULL_FAILED,
    "ImagePullBackOff": FailureClass.IMAGE_PULL_FAILED,
    "InvalidImageName": FailureClass.IMAGE_PULL_FAILED,
    "ErrImageNeverPull": FailureClass.IMAGE_PULL_FAILED,
    "CreateContainerConfigError": FailureClass.CONFIG_ERROR,
    "CreateContainerError": FailureClass.CONFIG_ERROR,
    "JobLost": FailureClass.JOB_LOST,
    "JobDeleted": FailureClass.JOB_DELETED,
    "JobConflict": FailureClass.JOB_CONFLICT,
    "JobRefused": FailureClass.JOB_REFUSED,
    "OutputRefused": FailureClass.OUTPUT_REFUSED,
    "WorkspaceUnavailable": FailureClass.WORKSPACE_UNAVAILABLE,
    "Cancelled": FailureClass.CANCELLED,
}
# Reasons that say no more than "it failed": the message leaves them out.
GENERIC_REASONS = frozenset({"BackoffLimitExceeded", "Error", "Failed", "PodFailurePolicy"})

# Built-in values of a RetrySameAgent entry.
DEFAULT_MAX_WAIT_SECONDS = 300
DEFAULT_MAX_RETRIES = 5


def failure_class(name: object) -> FailureClass | None:
    """``name`` as a failure class, or None when it is not one (exact spelling)."""
    if not isinstance(name, str):
        return None
    try:
        return FailureClass(name)
    except ValueError:
        return None


def classify(reported: str | None, *reasons: str | None) -> FailureClass:
    """The class of a failed attempt: ``reported`` when it is a class, else the first of
    ``reasons`` (the pod's, then the Job's) that implies one, else ``AgentError``."""
    known = failure_class(reported)
    if known is not None:
        return known
    for reason in reasons:
        if reason is None:
            continue
        by_name = failure_class(reason)
        if by_name is not None:
            return by_name
        implied = _REASON_CLASSES.get(reason)
        if implied is not None:
            return implied
    return FailureClass.AGENT_ERROR


@dataclass(frozen=True)
class ClassRule:
    """What a fallback rule does with failures of ``classes`` (resolved, with defaults)."""

    classes: tuple[FailureClass, ...]
    action: FailureAction
    max_wait_seconds: int = DEFAULT_MAX_WAIT_SECONDS
    counts_against_attempts: bool = False
    max_retries: int = DEFAULT_MAX_RETRIES
    # True for the built-in defaults, which apply to classes a rule does not list.
    builtin: bool = False

    @property
    def uncounted_retry(self) -> bool:
        return self.action is FailureAction.RETRY_SAME_AGENT and not self.counts_against_attempts


# What happens to classes the policy does not list.  Everything else (AgentError, Timeout,
# BadOutput, QualityGateFailed, ...) takes the usual way: retries up to maxAttempts, then the
# fallback, then skip or fail.
BUILTIN_CLASS_RULES: tuple[ClassRule, ...] = (
    ClassRule(
        classes=(FailureClass.RATE_LIMITED, FailureClass.OVERLOADED),
        action=FailureAction.RETRY_SAME_AGENT,
        builtin=True,
    ),
    ClassRule(
        classes=(
            FailureClass.AUTH_FAILED,
            FailureClass.QUOTA_EXCEEDED,
            FailureClass.CONTEXT_TOO_LONG,
        ),
        action=FailureAction.FALLBACK,
        builtin=True,
    ),
)


def class_rule(entries: tuple[ClassRule, ...], name: str | None) -> ClassRule | None:
    """The entry of ``entries`` (a resolved rule's), else the built-in one, that handles the
    class ``name``; None for the usual way."""
    known = failure_class(name)
    if known is None or known is FailureClass.CANCELLED:
        return None
    for entry in (*entries, *BUILTIN_CLASS_RULES):
        if known in entry.classes:
            return entry
    return None
