"""What a provider hands back to the runner, and how it signals failure."""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.api.models import FailureClass, StepResult
from agentflow.report import render_report
from agentflow.runner.config import EXIT_FAILURE


@dataclass(frozen=True)
class Outcome:
    report: bytes
    exit_code: int = 0
    # Why the attempt failed, in one line; shown on stderr and in the result's summary when
    # the report has none.
    reason: str | None = None
    # The runner kept only part of what the agent printed.
    output_truncated: bool = False
    # The report has already been forwarded to stdout while the agent ran.
    streamed: bool = False
    # How it failed, when the runner knows (the operator classifies the rest).
    failure_class: FailureClass | None = None
    # The provider's Retry-After, in seconds.
    retry_after_seconds: float | None = None


class ProviderError(Exception):
    """The agent could not produce a report; the message says why and holds no secret."""

    def __init__(
        self,
        message: str,
        exit_code: int = EXIT_FAILURE,
        *,
        failure_class: FailureClass | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.failure_class = failure_class
        self.retry_after_seconds = retry_after_seconds


class Terminated(Exception):
    """SIGTERM arrived: the step's deadline passed or the Job is being deleted."""


def failure_outcome(
    reason: str,
    exit_code: int = EXIT_FAILURE,
    failure_class: FailureClass | None = None,
    retry_after_seconds: float | None = None,
) -> Outcome:
    """An outcome whose report is a short failure report saying why."""
    report = render_report(StepResult(status="failure", summary=reason))
    return Outcome(
        report=report.encode("utf-8"),
        exit_code=exit_code,
        reason=reason,
        failure_class=failure_class,
        retry_after_seconds=retry_after_seconds,
    )
