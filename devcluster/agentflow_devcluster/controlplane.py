"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``hack/build-binaries.sh`` (``make binaries``).  Each component runs in its
own process group with its output in ``<state>/logs/<component>.log``; pids and ports live in
``<state>/cluster.json`` so that another process (``python -m agentflow_devcluster down``, a
second test session) can find, reuse or stop the cluster.  Ports are chosen at runtime.

Layout of the state directory::

    cluster.json    pids, process start times and ports of the running components
    kubeconfig      admin kubeconfig, context "agentflow-local"
    node.kubeconfig the node's own identity (system:node:agentflow-local), for Node authorization
    pki/            certificates and keys, see ``agentflow_devcluster.pki``
    etcd/           etcd data (kept across restarts)
    logs/           etcd.log, kube-apiserver.log, kube-controller-manager.log, node.log
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import importlib.util
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agentflow_devcluster import pki

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
NODE = "node"
CONTROL_PLANE = (ETCD, APISERVER, CONTROLLER_MANAGER)
# Stop order: dependants first.
STOP_ORDER = (NODE, CONTROLLER_MANAGER, APISERVER, ETCD)

CONTEXT = "agentflow-local"
NODE_NAME = pki.NODE_NAME
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# Metadata-level audit of every request made by a service account; nothing else is logged.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# What the operator needs from a controller manager: Jobs and their TTL, cascading deletes,
# namespace deletion, default ServiceAccounts (the ServiceAccount admission plugin stays on, as
# in a real cluster) and the kube-root-ca.crt ConfigMap that projected SA tokens mount.
CONTROLLERS = (
    "job",
    "garbagecollector",
    "ttl-after-finished",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-certificate-publisher-controller",
)
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 30
_PORT_ATTEMPTS = 3
_POLL = 0.2


class LocalClusterError(RuntimeError):
    """The local cluster could not be started, reached or stopped."""


class MissingBinaryError(LocalClusterError):
    """A control-plane binary is not built yet."""


def repo_root() -> Path | None:
    """The agentflow checkout this module runs from, if it runs from one (editable install)."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "operator" / "agentflow").is_dir():
        return root
    return None


def default_state_dir() -> Path:
    """``$AGENTFLOW_STATE_DIR``, else ``<repo>/.agentflow/cluster``, else the user cache."""
    if env := os.environ.get("AGENTFLOW_STATE_DIR"):
        return Path(env)
    root = repo_root()
    if root is not None:
        return root / ".agentflow" / "cluster"
    return Path.home() / ".cache" / "agentflow" / "state"


def default_bin_dir() -> Path:
    """``$AGENTFLOW_BIN_DIR``, else ``~/.cache/agentflow/bin`` (where ``make binaries`` links)."""
    if env := os.environ.get("AGENTFLOW_BIN_DIR"):
        return Path(env)
    return Path.home() / ".cache" / "agentflow" / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------------------
# Processes, through /proc: no extra dependency, and it sees processes started by other sessions.


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None if it is gone or a zombie."""
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int, start_ticks: int) -> bool:
    """True if ``pid`` is still the very process that started at ``start_ticks``."""
    return process_start_ticks(pid) == start_ticks


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ComponentRecord:
    """One running component as recorded in cluster.json."""

    pid: int
    start_ticks: int
    log: str
    ports: dict[str, int]

    def alive(self) -> bool:
        return process_alive(self.pid, self.start_ticks)


@dataclass
class _Launch:
    """A component being started: the process, where it logs, and its ports."""

    name: str
    process: subprocess.Popen[bytes]
    record: ComponentRecord


class LocalCluster:
    """The local control plane in ``state_dir``; see the module docstring."""

    def __init__(self, state_dir: Path, bin_dir: Path | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.bin_dir = (bin_dir or default_bin_dir()).expanduser()
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.node_kubeconfig = self.state_dir / "node.kubeconfig"
        self.logs_dir = self.state_dir / "logs"
        self.pki_dir = self.state_dir / "pki"
        self.audit_policy = self.state_dir / "audit-policy.yaml"
        self.audit_log = self.logs_dir / "audit.log"
        self.etcd_dir = self.state_dir / "etcd"
        self.state_file = self.state_dir / "cluster.json"
        self._lock_file = self.state_dir / ".lock"
        # Children started by this process, so that stop() can reap them (no zombies).
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ recorded state

    def _read_records(self) -> dict[str, ComponentRecord]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {name: ComponentRecord(**rec) for name, rec in data.get("components", {}).items()}

    def _write_records(self, records: Mapping[str, ComponentRecord]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".json.tmp")
        body = {"components": {name: asdict(rec) for name, rec in records.items()}}
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _record(self, name: str, rec: ComponentRecord | None) -> None:
        records = self._read_records()
        if rec is None:
            records.pop(name, None)
        else:
            records[name] = rec
        if records:
            self._write_records(records)
        else:
            self.state_file.unlink(missing_ok=True)

    @property
    def api_url(self) -> str:
        """``https://127.0.0.1:<port>`` of the running apiserver."""
        rec = self._read_records().get(APISERVER)
        if rec is None:
            raise LocalClusterError(f"no kube-apiserver recorded in {self.state_file}")
        return f"https://127.0.0.1:{rec.ports['secure']}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop across processes (two test sessions may start the same dir)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock_file.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ HTTP to the apiserver

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / pki.CA_CERT))
        ctx.load_cert_chain(self.pki_dir / pki.ADMIN_CERT, self.pki_dir / pki.ADMIN_KEY)
        return ctx

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, api_url: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """One admin request to the apiserver; (status, JSON body). Status 0: unreachable."""
        url = (api_url or self.api_url) + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=5) as resp:
                raw = resp.read()
                status = int(resp.status)
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        except (OSError, ssl.SSLError):
            return 0, {}
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"text": raw.decode(errors="replace")}
        return status, parsed if isinstance(parsed, dict) else {"value": parsed}

    def _apiserver_ready(self, api_url: str = "") -> bool:
        status, _ = self._request("GET", "/readyz", api_url=api_url)
        return status == 200

    # ------------------------------------------------------------------ queries

    def is_running(self) -> bool:
        """The control plane's processes are alive and the apiserver answers /readyz."""
        records = self._read_records()
        if not all(name in records and records[name].alive() for name in CONTROL_PLANE):
            return False
        return self._apiserver_ready()

    def node_running(self) -> bool:
        rec = self._read_records().get(NODE)
        return rec is not None and rec.alive()

    def status(self) -> dict[str, object]:
        """Per component: pid, alive, url (where it listens) and log path."""
        records = self._read_records()
        components: dict[str, object] = {}
        for name in (*CONTROL_PLANE, NODE):
            rec = records.get(name)
            entry: dict[str, object] = {
                "pid": rec.pid if rec else None,
                "alive": rec.alive() if rec else False,
                "log": str(self.logs_dir / f"{name}.log"),
            }
            if rec and name == ETCD:
                entry["url"] = f"http://127.0.0.1:{rec.ports['client']}"
            elif rec and name == APISERVER:
                entry["url"] = f"https://127.0.0.1:{rec.ports['secure']}"
            components[name] = entry
        return {
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig),
            "running": self.is_running(),
            "components": components,
        }

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 120.0) -> None:
        """Start etcd, kube-apiserver and kube-controller-manager; reuse them if already up."""
        with self._locked():
            if self.is_running():
                return
            # Whatever is left of a half-dead cluster goes first: a fresh start is simpler to
            # reason about than adopting some components.
            self._stop_components(STOP_ORDER)
            for name in CONTROL_PLANE:
                self._binary(name)  # fail fast, before anything starts
            pki.ensure_pki(self.pki_dir)
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + timeout
            try:
                self._start_etcd(deadline)
                self._start_apiserver(deadline)
                self._write_kubeconfigs()
                self._start_controller_manager(deadline)
            except BaseException:
                self._stop_components(STOP_ORDER)
                raise

    def _binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingBinaryError(
                f"{name} not found in {self.bin_dir}: run `make binaries` (hack/build-binaries.sh)"
                " or set AGENTFLOW_BIN_DIR"
            )
        return path

    def _spawn(self, name: str, argv: list[str], ports: dict[str, int]) -> _Launch:
        log = self.logs_dir / f"{name}.log"
        with log.open("wb") as out:
            out.write(f"# {datetime.now(UTC).isoformat()} {' '.join(argv)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,  # its own process group, so stop() gets its children
            )
        ticks = process_start_ticks(process.pid)
        if ticks is None:  # died at once; wait() below reports it
            ticks = -1
        self._children[name] = process
        record = ComponentRecord(process.pid, ticks, str(log), ports)
        self._record(name, record)
        return _Launch(name, process, record)

    def _wait_ready(self, launch: _Launch, ready: Callable[[], bool], deadline: float) -> None:
        log = Path(launch.record.log)
        while True:
            code = launch.process.poll()
            if code is not None:
                self._record(launch.name, None)
                raise LocalClusterError(
                    f"{launch.name} exited with code {code} while starting; last lines of {log}:\n"
                    f"{log_tail(log)}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"{launch.name} (pid {launch.process.pid}) was not ready in time;"
                    f" last lines of {log}:\n{log_tail(log)}"
                )
            time.sleep(_POLL)

    def _start_with_ports(
        self,
        name: str,
        port_names: tuple[str, ...],
        argv: Callable[[dict[str, int]], list[str]],
        ready: Callable[[dict[str, int]], bool],
        deadline: float,
        fixed: dict[str, int] | None = None,
    ) -> dict[str, int]:
        """Start a component on fresh ports (or ``fixed`` ones); retry a port clash elsewhere."""
        attempts = 1 if fixed else _PORT_ATTEMPTS
        for attempt in range(attempts):
            ports = dict(fixed) if fixed else {p: free_port() for p in port_names}
            launch = self._spawn(name, argv(ports), ports)
            try:
                self._wait_ready(launch, functools.partial(ready, ports), deadline)
                return ports
            except LocalClusterError:
                clash = "address already in use" in log_tail(Path(launch.record.log)).lower()
                if not clash or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_etcd(self, deadline: float, fixed: dict[str, int] | None = None) -> None:
        def argv(ports: dict[str, int]) -> list[str]:
            client = f"http://127.0.0.1:{ports['client']}"
            peer = f"http://127.0.0.1:{ports['peer']}"
            return [
                str(self._binary(ETCD)),
                "--name=agentflow",
                f"--data-dir={self.etcd_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=agentflow={peer}",
                # A throwaway dev store: durability is not worth an fsync per write.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=10m",
                "--log-level=warn",
            ]

        def ready(ports: dict[str, int]) -> bool:
            url = f"http://127.0.0.1:{ports['client']}/health"
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(json.loads(resp.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        self._start_with_ports(ETCD, ("client", "peer"), argv, ready, deadline, fixed)

    def _start_apiserver(self, deadline: float, fixed: dict[str, int] | None = None) -> None:
        etcd_port = self._read_records()[ETCD].ports["client"]
        p = self.pki_dir
        self.audit_policy.write_text(AUDIT_POLICY)

        def argv(ports: dict[str, int]) -> list[str]:
            return [
                str(self._binary(APISERVER)),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['secure']}",
                # Without it the apiserver looks for a default route, and there is none here.
                "--advertise-address=127.0.0.1",
                f"--cert-dir={p}",
                f"--tls-cert-file={p / pki.APISERVER_CERT}",
                f"--tls-private-key-file={p / pki.APISERVER_KEY}",
                f"--client-ca-file={p / pki.CA_CERT}",
                "--authorization-mode=Node,RBAC",
                # PodSecurity and ServiceAccount are on by default; NodeRestriction completes
                # Node authorization for the node's own identity.
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={p / pki.SA_PUBLIC_KEY}",
                f"--service-account-signing-key-file={p / pki.SA_KEY}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--kubelet-client-certificate={p / pki.KUBELET_CLIENT_CERT}",
                f"--kubelet-client-key={p / pki.KUBELET_CLIENT_KEY}",
                f"--kubelet-certificate-authority={p / pki.CA_CERT}",
                "--kubelet-preferred-address-types=InternalIP",
                # Privileged pods are allowed by the server, so that the namespace's
                # pod-security label is what rejects them.
                "--allow-privileged=true",
                # The `kubernetes` Service cannot point at a loopback address; with no pod
                # network nothing would use it, so skip the reconciler and its error loop.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                # Requests made by service accounts are audited (metadata only), so tests can
                # show which API rights an identity such as the operator's really uses.
                f"--audit-policy-file={self.audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=100",
                "--audit-log-maxbackup=1",
                "--v=1",
            ]

        self._start_with_ports(
            APISERVER,
            ("secure",),
            argv,
            lambda ports: self._apiserver_ready(f"https://127.0.0.1:{ports['secure']}"),
            deadline,
            fixed,
        )

    def _start_controller_manager(self, deadline: float) -> None:
        p = self.pki_dir
        argv = [
            str(self._binary(CONTROLLER_MANAGER)),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false",
            "--secure-port=0",  # no HTTPS endpoint: nothing scrapes it, and no port to pick
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={p / pki.SA_KEY}",
            f"--root-ca-file={p / pki.CA_CERT}",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--v=1",
        ]
        launch = self._spawn(CONTROLLER_MANAGER, argv, {})
        # etcd keeps the `default` ServiceAccount across restarts, so its presence alone proves
        # nothing about this controller manager: watch it create one in a new namespace.
        probe = f"agentflow-readiness-{secrets.token_hex(3)}"
        status, body = self._request(
            "POST", "/api/v1/namespaces", {"metadata": {"name": probe}, "apiVersion": "v1"}
        )
        if status != 201:
            raise LocalClusterError(f"cannot create namespace {probe}: {status} {body}")

        def probe_has_service_account() -> bool:
            path = f"/api/v1/namespaces/{probe}/serviceaccounts/default"
            return self._request("GET", path)[0] == 200

        try:
            self._wait_ready(launch, probe_has_service_account, deadline)
        finally:
            self._request("DELETE", f"/api/v1/namespaces/{probe}")

    def _write_kubeconfigs(self) -> None:
        ca = (self.pki_dir / pki.CA_CERT).read_bytes()
        for path, user, cert, key in (
            (self.kubeconfig, "admin", pki.ADMIN_CERT, pki.ADMIN_KEY),
            (self.node_kubeconfig, f"system:node:{NODE_NAME}", pki.NODE_CERT, pki.NODE_KEY),
        ):
            write_kubeconfig(
                path,
                server=self.api_url,
                ca_pem=ca,
                user=user,
                cert_pem=(self.pki_dir / cert).read_bytes(),
                key_pem=(self.pki_dir / key).read_bytes(),
            )

    # ------------------------------------------------------------------ node

    def start_node(self, instant: bool = False, timeout: float = 60.0) -> None:
        """Start the local node (``agentflow_devcluster.node``) and wait until it is Ready."""
        with self._locked():
            if self.node_running():
                return
            if importlib.util.find_spec("agentflow_devcluster.node") is None:
                raise LocalClusterError("agentflow_devcluster.node is not available")
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                sys.executable,
                "-m",
                "agentflow_devcluster.node",
                "--kubeconfig",
                str(self.kubeconfig),
                "--state-dir",
                str(self.state_dir),
            ]
            if instant:
                argv.append("--instant")
            started = datetime.now(UTC).replace(microsecond=0)
            launch = self._spawn(NODE, argv, {})
            try:
                self._wait_ready(
                    launch, lambda: self._node_ready(since=started), time.monotonic() + timeout
                )
            except BaseException:
                self._stop_components((NODE,))
                raise

    def _node_ready(self, since: datetime) -> bool:
        """Node Ready, with a heartbeat from this node process (not a stale object)."""
        status, node = self._request("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        for cond in node.get("status", {}).get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                beat = cond.get("lastHeartbeatTime")
                return bool(beat) and datetime.fromisoformat(beat) >= since
        return False

    def stop_node(self) -> None:
        with self._locked():
            self._stop_components((NODE,))

    # ------------------------------------------------------------------ API outage

    def stop_apiserver(self, crash: bool = False) -> None:
        """Stop kube-apiserver and etcd only, keeping their records (ports) for a restart.

        The controller manager, the node and any client keep running against the same
        address and see the outage a real control-plane restart causes.  ``crash`` sends
        SIGKILL at once, as in a machine failure, instead of a graceful SIGTERM.
        """
        with self._locked():
            records = self._read_records()
            for name in (APISERVER, ETCD):
                rec = records.get(name)
                if rec is not None:
                    self._terminate_group(name, rec, graceful=not crash)

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start etcd and kube-apiserver again on the ports they had, so kubeconfigs stay valid.

        Fails if another process took one of those ports meanwhile.
        """
        with self._locked():
            records = self._read_records()
            if ETCD not in records or APISERVER not in records:
                raise LocalClusterError(f"no etcd/kube-apiserver recorded in {self.state_file}")
            deadline = time.monotonic() + timeout
            if not records[ETCD].alive():
                self._start_etcd(deadline, dict(records[ETCD].ports))
            if not records[APISERVER].alive():
                self._start_apiserver(deadline, dict(records[APISERVER].ports))

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop node, controller manager, apiserver and etcd; nothing of them stays behind."""
        with self._locked():
            self._stop_components(STOP_ORDER)

    def _stop_components(self, names: tuple[str, ...]) -> None:
        records = self._read_records()
        for name in names:
            rec = records.get(name)
            if rec is not None:
                self._terminate_group(name, rec)
            self._record(name, None)

    def _terminate_group(self, name: str, rec: ComponentRecord, graceful: bool = True) -> None:
        # The group id is the leader's pid (start_new_session).  If that pid now belongs to an
        # unrelated process, the group is not ours; if the leader is gone, any process still in
        # the group is a child of ours (Linux does not hand out a pid still used as a pgid).
        if process_start_ticks(rec.pid) not in (None, rec.start_ticks):
            return
        child = self._children.pop(name, None)
        signals = ((signal.SIGTERM, STOP_GRACE_SECONDS),) if graceful else ()
        for sig, grace in (*signals, (signal.SIGKILL, 5.0)):
            if not group_members(rec.pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rec.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if child is not None:
                    child.poll()  # reap, so the leader does not linger as a zombie
                if not group_members(rec.pid):
                    break
                time.sleep(0.05)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        if group_members(rec.pid):
            raise LocalClusterError(f"{name} (process group {rec.pid}) survived SIGKILL")


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, user: str, cert_pem: bytes, key_pem: bytes
) -> None:
    """A kubeconfig with embedded credentials and the single context ``agentflow-local``."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
        "preferences": {},
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    tmp.replace(path)
