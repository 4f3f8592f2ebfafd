"""The ``agentflow`` command line (also installed as ``kubectl-agentflow``).

``operator`` runs the operator.  The other commands are for people: ``validate`` and ``graph``
work offline on files; ``submit``, ``get``, ``describe``, ``logs``, ``retry``, ``rerun``,
``suspend``, ``resume`` and ``cache`` talk to the cluster of the kubeconfig.  ``dev`` (a local
cluster with the operator and an example) comes from the agentflow-devcluster distribution when
it is installed.  Exit codes: 0 success, 1 failure (an invalid file, a Failed workflow),
2 timeout, 3 cluster unreachable, 4 workflow not found.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from agentflow.apierror import ApiError
from agentflow.children import ANNOTATION_RERUN, ANNOTATION_RETRY
from agentflow.console.cluster import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    Cluster,
    ConsoleError,
    Target,
)
from agentflow.console.documents import Document
from agentflow.console.graph import GraphFormat
from agentflow.console.terminal import console as _console

app = typer.Typer(
    name="agentflow",
    help="Run multi-step AI-agent workflows on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)
cache_app = typer.Typer(help="The step result cache (ConfigMaps labelled agentflow.dev/cache).")
app.add_typer(cache_app, name="cache", no_args_is_help=True)

P = ParamSpec("P")
R = TypeVar("R")
EXIT_INTERRUPTED = 130

ParameterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--parameter",
        "-p",
        help="Set an input of spec.arguments: name=value (repeatable).",
    ),
]
ParamFileOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param-file", help="A YAML or JSON file of input names and values (repeatable)."
    ),
]

NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace (default: the context's, else default)."),
]


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    _console(stderr=True).print(message, style="red", soft_wrap=True, markup=False)
    return typer.Exit(code)


def cli_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a ConsoleError into its one-line message and exit code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ConsoleError as e:
            raise _fail(e.message, e.exit_code) from None
        except ApiError as e:
            code = EXIT_NOT_FOUND if e.status == 404 else EXIT_FAILED
            raise _fail(f"the API server refused ({e.status}): {e.message}", code) from None
        except KeyboardInterrupt:
            _console(stderr=True).print("interrupted; anything submitted keeps running")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


@app.callback()
def main(
    ctx: typer.Context,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config).")
    ] = None,
    context: Annotated[str | None, typer.Option(help="Kubeconfig context to use.")] = None,
    namespace: NamespaceOption = None,
) -> None:
    """Run multi-step AI-agent workflows on Kubernetes."""
    ctx.obj = Target(kubeconfig=kubeconfig, context=context, namespace=namespace)


def _connect(ctx: typer.Context, namespace: str | None = None) -> tuple[Cluster, str]:
    """The cluster of the global options, and the namespace a command works in."""
    target: Target = ctx.obj if isinstance(ctx.obj, Target) else Target()
    cluster = Cluster(target)
    return cluster, namespace or cluster.namespace


def _token() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Namespace to watch (repeatable).")
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace (the default).")
    ] = False,
    log_format: Annotated[str | None, typer.Option(help="json (the default) or text.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port for /metrics and /healthz (default 8080).")
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Address for the metrics server (default 0.0.0.0).")
    ] = None,
    metrics_auth: Annotated[
        bool, typer.Option(help="Require a bearer token allowed to GET /metrics.")
    ] = False,
    allowed_images: Annotated[
        str | None, typer.Option(help="Comma-separated agent images steps may use.")
    ] = None,
    allowed_secrets: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated names or patterns (fnmatch) of the Secrets agents may "
            "reference; an empty string allows none."
        ),
    ] = None,
    max_jobs_per_namespace: Annotated[
        int | None, typer.Option(help="Most step Jobs running at once in one namespace.")
    ] = None,
    step_service_account: Annotated[
        str | None, typer.Option(help="ServiceAccount for step pods.")
    ] = None,
    prices: Annotated[
        str | None,
        typer.Option(
            help='The price table, JSON: {"currency": "USD", "models": [{"provider": '
            '"anthropic", "model": "...", "inputPerMillion": "3", "outputPerMillion": "15"}]}.'
        ),
    ] = None,
    concurrency_limits: Annotated[
        str | None,
        typer.Option(
            help='Concurrency limits, JSON: [{"name": "anthropic", "provider": "anthropic", '
            '"max": 2}] (also "model" and "secret" patterns).'
        ),
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig (default: in-cluster).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator (the same as ``kopf run -m agentflow.main``).

    Flags take precedence over the environment variables of the same settings
    (``AGENTFLOW_*``, see docs/runbook.md); a bad value of either ends the command at once.
    """
    import kopf

    from agentflow import main  # noqa: F401  (registers the handlers)
    from agentflow.config import ConfigError, load_config
    from agentflow.metrics import port_in_use, port_in_use_message

    flags: dict[str, object] = {
        "namespaces": () if all_namespaces else (tuple(namespace) if namespace else None),
        "log_format": log_format,
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
        "metrics_auth": metrics_auth or None,
        "allowed_images": _split(allowed_images),
        "allowed_secrets": None if allowed_secrets is None else _split(allowed_secrets),
        "max_jobs_per_namespace": max_jobs_per_namespace,
        "step_service_account": step_service_account,
        "prices": prices,
        "concurrency_limits": concurrency_limits,
        "kubeconfig": kubeconfig,
    }
    try:
        config = load_config(os.environ, flags, OPERATOR_FLAGS)
    except ConfigError as e:
        raise _fail(str(e)) from None
    # A taken port fails here, at once, rather than after kopf has started (where the metrics
    # server raises the same message as a permanent start-up error).
    if config.metrics_port and port_in_use(config.metrics_host, config.metrics_port):
        raise _fail(port_in_use_message(config.metrics_host, config.metrics_port))

    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
        log_refkey="object",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=True,
            memo=kopf.Memo(config=config),
        )
    )


# The flag of each setting `agentflow operator` takes on its command line (for error messages).
OPERATOR_FLAGS = {
    "namespaces": "--namespace",
    "log_format": "--log-format",
    "metrics_port": "--metrics-port",
    "metrics_host": "--metrics-host",
    "metrics_auth": "--metrics-auth",
    "allowed_images": "--allowed-images",
    "allowed_secrets": "--allowed-secrets",
    "max_jobs_per_namespace": "--max-jobs-per-namespace",
    "step_service_account": "--step-service-account",
    "prices": "--prices",
    "concurrency_limits": "--concurrency-limits",
    "kubeconfig": "--kubeconfig",
}


def _split(items: str | None) -> list[str] | None:
    """A comma-separated list of a flag; None when the flag was not given."""
    if items is None:
        return None
    return [item.strip() for item in items.split(",") if item.strip()]


# ---- offline: validate and graph ----------------------------------------------------------


def _with_parameters(
    documents: list[Document], pairs: list[str] | None, files: list[str] | None
) -> list[Document]:
    """``documents`` with the inputs of -p and --param-file set; exits on a bad one."""
    from agentflow.console.params import ParameterError, parse_parameters, set_parameters

    try:
        return set_parameters(documents, parse_parameters(pairs or [], files or []))
    except ParameterError as e:
        raise _fail(str(e)) from None


@app.command()
def validate(
    files: Annotated[list[str], typer.Argument(help="YAML files with Workflows and policies.")],
    parameter: ParameterOption = None,
    param_file: ParamFileOption = None,
) -> None:
    """Check Workflows and AgentFallbackPolicies offline, as the operator would judge them.

    With -p/--param-file, the Workflows are checked with those inputs set, as submit sets them.
    """
    from agentflow.console.checks import validate_documents
    from agentflow.console.documents import load_files

    out = _console()
    documents, file_errors = load_files(files)
    documents = _with_parameters(documents, parameter, param_file)
    report = validate_documents(documents)
    for line in report.valid:
        out.print(f"OK {line}", style="green", soft_wrap=True, markup=False)
    for line in report.notes:
        out.print(f"note: {line}", style="dim", soft_wrap=True, markup=False)
    errors = file_errors + report.errors
    for line in errors:
        out.print(line, style="red", soft_wrap=True, markup=False)
    checked = len(report.valid) + len(report.invalid)
    if errors:
        raise _fail(f"{len(errors)} error(s); {len(report.valid)} of {checked} resource(s) valid")
    out.print(f"{len(report.valid)} resource(s) valid", soft_wrap=True)


@app.command()
@cli_errors
def graph(
    file: Annotated[str, typer.Argument(help="A YAML file with one or more Workflows.")],
    fmt: Annotated[GraphFormat, typer.Option("--format", help="Output format.")] = (
        GraphFormat.MERMAID
    ),
    name: Annotated[str | None, typer.Option(help="The Workflow, if the file has several.")] = (
        None
    ),
    parameter: ParameterOption = None,
    param_file: ParamFileOption = None,
) -> None:
    """Print a Workflow's step graph (Mermaid or Graphviz DOT); -p sets required inputs."""
    from agentflow.console import graph as graphs
    from agentflow.console.checks import validate_documents
    from agentflow.console.documents import DocumentError, load_file

    try:
        documents = load_file(file)
    except DocumentError as e:
        raise ConsoleError(str(e)) from None
    documents = _with_parameters(documents, parameter, param_file)
    candidates = [d for d in documents if d.kind == "Workflow" and (name is None or d.name == name)]
    if not candidates:
        which = f"named {name!r} " if name else ""
        raise ConsoleError(f"{file}: no Workflow {which}in the file")
    if len(candidates) > 1:
        names = ", ".join(d.name or "?" for d in candidates)
        raise ConsoleError(f"{file}: {len(candidates)} Workflows ({names}): pick one with --name")
    report = validate_documents(candidates, require_policy_refs=False)
    if not report.workflows:
        raise ConsoleError("\n".join(report.errors))
    for problem in report.errors:  # drawable, but say what the operator will reject
        _console(stderr=True).print(f"warning: {problem}", soft_wrap=True, markup=False)
    typer.echo(graphs.render(report.workflows[0][1], fmt), nl=False)


# ---- the cluster --------------------------------------------------------------------------


@app.command()
@cli_errors
def submit(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="YAML files to apply.")],
    namespace: NamespaceOption = None,
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Follow the Workflows until they finish.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: give up after this many seconds (exit 2).")
    ] = None,
    parameter: ParameterOption = None,
    param_file: ParamFileOption = None,
) -> None:
    """Apply every document (server-side apply); with --watch, follow the Workflows live.

    -p name=value (and --param-file) set the value of the Workflows' inputs (spec.arguments);
    a name no Workflow declares is an error.  A document with metadata.generateName and no
    name is created under a fresh name, which is printed.  Exit code with --watch: 0 when
    every Workflow succeeds, 1 when one fails, 2 on timeout.
    """
    from agentflow.console.checks import validate_documents
    from agentflow.console.documents import load_files
    from agentflow.console.watch import watch as follow

    documents, file_errors = load_files(files)
    documents = _with_parameters(documents, parameter, param_file)
    report = validate_documents(documents, require_policy_refs=False)
    if file_errors or report.errors:
        raise ConsoleError("\n".join([*file_errors, *report.errors]))
    for doc in documents:
        if namespace and doc.namespace and doc.namespace != namespace:
            raise ConsoleError(
                f"{doc.path}: {doc.label} is in namespace {doc.namespace}, not {namespace} (-n)"
            )
    cluster, ns = _connect(ctx, namespace)
    out = _console()
    refs: list[tuple[str, str]] = []
    # Policies first: a Workflow that arrives before its policy would fail on "not found".
    for doc in sorted(documents, key=lambda d: d.kind == "Workflow"):
        if doc.name is None and (doc.body.get("metadata") or {}).get("generateName"):
            applied, created = cluster.create(doc.body, doc.namespace or ns), True
        else:
            applied, created = cluster.apply(doc.body, doc.namespace or ns)
        meta = applied.get("metadata") or {}
        where, name = meta.get("namespace"), meta.get("name") or doc.name
        suffix = f" in namespace {where}" if where else ""
        label = f"{doc.kind}/{name}"
        out.print(f"{label} {'created' if created else 'configured'}{suffix}", markup=False)
        if doc.kind == "Workflow" and name and where:
            refs.append((where, name))
    if watch and refs:
        raise typer.Exit(follow(cluster, refs, out, timeout=timeout))


@app.command()
@cli_errors
def get(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One Workflow (default: all).")] = None,
    namespace: NamespaceOption = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Workflows of every namespace.")
    ] = False,
) -> None:
    """List Workflows: phase, progress, degraded, age and message."""
    from agentflow.console.views import workflows_table

    cluster, ns = _connect(ctx, namespace)
    if name is not None:
        items = [cluster.get_workflow(ns, name)]
    else:
        items = cluster.list_workflows(None if all_namespaces else ns)
    out = _console()
    if not items:
        where = "any namespace" if all_namespaces else f"namespace {ns}"
        out.print(f"No workflows found in {where}.")
        return
    out.print(workflows_table(items, all_namespaces, datetime.now(UTC)))


@app.command()
@cli_errors
def describe(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Workflow.")],
    namespace: NamespaceOption = None,
) -> None:
    """A Workflow in full: steps with results and attempts, conditions and recent events."""
    from agentflow.console.views import describe as render

    cluster, ns = _connect(ctx, namespace)
    obj = cluster.get_workflow(ns, name)
    events = cluster.events(ns, "Workflow", name, (obj.get("metadata") or {}).get("uid"))
    out = _console()
    for part in render(obj, events, datetime.now(UTC)):
        out.print(part, soft_wrap=False)


@app.command()
@cli_errors
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Workflow.")],
    step: Annotated[str, typer.Argument(help="The step.")],
    attempt: Annotated[
        int | None, typer.Option(help="Attempt number (default: the step's latest).")
    ] = None,
    iteration: Annotated[
        int | None, typer.Option(help="Iteration of a repeated step (default: the latest).")
    ] = None,
    namespace: NamespaceOption = None,
) -> None:
    """A step's full report: its output ConfigMap if it has one, else its Job's pod log."""
    from agentflow.children import OUTPUT_DATA_KEY, output_configmap_name
    from agentflow.console.views import status_of

    cluster, ns = _connect(ctx, namespace)
    obj = cluster.get_workflow(ns, name)
    status = status_of(obj).step(step)
    if status is None:
        known = ", ".join(s.get("name", "?") for s in (obj.get("spec") or {}).get("steps", []))
        raise ConsoleError(
            f"workflow {name!r} has no step {step!r} (steps: {known})", EXIT_NOT_FOUND
        )
    attempts = [
        a
        for a in status.attempts
        if (attempt is None or a.attempt == attempt)
        and (iteration is None or a.iteration == iteration)
    ]
    if (attempt is not None or iteration is not None) and not attempts:
        raise ConsoleError(f"step {step!r} has no such attempt", EXIT_NOT_FOUND)
    chosen = attempts[-1] if attempts else None
    result = status.result
    # The stored full report belongs to the Job that produced the result.
    output_ref = result.output_ref if result else None
    if output_ref and (chosen is None or output_configmap_name(chosen.job_name) == output_ref):
        cm = cluster.get_configmap(ns, output_ref)
        if cm is not None and OUTPUT_DATA_KEY in (cm.get("data") or {}):
            typer.echo(cm["data"][OUTPUT_DATA_KEY], nl=False)
            return
    if chosen is None:
        if result is not None:
            _console(stderr=True).print(
                f"step {step} ran no Job (phase {status.phase.value}); its summary:"
            )
            typer.echo(result.summary)
            return
        raise ConsoleError(f"step {step!r} has not run yet (phase {status.phase.value})")
    text = cluster.job_pod_log(ns, chosen.job_name)
    if text is None:
        raise ConsoleError(
            f"no log for job {chosen.job_name}: its pod is gone (Jobs are deleted an hour "
            "after they finish)"
        )
    typer.echo(text, nl=not text.endswith("\n"))


def _annotate(ctx: typer.Context, name: str, namespace: str | None, annotation: str) -> str:
    cluster, ns = _connect(ctx, namespace)
    token = _token()
    cluster.patch_workflow(ns, name, {"metadata": {"annotations": {annotation: token}}})
    return token


@app.command()
@cli_errors
def retry(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Workflow.")],
    namespace: NamespaceOption = None,
) -> None:
    """Run a Failed Workflow's failed (and never started) steps again; the rest is kept."""
    from agentflow.console.views import status_of

    cluster, ns = _connect(ctx, namespace)
    phase = status_of(cluster.get_workflow(ns, name)).phase.value
    token = _annotate(ctx, name, ns, ANNOTATION_RETRY)
    out = _console()
    out.print(f"retry requested for {ns}/{name} ({ANNOTATION_RETRY}={token})", markup=False)
    if phase != "Failed":
        out.print(f"note: the workflow is {phase}; a retry only acts on a Failed workflow")


@app.command()
@cli_errors
def rerun(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Workflow.")],
    namespace: NamespaceOption = None,
) -> None:
    """Run every step of a Workflow again (unchanged steps may come from the cache)."""
    token = _annotate(ctx, name, namespace, ANNOTATION_RERUN)
    _console().print(f"rerun requested for {name} ({ANNOTATION_RERUN}={token})", markup=False)


def _set_suspend(ctx: typer.Context, name: str, namespace: str | None, value: bool) -> None:
    cluster, ns = _connect(ctx, namespace)
    cluster.patch_workflow(ns, name, {"spec": {"suspend": value}})
    _console().print(f"workflow {ns}/{name} {'suspended' if value else 'resumed'}", markup=False)


@app.command()
@cli_errors
def suspend(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Workflow.")],
    namespace: NamespaceOption = None,
) -> None:
    """Start no new step Jobs (running ones finish): sets spec.suspend."""
    _set_suspend(ctx, name, namespace, True)


@app.command()
@cli_errors
def resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Workflow.")],
    namespace: NamespaceOption = None,
) -> None:
    """Let a suspended Workflow continue: clears spec.suspend."""
    _set_suspend(ctx, name, namespace, False)


def _cache_rows(cluster: Cluster, namespace: str | None) -> list[Any]:
    from agentflow.children import is_cache_configmap
    from agentflow.console.cache import CACHE_SELECTOR, CacheRow

    # Only the operator's own entries: a user's ConfigMap that merely carries the label is
    # neither listed nor purged (the operator's sweep leaves it alone too).
    rows = [
        CacheRow.of(cm)
        for cm in cluster.list_configmaps(namespace, CACHE_SELECTOR)
        if is_cache_configmap(cm)
    ]
    return sorted(rows, key=lambda r: (r.namespace, r.step, r.created or datetime.min))


@cache_app.command("ls")
@cli_errors
def cache_ls(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
) -> None:
    """List cached step results: step, key, created, expires."""
    from agentflow.console.views import cache_table

    cluster, ns = _connect(ctx, namespace)
    rows = _cache_rows(cluster, None if all_namespaces else ns)
    out = _console()
    if not rows:
        out.print(
            f"No cache entries in {'any namespace' if all_namespaces else f'namespace {ns}'}."
        )
        return
    out.print(cache_table(rows, datetime.now(UTC), all_namespaces))


@cache_app.command("purge")
@cli_errors
def cache_purge(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    expired_only: Annotated[bool, typer.Option(help="Delete only expired entries.")] = False,
) -> None:
    """Delete cached step results, so that the next runs execute every step."""
    cluster, ns = _connect(ctx, namespace)
    now = datetime.now(UTC)
    rows = _cache_rows(cluster, None if all_namespaces else ns)
    doomed = [r for r in rows if not expired_only or r.expired(now)]
    deleted = sum(1 for r in doomed if cluster.delete_configmap(r.namespace, r.name))
    kept = len(rows) - len(doomed)
    _console().print(f"deleted {deleted} cache entr{'y' if deleted == 1 else 'ies'}, kept {kept}")


# ---- commands of other distributions ---------------------------------------------------

# A distribution installed next to this one adds commands through this entry-point group, each
# a typer command function: agentflow-devcluster adds `agentflow dev` (the local development
# environment), which the operator's wheel and images do not carry.
COMMAND_ENTRY_POINTS = "agentflow.commands"
for _command in importlib.metadata.entry_points(group=COMMAND_ENTRY_POINTS):
    app.command(name=_command.name)(cli_errors(_command.load()))


if __name__ == "__main__":
    app(prog_name="agentflow")
