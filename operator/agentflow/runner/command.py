"""The ``command`` provider: run a program as the agent.

``AGENTFLOW_COMMAND`` is a JSON array of argv (never a shell string).  The program gets the
prompt on stdin and in ``AGENTFLOW_PROMPT``; its stdout is the report, forwarded to our stdout
as it arrives (the first :data:`MAX_OUTPUT_BYTES`; the rest is read and dropped), and its exit
code is ours.  Its stderr goes straight to our stderr.  With a workspace (``AGENTFLOW_WORKSPACE``)
it runs there.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import signal
import subprocess
import sys
import threading
from typing import IO

from agentflow.runner.config import EXIT_FAILURE, EXIT_TERMINATED, ConfigError, RunnerConfig
from agentflow.runner.outcome import Outcome, ProviderError, Terminated
from agentflow.runner.workspace import workspace_dir

MAX_OUTPUT_BYTES = 10 * 1024 * 1024
MAX_ARGS = 256
CHUNK_BYTES = 64 * 1024
# After SIGTERM, how long the program has to exit before it is killed.
TERMINATE_GRACE_SECONDS = 5.0

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def command_argv(setting: str | None) -> list[str]:
    if setting is None or not setting.strip():
        raise ConfigError("AGENTFLOW_COMMAND is not set (a JSON array of argv)")
    try:
        argv = json.loads(setting)
    except ValueError as error:
        raise ConfigError(f"AGENTFLOW_COMMAND is not valid JSON: {error}") from None
    if (
        not isinstance(argv, list)
        or not argv
        or len(argv) > MAX_ARGS
        or not all(isinstance(arg, str) for arg in argv)
        or not argv[0]
    ):
        raise ConfigError(
            "AGENTFLOW_COMMAND must be a JSON array of strings, program first, "
            f'e.g. ["python", "agent.py"]; got {setting[:200]!r}'
        )
    return argv


def _feed(stdin: IO[bytes], data: bytes) -> None:
    # The program may exit or close stdin without reading the whole prompt.
    with contextlib.suppress(OSError):
        stdin.write(data)
    with contextlib.suppress(OSError):
        stdin.close()


def _forward(chunk: bytes) -> None:
    try:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except OSError:
        pass  # nobody reads our stdout; the report still goes to the termination message


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_command(config: RunnerConfig) -> Outcome:
    argv = command_argv(config.env.get("AGENTFLOW_COMMAND"))
    workspace = workspace_dir(config.env)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=config.agent_env(),
            # In a Workflow with a workspace the program runs in it (its paths are relative to it).
            cwd=workspace,
        )
    except FileNotFoundError:
        raise ProviderError(f"command not found: {argv[0]}", EXIT_NOT_FOUND) from None
    except PermissionError:
        raise ProviderError(f"command not executable: {argv[0]}", EXIT_NOT_EXECUTABLE) from None
    except OSError as error:
        # As a shell does: 126 for a file that cannot be executed.
        code = EXIT_NOT_EXECUTABLE if error.errno == errno.ENOEXEC else EXIT_FAILURE
        raise ProviderError(f"could not start {argv[0]}: {error.strerror}", code) from None
    assert process.stdin is not None and process.stdout is not None
    # Popen's pipes are buffered readers; read1 returns what is there instead of waiting.
    stdout = process.stdout
    assert isinstance(stdout, io.BufferedReader)

    feeder = threading.Thread(
        target=_feed, args=(process.stdin, config.prompt.encode("utf-8", "replace")), daemon=True
    )
    feeder.start()
    kept: list[bytes] = []
    kept_bytes = 0
    dropped_bytes = 0
    reason: str | None = None
    try:
        while chunk := stdout.read1(CHUNK_BYTES):
            room = MAX_OUTPUT_BYTES - kept_bytes
            if room > 0:
                part = chunk[:room]
                kept.append(part)
                kept_bytes += len(part)
                _forward(part)
            dropped_bytes += len(chunk) - min(len(chunk), max(room, 0))
        returncode = process.wait()
    except Terminated:
        _stop(process)
        returncode = EXIT_TERMINATED
        reason = f"terminated (SIGTERM) while {argv[0]} was running"
    finally:
        stdout.close()
    feeder.join(timeout=1.0)

    if returncode < 0:
        # Killed by a signal: report it the way a shell does.
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        reason = reason or f"{argv[0]} was killed by signal {-returncode} {name}".rstrip()
        returncode = 128 - returncode
    elif returncode != 0 and reason is None:
        reason = f"{argv[0]} exited with code {returncode}"
    if dropped_bytes:
        print(
            f"agentflow-runner: kept the first {MAX_OUTPUT_BYTES} bytes of the report; "
            f"dropped {dropped_bytes} more",
            file=sys.stderr,
        )
    return Outcome(
        report=b"".join(kept),
        exit_code=returncode,
        reason=reason,
        output_truncated=dropped_bytes > 0,
        streamed=True,
    )
