"""``agentflow dev``: the local cluster, the CRDs, the operator and an example, in one command.

Everything runs in the background on 127.0.0.1 and is reused when ``dev`` runs again:

- the control plane and the local node (``agentflow_devcluster``), state in ``--state-dir``;
- the operator, ``python -m agentflow.cli operator``, recorded in ``<state>/operator.json``
  (pid, metrics port, the kubeconfig and API server it was started for) with its log in
  ``<state>/logs/operator.log``.  Its metrics port is ``--metrics-port`` when given (a taken
  port is an error), else 8080, else, when 8080 is taken, a free port, which ``dev`` prints;
- the ``finance-feature`` example (with its fallback policy) in namespace ``default``, watched
  until it finishes.

A recorded operator is reused only if its process is still ours, it was started for the
cluster's current kubeconfig and API server, and its ``/healthz`` answers 200; otherwise
``dev`` says why and restarts it.  ``agentflow dev --restart-operator`` (re)starts only the
operator, ``--status`` shows what runs, ``--stop`` stops the operator and then the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from agentflow.children import ANNOTATION_RERUN
from agentflow.console.cluster import EXIT_FAILED, Cluster, ConsoleError, Target
from agentflow.console.documents import load_file
from agentflow.console.views import is_current, status_of
from agentflow.console.watch import TERMINAL, watch
from agentflow.metrics import port_in_use
from agentflow_devcluster import LocalCluster, LocalClusterError
from agentflow_devcluster.controlplane import (
    group_members,
    log_tail,
    process_start_ticks,
    repo_root,
)

EXAMPLE = Path("workflows") / "finance-feature.yaml"
EXAMPLE_NAMESPACE = "default"
LLM_EXAMPLE = Path("workflows") / "llm-code-review.yaml"
LLM_SECRET = "llm-api-keys"
OPERATOR_STATE_FILE = "operator.json"
LEGACY_PID_FILE = "operator.pid"  # written by earlier versions: pid only
OPERATOR_LOG = Path("logs") / "operator.log"
METRICS_HOST = "127.0.0.1"
PREFERRED_METRICS_PORT = 8080
OPERATOR_READY_SECONDS = 90.0
OPERATOR_STOP_SECONDS = 20.0
HEALTH_TIMEOUT_SECONDS = 2.0
CRD_ESTABLISHED_SECONDS = 60.0
_POLL = 0.25


def _repo() -> Path:
    root = repo_root()
    if root is None:
        raise ConsoleError(
            "agentflow dev runs from a checkout of the agentflow repository "
            "(it needs crds/ and workflows/); clone it and run `make dev`"
        )
    return root


def _shown(path: Path | str) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# -- the operator process -----------------------------------------------------------------


@dataclass(frozen=True)
class OperatorProcess:
    """The background operator, as recorded in ``<state>/operator.json`` when it started."""

    pid: int
    metrics_port: int
    start_ticks: int | None = None
    kubeconfig: str = ""
    server: str = ""  # the API server of the kubeconfig when the operator started
    started: str = ""

    @property
    def metrics_url(self) -> str:
        return f"http://{METRICS_HOST}:{self.metrics_port}/metrics"

    @property
    def healthz_url(self) -> str:
        return f"http://{METRICS_HOST}:{self.metrics_port}/healthz"


@dataclass(frozen=True)
class OperatorCheck:
    """What ``check_operator`` found: the live operator (if any) and why it cannot be reused."""

    operator: OperatorProcess | None
    problem: str | None

    @property
    def reusable(self) -> bool:
        return self.operator is not None and self.problem is None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_operator(state_dir: Path) -> OperatorProcess | None:
    """The operator recorded in ``state_dir`` (running or not); an old pid-only record too."""
    try:
        data = json.loads((state_dir / OPERATOR_STATE_FILE).read_text())
        return OperatorProcess(**data)
    except (OSError, ValueError, TypeError):
        pass
    try:
        pid = int((state_dir / LEGACY_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    argv = _cmdline(pid) or []
    try:
        port = int(argv[argv.index("--metrics-port") + 1])
    except (ValueError, IndexError):
        port = 0
    return OperatorProcess(pid, port)


def _write_operator(state_dir: Path, operator: OperatorProcess) -> None:
    tmp = state_dir / (OPERATOR_STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(operator), indent=2) + "\n")
    tmp.replace(state_dir / OPERATOR_STATE_FILE)


def _forget_operator(state_dir: Path) -> None:
    (state_dir / OPERATOR_STATE_FILE).unlink(missing_ok=True)
    (state_dir / LEGACY_PID_FILE).unlink(missing_ok=True)


def _is_ours(operator: OperatorProcess) -> bool:
    """The recorded pid is still that operator: same start time, our command line, alive."""
    ticks = operator.start_ticks
    if ticks is not None and process_start_ticks(operator.pid) != ticks:
        return False
    argv = _cmdline(operator.pid)
    if not argv or "agentflow.cli" not in argv or "operator" not in argv:
        return False
    return bool(group_members(operator.pid))


def kubeconfig_server(kubeconfig: Path) -> str | None:
    """The API server address of the kubeconfig's current context."""
    try:
        config: Any = yaml.safe_load(kubeconfig.read_text())
        context = next(
            c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
        )
        server = next(
            c["cluster"]["server"] for c in config["clusters"] if c["name"] == context["cluster"]
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration):
        return None
    return str(server)


def probe_health(port: int) -> tuple[bool, str]:
    """GET /healthz of the operator on ``port``: (healthy, what it answered)."""
    url = f"http://{METRICS_HOST}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            return response.status == 200, f"{response.status}"
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace").strip()[:200]
        return False, f"{e.code} {body}".strip()
    except urllib.error.URLError as e:
        return False, str(e.reason)
    except OSError as e:  # a timeout while reading, a reset connection
        return False, str(e) or type(e).__name__


def check_operator(state_dir: Path, kubeconfig: Path, server: str) -> OperatorCheck:
    """Whether the recorded operator can be reused for the cluster now serving at ``server``.

    A live pid is not enough: the operator reads its kubeconfig once, at start-up, so one
    started before the cluster moved to other ports talks to an address nobody serves; and a
    hung or broken operator fails its /healthz.
    """
    operator = read_operator(state_dir)
    if operator is None:
        return OperatorCheck(None, None)
    if not _is_ours(operator):
        return OperatorCheck(None, f"the recorded operator (pid {operator.pid}) is not running")
    who = f"operator pid {operator.pid}"
    if not operator.server:
        return OperatorCheck(
            operator, f"{who} was started by an older agentflow dev that did not record its cluster"
        )
    if operator.kubeconfig != str(kubeconfig):
        return OperatorCheck(
            operator, f"{who} was started for kubeconfig {operator.kubeconfig}, not {kubeconfig}"
        )
    if operator.server != server:
        return OperatorCheck(
            operator,
            f"{who} was started for the API server at {operator.server}, but the local "
            f"cluster now serves {server}",
        )
    healthy, answer = probe_health(operator.metrics_port)
    if not healthy:
        return OperatorCheck(
            operator, f"{who} is not healthy: GET {operator.healthz_url}: {answer}"
        )
    return OperatorCheck(operator, None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((METRICS_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_taken_error(port: int) -> ConsoleError:
    return ConsoleError(
        f"metrics port {port} on {METRICS_HOST} is already in use by another process: choose "
        f"another with --metrics-port, or leave --metrics-port out (agentflow dev then uses "
        f"{PREFERRED_METRICS_PORT}, or a free port when {PREFERRED_METRICS_PORT} is taken)"
    )


def choose_metrics_port(requested: int | None) -> tuple[int, str | None]:
    """The port for a new operator, and a note to print when it is not the one expected.

    A requested port must be free (else an error naming it and the flag); without one,
    8080, else a free port the note names.
    """
    if requested is not None:
        if port_in_use(METRICS_HOST, requested):
            raise _port_taken_error(requested)
        return requested, None
    if not port_in_use(METRICS_HOST, PREFERRED_METRICS_PORT):
        return PREFERRED_METRICS_PORT, None
    port = _free_port()
    return port, (
        f"port {PREFERRED_METRICS_PORT} is in use by another process, so the operator's "
        f"metrics are on port {port} instead (pick one with --metrics-port)"
    )


def start_operator(
    state_dir: Path, kubeconfig: Path, port: int, server: str | None = None
) -> OperatorProcess:
    """Start the operator in its own session (it outlives this command) and wait for /healthz.

    ``server`` is the API server the kubeconfig points at (read from it when not given); it is
    recorded so that a later ``dev`` can tell whether the operator still matches the cluster.
    """
    log_path = state_dir / OPERATOR_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "agentflow.cli",
        "operator",
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-port",
        str(port),
        "--metrics-host",
        METRICS_HOST,
        "--log-format",
        "text",
    ]
    started = datetime.now(UTC).isoformat()
    with log_path.open("ab") as log:
        log.write(f"# {started} {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    operator = OperatorProcess(
        pid=process.pid,
        metrics_port=port,
        start_ticks=process_start_ticks(process.pid),
        kubeconfig=str(kubeconfig),
        server=server or kubeconfig_server(kubeconfig) or "",
        started=started,
    )
    _write_operator(state_dir, operator)
    (state_dir / LEGACY_PID_FILE).unlink(missing_ok=True)
    deadline = time.monotonic() + OPERATOR_READY_SECONDS
    while not probe_health(port)[0]:
        code = process.poll()
        if code is not None:
            _forget_operator(state_dir)
            raise ConsoleError(
                f"the operator exited with code {code}; last lines of {_shown(log_path)}:\n"
                f"{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop_operator(state_dir)
            raise ConsoleError(
                f"the operator was not healthy within {OPERATOR_READY_SECONDS:g}s; last lines "
                f"of {_shown(log_path)}:\n{log_tail(log_path)}"
            )
        time.sleep(_POLL)
    return operator


def stop_operator(state_dir: Path) -> int | None:
    """Stop the operator recorded in ``state_dir`` (its whole process group); its pid if it ran."""
    operator = read_operator(state_dir)
    stopped: int | None = None
    if operator is not None and _is_ours(operator):
        pid = stopped = operator.pid
        for sig, grace in ((signal.SIGTERM, OPERATOR_STOP_SECONDS), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
                os.killpg(pid, signal.SIGCONT)  # a stopped (hung) operator must see SIGTERM
            deadline = time.monotonic() + grace
            while group_members(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not group_members(pid):
                break
    _forget_operator(state_dir)
    return stopped


def ensure_operator(
    console: Console,
    local: LocalCluster,
    metrics_port: int | None = None,
    restart: bool = False,
) -> OperatorProcess:
    """Reuse the recorded operator if it is healthy and current, else (re)start it, saying why.

    ``restart`` restarts even a healthy one.  A requested ``metrics_port`` that another
    process holds fails before anything is stopped.
    """
    server = local.api_url
    check = check_operator(local.state_dir, local.kubeconfig, server)
    running = check.operator
    wrong_port = (
        running is not None and metrics_port is not None and running.metrics_port != metrics_port
    )
    if check.reusable and running is not None and not restart and not wrong_port:
        console.print(
            f"operator already running (pid {running.pid}, healthy, metrics on "
            f"{running.metrics_url})",
            highlight=False,
        )
        return running
    # The port a running operator holds is freed by stopping it; any other must be free now.
    requested_elsewhere = metrics_port is not None and (running is None or wrong_port)
    if metrics_port is not None and requested_elsewhere and port_in_use(METRICS_HOST, metrics_port):
        raise _port_taken_error(metrics_port)
    if check.problem:
        action = "restarting it" if running is not None else "starting a new one"
        console.print(f"{check.problem}: {action}", highlight=False)
    elif wrong_port and running is not None:
        console.print(
            f"operator pid {running.pid} serves metrics on port {running.metrics_port}, not "
            f"{metrics_port} (--metrics-port): restarting it",
            highlight=False,
        )
    stopped = None
    if running is not None:
        with console.status(f"stopping the operator (pid {running.pid})"):
            stopped = stop_operator(local.state_dir)
    else:
        _forget_operator(local.state_dir)
    port, note = choose_metrics_port(metrics_port)
    if note:
        console.print(note, highlight=False)
    with console.status("starting the operator"):
        operator = start_operator(local.state_dir, local.kubeconfig, port, server)
    verb = (
        f"restarted (pid {operator.pid}, was {stopped})"
        if stopped
        else (f"started (pid {operator.pid})")
    )
    console.print(f"operator {verb}, healthy; metrics on {operator.metrics_url}", highlight=False)
    return operator


# -- CRDs and the example -----------------------------------------------------------------


def install_crds(cluster: Cluster, crd_dir: Path) -> list[str]:
    """Server-side apply every CRD in ``crd_dir`` and wait until each is Established."""
    files = sorted(crd_dir.glob("*.yaml"))
    if not files:
        raise ConsoleError(f"no CRDs in {_shown(crd_dir)}: run `make crds`")
    names: list[str] = []
    for path in files:
        for doc in load_file(path):
            cluster.apply(doc.body)
            if doc.name:
                names.append(doc.name)
    for name in names:
        crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        deadline = time.monotonic() + CRD_ESTABLISHED_SECONDS
        while True:
            crd = cluster.request("GET", crd_path)
            conditions = (crd.get("status") or {}).get("conditions") or []
            established = [c for c in conditions if c.get("type") == "Established"]
            if established and established[0].get("status") == "True":
                break
            if time.monotonic() > deadline:
                raise ConsoleError(f"CRD {name} was not Established within 60s")
            time.sleep(_POLL)
    return names


def _submit_example(cluster: Cluster, example: Path, console: Console) -> list[tuple[str, str]]:
    """Apply the example's documents; re-run a Workflow that had already finished."""
    refs: list[tuple[str, str]] = []
    documents = sorted(load_file(example), key=lambda d: d.kind == "Workflow")
    for doc in documents:
        applied, _ = cluster.apply(doc.body, EXAMPLE_NAMESPACE)
        console.print(f"applied {doc.label} in namespace {EXAMPLE_NAMESPACE}", highlight=False)
        if doc.kind != "Workflow" or not doc.name:
            continue
        refs.append((EXAMPLE_NAMESPACE, doc.name))
        if is_current(applied) and status_of(applied).phase.value in TERMINAL:
            token = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
            cluster.patch_workflow(
                EXAMPLE_NAMESPACE,
                doc.name,
                {"metadata": {"annotations": {ANNOTATION_RERUN: token}}},
            )
            console.print(
                f"{doc.name} had already finished: running it again "
                "(unchanged steps come from the result cache)",
                highlight=False,
            )
    return refs


def _next_steps(
    console: Console,
    cluster_state: LocalCluster,
    operator: OperatorProcess,
    state_dir: Path,
    llm_key: bool,
) -> None:
    venv = Path(sys.executable).parent
    flag = _state_flag(state_dir)
    lines = [
        "",
        "[bold]The cluster and the operator keep running in the background.[/bold] Next:",
    ]
    if sys.prefix != sys.base_prefix:
        lines.append(f"  source {_shown(venv / 'activate')}    # agentflow and kubectl on PATH")
    lines += [
        f"  export KUBECONFIG={_shown(cluster_state.kubeconfig)}",
        "  kubectl get awf                                  # Workflows (short name awf)",
        "  agentflow describe finance-feature               # steps, results, events",
        "  agentflow submit workflows/health-check.yaml --watch",
    ]
    if llm_key:
        lines.append(
            f"  agentflow submit {LLM_EXAMPLE} --watch   # Secret {LLM_SECRET} found: a real LLM"
        )
    lines += [
        f"  curl -s {operator.metrics_url}    # operator metrics",
        f"  operator log: {_shown(state_dir / OPERATOR_LOG)}",
        f"  agentflow dev --restart-operator{flag}    # only the operator, after a code change",
        f"  agentflow dev --status{flag}",
        f"Stop everything: agentflow dev --stop{flag}",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _state_flag(state_dir: Path) -> str:
    default = LocalCluster(_repo() / ".agentflow" / "cluster").state_dir
    return "" if state_dir.resolve() == default else f" --state-dir {_shown(state_dir)}"


def run_dev(
    console: Console,
    state_dir: Path,
    exit_when_done: bool,
    timeout: float | None,
    metrics_port: int | None = None,
) -> int:
    """Bring everything up, run the example, print what to do next; see the module docstring."""
    repo = _repo()
    local = LocalCluster(state_dir)
    try:
        began = time.monotonic()
        with console.status("starting the local control plane (the first start takes a while)"):
            local.start()
        console.print(f"control plane ready at {local.api_url} ({time.monotonic() - began:.0f}s)")
        with console.status("starting the local node"):
            local.start_node()
        console.print("node agentflow-local ready")
    except LocalClusterError as e:
        raise ConsoleError(str(e)) from None
    cluster = Cluster(Target(kubeconfig=str(local.kubeconfig)))
    try:
        crds = install_crds(cluster, repo / "crds")
        console.print(f"CRDs installed: {', '.join(crds)}", highlight=False)
        operator = ensure_operator(console, local, metrics_port)
        refs = _submit_example(cluster, repo / EXAMPLE, console)
        code = watch(cluster, refs, console, timeout=timeout)
        llm_key = cluster.secret_exists(EXAMPLE_NAMESPACE, LLM_SECRET)
    finally:
        cluster.close()
    _next_steps(console, local, operator, local.state_dir, llm_key)
    if exit_when_done:
        return code
    return 0 if code in (0, EXIT_FAILED) else code


def restart_operator(
    console: Console, state_dir: Path, metrics_port: int | None = None
) -> OperatorProcess:
    """Start, or restart if one runs, only the operator, against the running local cluster.

    The CRDs are applied first (cheap, and a changed CRD comes with the changed operator); the
    cluster, the node and the workflows are left alone.
    """
    repo = _repo()
    local = LocalCluster(state_dir)
    if not local.is_running():
        raise ConsoleError(
            f"no local cluster is running in {_shown(local.state_dir)}: start it with "
            f"`agentflow dev{_state_flag(local.state_dir)}` (or `make dev`)"
        )
    cluster = Cluster(Target(kubeconfig=str(local.kubeconfig)))
    try:
        crds = install_crds(cluster, repo / "crds")
    finally:
        cluster.close()
    console.print(f"CRDs installed: {', '.join(crds)}", highlight=False)
    operator = ensure_operator(console, local, metrics_port, restart=True)
    console.print(f"operator log: {_shown(local.state_dir / OPERATOR_LOG)}", highlight=False)
    return operator


def status_dev(console: Console, state_dir: Path) -> int:
    """Print what runs (cluster, node, operator with its metrics URL); 0 when all is well."""
    local = LocalCluster(state_dir)
    ok = True
    if local.is_running():
        server = local.api_url
        console.print(f"cluster: running at {server}", highlight=False)
        console.print(f"  kubeconfig: {_shown(local.kubeconfig)}", highlight=False)
    else:
        ok = False
        server = ""
        console.print(f"cluster: not running (state in {_shown(local.state_dir)})")
    console.print(f"node: {'running' if local.node_running() else 'not running'}")
    operator = read_operator(local.state_dir)
    if operator is None:
        ok = False
        console.print("operator: not running")
    elif not server:
        ok = False
        running = _is_ours(operator)
        state = f"pid {operator.pid} runs, but its cluster does not" if running else "not running"
        console.print(f"operator: {state}", highlight=False)
    else:
        check = check_operator(local.state_dir, local.kubeconfig, server)
        if check.reusable:
            console.print(
                f"operator: running (pid {operator.pid}), healthy, for {operator.server}",
                highlight=False,
            )
        else:
            ok = False
            console.print(f"operator: {check.problem}", highlight=False)
        if check.operator is not None:
            console.print(f"  metrics: {operator.metrics_url}", highlight=False)
        console.print(f"  log: {_shown(local.state_dir / OPERATOR_LOG)}", highlight=False)
    if not ok:
        console.print(
            f"`agentflow dev{_state_flag(local.state_dir)}` starts or restarts what is missing",
            highlight=False,
        )
    return 0 if ok else 1


def stop_dev(console: Console, state_dir: Path) -> None:
    """Stop the operator, then the node and the control plane."""
    local = LocalCluster(state_dir)
    pid = stop_operator(local.state_dir)
    if pid is not None:
        console.print(f"operator stopped (pid {pid})")
    try:
        local.stop()
    except LocalClusterError as e:
        raise ConsoleError(str(e)) from None
    console.print(f"cluster in {_shown(local.state_dir)} stopped")
