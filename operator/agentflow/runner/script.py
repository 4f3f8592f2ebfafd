"""The ``script`` provider: a deterministic agent for demos and tests.

Knobs (environment variables):

* ``AGENTFLOW_SCRIPT_REPORT``: the report, a template with ``{step}``, ``{agent}``,
  ``{iteration}``, ``{attempt}``, ``{prompt}``, ``{workflow}``, ``{namespace}`` and ``{model}``
  replaced by their values (nothing else in the template is interpreted).
  ``AGENTFLOW_SCRIPT_REPORT_<N>`` overrides it for iteration N.  Without either, a default
  report that quotes the prompt's first line.
* ``AGENTFLOW_SCRIPT_FAIL``: ``never`` (default), ``always``, ``attempts<=N`` (fail while the
  attempt number is at most N) or an exit code (0 means never).
* ``AGENTFLOW_SCRIPT_SLEEP_SECONDS``: how long to "work" before answering.
* ``AGENTFLOW_SCRIPT_OUTPUT_BYTES``: that many bytes of filler under a ``## Details`` section.
* ``AGENTFLOW_SCRIPT_TOKENS``: token usage to report, ``IN,OUT`` (or just ``OUT``).
* ``AGENTFLOW_SCRIPT_FAILURE_CLASS``: the failure class a scripted failure reports (a
  ``FailureClass`` value, e.g. ``RateLimited``); ``AGENTFLOW_SCRIPT_RETRY_AFTER_SECONDS`` the
  Retry-After it reports with it.
* ``AGENTFLOW_SCRIPT_FILES``: file operations in the workspace (``AGENTFLOW_WORKSPACE``), a JSON
  array run in order before the report: ``{"write": PATH, "content": TEXT}``, ``{"append": ...}``,
  ``{"replace": PATH, "old": TEXT, "new": TEXT}``, ``{"expect": PATH, "contains": TEXT}`` (fail
  the step when the file lacks it) and ``{"read": PATH}`` (its text replaces ``{read}`` in the
  report).  Files written are listed in the report's ``## Files Created/Modified``, relative to
  the workspace (``agentflow.runner.workspace`` has the bounds).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from agentflow.api.models import FailureClass
from agentflow.report import MAX_RETRY_AFTER_SECONDS, with_metrics
from agentflow.runner.config import (
    EXIT_FAILURE,
    ConfigError,
    RunnerConfig,
    bounded_float,
    bounded_int,
)
from agentflow.runner.outcome import Outcome, failure_outcome
from agentflow.runner.workspace import (
    FILES_VARIABLE,
    WORKSPACE_VARIABLE,
    FileOperation,
    apply_operations,
    file_operations,
    workspace_dir,
)

MAX_SLEEP_SECONDS = 86_400.0
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
MAX_TOKENS = 10**12
FILLER_LINE = "agentflow script filler: a long report exercises truncation and log storage.\n"

_PLACEHOLDER = re.compile(
    r"\{(step|agent|iteration|attempt|prompt|workflow|namespace|model|read)\}"
)
_ATTEMPTS_AT_MOST = re.compile(r"^attempts\s*<=\s*(\d{1,6})$")

DEFAULT_REPORT = """\
## Summary
{agent} completed step {step} (iteration {iteration}, attempt {attempt}): {first_line}

## Actions Taken
- Read the prompt ({prompt_chars} characters)
- Wrote this scripted report

## Metrics
- Tool calls: 0
- Files read: 0
- Errors: 0
- Iteration: {iteration}

## Status
success
"""


@dataclass(frozen=True)
class ScriptKnobs:
    report_template: str | None
    fail_exit_code: int  # for this attempt; 0 when it succeeds
    fail_setting: str
    sleep_seconds: float
    output_bytes: int
    tokens: dict[str, int]
    files: list[FileOperation]
    failure_class: FailureClass | None = None
    retry_after_seconds: float | None = None


def knobs(config: RunnerConfig) -> ScriptKnobs:
    """The knobs, all checked before the script does anything."""
    env = config.env
    fail_setting = env.get("AGENTFLOW_SCRIPT_FAIL", "").strip()
    template = env.get(f"AGENTFLOW_SCRIPT_REPORT_{config.iteration}") or env.get(
        "AGENTFLOW_SCRIPT_REPORT"
    )
    return ScriptKnobs(
        report_template=template or None,
        fail_exit_code=fail_exit_code(fail_setting, config.attempt),
        fail_setting=fail_setting,
        sleep_seconds=bounded_float(
            "AGENTFLOW_SCRIPT_SLEEP_SECONDS",
            env.get("AGENTFLOW_SCRIPT_SLEEP_SECONDS"),
            default=0.0,
            maximum=MAX_SLEEP_SECONDS,
        ),
        output_bytes=bounded_int(
            "AGENTFLOW_SCRIPT_OUTPUT_BYTES",
            env.get("AGENTFLOW_SCRIPT_OUTPUT_BYTES"),
            default=0,
            maximum=MAX_OUTPUT_BYTES,
        ),
        tokens=token_usage(env.get("AGENTFLOW_SCRIPT_TOKENS")),
        failure_class=scripted_class(env.get("AGENTFLOW_SCRIPT_FAILURE_CLASS")),
        retry_after_seconds=(
            bounded_float(
                "AGENTFLOW_SCRIPT_RETRY_AFTER_SECONDS",
                env.get("AGENTFLOW_SCRIPT_RETRY_AFTER_SECONDS"),
                default=0.0,
                maximum=MAX_RETRY_AFTER_SECONDS,
            )
            if (env.get("AGENTFLOW_SCRIPT_RETRY_AFTER_SECONDS") or "").strip()
            else None
        ),
        files=file_operations(env.get(FILES_VARIABLE)),
    )


def scripted_class(setting: str | None) -> FailureClass | None:
    """The failure class AGENTFLOW_SCRIPT_FAILURE_CLASS names (None: unset)."""
    if setting is None or not setting.strip():
        return None
    try:
        return FailureClass(setting.strip())
    except ValueError:
        choices = ", ".join(c.value for c in FailureClass)
        raise ConfigError(
            f"AGENTFLOW_SCRIPT_FAILURE_CLASS={setting.strip()!r} is not one of: {choices}"
        ) from None


def fail_exit_code(setting: str, attempt: int) -> int:
    """The exit code AGENTFLOW_SCRIPT_FAIL asks for on this attempt (0: succeed)."""
    value = setting.strip().lower()
    if value in ("", "never"):
        return 0
    if value == "always":
        return EXIT_FAILURE
    at_most = _ATTEMPTS_AT_MOST.match(value)
    if at_most:
        return EXIT_FAILURE if attempt <= int(at_most.group(1)) else 0
    if value.isdigit() and int(value) <= 255:
        return int(value)
    raise ConfigError(
        f"AGENTFLOW_SCRIPT_FAIL={setting!r} is not one of: never, always, attempts<=N, "
        "or an exit code 0-255"
    )


def token_usage(setting: str | None) -> dict[str, int]:
    if setting is None or not setting.strip():
        return {}
    parts = [p.strip() for p in re.split(r"[,/ ]+", setting.strip()) if p.strip()]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"AGENTFLOW_SCRIPT_TOKENS={setting!r} is not IN,OUT or OUT")
    numbers = [int(p) for p in parts]
    if any(n > MAX_TOKENS for n in numbers):
        raise ConfigError(f"AGENTFLOW_SCRIPT_TOKENS={setting!r} is too large")
    if len(numbers) == 1:
        return {"outputTokens": numbers[0]}
    return {"inputTokens": numbers[0], "outputTokens": numbers[1]}


def substitute(template: str, values: dict[str, str]) -> str:
    """Replace the known ``{name}`` placeholders, in one pass; everything else stays as is."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def placeholder_values(config: RunnerConfig) -> dict[str, str]:
    return {
        "step": config.step,
        "agent": config.agent,
        "iteration": str(config.iteration),
        "attempt": str(config.attempt),
        "prompt": config.prompt,
        "workflow": config.workflow,
        "namespace": config.namespace,
        "model": config.model or "",
        "read": "",
    }


def default_report(config: RunnerConfig) -> str:
    first_line = next((line.strip() for line in config.prompt.splitlines() if line.strip()), "")
    if len(first_line) > 200:
        first_line = first_line[:199] + "…"
    return DEFAULT_REPORT.format(
        agent=config.agent or "the script agent",
        step=config.step or "(unnamed)",
        iteration=config.iteration,
        attempt=config.attempt,
        first_line=first_line or "(no prompt)",
        prompt_chars=len(config.prompt),
    )


def filler(size: int) -> str:
    line = FILLER_LINE
    return line * (size // len(line)) + line[: size % len(line)]


def run_script(config: RunnerConfig) -> Outcome:
    settings = knobs(config)
    if settings.sleep_seconds:
        time.sleep(settings.sleep_seconds)
    if settings.fail_exit_code:
        return failure_outcome(
            f"scripted failure on attempt {config.attempt} "
            f"(AGENTFLOW_SCRIPT_FAIL={settings.fail_setting})",
            settings.fail_exit_code,
            settings.failure_class,
            settings.retry_after_seconds,
        )
    values = placeholder_values(config)
    artifacts: list[tuple[str, str]] = []
    if settings.files:
        workspace = workspace_dir(config.env)
        if workspace is None:
            raise ConfigError(f"{FILES_VARIABLE} needs a workspace ({WORKSPACE_VARIABLE} is unset)")
        done = apply_operations(workspace, settings.files)
        if done.failure is not None:
            return failure_outcome(done.failure, EXIT_FAILURE)
        values["read"] = done.read_text()
        artifacts = done.artifacts
    if settings.report_template is not None:
        report = substitute(settings.report_template, values)
    else:
        report = default_report(config)
    if artifacts:
        lines = "".join(f"- {action.capitalize()}: {path}\n" for path, action in artifacts)
        report = report.rstrip("\n") + f"\n\n## Files Created/Modified\n{lines}"
    if settings.tokens:
        report = with_metrics(report, settings.tokens)
    if settings.output_bytes:
        report = report.rstrip("\n") + "\n\n## Details\n" + filler(settings.output_bytes)
    return Outcome(report=report.encode("utf-8", "replace"))
