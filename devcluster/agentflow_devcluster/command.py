"""``agentflow dev``: the command that this distribution adds to the ``agentflow`` CLI through the
``agentflow.commands`` entry point (see ``agentflow.cli``), which wraps it in the CLI's error
handling.  The work is in ``agentflow_devcluster.devenv``, imported when the command runs, so
that every other ``agentflow`` command starts without it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentflow.console.cluster import ConsoleError
from agentflow.console.terminal import console


def dev(
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Local cluster state (default: $AGENTFLOW_STATE_DIR, .agentflow/cluster)."
        ),
    ] = None,
    exit_when_done: Annotated[
        bool, typer.Option(help="Exit with the example's result: 0 Succeeded, 1 Failed, 2 timeout.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the example.")] = 600.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Metrics port of the background operator; fails if taken (default: 8080, "
            "or a free port, printed, when 8080 is taken).",
        ),
    ] = None,
    restart_operator: Annotated[
        bool,
        typer.Option(
            "--restart-operator",
            help="Only (re)start the background operator against the running local cluster "
            "(CRDs applied first), wait until /healthz answers, and return.",
        ),
    ] = False,
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="Show the cluster and the operator (pid, health, metrics URL)."
        ),
    ] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the operator and the cluster.")] = (
        False
    ),
) -> None:
    """Local cluster + CRDs + operator + the finance-feature example, watched to the end.

    A running cluster is reused, and so is the running operator if its /healthz answers.

    An operator started for another API server, or unhealthy, is restarted (the reason printed).
    """
    from agentflow_devcluster import devenv
    from agentflow_devcluster.controlplane import default_state_dir

    chosen = [
        name
        for name, on in (
            ("--restart-operator", restart_operator),
            ("--status", status),
            ("--stop", stop),
        )
        if on
    ]
    if len(chosen) > 1:
        raise ConsoleError(f"{' and '.join(chosen)} do not go together: pick one")
    if metrics_port is not None and (status or stop):
        raise ConsoleError(f"--metrics-port does not go with {chosen[0]}")
    state = state_dir or default_state_dir()
    out = console()
    if stop:
        devenv.stop_dev(out, state)
        return
    if status:
        raise typer.Exit(devenv.status_dev(out, state))
    if restart_operator:
        devenv.restart_operator(out, state, metrics_port)
        return
    raise typer.Exit(devenv.run_dev(out, state, exit_when_done, timeout, metrics_port))
