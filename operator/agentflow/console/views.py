"""Rich renderables for Workflows, their steps, events and cache entries (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from agentflow.api.models import (
    ConditionType,
    StepPhase,
    StepStatus,
    Usage,
    WorkflowStatus,
    WorkflowUsage,
)
from agentflow.console.cache import CacheRow
from agentflow.console.timefmt import age, duration, parse_time

PHASE_STYLES = {
    "Pending": "dim",
    "Running": "cyan",
    "Succeeded": "green",
    "Failed": "bold red",
    "Skipped": "yellow",
    "Cached": "blue",
}
SUMMARY_WIDTH = 72


def phase_text(phase: str) -> Text:
    return Text(phase, style=PHASE_STYLES.get(phase, ""))


def status_of(obj: Mapping[str, Any]) -> WorkflowStatus:
    """The Workflow's status (empty before the operator has written one)."""
    try:
        return WorkflowStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        return WorkflowStatus()


def one_line(text: str | None, width: int = SUMMARY_WIDTH) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def shrinkable(text: str) -> Text:
    """A table cell that is cut with an ellipsis when its (wrappable) column must shrink."""
    return Text(text, no_wrap=True, overflow="ellipsis")


def spec_steps(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    steps = (obj.get("spec") or {}).get("steps") or []
    return [s for s in steps if isinstance(s, dict)]


def is_current(obj: Mapping[str, Any]) -> bool:
    """The status answers the latest spec and rerun/retry request (not an earlier run's)."""
    meta = obj.get("metadata") or {}
    raw = obj.get("status") or {}
    if not raw:
        return False
    generation = meta.get("generation")
    observed = raw.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False
    annotations = meta.get("annotations") or {}
    for annotation, token in (
        ("agentflow.dev/rerun", "rerunToken"),
        ("agentflow.dev/retry", "retryToken"),
    ):
        wanted = annotations.get(annotation)
        if wanted and raw.get(token) != wanted:
            return False
    return True


def cache_cell(step: StepStatus) -> str:
    if step.phase is StepPhase.CACHED:
        return "hit"
    if step.cache_key is None:
        return ""
    return "miss" if step.attempts else ""


def step_rows(obj: Mapping[str, Any]) -> list[tuple[str, StepStatus]]:
    """Each spec step with its status (Pending before the operator has seen it)."""
    status = status_of(obj)
    agents = {s.get("name"): s.get("agent", "") for s in spec_steps(obj)}
    rows = []
    for name, agent in agents.items():
        if not isinstance(name, str):
            continue
        step = status.step(name) or StepStatus(name=name, agent=agent or None)
        rows.append((agent or "", step))
    return rows


def steps_table(obj: Mapping[str, Any]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("STEP", "PHASE", "AGENT", "ATTEMPTS", "FALLBACK", "CACHE", "ITERATION"):
        table.add_column(column, no_wrap=True)
    # The one column that gives way on a narrow terminal (cut with an ellipsis, never wrapped).
    table.add_column("SUMMARY", max_width=SUMMARY_WIDTH)
    for spec_agent, step in step_rows(obj):
        summary = step.result.summary if step.result and step.result.summary else step.message
        table.add_row(
            step.name,
            phase_text(step.phase.value),
            step.agent or spec_agent,
            str(len(step.attempts)) if step.attempts else "",
            "yes" if step.fallback_used else "",
            cache_cell(step),
            str(step.iteration) if step.iteration else "",
            shrinkable(one_line(summary)),
        )
    return table


def degraded_reasons(obj: Mapping[str, Any]) -> list[str]:
    status = status_of(obj)
    if not status.degraded:
        return []
    condition = status.condition(ConditionType.DEGRADED)
    if condition is not None and condition.status == "True" and condition.message:
        return [condition.message]
    reasons = [f"step {s.name}: a fallback agent ran" for s in status.steps if s.fallback_used]
    reasons += [
        f"step {s.name}: skipped after its agent failed"
        for s in status.steps
        if s.phase is StepPhase.SKIPPED and s.attempts
    ]
    return reasons


def workflow_header(obj: Mapping[str, Any]) -> Text:
    meta = obj.get("metadata") or {}
    status = status_of(obj)
    text = Text()
    text.append(f"{meta.get('namespace', '')}/{meta.get('name', '')}", style="bold")
    text.append("  ")
    if obj.get("status"):
        text.append_text(phase_text(status.phase.value))
        if status.progress:
            text.append(f"  {status.progress}")
        if status.run > 1:
            text.append(f"  run {status.run}")
        if status.degraded:
            text.append("  degraded", style="yellow")
    else:
        text.append("waiting for the operator", style="dim")
    return text


def workflow_view(obj: Mapping[str, Any]) -> Group:
    """A Workflow as the live view shows it: header, steps, message, degraded reasons."""
    parts: list[RenderableType] = [workflow_header(obj), steps_table(obj)]
    status = status_of(obj)
    if status.message and obj.get("status"):
        parts.append(Text(f"message: {status.message}", style="dim"))
    parts.extend(Text(f"degraded: {r}", style="yellow") for r in degraded_reasons(obj))
    return Group(*parts)


def workflows_table(
    items: Sequence[Mapping[str, Any]], all_namespaces: bool, now: datetime
) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    if all_namespaces:
        table.add_column("NAMESPACE", no_wrap=True)
    for column in ("NAME", "PHASE", "PROGRESS", "DEGRADED", "AGE"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE", max_width=80)
    for obj in sorted(
        items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
    ):
        meta = obj["metadata"]
        status = status_of(obj)
        has_status = bool(obj.get("status"))
        row: list[str | Text] = [meta["name"]]
        if all_namespaces:
            row.insert(0, meta.get("namespace", ""))
        row += [
            phase_text(status.phase.value) if has_status else Text("-", style="dim"),
            status.progress or "-",
            str(status.degraded).lower() if has_status else "-",
            age(meta.get("creationTimestamp"), now),
            shrinkable(one_line(status.message, 80)),
        ]
        table.add_row(*row)
    return table


def _metrics_line(step: StepStatus) -> str:
    if step.result is None:
        return ""
    named = step.result.metrics.model_dump(by_alias=True, exclude_none=True, exclude={"extra"})
    values = {**named, **step.result.metrics.extra}
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def usage_text(usage: Usage | None, currency: str | None = None) -> str:
    """Tokens in and out, and their cost when priced: ``1200 in, 300 out, cost 0.0081 USD``."""
    if usage is None:
        return "-"
    text = f"{usage.input_tokens} in, {usage.output_tokens} out"
    if usage.cost is not None:
        text += f", cost {usage.cost}" + (f" {currency}" if currency else "")
    if usage.unpriced_tokens:
        text += f" ({usage.unpriced_tokens} tokens without a price)"
    return text


def budget_text(spec: Mapping[str, Any], usage: WorkflowUsage | None) -> str:
    """The run's budget and how much of it is used; "" without a budget."""
    budget = spec.get("budget") or {}
    if not budget:
        return ""
    tokens = usage.total_tokens if usage is not None else 0
    parts = []
    if budget.get("maxTokens") is not None:
        parts.append(f"{tokens} of {budget['maxTokens']} tokens")
    if budget.get("maxCost") is not None:
        cost = (usage.cost if usage is not None else None) or "0"
        currency = f" {usage.currency}" if usage is not None and usage.currency else ""
        parts.append(f"cost {cost} of {budget['maxCost']}{currency}")
    text = ", ".join(parts)
    if usage is not None and usage.budget_exceeded:
        text += f" (exceeded: {usage.budget_exceeded})"
    return text


def _clock(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _step_details(
    step: StepStatus, agent: str, accept: str | None = None, currency: str | None = None
) -> list[RenderableType]:
    out: list[RenderableType] = []
    title = Text()
    title.append(step.name, style="bold")
    title.append("  ")
    title.append_text(phase_text(step.phase.value))
    title.append(f"  agent {step.agent or agent}")
    if step.iteration > 1:
        title.append(f"  iteration {step.iteration}")
    if step.fallback_used:
        title.append("  fallback used", style="yellow")
    out.append(title)
    if accept:
        out.append(Text(f"  accept: {accept}"))
    if step.message:
        out.append(Text(f"  message: {step.message}"))
    result = step.result
    if result is not None:
        out.append(Text(f"  summary: {result.summary}"))
        if result.status:
            out.append(Text(f"  reported status: {result.status}"))
        if result.artifacts:
            listed = ", ".join(f"{a.path} ({a.action})" for a in result.artifacts)
            out.append(Text(f"  artifacts: {listed}"))
        metrics = _metrics_line(step)
        if metrics:
            out.append(Text(f"  metrics: {metrics}"))
        if result.output_ref:
            note = " (truncated in status)" if result.truncated else ""
            out.append(Text(f"  full report: ConfigMap {result.output_ref}{note}"))
    if step.usage is not None:
        out.append(Text(f"  usage: {usage_text(step.usage, currency)}"))
    if step.cache_key:
        out.append(Text(f"  cache key: {step.cache_key}", style="dim"))
    for attempt in step.attempts:
        line = (
            f"  attempt {attempt.attempt} (iteration {attempt.iteration}): agent {attempt.agent}"
            f"{' (fallback)' if attempt.fallback else ''}, job {attempt.job_name}, "
            f"{attempt.outcome}"
        )
        if attempt.exit_code is not None:
            line += f", exit code {attempt.exit_code}"
        message = one_line(attempt.message or "", 200)
        if attempt.reason:
            # The failure class; the message starts with it, so it is not said twice.
            label = "class " if attempt.outcome == "Failed" else ""
            line += f", {label}{attempt.reason}"
            rest = message.removeprefix(attempt.reason)
            if rest != message and rest.startswith((":", " (")):
                line += rest if rest.startswith(" (") else f": {rest[1:].strip()}"
                message = ""
        if message:
            line += f": {message}"
        if attempt.usage is not None:
            line += f", {usage_text(attempt.usage, currency)}"
        if attempt.concurrency_limit:
            line += f", limit {attempt.concurrency_limit}"
        line += f" [{_clock(attempt.started_at)} .. {_clock(attempt.finished_at)}]"
        out.append(Text(line, style="red" if attempt.outcome == "Failed" else ""))
    if step.next_attempt_at is not None:
        out.append(Text(f"  next attempt at {_clock(step.next_attempt_at)}"))
    return out


def describe(
    obj: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime
) -> list[RenderableType]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = status_of(obj)
    has_status = bool(obj.get("status"))
    policy = (spec.get("fallbackPolicyRef") or {}).get("name") or "(namespace default)"
    fields = [
        ("Name", meta.get("name", "")),
        ("Namespace", meta.get("namespace", "")),
        (
            "Created",
            f"{_clock(parse_time(meta.get('creationTimestamp')))} "
            f"({age(meta.get('creationTimestamp'), now)} ago)",
        ),
        ("Strategy", spec.get("strategy", "Sequential")),
        ("Fallback policy", policy),
        ("Suspended", str(bool(spec.get("suspend"))).lower()),
        *([("Inputs", _inputs(spec))] if spec.get("arguments") else []),
        (
            "Phase",
            status.phase.value if has_status else "- (no status yet: is the operator running?)",
        ),
        ("Run", str(status.run)),
        ("Progress", status.progress or "-"),
        ("Degraded", str(status.degraded).lower()),
        ("Usage", usage_text(status.usage, status.usage.currency if status.usage else None)),
        *([("Budget", budget)] if (budget := budget_text(spec, status.usage)) else []),
        ("Started", _clock(status.started_at)),
        ("Finished", _clock(status.finished_at)),
        ("Message", status.message or ""),
    ]
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold", no_wrap=True)
    header.add_column()
    for key, value in fields:
        header.add_row(f"{key}:", value)
    out: list[RenderableType] = [header]
    out.extend(Text(f"Degraded: {r}", style="yellow") for r in degraded_reasons(obj))
    out += [Text(""), Text("Steps:", style="bold"), steps_table(obj), Text("")]
    usage = status.usage
    if usage is not None and usage.agents:
        out += [Text(""), Text("Usage by agent:", style="bold")]
        for entry in usage.agents:
            out.append(Text(f"  {entry.agent}: {usage_text(entry, usage.currency)}"))
    currency = usage.currency if usage is not None else None
    gates = {
        s.get("name"): s.get("accept")
        for s in spec.get("steps") or []
        if isinstance(s, Mapping) and isinstance(s.get("accept"), str)
    }
    for agent, step in step_rows(obj):
        out.extend(_step_details(step, agent, gates.get(step.name), currency))
    out += [Text(""), Text("Conditions:", style="bold")]
    conditions = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("TYPE", "STATUS", "REASON", "AGE"):
        conditions.add_column(column, no_wrap=True)
    conditions.add_column("MESSAGE", overflow="fold")
    for c in status.conditions:
        conditions.add_row(c.type, c.status, c.reason, age(c.last_transition_time, now), c.message)
    out.append(conditions if status.conditions else Text("  (none)"))
    out += [Text(""), Text("Events:", style="bold")]
    out.append(events_table(events, now) if events else Text("  (none)"))
    return out


def _inputs(spec: Mapping[str, Any]) -> str:
    """``name=value`` of each input (its value, else its default), in spec order."""
    shown = []
    for argument in spec.get("arguments") or []:
        if not isinstance(argument, Mapping):
            continue
        value = argument.get("value", argument.get("default"))
        shown.append(f"{argument.get('name')}={'' if value is None else value}")
    return ", ".join(shown)


def event_time(event: Mapping[str, Any]) -> datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        when = parse_time(event.get(key))
        if when is not None:
            return when
    return parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def events_table(events: Sequence[Mapping[str, Any]], now: datetime) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("LAST SEEN", "TYPE", "REASON"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    epoch = datetime.min.replace(tzinfo=UTC)
    for event in sorted(events, key=lambda e: event_time(e) or epoch):
        when = event_time(event)
        count = event.get("count") or 1
        seen = duration((now - when).total_seconds()) if when else "-"
        if count > 1:
            seen += f" (x{count})"
        table.add_row(
            seen,
            Text(event.get("type", ""), style="red" if event.get("type") == "Warning" else ""),
            event.get("reason", ""),
            event.get("message", ""),
        )
    return table


def cache_table(entries: Sequence[CacheRow], now: datetime, all_namespaces: bool) -> Table:
    """Cache ConfigMaps (see ``agentflow.children.cache_configmap``)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    if all_namespaces:
        table.add_column("NAMESPACE", no_wrap=True)
    for column in ("NAME", "STEP", "KEY", "CREATED", "EXPIRES"):
        table.add_column(column, no_wrap=True)
    for row in entries:
        cells: list[str | Text] = [row.name, row.step, row.key[:16] if row.key else "-"]
        if all_namespaces:
            cells.insert(0, row.namespace)
        cells.append(f"{age(row.created, now)} ago" if row.created else "-")
        if row.expires is None:
            cells.append("-")
        elif row.expired(now):
            cells.append(
                Text(f"expired {duration((now - row.expires).total_seconds())} ago", style="yellow")
            )
        else:
            cells.append(f"in {duration((row.expires - now).total_seconds())}")
        table.add_row(*cells)
    return table
