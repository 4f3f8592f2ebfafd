"""The agent runner, run as the agent image runs it: ``python -m agentflow.runner`` with env."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentflow.api.models import Artifact, StepResult
from agentflow.report import (
    TERMINATION_MESSAGE_LIMIT,
    decode_termination_message,
    parse_report,
)
from tests.support.fake_provider import FakeProvider, Reply, fake_provider, success

MiB = 1024 * 1024
API_KEY = "sk-test-8f3a2c1e-do-not-print"

SAMPLE = """\
## Summary
Validated Bangladesh VAT and tax compliance requirements for the new feature.

## Files Created/Modified
- Created: services/finance/test-validation.ts
- Modified: services/finance/vat.ts

## Metrics
- Tool calls: 5
- Files read: 12

## Status
success
"""


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: str
    message: str

    @property
    def report(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def result(self) -> StepResult:
        return decode_termination_message(self.message)


def runner_env(tmp_path: Path, **env: str) -> dict[str, str]:
    # A clean environment: no proxies, no keys from the developer's shell.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "AGENTFLOW_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        "AGENTFLOW_WORKFLOW": "finance-feature",
        "AGENTFLOW_NAMESPACE": "team-a",
        "AGENTFLOW_STEP": "vat-check",
        "AGENTFLOW_AGENT": "tax-checker",
        **env,
    }


def collect(tmp_path: Path, returncode: int, stdout: bytes, stderr: bytes) -> Run:
    path = tmp_path / "termination-log"
    message = path.read_text(encoding="utf-8") if path.exists() else ""
    run = Run(returncode, stdout, stderr.decode("utf-8", "replace"), message)
    assert len(message.encode("utf-8")) <= TERMINATION_MESSAGE_LIMIT
    assert API_KEY not in run.report + run.stderr + run.message
    return run


def run_runner(tmp_path: Path, *args: str, timeout: float = 120, **env: str) -> Run:
    completed = subprocess.run(
        [sys.executable, "-m", "agentflow.runner", *args],
        env=runner_env(tmp_path, **env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return collect(tmp_path, completed.returncode, completed.stdout, completed.stderr)


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.02)


def catches_sigterm(pid: int) -> bool:
    """The process has installed its SIGTERM handler (the SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def without_digest(result: StepResult) -> StepResult:
    return result.model_copy(update={"digest": None})


# ---------------------------------------------------------------------------------------------
# script
# ---------------------------------------------------------------------------------------------


def test_script_default_report(tmp_path: Path) -> None:
    run = run_runner(tmp_path, AGENTFLOW_PROMPT="\n  Check the VAT rates  \nin detail")
    assert run.returncode == 0, run.stderr
    assert "tax-checker completed step vat-check (iteration 1, attempt 1)" in run.report
    assert "Check the VAT rates" in run.report
    result = run.result
    assert result == parse_report(run.stdout)
    assert result.status == "success"
    assert result.digest == "sha256:" + hashlib.sha256(run.stdout).hexdigest()
    assert not result.truncated
    assert json.loads(run.message)["size"] == len(run.stdout)


def test_script_template_is_substituted_safely(tmp_path: Path) -> None:
    template = (
        "## Summary\n{agent} ran {step} #{iteration}.{attempt} of {namespace}/{workflow} "
        "with {model}: {prompt}\nLeft alone: {0} {unknown} {prompt.__class__} {{step}}\n"
        "## Metrics\n- Score: 0.{iteration}\n"
    )
    run = run_runner(
        tmp_path,
        AGENTFLOW_SCRIPT_REPORT=template,
        AGENTFLOW_PROMPT="use {step} and {0.__class__}",
        AGENTFLOW_ITERATION="2",
        AGENTFLOW_ATTEMPT="3",
        AGENTFLOW_MODEL="m1",
    )
    assert run.returncode == 0, run.stderr
    assert run.report == (
        "## Summary\ntax-checker ran vat-check #2.3 of team-a/finance-feature "
        "with m1: use {step} and {0.__class__}\n"
        "Left alone: {0} {unknown} {prompt.__class__} {vat-check}\n## Metrics\n- Score: 0.2\n"
    )
    assert run.result.metrics.extra == {"score": 0.2}
    assert run.result.status == "success"


def test_script_report_per_iteration(tmp_path: Path) -> None:
    env = {
        "AGENTFLOW_SCRIPT_REPORT": "## Summary\nNot yet.\n## Metrics\n- Coverage: 50\n",
        "AGENTFLOW_SCRIPT_REPORT_3": "## Summary\nDone.\n## Metrics\n- Coverage: 95\n",
    }
    coverage = {}
    for iteration in ("1", "2", "3"):
        run = run_runner(tmp_path, AGENTFLOW_ITERATION=iteration, **env)
        assert run.returncode == 0, run.stderr
        coverage[iteration] = run.result.metrics.extra["coverage"]
    assert coverage == {"1": 50, "2": 50, "3": 95}


@pytest.mark.parametrize(
    ("setting", "attempt", "exit_code"),
    [
        ("always", "1", 1),
        ("never", "1", 0),
        ("attempts<=2", "2", 1),
        ("attempts <= 2", "3", 0),
        ("7", "1", 7),
        ("0", "1", 0),
    ],
)
def test_script_fail_modes(tmp_path: Path, setting: str, attempt: str, exit_code: int) -> None:
    run = run_runner(tmp_path, AGENTFLOW_SCRIPT_FAIL=setting, AGENTFLOW_ATTEMPT=attempt)
    assert run.returncode == exit_code, run.stderr
    if exit_code:
        expected = f"scripted failure on attempt {attempt} (AGENTFLOW_SCRIPT_FAIL={setting})"
        assert run.result.status == "failure"
        assert run.result.summary == expected
        assert expected in run.stderr
        assert without_digest(parse_report(run.stdout)) == without_digest(run.result)
    else:
        assert run.result.status == "success"


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"AGENTFLOW_SCRIPT_FAIL": "sometimes"}, "AGENTFLOW_SCRIPT_FAIL='sometimes'"),
        ({"AGENTFLOW_SCRIPT_FAIL": "300"}, "AGENTFLOW_SCRIPT_FAIL='300'"),
        ({"AGENTFLOW_SCRIPT_SLEEP_SECONDS": "nan"}, "AGENTFLOW_SCRIPT_SLEEP_SECONDS"),
        ({"AGENTFLOW_SCRIPT_SLEEP_SECONDS": "-1"}, "AGENTFLOW_SCRIPT_SLEEP_SECONDS"),
        ({"AGENTFLOW_SCRIPT_OUTPUT_BYTES": "lots"}, "AGENTFLOW_SCRIPT_OUTPUT_BYTES"),
        ({"AGENTFLOW_SCRIPT_TOKENS": "1,2,3"}, "AGENTFLOW_SCRIPT_TOKENS"),
        ({"AGENTFLOW_PROVIDER": "magic"}, "AGENTFLOW_PROVIDER='magic'"),
        ({"AGENTFLOW_ITERATION": "first"}, "AGENTFLOW_ITERATION='first'"),
        ({"AGENTFLOW_ATTEMPT": "0"}, "AGENTFLOW_ATTEMPT=0"),
    ],
)
def test_configuration_errors(tmp_path: Path, env: dict[str, str], complaint: str) -> None:
    run = run_runner(tmp_path, **env)
    assert run.returncode == 2
    assert complaint in run.result.summary
    assert complaint in run.stderr
    assert run.result.status == "failure"


def test_unknown_flags_are_a_configuration_error(tmp_path: Path) -> None:
    run = run_runner(tmp_path, "--bogus")
    assert run.returncode == 2
    assert "unrecognized arguments: --bogus" in run.result.summary


def test_flags_override_the_environment(tmp_path: Path) -> None:
    run = run_runner(
        tmp_path,
        "--prompt",
        "From the flag",
        "--step",
        "flag-step",
        "--iteration",
        "4",
        "--agent",
        "flag-agent",
        "--termination-message-path",
        str(tmp_path / "termination-log"),
        AGENTFLOW_PROMPT="From the env",
        AGENTFLOW_TERMINATION_MESSAGE_PATH=str(tmp_path / "unused"),
    )
    assert run.returncode == 0, run.stderr
    assert "flag-agent completed step flag-step (iteration 4, attempt 1)" in run.report
    assert "From the flag" in run.report
    assert run.result.metrics.extra["iteration"] == 4
    assert not (tmp_path / "unused").exists()


def test_script_sleeps(tmp_path: Path) -> None:
    started = time.monotonic()
    run = run_runner(tmp_path, AGENTFLOW_SCRIPT_SLEEP_SECONDS="0.5")
    assert run.returncode == 0
    assert time.monotonic() - started >= 0.5


def test_script_tokens(tmp_path: Path) -> None:
    both = run_runner(tmp_path, AGENTFLOW_SCRIPT_TOKENS="1200,340").result.metrics
    assert (both.input_tokens, both.output_tokens) == (1200, 340)
    only_output = run_runner(tmp_path, AGENTFLOW_SCRIPT_TOKENS="90").result.metrics
    assert (only_output.input_tokens, only_output.output_tokens) == (None, 90)


def test_huge_output_is_truncated_in_the_termination_message(tmp_path: Path) -> None:
    run = run_runner(
        tmp_path,
        AGENTFLOW_SCRIPT_REPORT=SAMPLE,
        AGENTFLOW_SCRIPT_OUTPUT_BYTES=str(10 * MiB),
    )
    assert run.returncode == 0, run.stderr
    assert 10 * MiB < len(run.stdout) < 10 * MiB + 1024
    assert run.report.startswith(SAMPLE.rstrip("\n") + "\n\n## Details\n")
    result = run.result
    assert result.truncated
    assert json.loads(run.message)["size"] == len(run.stdout)
    assert result.digest == "sha256:" + hashlib.sha256(run.stdout).hexdigest()
    assert result.summary.startswith("Validated Bangladesh VAT")
    assert result.metrics.tool_calls == 5
    assert result.artifacts == parse_report(SAMPLE).artifacts


def test_sigterm_while_working_writes_a_failure(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.runner"],
        env=runner_env(tmp_path, AGENTFLOW_SCRIPT_SLEEP_SECONDS="600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: catches_sigterm(process.pid), "the runner's SIGTERM handler")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    run = collect(tmp_path, process.returncode, stdout, stderr)
    assert run.returncode == 143
    assert run.result.status == "failure"
    assert "terminated (SIGTERM)" in run.result.summary


# ---------------------------------------------------------------------------------------------
# command
# ---------------------------------------------------------------------------------------------

ECHO_AGENT = """
import os, sys
prompt = sys.stdin.read()
assert prompt == os.environ["AGENTFLOW_PROMPT"], "stdin and env differ"
print("## Summary")
print("Prompt was: " + prompt)
print("Step " + os.environ["AGENTFLOW_STEP"] + " attempt " + os.environ["AGENTFLOW_ATTEMPT"])
print("## Files Created/Modified")
print("- Created: " + sys.argv[1])
print("## Metrics")
print("- Tool calls: 3")
"""


def command(*argv: str) -> str:
    return json.dumps(list(argv))


def test_command_gets_the_prompt_and_its_output_is_the_report(tmp_path: Path) -> None:
    prompt = "Check $HOME; `id` $(touch pwned) 'quotes' \"and\" ünïcode"
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=command(sys.executable, "-c", ECHO_AGENT, "$HOME/out.ts"),
        AGENTFLOW_PROMPT=prompt,
        AGENTFLOW_ATTEMPT="2",
    )
    assert run.returncode == 0, run.stderr
    assert f"Prompt was: {prompt}\n" in run.report
    result = run.result
    assert result.summary == f"Prompt was: {prompt}\nStep vat-check attempt 2"
    assert result.artifacts == [Artifact(path="$HOME/out.ts", action="created")]
    assert result.metrics.tool_calls == 3
    assert result.status == "success"
    assert result == parse_report(run.stdout).model_copy(update={"status": "success"})
    assert not list(tmp_path.glob("pwned")) and not Path("pwned").exists()


def test_command_exit_code_propagates(tmp_path: Path) -> None:
    script = "print('## Summary\\nHalf done.\\n\\n## Status\\nsuccess'); raise SystemExit(5)"
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=command(sys.executable, "-c", script),
    )
    assert run.returncode == 5
    assert run.result.status == "failure"
    assert run.result.summary == "Half done."
    assert "exited with code 5" in run.stderr


def test_command_failure_without_output_says_why(tmp_path: Path) -> None:
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=command(sys.executable, "-c", "raise SystemExit(3)"),
    )
    assert run.returncode == 3
    assert run.stdout == b""
    assert run.result.status == "failure"
    assert run.result.summary == f"{sys.executable} exited with code 3"


def test_command_killed_by_a_signal(tmp_path: Path) -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=command(sys.executable, "-c", script),
    )
    assert run.returncode == 128 + signal.SIGKILL
    assert "killed by signal 9 SIGKILL" in run.result.summary


@pytest.mark.parametrize(
    ("setting", "exit_code", "complaint"),
    [
        (None, 2, "AGENTFLOW_COMMAND is not set"),
        ("echo hello", 2, "AGENTFLOW_COMMAND is not valid JSON"),
        ('"echo hello"', 2, "must be a JSON array of strings"),
        ('["echo", 1]', 2, "must be a JSON array of strings"),
        ("[]", 2, "must be a JSON array of strings"),
        ('["/nonexistent/agent"]', 127, "command not found: /nonexistent/agent"),
        ('["{tmp}/not-executable"]', 126, "command not executable: {tmp}/not-executable"),
        ('["{tmp}/not-a-program"]', 126, "could not start {tmp}/not-a-program: Exec format"),
    ],
)
def test_command_errors(
    tmp_path: Path, setting: str | None, exit_code: int, complaint: str
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "not-a-program").write_bytes(b"\x00\x01 not an executable format")
    (tmp_path / "not-a-program").chmod(0o755)
    env = {"AGENTFLOW_PROVIDER": "command"}
    if setting is not None:
        env["AGENTFLOW_COMMAND"] = setting.replace("{tmp}", str(tmp_path))
    run = run_runner(tmp_path, **env)
    assert run.returncode == exit_code
    assert complaint.replace("{tmp}", str(tmp_path)) in run.result.summary
    assert run.result.status == "failure"


def test_command_that_ignores_stdin(tmp_path: Path) -> None:
    # A prompt bigger than a pipe buffer, never read: the runner must not block on it.
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=command(sys.executable, "-c", "print('## Summary\\nignored it')"),
        AGENTFLOW_PROMPT="p" * 100_000,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.result.summary == "ignored it"


def test_command_output_is_capped_at_10_mib(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.stdout.write('## Summary\\nBig.\\n## Metrics\\n- Errors: 0\\n## Details\\n')\n"
        "block = 'x' * 1023 + '\\n'\n"
        "for _ in range(11 * 1024): sys.stdout.write(block)\n"
    )
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=command(sys.executable, "-c", script),
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout) == 10 * MiB
    result = run.result
    assert result.truncated
    assert result.summary == "Big."
    assert result.metrics.errors == 0
    assert result.digest == "sha256:" + hashlib.sha256(run.stdout).hexdigest()
    assert "kept the first 10485760 bytes" in run.stderr


def test_sigterm_stops_the_command(tmp_path: Path) -> None:
    started = tmp_path / "started"
    script = (
        "import os, pathlib, time\n"
        f"pathlib.Path({str(started)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.runner"],
        env=runner_env(
            tmp_path,
            AGENTFLOW_PROVIDER="command",
            AGENTFLOW_COMMAND=command(sys.executable, "-c", script),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: started.exists() and started.read_text() != "", "the agent to start")
        wait_for(lambda: catches_sigterm(process.pid), "the runner's SIGTERM handler")
        child = int(started.read_text())
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    run = collect(tmp_path, process.returncode, stdout, stderr)
    assert run.returncode == 143
    assert "terminated (SIGTERM)" in run.result.summary
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


# ---------------------------------------------------------------------------------------------
# anthropic and openai, against a local fake API
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_api() -> Iterator[FakeProvider]:
    with fake_provider() as provider:
        yield provider


def anthropic_reply(text: str, input_tokens: int = 120, output_tokens: int = 45) -> Reply:
    return success("anthropic", text, input_tokens, output_tokens)


def openai_reply(text: str) -> Reply:
    return success("openai", text, 310, 72)


def run_anthropic(tmp_path: Path, api: FakeProvider, **env: str) -> Run:
    settings = {
        "AGENTFLOW_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": api.url,
        "AGENTFLOW_MODEL": "test-model",
        "AGENTFLOW_PROMPT": "Validate the VAT rules.",
        **env,
    }
    return run_runner(tmp_path, **settings)


def test_anthropic(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(anthropic_reply(SAMPLE))
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 0, run.stderr
    assert "- Files read: 12\n- Input tokens: 120\n- Output tokens: 45\n\n## Status" in run.report
    result = run.result
    assert (result.metrics.tool_calls, result.metrics.input_tokens) == (5, 120)
    assert result.metrics.output_tokens == 45
    assert result.status == "success"
    assert len(result.artifacts) == 2

    [request] = fake_api.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body["model"] == "test-model"
    assert request.body["max_tokens"] == 4096
    assert request.body["messages"] == [{"role": "user", "content": "Validate the VAT rules."}]
    assert "## Files Created/Modified" in request.body["system"]
    assert "vat-check" in request.body["system"]


def test_openai(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(openai_reply("## Summary\nDone.\n"))
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="openai",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_api.url + "/v1",
        AGENTFLOW_MODEL="test-model",
        AGENTFLOW_MAX_TOKENS="1000",
        AGENTFLOW_PROMPT="Validate the VAT rules.",
    )
    assert run.returncode == 0, run.stderr
    assert (
        run.report == "## Summary\nDone.\n\n## Metrics\n- Input tokens: 310\n- Output tokens: 72\n"
    )
    assert run.result.summary == "Done."
    assert (run.result.metrics.input_tokens, run.result.metrics.output_tokens) == (310, 72)

    [request] = fake_api.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "test-model"
    assert request.body["max_completion_tokens"] == 1000
    system, user = request.body["messages"]
    assert system["role"] == "system" and "## Metrics" in system["content"]
    assert user == {"role": "user", "content": "Validate the VAT rules."}


@pytest.mark.parametrize(
    ("own", "budget", "sent"),
    [
        (None, "250", 250),  # the budget left caps the default
        (None, "100000", 4096),  # never above the default without a limit of the agent's own
        ("1000", "250", 250),  # the budget caps the agent's own limit
        ("200", "250", 200),  # the agent's own limit is lower still
    ],
)
def test_the_budget_left_caps_max_tokens(
    tmp_path: Path, fake_api: FakeProvider, own: str | None, budget: str, sent: int
) -> None:
    fake_api.replies.append(anthropic_reply(SAMPLE))
    fake_api.replies.append(openai_reply("## Summary\nDone.\n"))
    limits = {"AGENTFLOW_BUDGET_MAX_TOKENS": budget}
    if own is not None:
        limits["AGENTFLOW_MAX_TOKENS"] = own
    assert run_anthropic(tmp_path, fake_api, **limits).returncode == 0
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="openai",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_api.url + "/v1",
        **limits,
    )
    assert run.returncode == 0, run.stderr
    anthropic, openai = fake_api.requests
    assert anthropic.body["max_tokens"] == sent
    assert openai.body["max_completion_tokens"] == sent


def test_a_bad_budget_bound_is_a_configuration_error(
    tmp_path: Path, fake_api: FakeProvider
) -> None:
    run = run_anthropic(tmp_path, fake_api, AGENTFLOW_BUDGET_MAX_TOKENS="lots")
    assert run.returncode != 0
    assert "AGENTFLOW_BUDGET_MAX_TOKENS" in run.stderr
    assert fake_api.requests == []


def test_openai_base_url_without_a_path_gets_v1(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(openai_reply('{"summary": "as json", "metrics": {"toolCalls": 2}}'))
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="openai",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_api.url,
    )
    assert run.returncode == 0, run.stderr
    assert fake_api.requests[0].path == "/v1/chat/completions"
    assert "max_completion_tokens" not in fake_api.requests[0].body
    assert fake_api.requests[0].body["model"] == "gpt-4o-mini"
    assert json.loads(run.report)["metrics"] == {
        "toolCalls": 2,
        "inputTokens": 310,
        "outputTokens": 72,
    }
    assert run.result.summary == "as json"


def test_api_error_is_reported_without_retry(tmp_path: Path, fake_api: FakeProvider) -> None:
    error = {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    fake_api.replies.append(Reply(401, error))
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 1
    assert len(fake_api.requests) == 1
    expected = "anthropic API returned HTTP 401"
    assert expected in run.result.summary and expected in run.stderr
    assert "authentication_error: invalid x-api-key" in run.result.summary
    assert run.result.status == "failure"


def test_api_error_messages_never_show_the_key(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(Reply(403, {"error": {"message": f"key {API_KEY} is revoked"}}))
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 1
    assert "key [redacted] is revoked" in run.result.summary


def test_one_retry_on_429_then_success(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies += [
        Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        anthropic_reply("## Summary\nSecond time lucky.\n"),
    ]
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 0, run.stderr
    assert len(fake_api.requests) == 2
    assert run.result.summary == "Second time lucky."
    assert "HTTP 429; retrying" in run.stderr


def test_only_one_retry_on_5xx(tmp_path: Path, fake_api: FakeProvider) -> None:
    overloaded = Reply(529, {"error": {"message": "overloaded"}}, {"Retry-After": "0"})
    fake_api.replies += [overloaded, overloaded, anthropic_reply("never reached")]
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 1
    assert len(fake_api.requests) == 2
    assert "HTTP 529" in run.result.summary and "overloaded" in run.result.summary


def test_redirects_are_not_followed(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(Reply(307, {}, {"Location": "http://127.0.0.1:9/steal"}))
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 1
    assert "HTTP 307" in run.result.summary
    assert len(fake_api.requests) == 1


def test_timeout(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(Reply(200, {}, stall=True))
    run = run_anthropic(tmp_path, fake_api, AGENTFLOW_HTTP_TIMEOUT_SECONDS="0.5")
    assert run.returncode == 1
    assert "did not answer within 0.5s" in run.result.summary


def test_unreachable_api(tmp_path: Path, fake_api: FakeProvider) -> None:
    url = fake_api.url
    fake_api.close()
    run = run_runner(
        tmp_path, AGENTFLOW_PROVIDER="openai", OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=url + "/v1"
    )
    assert run.returncode == 1
    assert f"could not reach the openai API at {url}/v1/chat/completions" in run.result.summary


def test_answer_without_text(tmp_path: Path, fake_api: FakeProvider) -> None:
    fake_api.replies.append(Reply(200, {"content": [], "usage": {}}))
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 1
    assert "without any text content" in run.result.summary


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY is not set"),
        ({"ANTHROPIC_BASE_URL": "file:///etc/passwd"}, "is not an http(s) URL"),
        ({"AGENTFLOW_HTTP_TIMEOUT_SECONDS": "0"}, "AGENTFLOW_HTTP_TIMEOUT_SECONDS"),
        (
            {"ANTHROPIC_BASE_URL": f"http://user:{API_KEY}@127.0.0.1:9"},
            "base URL 'http://127.0.0.1:9' has credentials in it",
        ),
    ],
)
def test_llm_configuration_errors(
    tmp_path: Path, fake_api: FakeProvider, env: dict[str, str], complaint: str
) -> None:
    run = run_anthropic(tmp_path, fake_api, **env)
    assert run.returncode == 2
    assert complaint in run.result.summary
    assert fake_api.requests == []


# ---------------------------------------------------------------------------------------------
# Keys never reach the output: malformed keys, keys quoted by errors and tracebacks
# ---------------------------------------------------------------------------------------------

# Two halves that each identify the key; either one in any output is a leak.
KEY_HEAD = "sk-live-4c1d9e7f-head"
KEY_TAIL = "tail-b6a0e3d2-secret"


def leaked(run: Run, *secrets: str) -> list[str]:
    """The secrets (or a spelling of them Python uses in reprs) found in any output of ``run``."""
    outputs = run.report + run.stderr + run.message
    spelled = {s for secret in secrets for s in (secret, repr(secret)[1:-1])}
    return sorted(s for s in spelled if s in outputs)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("separator", ["\r\n", "\n", "\r", "\t", "\u00e9"])
def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(
    tmp_path: Path, fake_api: FakeProvider, provider: str, separator: str
) -> None:
    variable = f"{provider.upper()}_API_KEY"
    base = fake_api.url + ("/v1" if provider == "openai" else "")
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER=provider,
        **{variable: KEY_HEAD + separator + KEY_TAIL, f"{provider.upper()}_BASE_URL": base},
    )
    assert run.returncode == 2, run.stderr
    assert run.result.summary.startswith(f"configuration error: {variable} has a ")
    assert "which an HTTP header cannot carry" in run.result.summary
    assert "Traceback" not in run.stderr
    assert leaked(run, KEY_HEAD, KEY_TAIL) == []
    assert fake_api.requests == []  # refused before anything was sent


def test_a_key_with_a_trailing_newline_still_works(tmp_path: Path, fake_api: FakeProvider) -> None:
    # `echo key > file; kubectl create secret --from-file` gives a key with a newline at the end.
    fake_api.replies.append(anthropic_reply("## Summary\nfine\n"))
    run = run_anthropic(tmp_path, fake_api, ANTHROPIC_API_KEY=API_KEY + "\n")
    assert run.returncode == 0, run.stderr
    assert fake_api.requests[0].headers["x-api-key"] == API_KEY


def test_a_provider_error_quoting_the_key_where_the_message_is_cut_shows_none_of_it(
    tmp_path: Path, fake_api: FakeProvider
) -> None:
    # The key straddles the 500 characters of the error message that are kept: cutting before
    # redacting would leave its first half behind.
    padding = "x" * 480
    error = {"error": {"message": f"{padding} {API_KEY} is not a valid key"}}
    fake_api.replies.append(Reply(401, error))
    run = run_anthropic(tmp_path, fake_api)
    assert run.returncode == 1
    assert f"{padding} [redacted]" in run.result.summary
    assert leaked(run, API_KEY[:8], API_KEY[-8:]) == []


def test_a_provider_error_quoting_the_other_providers_key_shows_none_of_it(
    tmp_path: Path, fake_api: FakeProvider
) -> None:
    # A proxy in front of both APIs that echoes every header it got, say.
    other = "sk-ant-other-provider-key-0123"
    fake_api.replies.append(Reply(400, {"error": {"message": f"headers: {API_KEY}, {other}"}}))
    run = run_anthropic(tmp_path, fake_api, OPENAI_API_KEY=other)
    assert run.returncode == 1
    assert "headers: [redacted], [redacted]" in run.result.summary
    assert leaked(run, API_KEY, other) == []


def run_in_process(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], **env: str
) -> tuple[int, Run]:
    from agentflow.runner import main

    (tmp_path / "termination-log").write_text("")
    code = main([], runner_env(tmp_path, **env))
    out, err = capfd.readouterr()
    message = (tmp_path / "termination-log").read_text()
    return code, Run(code, out.encode(), err, message)


def test_a_traceback_quoting_the_key_is_redacted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentflow.api.models import Provider

    runner_main = importlib.import_module("agentflow.runner.main")
    key = KEY_HEAD + "\r\n" + KEY_TAIL

    def header_error(config: Any) -> Any:
        # What http.client raises for such a header, quoting the value as bytes.
        value = ("Bearer " + config.env["OPENAI_API_KEY"]).encode()
        raise ValueError(f"Invalid header value {value!r}")

    monkeypatch.setitem(runner_main.PROVIDERS, Provider.OPENAI, header_error)
    code, run = run_in_process(tmp_path, capfd, AGENTFLOW_PROVIDER="openai", OPENAI_API_KEY=key)
    assert code == 1
    assert "Traceback" in run.stderr and "Invalid header value b'Bearer [redacted]'" in run.stderr
    assert run.result.summary == "internal error in the openai provider: ValueError"
    assert leaked(run, KEY_HEAD, KEY_TAIL) == []


def test_a_failure_outside_the_provider_is_redacted_and_still_leaves_a_result(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_main = importlib.import_module("agentflow.runner.main")

    def broken(outcome: Any) -> Any:
        raise RuntimeError(f"could not print a report for key {API_KEY}")

    monkeypatch.setattr(runner_main, "step_result", broken)
    code, run = run_in_process(tmp_path, capfd, ANTHROPIC_API_KEY=API_KEY)
    assert code == 1
    assert "RuntimeError: could not print a report for key [redacted]" in run.stderr
    assert run.result.summary == "internal error in the runner: RuntimeError"
    assert leaked(run, API_KEY) == []


def test_a_report_that_quotes_a_key_is_redacted_and_other_bytes_stay() -> None:
    from agentflow.runner.redact import Redactor

    redact = Redactor.of([API_KEY])
    data = b"\xff\xfe binary " + API_KEY.encode() + b" and " + json.dumps(API_KEY).encode()
    assert redact.report(data) == b'\xff\xfe binary [redacted] and "[redacted]"'
    assert redact.report(b"\xffnothing secret") == b"\xffnothing secret"
    assert Redactor.of([]).report(data) == data
