"""The agent report contract: parse a report, and carry its result in a termination message.

An agent prints a report to stdout, in Markdown (``## Summary``, ``## Actions Taken``,
``## Files Created/Modified``, ``## Metrics``, ``## Status``) or as one JSON object.  The agent
runner parses it and writes a compact JSON form (:func:`encode_termination_message`) to the
container's termination-message file, which Kubernetes caps at 4096 bytes.  The operator reads
that back with :func:`decode_termination_message`; when the result says ``truncated`` it reads
the full report from the pod log instead and parses it with :func:`parse_report`.

Everything here is pure and total: reports come from programs and models we do not control, so
no input makes these functions raise, and the work done on any input is bounded.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentflow.api.models import Artifact, FailureClass, StepMetrics, StepResult

# Bounds on the work done per report and on what a result carries.
MAX_PARSE_BYTES = 1 << 20  # only the first MiB is parsed; the digest covers everything
MAX_SUMMARY_CHARS = 2_000
MAX_ARTIFACTS = 100
MAX_PATH_CHARS = 1_024  # Artifact.path's bound in the API
MAX_STATUS_CHARS = 64
MAX_EXTRA_METRICS = 32
MAX_METRIC_KEY_CHARS = 64
MAX_NUMBER_CHARS = 40
# Counts are int64 in the Workflow status.
MAX_COUNT = 2**63 - 1

# Kubernetes truncates a termination message to 4096 bytes.
TERMINATION_MESSAGE_LIMIT = 4_096
# With terminationMessagePolicy FallbackToLogsOnError, the kubelet uses the last 80 lines or
# 2048 bytes of the log, whichever is smaller; a raw message that reaches either bound may be
# the tail of a longer report.
LOG_TAIL_BYTES = 2_048
LOG_TAIL_LINES = 80
# A summary shrinks to this many characters before artifacts are dropped, and only then to zero.
SUMMARY_FLOOR_CHARS = 256
ELLIPSIS = "…"

MESSAGE_VERSION = 1
# A reported Retry-After is kept within this many seconds.
MAX_RETRY_AFTER_SECONDS = 3_600.0

ArtifactAction = Literal["created", "modified", "deleted"]

# Status words agents use, mapped to the two the workflow conditions are written against.
_SUCCESS_WORDS = frozenset(
    {"success", "succeeded", "successful", "ok", "pass", "passed", "done", "complete", "completed"}
)
_FAILURE_WORDS = frozenset({"failure", "failed", "fail", "error", "errored", "errors"})

_ACTION_WORDS: dict[str, ArtifactAction] = {
    "created": "created",
    "create": "created",
    "added": "created",
    "add": "created",
    "new": "created",
    "modified": "modified",
    "modify": "modified",
    "updated": "modified",
    "update": "modified",
    "changed": "modified",
    "edited": "modified",
    "deleted": "deleted",
    "delete": "deleted",
    "removed": "deleted",
    "remove": "deleted",
}

# StepMetrics fields (camelCase wire names) and the other names agents give them.
_CORE_METRICS: dict[str, str] = {
    "toolCalls": "tool_calls",
    "filesRead": "files_read",
    "linesGenerated": "lines_generated",
    "errors": "errors",
    "inputTokens": "input_tokens",
    "outputTokens": "output_tokens",
}
_METRIC_ALIASES: dict[str, str] = {
    "toolUses": "toolCalls",
    "toolCall": "toolCalls",
    "filesReads": "filesRead",
    "linesWritten": "linesGenerated",
    "error": "errors",
    "errorCount": "errors",
    "promptTokens": "inputTokens",
    "completionTokens": "outputTokens",
}
# How the Markdown form labels the StepMetrics fields.
METRIC_LABELS: dict[str, str] = {
    "toolCalls": "Tool calls",
    "filesRead": "Files read",
    "linesGenerated": "Lines generated",
    "errors": "Errors",
    "inputTokens": "Input tokens",
    "outputTokens": "Output tokens",
}

# MAX_LINE_CHARS bounds the lines read as structure (a heading, a file, a metric); longer lines
# are only ever text.  The patterns are anchored and free of adjacent overlapping repeats, so
# matching stays linear in the line length.
MAX_LINE_CHARS = 4_096
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+|$)")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?(?P<rest>.*\S)\s*$")
_STATUS_LINE = re.compile(
    r"^\s*(?:[-*+]\s+)?[*_`]*status[*_`]*\s*[:=]\s*(?:[*_`]+\s*)?(?P<value>[A-Za-z][\w-]*)",
    re.IGNORECASE,
)
_STATUS_WORD = re.compile(r"[A-Za-z][\w-]*")
_ACTION_FORM = re.compile(
    r"^[*_`]*(?P<action>" + "|".join(_ACTION_WORDS) + r")[*_`]*"
    r"(?:\s*[:=]|\s+[-\u2013\u2014](?=\s)|\s+(?=\S+$))(?P<path>.+)$",
    re.IGNORECASE,
)
_LINK = re.compile(r"^\[([^\]]+)\]\([^)]*\)")
_NUMBER = re.compile(
    r"^[-+]?(?:\d{1,3}(?:[,_'\u00a0\u202f ]\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d{1,4})?"
)
_NUMBER_SEPARATORS = re.compile(r"[,_'\u00a0\u202f ]")
_WORD = re.compile(r"[^\W_]+")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_STATUS_VALUE = re.compile(r"[^a-z0-9_-]+")
_EMPTY_MARKERS = frozenset({"none", "n/a", "na", "-", "nothing", "(none)", "no changes"})

# C0 controls (but tab and newline) and DEL carry nothing a report needs.
_CONTROL_CHARS = {c: None for c in [*range(0, 9), *range(11, 32), 127]}


# ---------------------------------------------------------------------------------------------
# Public interface
# ---------------------------------------------------------------------------------------------


def report_digest(text: str | bytes) -> str:
    """``sha256:<hex>`` of the whole report (UTF-8 for text)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_report(text: str | bytes) -> StepResult:
    """The result a Markdown or JSON report describes; anything unrecognised is ignored.

    Only the first :data:`MAX_PARSE_BYTES` are read; ``truncated`` is set when anything was cut
    (the input, the summary, artifacts or metrics beyond their bounds).
    """
    try:
        return _parse(text)
    except Exception:  # a report must never break the caller; see the tests
        return StepResult(summary="(the report could not be parsed)", truncated=True)


@dataclass(frozen=True)
class ReportedFailure:
    """How an agent said its attempt failed: ``failureClass`` (a :class:`FailureClass` value)
    and ``retryAfterSeconds`` (the provider's Retry-After) of a JSON report or of the runner's
    termination message."""

    failure_class: FailureClass | None = None
    retry_after_seconds: float | None = None


def bounded_retry_after(value: object) -> float | None:
    """A Retry-After in seconds: a finite number, clamped to 0..:data:`MAX_RETRY_AFTER_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def reported_failure(text: str | bytes | None) -> ReportedFailure:
    """The failure class and Retry-After a JSON report or termination message states.

    Keys ``failureClass`` (or ``failure_class``) and ``retryAfterSeconds`` of the top-level
    JSON object; a class that is not one of :class:`FailureClass` (exact spelling) is ignored.
    Markdown reports state none.  Total: no input raises.
    """
    try:
        if text is None:
            return ReportedFailure()
        if isinstance(text, bytes):
            text = text[:MAX_PARSE_BYTES].decode("utf-8", "replace")
        document = _json_document(_clean_text(text[:MAX_PARSE_BYTES]))
        if document is None:
            return ReportedFailure()
        fields = {_camel_key(str(key)): value for key, value in document.items()}
        name = fields.get("failureClass")
        known: FailureClass | None = None
        if isinstance(name, str):
            try:
                known = FailureClass(name.strip())
            except ValueError:
                known = None
        return ReportedFailure(known, bounded_retry_after(fields.get("retryAfterSeconds")))
    except Exception:  # a report must never break the caller
        return ReportedFailure()


def encode_termination_message(
    result: StepResult,
    *,
    full_size: int,
    limit: int = TERMINATION_MESSAGE_LIMIT,
    failure: ReportedFailure | None = None,
) -> str:
    """Compact JSON ``{"v":1,...}`` of ``result`` that fits in ``limit`` UTF-8 bytes.

    ``full_size`` is the size in bytes of the full report.  When it is larger than ``limit``,
    or anything of the result has to be dropped to fit, ``truncated`` is true: the operator
    then reads the full report from the pod log.  Things are dropped in this order: the summary
    down to :data:`SUMMARY_FLOOR_CHARS`, artifacts from the end, extra metrics, the rest of the
    summary, the other metrics, the digest, and the status.  If not even the bare
    ``{"v":1,"truncated":true,"size":N}`` fits, the message is empty.  A ``failure`` adds
    ``failureClass`` and ``retryAfterSeconds``, which are never dropped.
    """
    try:
        return _encode(result, full_size=full_size, limit=limit, failure=failure)
    except Exception:  # an empty message makes the operator read the log
        return ""


def decode_termination_message(message: str | None) -> StepResult:
    """The result in a termination message.

    The runner's compact JSON is validated field by field: a wrong type or bound drops the
    field and sets ``truncated`` (so the operator reads the full report from the log).  Any
    other message is a raw report (an image that writes its report there, or the log tail the
    kubelet uses with FallbackToLogsOnError) and is parsed as one.  Empty means empty result.
    """
    try:
        return _decode(message)
    except Exception:  # a message must never break the caller; see the tests
        return StepResult(summary="(the termination message could not be read)", truncated=True)


def render_report(result: StepResult) -> str:
    """``result`` as a Markdown report that :func:`parse_report` reads back."""
    parts: list[str] = []
    if result.summary:
        parts.append(f"## Summary\n{result.summary.strip()}\n")
    if result.artifacts:
        lines = "".join(f"- {a.action.capitalize()}: {a.path}\n" for a in result.artifacts)
        parts.append(f"## Files Created/Modified\n{lines}")
    metric_lines = _metric_lines(result.metrics)
    if metric_lines:
        parts.append("## Metrics\n" + "".join(f"{line}\n" for line in metric_lines))
    if result.status:
        parts.append(f"## Status\n{result.status}\n")
    return "\n".join(parts)


def with_metrics(report: str, metrics: Mapping[str, int]) -> str:
    """``report`` with the given StepMetrics fields (camelCase keys) set to these values.

    The runner uses this to put the token usage an API reports into the agent's report.  A JSON
    report gets the keys in its ``metrics`` object; a Markdown report gets ``- Label: value``
    lines at the end of its Metrics section (replacing lines for the same metric), or a new
    Metrics section at the end.
    """
    known = {key: value for key, value in metrics.items() if key in METRIC_LABELS}
    if not known:
        return report
    text = _clean_text(report)
    document = _json_document(text)
    if document is not None:
        raw_metrics = document.get("metrics")
        merged: dict[str, Any] = {}
        if isinstance(raw_metrics, dict):
            merged = {k: v for k, v in raw_metrics.items() if _camel_key(str(k)) not in known}
        merged.update(known)
        document["metrics"] = merged
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    new_lines = [f"- {METRIC_LABELS[key]}: {value}" for key, value in known.items()]
    lines = text.split("\n")
    for section in _sections(lines):
        if section.kind != "metrics":
            continue
        kept = [
            i
            for i in range(section.start, section.end)
            if _canonical_metric(_metric_from_line(lines[i])[0]) not in known
        ]
        while kept and not lines[kept[-1]].strip():
            kept.pop()
        body = [lines[i] for i in kept]
        tail = lines[section.end :]
        gap = [""] if tail else []
        head = lines[: section.start]
        return "\n".join([*head, *body, *new_lines, *gap, *tail])
    return text.rstrip("\n") + "\n\n## Metrics\n" + "\n".join(new_lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@dataclass
class _Builder:
    """Collects a result while parsing, noting whether anything had to be dropped."""

    status: str | None = None
    summary: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    truncated: bool = False

    def set_summary(self, text: str) -> None:
        text = text.strip()
        if len(text) > MAX_SUMMARY_CHARS:
            text = text[: MAX_SUMMARY_CHARS - len(ELLIPSIS)].rstrip() + ELLIPSIS
            self.truncated = True
        self.summary = text

    def add_artifact(self, path: str, action: ArtifactAction) -> bool:
        path = path.strip()
        if not path or len(path) > MAX_PATH_CHARS or "\n" in path:
            return False
        if any(a.path == path and a.action == action for a in self.artifacts):
            return True
        if len(self.artifacts) >= MAX_ARTIFACTS:
            self.truncated = True
            return False
        self.artifacts.append(Artifact(path=path, action=action))
        return True

    def add_metric(self, key: str, value: float) -> bool:
        """A StepMetrics field when ``key`` names one, else an extra metric."""
        if key in _CORE_METRICS:
            return self.add_count(key, value)
        return self.add_extra(key, value)

    def add_count(self, key: str, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        count = round(value)
        if not 0 <= count <= MAX_COUNT:
            return False
        self.counts[key] = count
        return True

    def add_extra(self, key: str, value: float) -> bool:
        if not key or len(key) > MAX_METRIC_KEY_CHARS:
            return False
        try:
            number = float(value)
        except OverflowError:
            return False
        if not math.isfinite(number):
            return False
        if key not in self.extra and len(self.extra) >= MAX_EXTRA_METRICS:
            self.truncated = True
            return False
        self.extra[key] = number
        return True

    def build(self, digest: str | None) -> StepResult:
        metrics = StepMetrics(
            **{_CORE_METRICS[key]: value for key, value in self.counts.items()},
            extra=self.extra,
        )
        return StepResult(
            status=self.status,
            summary=self.summary,
            artifacts=self.artifacts,
            metrics=metrics,
            digest=digest,
            truncated=self.truncated,
        )


def _parse(text: str | bytes) -> StepResult:
    digest = report_digest(text)
    builder = _Builder(truncated=len(text) > MAX_PARSE_BYTES)
    head = text[:MAX_PARSE_BYTES]
    clean = _clean_text(head.decode("utf-8", "replace") if isinstance(head, bytes) else head)
    document = _json_document(clean)
    if document is not None:
        _parse_json(document, builder)
    else:
        _parse_markdown(clean, builder)
    return builder.build(digest)


def _clean_text(text: str) -> str:
    # Lone surrogates cannot be stored or sent; control characters are noise (NULs in binary).
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_CONTROL_CHARS)


def _json_document(text: str) -> dict[str, Any] | None:
    """The JSON object a report consists of (bare or as one fenced block), if it is one."""
    body = text.strip()
    if body.startswith(("```", "~~~")):
        first_newline = body.find("\n")
        fence = body[:3]
        if first_newline < 0 or len(body) < first_newline + 4 or not body.endswith(fence):
            return None
        body = body[first_newline + 1 : -3].strip()
    if not body.startswith("{"):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class _Section:
    kind: str | None  # summary, actions, files, metrics, status; None for any other
    title: str
    start: int  # first line of the body
    end: int  # one past its last line


def _heading_title(line: str) -> str | None:
    if len(line) > MAX_LINE_CHARS:
        return None
    match = _HEADING.match(line)
    if match is None:
        return None
    title = line[match.end() :].strip()
    # An ATX heading may be closed by a run of #.
    closed = title.rstrip("#")
    if closed != title and (not closed or closed[-1] in " \t"):
        title = closed.strip()
    return title


def _sections(lines: list[str]) -> Iterator[_Section]:
    """The sections of a Markdown document; headings inside code fences do not count."""
    in_fence = False
    current: tuple[str, int] | None = None
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        title = _heading_title(line)
        if title is None:
            continue
        if current is not None:
            yield _Section(_section_kind(current[0]), current[0], current[1], index)
        current = (title, index + 1)
    if current is not None:
        yield _Section(_section_kind(current[0]), current[0], current[1], len(lines))


def _section_kind(title: str) -> str | None:
    words = [w.lower() for w in _WORD.findall(title[:200])]
    if not words:
        return None
    first = words[0]
    if first in ("summary", "overview", "tldr"):
        return "summary"
    if first == "status":
        return "status"
    if first in ("metrics", "statistics", "stats", "usage"):
        return "metrics"
    if first == "actions" or words[:2] == ["steps", "taken"]:
        return "actions"
    if first in ("files", "artifacts", "artefacts") or words[:2] == ["changed", "files"]:
        return "files"
    return None


def _parse_markdown(text: str, builder: _Builder) -> None:
    lines = text.split("\n")
    sections = list(_sections(lines))
    preamble = lines[: sections[0].start - 1] if sections else lines
    status_from_section: str | None = None
    status_from_line = _status_from_lines(preamble)
    summary: str | None = None
    # Without a Summary section, the first paragraph of text outside the known sections.
    fallback_summary = _first_paragraph(preamble)

    for section in sections:
        body = lines[section.start : section.end]
        if section.kind == "summary" and summary is None:
            summary = _paragraphs([line for line in body if not _is_status_line(line)])
        elif section.kind == "actions":
            actions = sum(1 for line in body if _bullet_text(line) is not None)
            builder.add_extra("actionsTaken", builder.extra.get("actionsTaken", 0) + actions)
        elif section.kind == "files":
            for line in body:
                _parse_file_line(line, builder)
        elif section.kind == "metrics":
            for line in body:
                name, value = _metric_from_line(line)
                if value is not None:
                    builder.add_metric(_canonical_metric(name), value)
        elif section.kind == "status" and status_from_section is None:
            in_title = _STATUS_LINE.match(section.title)
            if in_title:
                status_from_section = _normalize_status(in_title.group("value"), strict=False)
            else:
                status_from_section = _status_from_body(body)
        elif section.kind is None and not fallback_summary:
            fallback_summary = _first_paragraph(body)
        if section.kind != "status" and status_from_line is None:
            status_from_line = _status_from_lines(body)

    builder.status = status_from_section or status_from_line
    builder.set_summary(summary if summary is not None else fallback_summary)


def _paragraphs(lines: list[str]) -> str:
    """The lines as paragraphs: trailing space trimmed, runs of blank lines made one."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _first_paragraph(lines: list[str]) -> str:
    kept = [line for line in lines if not _is_status_line(line)]
    return _paragraphs(kept).split("\n\n", 1)[0]


def _is_status_line(line: str) -> bool:
    """A ``Status: success`` line: it states the status, it is not part of the summary."""
    return _status_from_lines([line]) is not None


def _bullet_text(line: str) -> str | None:
    if len(line) > MAX_LINE_CHARS:
        return None
    match = _BULLET.match(line)
    if match is None:
        return None
    rest = match.group("rest")
    return None if _strip_marks(rest).lower() in _EMPTY_MARKERS else rest


def _strip_marks(text: str) -> str:
    return text.strip().strip("*_`\"'").strip()


def _status_from_body(lines: list[str]) -> str | None:
    """The status a Status section states: its first word, as in ``✅ Success``."""
    for line in lines:
        if not line.strip():
            continue
        labelled = _STATUS_LINE.match(line)
        if labelled:
            return _normalize_status(labelled.group("value"), strict=False)
        word = _STATUS_WORD.search(line[:MAX_LINE_CHARS])
        return _normalize_status(word.group(0), strict=False) if word else None
    return None


def _status_from_lines(lines: Iterable[str]) -> str | None:
    for line in lines:
        match = _STATUS_LINE.match(line)
        if match:
            status = _normalize_status(match.group("value"), strict=True)
            if status is not None:
                return status
    return None


def _normalize_status(word: str, *, strict: bool) -> str | None:
    """``success`` or ``failure`` for the usual words; other words only where explicit."""
    value = _STATUS_VALUE.sub("", word.strip().lower())[:MAX_STATUS_CHARS]
    if value in _SUCCESS_WORDS:
        return "success"
    if value in _FAILURE_WORDS:
        return "failure"
    if strict or not value:
        return None
    return value


def _parse_file_line(line: str, builder: _Builder) -> None:
    stripped = line.strip()
    if not stripped or len(stripped) > MAX_LINE_CHARS:
        return
    bullet = _bullet_text(line)
    text = bullet if bullet is not None else stripped
    action_form = _ACTION_FORM.match(text)
    if action_form:
        action = _ACTION_WORDS[action_form.group("action").lower()]
        builder.add_artifact(_clean_path(action_form.group("path")), action)
        return
    if bullet is None:
        return  # prose in the section, not a file
    suffixed = _suffix_action(bullet)
    if suffixed is not None:
        builder.add_artifact(_clean_path(suffixed[0]), suffixed[1])
        return
    path = _clean_path(bullet)
    if path and not any(ch.isspace() for ch in path):
        builder.add_artifact(path, "modified")


def _suffix_action(text: str) -> tuple[str, ArtifactAction] | None:
    """``path (created)`` or ``path [deleted]``."""
    text = text.rstrip()
    if not text.endswith((")", "]")):
        return None
    opening = max(text.rfind("("), text.rfind("["))
    action = _ACTION_WORDS.get(_strip_marks(text[opening + 1 : -1]).lower())
    if opening <= 0 or action is None:
        return None
    return text[:opening], action


def _clean_path(text: str) -> str:
    """The path in ``- Created: `a/b.ts` — why``, ``[a/b.ts](link)``, ``**a/b.ts**``..."""
    text = text.strip()
    # What is left of ``**Created:** path``: the emphasis closed after the label.
    closing = re.match(r"^(?:\*\*|__|\*|_)\s+", text)
    if closing:
        text = text[closing.end() :]
    if text.startswith("`"):
        end = text.find("`", 1)
        if end > 1:
            return text[1:end].strip()
    link = _LINK.match(text)
    if link:
        text = link.group(1)
    for separator in (" \u2014 ", " \u2013 ", " - ", " (", " # "):
        cut = text.find(separator)
        if cut > 0:
            text = text[:cut]
    return _unwrap(text.strip())


def _unwrap(text: str) -> str:
    """``**a_b_**`` -> ``a_b_``: emphasis and quotes in pairs, not a path's own ``_``."""
    for mark in ("**", "__", "*", "_", '"', "'"):
        if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
            return _unwrap(text[len(mark) : -len(mark)].strip())
    return text


def _metric_from_line(line: str) -> tuple[str, float | None]:
    """``(name, value)`` of a ``- Name: number`` line or a ``| Name | number |`` table row."""
    stripped = line.strip()
    if not stripped or len(stripped) > MAX_LINE_CHARS:
        return "", None
    if stripped.startswith("|"):
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        if len(cells) >= 2:
            return cells[0], _parse_number(cells[1])
        return "", None
    bullet = _bullet_text(line)
    text = bullet if bullet is not None else stripped
    colon = min((i for i in (text.find(":"), text.find("=")) if i >= 0), default=-1)
    if colon <= 0 or "|" in text[:colon]:
        return "", None
    return text[:colon], _parse_number(text[colon + 1 :])


def _parse_number(text: str) -> float | None:
    """The number a metric value starts with: ``1,234``, ``12.5 ms``, ``80%``; else None."""
    text = _strip_marks(text)
    match = _NUMBER.match(text)
    if match is None:
        return None
    rest = text[match.end() :]
    if rest[:1] in (".", ",", "/", ":", "-") or rest[:1].isdigit():
        return None  # a version, a date, a ratio: not one number
    token = _NUMBER_SEPARATORS.sub("", match.group(0))
    if len(token) > MAX_NUMBER_CHARS:
        return None
    if any(ch in token for ch in ".eE"):
        value = float(token)
        return value if math.isfinite(value) else None
    return int(token)


def _camel_key(name: str) -> str:
    """``P95 latency ms`` -> ``p95LatencyMs``; ``tool_calls`` and ``toolCalls`` -> ``toolCalls``."""
    words: list[str] = []
    for chunk in _WORD.findall(name[:200]):
        # Split camelCase: a new word starts at an upper-case letter after a lower-case or digit.
        start = 0
        for i in range(1, len(chunk)):
            if chunk[i].isupper() and (chunk[i - 1].islower() or chunk[i - 1].isdigit()):
                words.append(chunk[start:i].lower())
                start = i
        words.append(chunk[start:].lower())
    if not words:
        return ""
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _canonical_metric(name: str) -> str:
    key = _camel_key(name)
    return _METRIC_ALIASES.get(key, key)


def _parse_json(document: dict[str, Any], builder: _Builder) -> None:
    fields = {_camel_key(str(key)): value for key, value in document.items()}
    status = fields.get("status")
    if isinstance(status, bool):
        builder.status = "success" if status else "failure"
    elif isinstance(status, str):
        builder.status = _normalize_status(status, strict=False)
    summary = fields.get("summary")
    if isinstance(summary, str):
        builder.set_summary(_clean_text(summary))
    artifacts = fields.get("artifacts", fields.get("files"))
    for path, action in _json_artifacts(artifacts):
        builder.add_artifact(_clean_text(path), action)
    actions = fields.get("actionsTaken", fields.get("actions"))
    if isinstance(actions, list):
        builder.add_extra("actionsTaken", len(actions))
    metrics = fields.get("metrics")
    if isinstance(metrics, dict):
        for key, value in _json_metrics(metrics):
            builder.add_metric(key, value)


def _json_artifacts(value: object) -> Iterator[tuple[str, ArtifactAction]]:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item, "modified"
            elif isinstance(item, dict):
                path = item.get("path")
                word = item.get("action", "modified")
                action = _ACTION_WORDS.get(word.lower()) if isinstance(word, str) else None
                if isinstance(path, str) and action is not None:
                    yield path, action
    elif isinstance(value, dict):
        for key, paths in value.items():
            action = _ACTION_WORDS.get(str(key).lower())
            if action is None or not isinstance(paths, list):
                continue
            for path in paths:
                if isinstance(path, str):
                    yield path, action


def _json_metrics(metrics: dict[str, Any]) -> Iterator[tuple[str, float]]:
    for raw_key, raw_value in metrics.items():
        key = _canonical_metric(str(raw_key))
        if key == "extra" and isinstance(raw_value, dict):
            for extra_key, extra_value in raw_value.items():
                number = _json_number(extra_value)
                if number is not None:
                    yield _camel_key(str(extra_key)), number
            continue
        number = _json_number(raw_value)
        if number is not None:
            yield key, number


def _json_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= MAX_COUNT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _parse_number(value)
    return None


def _metric_lines(metrics: StepMetrics) -> list[str]:
    lines = []
    for key, attribute in _CORE_METRICS.items():
        value = getattr(metrics, attribute)
        if value is not None:
            lines.append(f"- {METRIC_LABELS[key]}: {value}")
    for key, number in metrics.extra.items():
        shown = int(number) if float(number).is_integer() and abs(number) < 2**53 else number
        lines.append(f"- {key}: {shown}")
    return lines


# ---------------------------------------------------------------------------------------------
# The termination message
# ---------------------------------------------------------------------------------------------


def _safe(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def _encode(
    result: StepResult, *, full_size: int, limit: int, failure: ReportedFailure | None = None
) -> str:
    size = max(0, int(full_size))
    status = _safe(result.status)[:MAX_STATUS_CHARS] if result.status else None
    summary = _safe(result.summary)
    artifacts = [{"path": _safe(a.path), "action": a.action} for a in result.artifacts]
    counts = {
        key: getattr(result.metrics, attribute)
        for key, attribute in _CORE_METRICS.items()
        if getattr(result.metrics, attribute) is not None
    }
    extra = [
        (_safe(key), value) for key, value in result.metrics.extra.items() if math.isfinite(value)
    ]
    digest = result.digest

    def message(
        *,
        summary_chars: int,
        artifact_count: int,
        extra_count: int,
        with_counts: bool = True,
        with_digest: bool = True,
        with_status: bool = True,
        truncated: bool = True,
    ) -> str:
        payload: dict[str, Any] = {"v": MESSAGE_VERSION}
        if with_status and status:
            payload["status"] = status
        if failure is not None and failure.failure_class is not None:
            payload["failureClass"] = failure.failure_class.value
        if failure is not None and failure.retry_after_seconds is not None:
            payload["retryAfterSeconds"] = failure.retry_after_seconds
        payload["truncated"] = truncated
        payload["size"] = size
        if with_digest and digest:
            payload["digest"] = digest
        metrics: dict[str, Any] = dict(counts) if with_counts else {}
        if extra_count:
            metrics["extra"] = dict(extra[:extra_count])
        if metrics:
            payload["metrics"] = metrics
        if artifact_count:
            payload["artifacts"] = artifacts[:artifact_count]
        if summary_chars:
            cut = summary[:summary_chars]
            payload["summary"] = cut if summary_chars >= len(summary) else cut + ELLIPSIS
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def fits(text: str) -> bool:
        return len(text.encode("utf-8")) <= limit

    everything = message(
        summary_chars=len(summary),
        artifact_count=len(artifacts),
        extra_count=len(extra),
        truncated=result.truncated or size > limit,
    )
    if fits(everything):
        return everything

    # The message grows with each knob (all but the last character of a summary, which swaps
    # for the ellipsis), so a binary search finds about the most that fits; it only ever
    # returns a value it has checked.
    def largest(upper: int, build: Callable[[int], str]) -> int | None:
        if not fits(build(0)):
            return None
        low, high = 0, upper
        while low < high:
            middle = (low + high + 1) // 2
            if fits(build(middle)):
                low = middle
            else:
                high = middle - 1
        return low

    floor = min(len(summary), SUMMARY_FLOOR_CHARS)
    n_artifacts, n_extra = len(artifacts), len(extra)
    steps: list[tuple[int, Callable[[int], str]]] = [
        (
            len(summary),
            lambda k: message(
                summary_chars=max(k, floor), artifact_count=n_artifacts, extra_count=n_extra
            ),
        ),
        (
            n_artifacts,
            lambda k: message(summary_chars=floor, artifact_count=k, extra_count=n_extra),
        ),
        (n_extra, lambda k: message(summary_chars=floor, artifact_count=0, extra_count=k)),
        (floor, lambda k: message(summary_chars=k, artifact_count=0, extra_count=0)),
    ]
    for upper, build in steps:
        best = largest(upper, build)
        if best is not None:
            return build(best)
    for smaller in (
        {"with_counts": False},
        {"with_counts": False, "with_digest": False},
        {"with_counts": False, "with_digest": False, "with_status": False},
    ):
        text = message(summary_chars=0, artifact_count=0, extra_count=0, **smaller)
        if fits(text):
            return text
    return ""


def _decode(message: str | None) -> StepResult:
    if message is None or not message.strip():
        return StepResult()
    if len(message) > MAX_PARSE_BYTES:
        return parse_report(message)
    text = message.strip()
    payload: object = None
    if text.startswith("{"):
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
    if isinstance(payload, dict) and "v" in payload:
        return _decode_payload(payload)
    # A raw report, or the tail of the log: it may be the end of something longer.
    result = parse_report(message)
    encoded = message.encode("utf-8", "replace")
    if len(encoded) >= LOG_TAIL_BYTES or message.count("\n") + 1 >= LOG_TAIL_LINES:
        return result.model_copy(update={"truncated": True, "digest": None})
    return result


def _decode_payload(payload: dict[str, Any]) -> StepResult:
    builder = _Builder()
    suspect = payload.get("v") != MESSAGE_VERSION or isinstance(payload.get("v"), bool)

    status = payload.get("status")
    if isinstance(status, str) and 0 < len(status) <= MAX_STATUS_CHARS:
        builder.status = _clean_text(status)
    elif status is not None:
        suspect = True

    summary = payload.get("summary", "")
    if isinstance(summary, str):
        if len(summary) > MAX_SUMMARY_CHARS:
            builder.set_summary(_clean_text(summary))
        else:
            builder.summary = _clean_text(summary)
    else:
        suspect = True

    artifacts = payload.get("artifacts", [])
    if isinstance(artifacts, list):
        for item in artifacts[: MAX_ARTIFACTS + 1]:
            fields = item if isinstance(item, dict) else {}
            path, word = fields.get("path"), fields.get("action")
            action = _ACTION_WORDS.get(word) if isinstance(word, str) else None
            valid = isinstance(path, str) and action is not None
            if not (valid and builder.add_artifact(_clean_text(str(path)), action or "modified")):
                suspect = True
    else:
        suspect = True

    suspect = _decode_metrics(payload.get("metrics", {}), builder) or suspect

    digest = payload.get("digest")
    if digest is not None and not (isinstance(digest, str) and _DIGEST.match(digest)):
        digest, suspect = None, True

    truncated = payload.get("truncated")
    size = payload.get("size")
    valid_size = isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= 2**63
    if not isinstance(truncated, bool) or not valid_size:
        suspect = True
    elif isinstance(size, int) and size > TERMINATION_MESSAGE_LIMIT:
        # A report this large cannot be whole in a termination message, whatever the flag says.
        suspect = True

    builder.truncated = builder.truncated or suspect or truncated is True
    return builder.build(digest if isinstance(digest, str) else None)


def _decode_metrics(metrics: object, builder: _Builder) -> bool:
    """Take valid metrics into ``builder``; True when something was invalid."""
    if not isinstance(metrics, dict):
        return True
    suspect = False
    for key, value in metrics.items():
        if key == "extra":
            if not isinstance(value, dict):
                suspect = True
                continue
            for extra_key, extra_value in list(value.items())[: MAX_EXTRA_METRICS + 1]:
                number = None if isinstance(extra_value, str) else _json_number(extra_value)
                if number is None or not builder.add_extra(_clean_text(str(extra_key)), number):
                    suspect = True
        elif key in _CORE_METRICS:
            valid = isinstance(value, int) and not isinstance(value, bool)
            if not (valid and builder.add_count(key, value)):
                suspect = True
        else:
            suspect = True
    return suspect
