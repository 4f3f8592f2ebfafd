"""The ``agentflow`` command line (also installed as ``kubectl-agentflow``)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

app = typer.Typer(
    name="agentflow",
    help="Run multi-step AI-agent workflows on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Run multi-step AI-agent workflows on Kubernetes."""


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Namespace to watch (repeatable).")
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace (the default).")
    ] = False,
    log_format: Annotated[str, typer.Option(help="json or text.")] = "json",
    metrics_port: Annotated[int, typer.Option(help="Port for /metrics and /healthz.")] = 8080,
    metrics_host: Annotated[str, typer.Option(help="Address for the metrics server.")] = "0.0.0.0",
    metrics_auth: Annotated[
        bool, typer.Option(help="Require a bearer token allowed to GET /metrics.")
    ] = False,
    allowed_images: Annotated[
        str | None, typer.Option(help="Comma-separated agent images steps may use.")
    ] = None,
    max_jobs_per_namespace: Annotated[
        int | None, typer.Option(help="Most step Jobs running at once in one namespace.")
    ] = None,
    step_service_account: Annotated[
        str | None, typer.Option(help="ServiceAccount for step pods.")
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig (default: in-cluster).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator (the same as ``kopf run -m agentflow.main``)."""
    import kopf

    from agentflow import main  # noqa: F401  (registers the handlers)

    settings = {
        "AGENTFLOW_NAMESPACES": ",".join(namespace or []) if not all_namespaces else "",
        "AGENTFLOW_LOG_FORMAT": log_format,
        "AGENTFLOW_METRICS_PORT": str(metrics_port),
        "AGENTFLOW_METRICS_HOST": metrics_host,
        "AGENTFLOW_METRICS_AUTH": "true" if metrics_auth else "",
        "AGENTFLOW_ALLOWED_IMAGES": allowed_images or "",
        "AGENTFLOW_MAX_JOBS_PER_NAMESPACE": str(max_jobs_per_namespace or ""),
        "AGENTFLOW_STEP_SERVICE_ACCOUNT": step_service_account or "",
    }
    os.environ.update(settings)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
        log_refkey="object",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    namespaces = [] if all_namespaces else list(namespace or [])

    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
        )
    )


if __name__ == "__main__":
    app()
