"""The rich Console that every ``agentflow`` command, and a command added by entry point
(``agentflow dev``), writes its output with."""

from __future__ import annotations

from rich.console import Console

# Wide enough that tables and messages stay on one line when the output is not a terminal.
PIPE_WIDTH = 200


def console(stderr: bool = False) -> Console:
    """A Console on stdout (or stderr), PIPE_WIDTH columns wide when that is not a terminal."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return out
