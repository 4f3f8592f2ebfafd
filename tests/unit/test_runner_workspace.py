"""The agent runner in a workspace (``AGENTFLOW_WORKSPACE``): the command provider runs there,
the script provider writes, changes, checks and reads files in it, and the LLM providers are
given files of it as context; every path stays inside it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.api.models import Artifact
from agentflow.runner.config import ConfigError
from agentflow.runner.workspace import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_FILES,
    MAX_FILE_OPERATIONS,
    apply_operations,
    context_files,
    file_operations,
    prompt_with_context,
    resolve,
)
from tests.support.fake_provider import FakeProvider, fake_provider
from tests.unit.test_runner import (
    anthropic_reply,
    command,
    run_anthropic,
    run_runner,
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def fake_api() -> Iterator[FakeProvider]:
    with fake_provider() as provider:
        yield provider


def files(*operations: dict[str, str]) -> str:
    return json.dumps(list(operations))


# ---- three steps of a file pipeline, as the example runs them ------------------------------


def test_three_script_steps_write_change_check_and_report_a_file(
    tmp_path: Path, workspace: Path
) -> None:
    first = run_runner(
        tmp_path,
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_SCRIPT_FILES=files({"write": "notes/plan.md", "content": "status: draft\n"}),
        AGENTFLOW_SCRIPT_REPORT="## Summary\nwrote the plan\n",
    )
    assert first.returncode == 0, first.stderr
    assert (workspace / "notes/plan.md").read_text() == "status: draft\n"
    assert first.result.artifacts == [Artifact(path="notes/plan.md", action="created")]

    second = run_runner(
        tmp_path,
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_SCRIPT_FILES=files(
            {"replace": "notes/plan.md", "old": "draft", "new": "reviewed"},
            {"append": "notes/plan.md", "content": "reviewer: bot\n"},
        ),
        AGENTFLOW_SCRIPT_REPORT="## Summary\nreviewed the plan\n",
    )
    assert second.returncode == 0, second.stderr
    assert second.result.artifacts == [Artifact(path="notes/plan.md", action="modified")]

    third = run_runner(
        tmp_path,
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_SCRIPT_FILES=files(
            {"expect": "notes/plan.md", "contains": "status: reviewed"},
            {"read": "notes/plan.md"},
        ),
        AGENTFLOW_SCRIPT_REPORT="## Summary\nplan.md reads: {read}\n",
    )
    assert third.returncode == 0, third.stderr
    assert third.result.summary == "plan.md reads: status: reviewed\nreviewer: bot"
    assert third.result.artifacts == []


def test_expect_fails_the_step_when_the_file_lacks_the_text(
    tmp_path: Path, workspace: Path
) -> None:
    (workspace / "plan.md").write_text("status: draft\n")
    run = run_runner(
        tmp_path,
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_SCRIPT_FILES=files({"expect": "plan.md", "contains": "reviewed"}),
    )
    assert run.returncode == 1
    assert "plan.md" in run.result.summary and "does not contain 'reviewed'" in run.result.summary


@pytest.mark.parametrize(
    ("operation", "complaint"),
    [
        ({"read": "missing.txt"}, "no such file in the workspace"),
        ({"replace": "present.txt", "old": "absent", "new": "x"}, "'absent' not found"),
    ],
)
def test_a_file_operation_that_cannot_be_done_fails_the_step(
    tmp_path: Path, workspace: Path, operation: dict[str, str], complaint: str
) -> None:
    (workspace / "present.txt").write_text("text\n")
    run = run_runner(
        tmp_path, AGENTFLOW_WORKSPACE=str(workspace), AGENTFLOW_SCRIPT_FILES=files(operation)
    )
    assert run.returncode == 1
    assert complaint in run.result.summary


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.txt", "a/../../outside.txt", "link/escape.txt"]
)
def test_paths_may_not_leave_the_workspace(tmp_path: Path, workspace: Path, path: str) -> None:
    (workspace / "link").symlink_to(tmp_path)
    run = run_runner(
        tmp_path,
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_SCRIPT_FILES=files({"write": path, "content": "x"}),
    )
    assert run.returncode == 2, run.stderr
    assert "workspace" in run.result.summary
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_script_files_need_a_workspace(tmp_path: Path) -> None:
    run = run_runner(tmp_path, AGENTFLOW_SCRIPT_FILES=files({"write": "a.txt", "content": "x"}))
    assert run.returncode == 2
    assert "needs a workspace (AGENTFLOW_WORKSPACE is unset)" in run.result.summary


def test_a_workspace_that_is_not_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    run = run_runner(
        tmp_path,
        AGENTFLOW_WORKSPACE=str(tmp_path / "nowhere"),
        AGENTFLOW_SCRIPT_FILES=files({"read": "a.txt"}),
    )
    assert run.returncode == 2
    assert "is not an existing directory" in run.result.summary


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("{", "is not valid JSON"),
        ('{"write": "a"}', "JSON array"),
        (json.dumps([{"read": "a"}] * (MAX_FILE_OPERATIONS + 1)), "at most 32 operations"),
        ('[{"write": "a", "read": "b"}]', "exactly one of"),
        ('[{"write": "a", "colour": "red"}]', "unknown keys colour"),
        ('[{"write": "a", "content": 3}]', "must be strings"),
        ('[{"replace": "a", "old": "", "new": "x"}]', "old must not be empty"),
        ('[{"write": 7}]', "the path must be a string"),
        (json.dumps([{"write": "a", "content": "x" * (1024 * 1024 + 1)}]), "more than"),
    ],
)
def test_bad_file_operations_are_refused_before_anything_is_written(
    setting: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        file_operations(setting)


def test_operations_stop_at_the_first_failure(workspace: Path) -> None:
    done = apply_operations(
        workspace,
        file_operations(
            files(
                {"write": "a.txt", "content": "one"},
                {"read": "missing.txt"},
                {"write": "b.txt", "content": "two"},
            )
        ),
    )
    assert done.failure is not None and "missing.txt" in done.failure
    assert (workspace / "a.txt").exists() and not (workspace / "b.txt").exists()


def test_a_long_file_is_read_in_part(workspace: Path) -> None:
    (workspace / "big.txt").write_text("y" * 100_000)
    done = apply_operations(workspace, file_operations(files({"read": "big.txt"})))
    [(name, text)] = done.read
    assert name == "big.txt" and text.endswith("[…]") and len(text) < 20_000


def test_resolve_keeps_paths_inside(workspace: Path) -> None:
    assert resolve(workspace, "a/b.txt", "x") == workspace.resolve() / "a/b.txt"
    with pytest.raises(ConfigError, match="leaves the workspace"):
        resolve(workspace, "../b.txt", "x")
    with pytest.raises(ConfigError, match="must be relative"):
        resolve(workspace, "/b.txt", "x")


# ---- the command provider ----------------------------------------------------------------

PWD_AGENT = (
    "import os, pathlib; pathlib.Path('made-by-command.txt').write_text('hi'); "
    "print('## Summary'); print('ran in ' + os.getcwd()); "
    "print('## Files Created/Modified'); print('- Created: made-by-command.txt')"
)


def test_the_command_provider_runs_in_the_workspace(tmp_path: Path, workspace: Path) -> None:
    run = run_runner(
        tmp_path,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_COMMAND=command(sys.executable, "-c", PWD_AGENT),
    )
    assert run.returncode == 0, run.stderr
    assert run.result.summary == f"ran in {os.path.realpath(workspace)}"
    assert (workspace / "made-by-command.txt").read_text() == "hi"
    assert run.result.artifacts == [Artifact(path="made-by-command.txt", action="created")]


# ---- context files for the LLM providers ---------------------------------------------------


def test_an_llm_agent_is_given_workspace_files_and_lists_them(
    tmp_path: Path, workspace: Path, fake_api: FakeProvider
) -> None:
    (workspace / "src").mkdir()
    (workspace / "src/app.py").write_text("print('hello')\n")
    (workspace / "README.md").write_text("# App\n")
    fake_api.replies.append(anthropic_reply("## Summary\nReviewed.\n"))
    run = run_anthropic(
        tmp_path,
        fake_api,
        AGENTFLOW_WORKSPACE=str(workspace),
        AGENTFLOW_CONTEXT_FILES=json.dumps(["src/app.py", "README.md"]),
    )
    assert run.returncode == 0, run.stderr
    [request] = fake_api.requests
    content = request.body["messages"][0]["content"]
    assert content.startswith("Validate the VAT rules.\n")
    assert "--- src/app.py ---\nprint('hello')\n--- end of src/app.py ---" in content
    assert "--- README.md ---\n# App\n--- end of README.md ---" in content
    assert "## Context Files\n- src/app.py (15 bytes)\n- README.md (6 bytes)\n" in run.report
    assert run.result.metrics.files_read == 2


def test_context_files_are_bounded_in_bytes(workspace: Path) -> None:
    (workspace / "a.txt").write_text("a" * (MAX_CONTEXT_BYTES - 10))
    (workspace / "b.txt").write_text("b" * 100)
    (workspace / "c.txt").write_text("c")
    env = {
        "AGENTFLOW_WORKSPACE": str(workspace),
        "AGENTFLOW_CONTEXT_FILES": json.dumps(["a.txt", "b.txt", "c.txt"]),
    }
    a, b, c = context_files(env)
    assert (len(a.text), a.truncated) == (MAX_CONTEXT_BYTES - 10, False)
    assert (b.text, b.truncated) == ("b" * 10, True)
    assert (c.text, c.truncated) == ("", True)
    assert "--- b.txt (truncated) ---" in prompt_with_context("p", [a, b, c])


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        (json.dumps(["x"] * (MAX_CONTEXT_FILES + 1)), "at most 16 paths"),
        ('"a.txt"', "JSON array"),
        ('["missing.txt"]', "is not a file in the workspace"),
        ('["../a.txt"]', "leaves the workspace"),
    ],
)
def test_bad_context_files_are_refused(workspace: Path, setting: str, complaint: str) -> None:
    env = {"AGENTFLOW_WORKSPACE": str(workspace), "AGENTFLOW_CONTEXT_FILES": setting}
    with pytest.raises(ConfigError, match=complaint):
        context_files(env)


def test_context_files_need_a_workspace(tmp_path: Path, fake_api: FakeProvider) -> None:
    run = run_anthropic(tmp_path, fake_api, AGENTFLOW_CONTEXT_FILES='["a.txt"]')
    assert run.returncode == 2
    assert "needs a workspace" in run.result.summary
    assert fake_api.requests == []
