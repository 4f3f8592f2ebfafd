"""``agentflow dev``: the local cluster, the CRDs, the operator and an example, in one command.

Everything runs in the background on 127.0.0.1 and is reused when ``dev`` runs again:

- the control plane and the local node (``agentflow.localcluster``), state in ``--state-dir``;
- the operator, ``python -m agentflow.cli operator``, its pid in ``<state>/operator.pid`` and
  its log in ``<state>/logs/operator.log``; the metrics port is 8080 when free;
- the ``finance-feature`` example (with its fallback policy) in namespace ``default``, watched
  until it finishes.

``agentflow dev --stop`` stops the operator and then the cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from agentflow.console.cluster import EXIT_FAILED, Cluster, ConsoleError, Target
from agentflow.console.documents import load_file
from agentflow.console.views import is_current, status_of
from agentflow.console.watch import TERMINAL, watch
from agentflow.localcluster import LocalCluster, LocalClusterError
from agentflow.localcluster.controlplane import group_members, log_tail, repo_root

EXAMPLE = Path("workflows") / "finance-feature.yaml"
EXAMPLE_NAMESPACE = "default"
LLM_EXAMPLE = Path("workflows") / "llm-code-review.yaml"
LLM_SECRET = "llm-api-keys"
OPERATOR_PID_FILE = "operator.pid"
OPERATOR_LOG = Path("logs") / "operator.log"
PREFERRED_METRICS_PORT = 8080
OPERATOR_READY_SECONDS = 90.0
OPERATOR_STOP_SECONDS = 20.0
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


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# -- the operator process -----------------------------------------------------------------


@dataclass(frozen=True)
class OperatorProcess:
    pid: int
    metrics_port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_operator(state_dir: Path, kubeconfig: Path) -> OperatorProcess | None:
    """The operator ``dev`` started for this cluster, if it still runs.

    The pid file alone could name a recycled pid, so the process's command line must be ours:
    ``agentflow.cli operator`` with this kubeconfig.
    """
    try:
        pid = int((state_dir / OPERATOR_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    argv = _cmdline(pid)
    if not argv or "agentflow.cli" not in argv or "operator" not in argv:
        return None
    if str(kubeconfig) not in argv or not group_members(pid):
        return None
    try:
        port = int(argv[argv.index("--metrics-port") + 1])
    except (ValueError, IndexError):
        return None
    return OperatorProcess(pid, port)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_operator(state_dir: Path, kubeconfig: Path) -> OperatorProcess:
    """Start the operator in its own session (it outlives this command) and wait for /healthz."""
    port = PREFERRED_METRICS_PORT if _port_free(PREFERRED_METRICS_PORT) else _free_port()
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
        "127.0.0.1",
        "--log-format",
        "text",
    ]
    with log_path.open("ab") as log:
        log.write(f"# {datetime.now(UTC).isoformat()} {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir / OPERATOR_PID_FILE).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + OPERATOR_READY_SECONDS
    while not _healthy(port):
        code = process.poll()
        if code is not None:
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
    return OperatorProcess(process.pid, port)


def stop_operator(state_dir: Path) -> bool:
    """Stop the operator recorded in ``state_dir`` (its whole process group); True if it ran."""
    pid_file = state_dir / OPERATOR_PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    argv = _cmdline(pid) or []
    ours = "agentflow.cli" in argv and "operator" in argv
    stopped = False
    if ours and group_members(pid):
        stopped = True
        for sig, grace in ((signal.SIGTERM, OPERATOR_STOP_SECONDS), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + grace
            while group_members(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not group_members(pid):
                break
    pid_file.unlink(missing_ok=True)
    return stopped


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
                {"metadata": {"annotations": {"agentflow.dev/rerun": token}}},
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
        f"Stop everything: agentflow dev --stop{_state_flag(state_dir)}",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _state_flag(state_dir: Path) -> str:
    default = LocalCluster(_repo() / ".agentflow" / "cluster").state_dir
    return "" if state_dir.resolve() == default else f" --state-dir {_shown(state_dir)}"


def run_dev(console: Console, state_dir: Path, exit_when_done: bool, timeout: float | None) -> int:
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
        operator = running_operator(local.state_dir, local.kubeconfig)
        if operator is None:
            with console.status("starting the operator"):
                operator = start_operator(local.state_dir, local.kubeconfig)
            console.print(f"operator started (pid {operator.pid})")
        else:
            console.print(f"operator already running (pid {operator.pid})")
        refs = _submit_example(cluster, repo / EXAMPLE, console)
        code = watch(cluster, refs, console, timeout=timeout)
        llm_key = cluster.secret_exists(EXAMPLE_NAMESPACE, LLM_SECRET)
    finally:
        cluster.close()
    _next_steps(console, local, operator, local.state_dir, llm_key)
    if exit_when_done:
        return code
    return 0 if code in (0, EXIT_FAILED) else code


def stop_dev(console: Console, state_dir: Path) -> None:
    """Stop the operator, then the node and the control plane."""
    local = LocalCluster(state_dir)
    if stop_operator(local.state_dir):
        console.print("operator stopped")
    try:
        local.stop()
    except LocalClusterError as e:
        raise ConsoleError(str(e)) from None
    console.print(f"cluster in {_shown(local.state_dir)} stopped")
