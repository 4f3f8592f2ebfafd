"""The workspace: a directory the steps of a run share (``spec.workspace``).

The operator mounts it at ``/workspace`` and sets ``AGENTFLOW_WORKSPACE`` to that path; the
container starts there.  Paths the providers take (files a script writes or reads, files an
LLM agent is given as context) are relative to it and may not leave it: an absolute path, a
``..`` that climbs out, or a symbolic link that points outside is refused.  Artifacts in a
report are relative to it too.

Bounds: :data:`MAX_FILE_OPERATIONS` script operations, :data:`MAX_WRITE_BYTES` per write,
:data:`MAX_READ_BYTES` read per file, :data:`MAX_CONTEXT_FILES` context files of at most
:data:`MAX_CONTEXT_BYTES` in all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.runner.config import ConfigError

WORKSPACE_VARIABLE = "AGENTFLOW_WORKSPACE"
FILES_VARIABLE = "AGENTFLOW_SCRIPT_FILES"
CONTEXT_VARIABLE = "AGENTFLOW_CONTEXT_FILES"

MAX_FILE_OPERATIONS = 32
MAX_WRITE_BYTES = 1024 * 1024
MAX_READ_BYTES = 16 * 1024
MAX_CONTEXT_FILES = 16
MAX_CONTEXT_BYTES = 256 * 1024
MAX_PATH_LENGTH = 1024

OPERATIONS = ("write", "append", "replace", "expect", "read")


def workspace_dir(env: Mapping[str, str]) -> Path | None:
    """The workspace directory, or None when the step has none."""
    value = env.get(WORKSPACE_VARIABLE, "").strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute() or not path.is_dir():
        raise ConfigError(f"{WORKSPACE_VARIABLE}={value!r} is not an existing directory")
    return path


def resolve(workspace: Path, relative: object, setting: str) -> Path:
    """``relative`` as a path inside ``workspace``; refused when it would leave it."""
    if not isinstance(relative, str) or not relative.strip():
        raise ConfigError(f"{setting}: a path must be a non-empty string")
    if len(relative) > MAX_PATH_LENGTH or "\0" in relative:
        raise ConfigError(f"{setting}: path {relative[:80]!r} is too long or has a NUL")
    if Path(relative).is_absolute():
        raise ConfigError(f"{setting}: path {relative!r} must be relative to the workspace")
    root = workspace.resolve()
    path = (root / relative).resolve()
    if path != root and not path.is_relative_to(root):
        raise ConfigError(f"{setting}: path {relative!r} leaves the workspace")
    return path


def relative_name(workspace: Path, path: Path) -> str:
    return path.relative_to(workspace.resolve()).as_posix()


def _read_text(path: Path, limit: int) -> tuple[str, bool]:
    """The first ``limit`` bytes of ``path`` as text, and whether there was more."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", "replace"), len(data) > limit


# ---- the script provider's file operations ----------------------------------------------


@dataclass(frozen=True)
class FileOperation:
    op: str
    path: str
    content: str = ""
    old: str = ""


@dataclass
class FileResults:
    """What the operations did: artifacts (workspace-relative path, created or modified) and
    the text of the files read, for the report."""

    artifacts: list[tuple[str, str]]
    read: list[tuple[str, str]]
    failure: str | None = None

    def read_text(self) -> str:
        return "\n".join(text.rstrip("\n") for _, text in self.read)


def file_operations(setting: str | None) -> list[FileOperation]:
    """Parse ``AGENTFLOW_SCRIPT_FILES``: a JSON array of operations, each an object with one of
    the keys ``write`` / ``append`` (a path, with ``content``), ``replace`` (a path, with
    ``old`` and ``new``: every occurrence; none is an error), ``expect`` (a path, with
    ``contains``: the step fails when the file lacks it) or ``read`` (a path: its text goes into
    the report's ``{read}`` placeholder)."""
    if setting is None or not setting.strip():
        return []
    try:
        raw = json.loads(setting)
    except ValueError as error:
        raise ConfigError(f"{FILES_VARIABLE} is not valid JSON: {error}") from None
    if not isinstance(raw, list) or len(raw) > MAX_FILE_OPERATIONS:
        raise ConfigError(
            f"{FILES_VARIABLE} must be a JSON array of at most {MAX_FILE_OPERATIONS} operations"
        )
    operations: list[FileOperation] = []
    for i, item in enumerate(raw):
        where = f"{FILES_VARIABLE}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object")
        ops = [op for op in OPERATIONS if op in item]
        if len(ops) != 1:
            raise ConfigError(f"{where} must have exactly one of: {', '.join(OPERATIONS)}")
        op = ops[0]
        allowed = {
            "write": {"content"},
            "append": {"content"},
            "replace": {"old", "new"},
            "expect": {"contains"},
            "read": set(),
        }[op]
        extra = set(item) - allowed - {op}
        if extra:
            raise ConfigError(f"{where} ({op}): unknown keys {', '.join(sorted(extra))}")
        values = {k: item.get(k, "") for k in allowed}
        if not all(isinstance(v, str) for v in values.values()):
            raise ConfigError(f"{where} ({op}): {', '.join(sorted(allowed))} must be strings")
        if op == "replace" and not values["old"]:
            raise ConfigError(f"{where} (replace): old must not be empty")
        text = values.get("content", values.get("new", values.get("contains", "")))
        if len(text.encode("utf-8", "surrogatepass")) > MAX_WRITE_BYTES:
            raise ConfigError(f"{where} ({op}): more than {MAX_WRITE_BYTES} bytes")
        if not isinstance(item[op], str):
            raise ConfigError(f"{where} ({op}): the path must be a string")
        operations.append(
            FileOperation(op=op, path=item[op], content=text, old=values.get("old", ""))
        )
    return operations


def _artifact(results: FileResults, name: str, action: str) -> None:
    known = dict(results.artifacts)
    if name in known:
        return  # created stays created
    results.artifacts.append((name, action))


def apply_operations(workspace: Path, operations: list[FileOperation]) -> FileResults:
    """Carry out ``operations`` in order; the first one that cannot be done stops them and is
    the ``failure``.  The paths were not checked before (a setting may refer to files earlier
    operations create), so each is resolved as it comes."""
    results = FileResults(artifacts=[], read=[])
    for i, operation in enumerate(operations):
        where = f"{FILES_VARIABLE}[{i}] ({operation.op} {operation.path})"
        path = resolve(workspace, operation.path, where)
        name = relative_name(workspace, path)
        try:
            if operation.op in ("write", "append"):
                existed = path.exists()
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a" if operation.op == "append" else "w", encoding="utf-8") as f:
                    f.write(operation.content)
                _artifact(results, name, "modified" if existed else "created")
            elif operation.op == "replace":
                text = path.read_text(encoding="utf-8")
                if operation.old not in text:
                    results.failure = f"{where}: {operation.old!r} not found"
                    return results
                path.write_text(text.replace(operation.old, operation.content), encoding="utf-8")
                _artifact(results, name, "modified")
            elif operation.op == "expect":
                text, _ = _read_text(path, MAX_WRITE_BYTES)
                if operation.content not in text:
                    results.failure = f"{where}: the file does not contain {operation.content!r}"
                    return results
            else:
                text, cut = _read_text(path, MAX_READ_BYTES)
                results.read.append((name, text + ("\n[…]" if cut else "")))
        except FileNotFoundError:
            results.failure = f"{where}: no such file in the workspace"
            return results
        except (IsADirectoryError, NotADirectoryError):
            results.failure = f"{where}: not a regular file"
            return results
        except (OSError, UnicodeDecodeError) as error:
            results.failure = f"{where}: {error}"
            return results
    return results


# ---- context files for the LLM providers -------------------------------------------------


@dataclass(frozen=True)
class ContextFile:
    path: str  # relative to the workspace
    text: str
    truncated: bool


def context_paths(setting: str | None) -> list[str]:
    """``AGENTFLOW_CONTEXT_FILES``: a JSON array of workspace-relative paths."""
    if setting is None or not setting.strip():
        return []
    try:
        raw: Any = json.loads(setting)
    except ValueError as error:
        raise ConfigError(f"{CONTEXT_VARIABLE} is not valid JSON: {error}") from None
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_CONTEXT_FILES
        or not all(isinstance(p, str) for p in raw)
    ):
        raise ConfigError(
            f"{CONTEXT_VARIABLE} must be a JSON array of at most {MAX_CONTEXT_FILES} paths"
        )
    return list(raw)


def context_files(env: Mapping[str, str]) -> list[ContextFile]:
    """The files named by ``AGENTFLOW_CONTEXT_FILES``, read from the workspace, at most
    :data:`MAX_CONTEXT_BYTES` in all (a file past the bound is cut, and later ones are
    empty and marked truncated)."""
    paths = context_paths(env.get(CONTEXT_VARIABLE))
    if not paths:
        return []
    workspace = workspace_dir(env)
    if workspace is None:
        raise ConfigError(f"{CONTEXT_VARIABLE} needs a workspace ({WORKSPACE_VARIABLE} is unset)")
    files: list[ContextFile] = []
    room = MAX_CONTEXT_BYTES
    for i, relative in enumerate(paths):
        setting = f"{CONTEXT_VARIABLE}[{i}]"
        path = resolve(workspace, relative, setting)
        if not path.is_file():
            raise ConfigError(f"{setting}: {relative!r} is not a file in the workspace")
        text, cut = _read_text(path, room) if room > 0 else ("", path.stat().st_size > 0)
        room -= len(text.encode("utf-8", "surrogatepass"))
        files.append(ContextFile(path=relative_name(workspace, path), text=text, truncated=cut))
    return files


def prompt_with_context(prompt: str, files: list[ContextFile]) -> str:
    """The prompt followed by each file, fenced and named."""
    if not files:
        return prompt
    parts = [prompt.rstrip("\n"), "", "Files of the workspace given as context:"]
    for f in files:
        note = " (truncated)" if f.truncated else ""
        parts += ["", f"--- {f.path}{note} ---", f.text.rstrip("\n"), f"--- end of {f.path} ---"]
    return "\n".join(parts) + "\n"


def context_section(files: list[ContextFile]) -> str:
    """The report section that lists the files given as context."""
    lines = "".join(
        f"- {f.path} ({len(f.text.encode('utf-8', 'surrogatepass'))} bytes"
        f"{', truncated' if f.truncated else ''})\n"
        for f in files
    )
    return f"## Context Files\n{lines}"
