"""Workflow inputs from the command line: ``-p name=value`` and ``--param-file``.

``agentflow submit`` and ``agentflow validate`` set them into the ``spec.arguments`` of the
Workflows of the files, as ``argo submit -p`` does: a value given here replaces the file's
``value`` of the input with that name.  A name no Workflow of the files declares is an error.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from agentflow.console.documents import Document

WORKFLOW = "Workflow"


class ParameterError(Exception):
    """A parameter that cannot be read or set; the message says which and why."""


def parse_parameters(pairs: Sequence[str], files: Sequence[str] = ()) -> dict[str, str]:
    """The values of ``--param-file`` files (in order), then of ``-p name=value`` pairs (which
    win).  A file holds a YAML or JSON mapping of names to strings (numbers and booleans are
    written as YAML would read them back)."""
    values: dict[str, str] = {}
    for path in files:
        values.update(_read_file(path))
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"-p {pair}: expected name=value")
        values[name.strip()] = value
    return values


def _read_file(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ParameterError(f"--param-file {path}: cannot read: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParameterError(f"--param-file {path}: invalid YAML or JSON: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ParameterError(
            f"--param-file {path}: expected a mapping of names to values, not {kind}"
        )
    values: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            values[str(name)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[str(name)] = str(value)
        else:
            shown = "null" if value is None else type(value).__name__
            raise ParameterError(
                f"--param-file {path}: {name}: expected a string, not {shown} "
                "(quote a JSON document to pass one)"
            )
    return values


def _declared(body: Mapping[str, Any]) -> list[str]:
    spec = body.get("spec")
    arguments = spec.get("arguments") if isinstance(spec, dict) else None
    if not isinstance(arguments, list):
        return []
    return [a["name"] for a in arguments if isinstance(a, dict) and isinstance(a.get("name"), str)]


def set_parameters(documents: Sequence[Document], values: Mapping[str, str]) -> list[Document]:
    """``documents`` with ``values`` set as the ``value`` of the Workflows' inputs of those
    names; raises ParameterError naming every value no Workflow among them declares."""
    if not values:
        return list(documents)
    workflows = [d for d in documents if d.kind == WORKFLOW]
    declared = {name for d in workflows for name in _declared(d.body)}
    unknown = sorted(set(values) - declared)
    if unknown:
        names = ", ".join(unknown)
        known = ", ".join(sorted(declared)) or "none"
        raise ParameterError(
            f"-p {names}: no Workflow of the files declares "
            f"{'this input' if len(unknown) == 1 else 'these inputs'} in spec.arguments "
            f"(declared: {known})"
        )
    out: list[Document] = []
    for doc in documents:
        if doc.kind != WORKFLOW or not set(values) & set(_declared(doc.body)):
            out.append(doc)
            continue
        body = copy.deepcopy(doc.body)
        for argument in body["spec"]["arguments"]:
            if isinstance(argument, dict) and argument.get("name") in values:
                argument["value"] = values[argument["name"]]
        out.append(Document(doc.path, doc.index, body))
    return out
