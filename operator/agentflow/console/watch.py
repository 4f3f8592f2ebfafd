"""The live view of running Workflows, until each is finished (or the time is up).

On a terminal the view redraws in place; elsewhere (CI logs, pipes) each step's phase change is
printed as one line and the final tables once at the end.  A status counts only once it answers
the latest spec and rerun/retry request, so a finished earlier run is never taken for this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from agentflow.api.models import TERMINAL_WORKFLOW_PHASES
from agentflow.console.cluster import EXIT_FAILED, EXIT_TIMEOUT, Cluster
from agentflow.console.views import (
    is_current,
    one_line,
    status_of,
    step_rows,
    workflow_view,
)

TERMINAL = frozenset(phase.value for phase in TERMINAL_WORKFLOW_PHASES)
# Without any status after this long, the operator is probably not running: say so once.
NO_STATUS_HINT_SECONDS = 30.0
# Phase-change lines carry the whole (one-lined) summary, up to this many characters.
LINE_SUMMARY_WIDTH = 500


@dataclass
class _Progress:
    """Phase changes already reported, for the line-per-change output."""

    seen: dict[tuple[str, str], str] = field(default_factory=dict)

    def changes(self, key: str, obj: dict[str, Any]) -> list[Text]:
        lines: list[Text] = []
        if not obj.get("status"):
            return lines
        workflow_phase = status_of(obj).phase.value
        if self.seen.get((key, "")) != workflow_phase:
            self.seen[(key, "")] = workflow_phase
            lines.append(Text(f"{key}: {workflow_phase}"))
        for agent, step in step_rows(obj):
            phase = step.phase.value
            if self.seen.get((key, step.name), "Pending") == phase:
                continue
            self.seen[(key, step.name)] = phase
            line = f"{key}: step {step.name} {phase} (agent {step.agent or agent})"
            summary = step.result.summary if step.result else step.message
            if phase in ("Succeeded", "Failed", "Cached", "Skipped") and summary:
                line += f": {one_line(summary, LINE_SUMMARY_WIDTH)}"
            lines.append(Text(line))
        return lines


def watch(
    cluster: Cluster,
    refs: Sequence[tuple[str, str]],
    console: Console,
    timeout: float | None = None,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Show ``refs`` (namespace, name) until all are finished: 0 all succeeded, 1 any failed,
    2 on timeout.  Raises ConsoleError (exit 4) if one is deleted meanwhile."""
    began = time.monotonic()
    hinted = False
    progress = _Progress()
    live_mode = console.is_terminal
    objects: dict[tuple[str, str], dict[str, Any]] = {}

    def render() -> Group:
        return Group(*(workflow_view(objects[ref]) for ref in refs if ref in objects))

    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            for ref in refs:
                objects[ref] = cluster.get_workflow(*ref)
                if not live_mode:
                    for line in progress.changes(f"{ref[0]}/{ref[1]}", objects[ref]):
                        live.console.print(line, soft_wrap=True, highlight=False)
            live.update(render(), refresh=live_mode)
            finished = all(
                is_current(objects[ref]) and status_of(objects[ref]).phase.value in TERMINAL
                for ref in refs
            )
            if finished:
                break
            elapsed = time.monotonic() - began
            if timeout is not None and elapsed >= timeout:
                live.update(render(), refresh=True)
                live.stop()
                console.print(
                    f"timed out after {timeout:g}s; the workflows keep running "
                    "(`agentflow get` shows them)",
                    style="yellow",
                    soft_wrap=True,
                )
                return EXIT_TIMEOUT
            waiting = any(not objects[ref].get("status") for ref in refs)
            if waiting and not hinted and elapsed >= NO_STATUS_HINT_SECONDS:
                hinted = True
                live.console.print(
                    "no status yet: is the operator running? (`agentflow dev` starts one)",
                    style="yellow",
                    soft_wrap=True,
                )
            sleep(interval)
        live.update(render(), refresh=True)
    if not live_mode:
        console.line()  # the final view is printed without a line end off a terminal
    failed = [ref for ref in refs if status_of(objects[ref]).phase.value == "Failed"]
    for ref in refs:
        status = status_of(objects[ref])
        style = "red" if ref in failed else "green"
        outcome = f"workflow {ref[0]}/{ref[1]} {status.phase.value}"
        if status.message:
            outcome += f": {status.message}"
        console.print(outcome, style=style, soft_wrap=True, highlight=False)
    return EXIT_FAILED if failed else 0
