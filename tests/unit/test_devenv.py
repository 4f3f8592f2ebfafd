"""``agentflow dev``'s operator handling without a cluster: the metrics port choice, and when a
recorded operator may be reused (ours, started for this kubeconfig and API server, healthy).

The "operator" here is a small stand-in process with the operator's command line that serves
/healthz with the status a file says, so every case runs in well under a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kopf
import pytest
from rich.console import Console

from agentflow.console.cluster import ConsoleError
from agentflow.metrics import MetricsPortInUse, MetricsServer, OperatorMetrics, port_in_use
from agentflow_devcluster import devenv
from agentflow_devcluster.controlplane import group_members, process_start_ticks

SERVER = "https://127.0.0.1:6443"
FAKE_OPERATOR = """
import http.server, pathlib, sys
health = pathlib.Path(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code, _, reason = health.read_text().partition(" ")
        self.send_response(int(code)); self.end_headers(); self.wfile.write(reason.encode())
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[-1])), H).serve_forever()
"""


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.02)


@pytest.fixture
def listener() -> Iterator[int]:
    """A port another process holds: a listening socket on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class Fake:
    def __init__(self, state_dir: Path, kubeconfig: Path) -> None:
        self.state_dir = state_dir
        self.kubeconfig = kubeconfig
        self.health = state_dir / "health"
        self.health.write_text("200 ok")
        self.port = devenv._free_port()
        argv = [sys.executable, "-c", FAKE_OPERATOR, str(self.health)]
        argv += ["agentflow.cli", "operator", "--metrics-port", str(self.port)]
        self.proc = subprocess.Popen(argv, start_new_session=True)
        wait_for(lambda: devenv.probe_health(self.port)[0])

    def record(self, **fields: object) -> devenv.OperatorProcess:
        record = devenv.OperatorProcess(
            pid=self.proc.pid,
            metrics_port=self.port,
            start_ticks=process_start_ticks(self.proc.pid),
            kubeconfig=str(self.kubeconfig),
            server=SERVER,
        )
        record = dataclasses.replace(record, **fields)  # type: ignore[arg-type]
        devenv._write_operator(self.state_dir, record)
        return record

    def check(self) -> devenv.OperatorCheck:
        return devenv.check_operator(self.state_dir, self.kubeconfig, SERVER)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    process = Fake(tmp_path, tmp_path / "kubeconfig")
    yield process
    if process.proc.poll() is None:
        os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait(timeout=10)


# ---- the metrics port ----------------------------------------------------------------------


def test_a_taken_metrics_port_is_a_permanent_start_up_error_naming_port_flag_and_env(
    listener: int,
) -> None:
    async def main() -> None:
        server = MetricsServer(OperatorMetrics(), host="127.0.0.1", port=listener)
        with pytest.raises(MetricsPortInUse) as raised:
            await server.start()
        # kopf retries any other start-up error every 60 s, with no /healthz meanwhile.
        assert isinstance(raised.value, kopf.PermanentError)
        assert isinstance(raised.value, OSError)
        assert str(raised.value) == (
            f"metrics port {listener} on 127.0.0.1 is already in use by another process: choose "
            "another with --metrics-port or AGENTFLOW_METRICS_PORT (0 picks a free port)"
        )
        assert server.port == listener  # it did not move anywhere

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_a_port_left_in_time_wait_by_a_stopped_operator_is_free(tmp_path: Path) -> None:
    """What moved dev's operator off 8080 after a restart: a probe bind without SO_REUSEADDR
    fails on a port whose closed connections are in TIME_WAIT; the server would bind it."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: its side of the connection goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    with socket.socket() as naive, pytest.raises(OSError):
        naive.bind(("127.0.0.1", port))
    assert not port_in_use("127.0.0.1", port)


def test_a_requested_dev_metrics_port_that_is_taken_fails_naming_it_and_the_flag(
    listener: int,
) -> None:
    with pytest.raises(ConsoleError) as raised:
        devenv.choose_metrics_port(listener)
    assert raised.value.message == (
        f"metrics port {listener} on 127.0.0.1 is already in use by another process: choose "
        "another with --metrics-port, or leave --metrics-port out (agentflow dev then uses "
        "8080, or a free port when 8080 is taken)"
    )


def test_dev_says_which_port_it_picked_when_the_preferred_one_is_taken(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devenv, "PREFERRED_METRICS_PORT", listener)
    port, note = devenv.choose_metrics_port(None)
    assert port != listener
    assert not port_in_use("127.0.0.1", port)
    assert note == (
        f"port {listener} is in use by another process, so the operator's metrics are on port "
        f"{port} instead (pick one with --metrics-port)"
    )


def test_dev_takes_the_preferred_port_when_it_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    free = devenv._free_port()
    monkeypatch.setattr(devenv, "PREFERRED_METRICS_PORT", free)
    assert devenv.choose_metrics_port(None) == (free, None)


# ---- reusing the recorded operator ---------------------------------------------------------


def test_a_healthy_operator_for_this_cluster_is_reused(fake: Fake) -> None:
    record = fake.record()
    check = fake.check()
    assert check.reusable
    assert check.operator == record
    # The record is what --status and --stop read: the port is in it.
    saved = json.loads((fake.state_dir / "operator.json").read_text())
    assert saved["metrics_port"] == fake.port
    assert saved["server"] == SERVER


def test_an_operator_failing_healthz_is_not_reused(fake: Fake) -> None:
    fake.record()
    fake.health.write_text("503 no watch event for 40s (heartbeat lease not seen)")
    check = fake.check()
    assert not check.reusable
    assert check.problem == (
        f"operator pid {fake.proc.pid} is not healthy: GET http://127.0.0.1:{fake.port}/healthz: "
        "503 no watch event for 40s (heartbeat lease not seen)"
    )


def test_a_hung_operator_is_not_reused_and_stop_still_ends_it(fake: Fake) -> None:
    fake.record()
    os.kill(fake.proc.pid, signal.SIGSTOP)
    check = fake.check()
    assert check.operator is not None
    assert check.problem == (
        f"operator pid {fake.proc.pid} is not healthy: GET http://127.0.0.1:{fake.port}/healthz: "
        "timed out"
    )
    began = time.monotonic()
    assert devenv.stop_operator(fake.state_dir) == fake.proc.pid
    assert time.monotonic() - began < devenv.OPERATOR_STOP_SECONDS  # SIGTERM, not SIGKILL
    assert not group_members(fake.proc.pid)
    assert not (fake.state_dir / "operator.json").exists()


def test_an_operator_started_for_another_api_server_is_not_reused(fake: Fake) -> None:
    fake.record(server="https://127.0.0.1:40001")
    check = fake.check()
    assert check.operator is not None
    assert check.problem == (
        f"operator pid {fake.proc.pid} was started for the API server at "
        f"https://127.0.0.1:40001, but the local cluster now serves {SERVER}"
    )


def test_an_operator_started_for_another_kubeconfig_is_not_reused(fake: Fake) -> None:
    fake.record(kubeconfig="/elsewhere/kubeconfig")
    assert fake.check().problem == (
        f"operator pid {fake.proc.pid} was started for kubeconfig /elsewhere/kubeconfig, "
        f"not {fake.kubeconfig}"
    )


def test_a_recycled_pid_is_not_our_operator(fake: Fake) -> None:
    fake.record(start_ticks=1)  # the pid's process started at another time
    check = fake.check()
    assert check.operator is None
    assert check.problem == f"the recorded operator (pid {fake.proc.pid}) is not running"
    assert devenv.stop_operator(fake.state_dir) is None
    assert fake.proc.poll() is None  # not ours: left alone


def test_an_operator_from_an_older_dev_without_a_record_of_its_cluster_is_restarted(
    fake: Fake,
) -> None:
    (fake.state_dir / "operator.pid").write_text(f"{fake.proc.pid}\n")
    check = fake.check()
    assert check.operator is not None
    assert check.operator.metrics_port == fake.port
    assert check.problem == (
        f"operator pid {fake.proc.pid} was started by an older agentflow dev that did not "
        "record its cluster"
    )
    assert devenv.stop_operator(fake.state_dir) == fake.proc.pid
    assert not (fake.state_dir / "operator.pid").exists()


def test_kubeconfig_server_reads_the_current_context(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "clusters": [
                    {"name": "a", "cluster": {"server": "https://127.0.0.1:1"}},
                    {"name": "b", "cluster": {"server": "https://127.0.0.1:2"}},
                ],
                "contexts": [{"name": "ctx", "context": {"cluster": "b", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    assert devenv.kubeconfig_server(path) == "https://127.0.0.1:2"
    assert devenv.kubeconfig_server(tmp_path / "missing") is None


def test_status_without_anything_running(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    assert devenv.status_dev(console, tmp_path) == 1
    text = console.export_text()
    assert "cluster: not running" in text
    assert "operator: not running" in text
