"""Run one agent: configure, call the provider, print the report, write the termination message.

Nothing the runner prints may show an API key: every reason, traceback and report of its own
goes through the :class:`~agentflow.runner.redact.Redactor` made from the key variables it reads
(a ``command`` agent's own output is the agent's, forwarded as it was printed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from agentflow.api.models import FailureClass, Provider, StepResult
from agentflow.report import (
    ReportedFailure,
    encode_termination_message,
    parse_report,
    reported_failure,
)
from agentflow.runner.command import run_command
from agentflow.runner.config import (
    DEFAULT_TERMINATION_MESSAGE_PATH,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_TERMINATED,
    ConfigError,
    RunnerConfig,
    load_config,
    termination_message_path,
)
from agentflow.runner.llm import KEY_VARIABLES, run_llm
from agentflow.runner.outcome import Outcome, ProviderError, Terminated, failure_outcome
from agentflow.runner.redact import Redactor
from agentflow.runner.script import run_script

PROVIDERS: dict[Provider, Callable[[RunnerConfig], Outcome]] = {
    Provider.SCRIPT: run_script,
    Provider.COMMAND: run_command,
    Provider.ANTHROPIC: run_llm,
    Provider.OPENAI: run_llm,
}


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Once: the runner then finishes its report while the kubelet's grace period lasts.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def run(config: RunnerConfig, redact: Redactor) -> Outcome:
    try:
        return PROVIDERS[config.provider](config)
    except ConfigError as error:
        return failure_outcome(
            f"configuration error: {error}", EXIT_CONFIG, FailureClass.CONFIG_ERROR
        )
    except ProviderError as error:
        return failure_outcome(
            str(error), error.exit_code, error.failure_class, error.retry_after_seconds
        )
    except Terminated:
        return failure_outcome("terminated (SIGTERM) before the agent finished", EXIT_TERMINATED)
    except Exception as error:
        # A bug in the runner: still leave a result that says so.  The exception's text stays
        # on stderr only, as it could quote anything (redacted, as it could quote a key).
        redact.print_exception(error)
        name = type(error).__name__
        return failure_outcome(f"internal error in the {config.provider.value} provider: {name}")


def step_result(outcome: Outcome) -> StepResult:
    """The result to report: the report's, with the outcome's verdict where it says none."""
    result = parse_report(outcome.report)
    update: dict[str, object] = {}
    if outcome.exit_code != 0:
        update["status"] = "failure"
        if not result.summary and outcome.reason:
            update["summary"] = outcome.reason
    elif result.status is None:
        update["status"] = "success"
    if outcome.output_truncated:
        update["truncated"] = True
    return result.model_copy(update=update)


def failure_of(outcome: Outcome) -> ReportedFailure | None:
    """How a failed ``outcome`` failed: what the provider found, else what the agent's own
    report states (a ``command`` agent's JSON ``failureClass``); None for a success."""
    if outcome.exit_code == 0:
        return None
    stated = reported_failure(outcome.report)
    return ReportedFailure(
        outcome.failure_class or stated.failure_class,
        outcome.retry_after_seconds
        if outcome.retry_after_seconds is not None
        else stated.retry_after_seconds,
    )


def write_termination_message(path: Path, message: str) -> None:
    if str(path) == DEFAULT_TERMINATION_MESSAGE_PATH and not path.exists():
        # Not in a container (the kubelet provides this file): a manual run, report on stdout.
        return
    try:
        path.write_text(message, encoding="utf-8")
    except OSError as error:
        # Outside a pod (a manual run) there may be no such file: the report is on stdout.
        print(
            f"agentflow-runner: could not write the termination message to {path}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )


def redacted(outcome: Outcome, redact: Redactor) -> Outcome:
    """``outcome`` with no secret in its reason, nor in its report unless already printed."""
    reason = redact(outcome.reason) if outcome.reason else outcome.reason
    report = outcome.report if outcome.streamed else redact.report(outcome.report)
    return replace(outcome, reason=reason, report=report)


def finish(outcome: Outcome, path: Path, redact: Redactor) -> int:
    outcome = redacted(outcome, redact)
    if not outcome.streamed:
        try:
            sys.stdout.buffer.write(outcome.report)
            sys.stdout.buffer.flush()
        except OSError:
            pass  # nobody reads stdout; the termination message still carries the result
    if outcome.exit_code != 0 and outcome.reason:
        print(f"agentflow-runner: {outcome.reason}", file=sys.stderr)
    result = step_result(outcome)
    message = encode_termination_message(
        result, full_size=len(outcome.report), failure=failure_of(outcome)
    )
    write_termination_message(path, message)
    return outcome.exit_code


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environment = dict(os.environ if env is None else env)
    arguments = sys.argv[1:] if argv is None else list(argv)
    redact = Redactor.from_env(environment, KEY_VARIABLES)
    path = termination_message_path(environment)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        try:
            config = load_config(arguments, environment)
        except ConfigError as error:
            outcome = failure_outcome(
                f"configuration error: {error}", EXIT_CONFIG, FailureClass.CONFIG_ERROR
            )
            return finish(outcome, path, redact)
        path = config.termination_message_path
        return finish(run(config, redact), path, redact)
    except Terminated:
        # SIGTERM while printing or writing: say so, briefly.
        outcome = failure_outcome("terminated (SIGTERM)", EXIT_TERMINATED)
        message = encode_termination_message(step_result(outcome), full_size=len(outcome.report))
        write_termination_message(path, message)
        return EXIT_TERMINATED
    except Exception as error:
        # A bug outside any provider (printing, writing): Python's own traceback would not be
        # redacted, so print it here and still leave a result.
        redact.print_exception(error)
        # Built directly: whatever failed may be what the usual way goes through.
        reason = f"internal error in the runner: {type(error).__name__}"
        result = StepResult(status="failure", summary=reason)
        write_termination_message(path, encode_termination_message(result, full_size=0))
        return EXIT_FAILURE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
