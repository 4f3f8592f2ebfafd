"""YAML files into documents, each knowing the file and position it came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class DocumentError(Exception):
    """A file that cannot be read or parsed; the message starts with the file's path."""


@dataclass(frozen=True)
class Document:
    """One YAML document of a file."""

    path: str  # as the user gave it, so messages point where they looked
    index: int  # 1-based position among the file's non-empty documents
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        kind = self.body.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str | None:
        meta = self.body.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) and name else None

    @property
    def namespace(self) -> str | None:
        meta = self.body.get("metadata")
        namespace = meta.get("namespace") if isinstance(meta, dict) else None
        return namespace if isinstance(namespace, str) and namespace else None

    @property
    def label(self) -> str:
        """``Kind/name`` as kubectl prints it, or the document's position when it has no name."""
        kind = self.kind or "(no kind)"
        return f"{kind}/{self.name}" if self.name else f"{kind} (document {self.index})"


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "malformed"
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return str(error)


def load_file(path: str | Path) -> list[Document]:
    """Every non-empty document of ``path``; raises DocumentError naming the file."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DocumentError(f"{shown}: cannot read: {reason}") from None
    try:
        raw = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise DocumentError(f"{shown}: invalid YAML: {_yaml_problem(e)}") from None
    documents: list[Document] = []
    position = 0
    for body in raw:
        if body is None:
            continue
        position += 1
        if not isinstance(body, dict):
            raise DocumentError(
                f"{shown}: document {position} is a {type(body).__name__}, not a mapping"
            )
        documents.append(Document(shown, position, body))
    return documents


def load_files(paths: Iterable[str | Path]) -> tuple[list[Document], list[str]]:
    """The documents of every readable file, and one error per file that is not."""
    documents: list[Document] = []
    errors: list[str] = []
    for path in paths:
        try:
            documents.extend(load_file(path))
        except DocumentError as e:
            errors.append(str(e))
    return documents, errors
