"""The runner's configuration: environment variables, with command-line flags for manual use.

The operator sets only environment variables.  Their values are data: nothing is interpreted
by a shell or formatted as a template with attribute access.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from agentflow.api.models import Provider

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# Exit codes of the runner itself; a command's own exit code is passed through.
EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

# Each setting: (flag, environment variable).
_SETTINGS = {
    "provider": ("--provider", "AGENTFLOW_PROVIDER"),
    "prompt": ("--prompt", "AGENTFLOW_PROMPT"),
    "workflow": ("--workflow", "AGENTFLOW_WORKFLOW"),
    "namespace": ("--namespace", "AGENTFLOW_NAMESPACE"),
    "step": ("--step", "AGENTFLOW_STEP"),
    "iteration": ("--iteration", "AGENTFLOW_ITERATION"),
    "attempt": ("--attempt", "AGENTFLOW_ATTEMPT"),
    "agent": ("--agent", "AGENTFLOW_AGENT"),
    "model": ("--model", "AGENTFLOW_MODEL"),
    "termination_message_path": (
        "--termination-message-path",
        "AGENTFLOW_TERMINATION_MESSAGE_PATH",
    ),
}


class ConfigError(Exception):
    """The runner was configured wrongly; the message says which setting and why."""


@dataclass(frozen=True)
class RunnerConfig:
    provider: Provider
    prompt: str
    workflow: str
    namespace: str
    step: str
    iteration: int
    attempt: int
    agent: str
    model: str | None
    termination_message_path: Path
    # The whole environment: providers read their own knobs from it.
    env: Mapping[str, str]

    def agent_env(self) -> dict[str, str]:
        """The environment for an agent process: ours, with the settings as AGENTFLOW_*."""
        env = dict(self.env)
        env.update(
            {
                "AGENTFLOW_PROVIDER": self.provider.value,
                "AGENTFLOW_PROMPT": self.prompt,
                "AGENTFLOW_WORKFLOW": self.workflow,
                "AGENTFLOW_NAMESPACE": self.namespace,
                "AGENTFLOW_STEP": self.step,
                "AGENTFLOW_ITERATION": str(self.iteration),
                "AGENTFLOW_ATTEMPT": str(self.attempt),
                "AGENTFLOW_AGENT": self.agent,
                "AGENTFLOW_TERMINATION_MESSAGE_PATH": str(self.termination_message_path),
            }
        )
        if self.model:
            env["AGENTFLOW_MODEL"] = self.model
        return env


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m agentflow.runner",
        description=(
            "Run one agent for one workflow step attempt and print its report. "
            "Every flag has an environment variable, which is what the operator sets."
        ),
    )
    for name, (flag, variable) in _SETTINGS.items():
        parser.add_argument(flag, dest=name, default=None, help=f"(env {variable})")
    return parser


def termination_message_path(env: Mapping[str, str]) -> Path:
    """Where the termination message goes, even when the rest of the config is wrong."""
    return Path(env.get("AGENTFLOW_TERMINATION_MESSAGE_PATH") or DEFAULT_TERMINATION_MESSAGE_PATH)


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> RunnerConfig:
    flags = vars(_parser().parse_args(list(argv)))

    def setting(name: str, default: str = "") -> str:
        value = flags.get(name)
        if value is None:
            value = env.get(_SETTINGS[name][1])
        return default if value is None else str(value)

    provider_name = setting("provider").strip().lower() or Provider.SCRIPT.value
    try:
        provider = Provider(provider_name)
    except ValueError:
        choices = ", ".join(p.value for p in Provider)
        raise ConfigError(
            f"AGENTFLOW_PROVIDER={provider_name!r} is not one of: {choices}"
        ) from None
    return RunnerConfig(
        provider=provider,
        prompt=setting("prompt"),
        workflow=setting("workflow"),
        namespace=setting("namespace"),
        step=setting("step"),
        iteration=positive_int("AGENTFLOW_ITERATION", setting("iteration"), default=1),
        attempt=positive_int("AGENTFLOW_ATTEMPT", setting("attempt"), default=1),
        agent=setting("agent"),
        model=setting("model").strip() or None,
        termination_message_path=Path(
            setting("termination_message_path", DEFAULT_TERMINATION_MESSAGE_PATH)
        ),
        env=env,
    )


def positive_int(name: str, value: str, *, default: int, maximum: int = 1_000_000) -> int:
    value = value.strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if not 1 <= number <= maximum:
        raise ConfigError(f"{name}={number} is not between 1 and {maximum}")
    return number


def bounded_int(name: str, value: str | None, *, default: int, maximum: int) -> int:
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if not 0 <= number <= maximum:
        raise ConfigError(f"{name}={number} is not between 0 and {maximum}")
    return number


def bounded_float(name: str, value: str | None, *, default: float, maximum: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None
    if not (math.isfinite(number) and 0 <= number <= maximum):
        raise ConfigError(f"{name}={value.strip()} is not between 0 and {maximum:g}")
    return number
