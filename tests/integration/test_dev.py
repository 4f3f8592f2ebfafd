"""``agentflow dev`` end to end: its own cluster, the operator, the example, then ``--stop``.

One dev environment serves the whole module, in a fresh state directory; the tests run in
order against it: the first run, ``--restart-operator`` (plain, on a taken port, with 8080
taken), ``dev`` again with a hung operator and after the cluster moved to other ports, and
``--stop``, which leaves no process behind.  It starts a second local cluster (about a minute
of CPU).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentflow_devcluster import LocalCluster
from agentflow_devcluster.controlplane import group_members
from tests.integration.conftest import free_port, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AGENTFLOW = str(Path(sys.executable).parent / "agentflow")
KUBECTL = str(Path(sys.executable).parent / "kubectl")
ENV = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "AGENTFLOW_STATE_DIR")}


def recorded_pids(state_dir: Path) -> list[int]:
    """Every process ``dev`` recorded: the cluster's components and the operator."""
    pids: list[int] = []
    cluster = state_dir / "cluster.json"
    if cluster.exists():
        components = json.loads(cluster.read_text()).get("components", {})
        pids += [int(c["pid"]) for c in components.values()]
    operator = state_dir / "operator.json"
    if operator.exists():
        pids.append(int(json.loads(operator.read_text())["pid"]))
    return pids


def agentflow_dev(state_dir: Path, *args: str, timeout: float = 800) -> tuple[int, str]:
    """Run ``agentflow dev --state-dir DIR ARGS`` as a user would; (exit code, all output)."""
    result = subprocess.run(
        [AGENTFLOW, "dev", "--state-dir", str(state_dir), *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def stop(state_dir: Path) -> tuple[int, str]:
    return agentflow_dev(state_dir, "--stop", timeout=120)


def operator_record(state_dir: Path) -> dict[str, object]:
    record: dict[str, object] = json.loads((state_dir / "operator.json").read_text())
    return record


def healthz(port: object) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


@dataclass
class Dev:
    state_dir: Path
    first_run: str

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def pid(self) -> int:
        return int(str(operator_record(self.state_dir)["pid"]))

    def port(self) -> int:
        return int(str(operator_record(self.state_dir)["metrics_port"]))

    def run_example(self) -> str:
        code, output = agentflow_dev(self.state_dir, "--exit-when-done", "--timeout", "300")
        assert code == 0, output
        assert "workflow default/finance-feature Succeeded" in output
        return output


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    state_dir = REPO / ".agentflow" / f"dev-test-{secrets.token_hex(3)}"
    try:
        code, output = agentflow_dev(state_dir, "--exit-when-done", "--timeout", "300")
        assert code == 0, output
        yield Dev(state_dir, output)
    finally:
        if state_dir.exists():
            stop(state_dir)  # the last test's own stop may not have been reached
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.mark.timeout(900)
def test_dev_runs_the_example_to_success_and_leaves_the_operator_running(dev: Dev) -> None:
    state_dir, output = dev.state_dir, dev.first_run
    kubeconfig = dev.kubeconfig
    assert "workflow default/finance-feature Succeeded" in output
    assert f"export KUBECONFIG={kubeconfig.relative_to(REPO)}" in output
    assert "agentflow submit workflows/health-check.yaml --watch" in output
    assert f"agentflow dev --restart-operator --state-dir {state_dir.relative_to(REPO)}" in output
    assert f"agentflow dev --stop --state-dir {state_dir.relative_to(REPO)}" in output
    record = operator_record(state_dir)
    assert f"operator started (pid {record['pid']}), healthy; metrics on " in output
    assert f"curl -s http://127.0.0.1:{record['metrics_port']}/metrics" in output
    # The record says which cluster the operator was started for.
    assert record["kubeconfig"] == str(kubeconfig)
    assert record["server"] == LocalCluster(state_dir).api_url

    # The API agrees, and the operator is still running after dev returned.
    got = subprocess.run(
        [
            KUBECTL,
            f"--kubeconfig={kubeconfig}",
            "get",
            "workflows.agentflow.dev",
            "finance-feature",
            "-n",
            "default",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["status"]["phase"] == "Succeeded"
    assert group_members(dev.pid())
    assert healthz(dev.port()) == 200
    assert (state_dir / "logs" / "operator.log").stat().st_size > 0


@pytest.mark.timeout(300)
def test_restart_operator_restarts_only_the_operator_and_waits_until_healthy(dev: Dev) -> None:
    old, old_port = dev.pid(), dev.port()
    code, output = agentflow_dev(dev.state_dir, "--restart-operator")
    assert code == 0, output
    new, port = dev.pid(), dev.port()
    assert new != old
    assert (
        f"operator restarted (pid {new}, was {old}), healthy; metrics on "
        f"http://127.0.0.1:{port}/metrics"
    ) in output
    assert "applied" not in output  # the example did not run
    assert healthz(port) == 200  # healthy when the command returns, not later
    assert not group_members(old)
    if old_port == 8080:  # its connections left in TIME_WAIT do not move it off the port
        assert port == 8080

    code, status = agentflow_dev(dev.state_dir, "--status")
    assert code == 0, status
    server = LocalCluster(dev.state_dir).api_url
    assert f"operator: running (pid {new}), healthy, for {server}" in status
    assert f"metrics: http://127.0.0.1:{port}/metrics" in status


@pytest.mark.timeout(300)
def test_restart_operator_on_a_taken_port_fails_and_a_taken_8080_is_named(dev: Dev) -> None:
    before = dev.pid()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        code, output = agentflow_dev(
            dev.state_dir, "--restart-operator", "--metrics-port", str(taken)
        )
    assert code == 1, output
    assert (
        f"metrics port {taken} on 127.0.0.1 is already in use by another process: choose "
        "another with --metrics-port"
    ) in output
    assert dev.pid() == before  # nothing was stopped
    assert healthz(dev.port()) == 200

    # Off 8080 on request, then 8080 taken by someone else: dev picks a port and says which.
    code, output = agentflow_dev(
        dev.state_dir, "--restart-operator", "--metrics-port", str(free_port())
    )
    assert code == 0, output
    with socket.socket() as blocker:
        # SO_REUSEADDR: the operator just left 8080 with connections in TIME_WAIT.
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 8080))
            blocker.listen()
        except OSError:
            pass  # another process holds 8080: just as good
        code, output = agentflow_dev(dev.state_dir, "--restart-operator")
    assert code == 0, output
    port = dev.port()
    assert port != 8080
    assert (
        f"port 8080 is in use by another process, so the operator's metrics are on port {port} "
        "instead (pick one with --metrics-port)"
    ) in output
    assert f"metrics on http://127.0.0.1:{port}/metrics" in output
    assert healthz(port) == 200
    code, status = agentflow_dev(dev.state_dir, "--status")
    assert f"metrics: http://127.0.0.1:{port}/metrics" in status


@pytest.mark.timeout(600)
def test_dev_restarts_an_operator_whose_healthz_fails(dev: Dev) -> None:
    hung, port = dev.pid(), dev.port()
    os.kill(hung, signal.SIGSTOP)  # alive, but answers nothing
    output = dev.run_example()
    assert (
        f"operator pid {hung} is not healthy: GET http://127.0.0.1:{port}/healthz: timed out: "
        "restarting it"
    ) in output
    assert f"operator restarted (pid {dev.pid()}, was {hung}), healthy" in output
    wait_for(lambda: not group_members(hung), 30, what="the hung operator to exit")


@pytest.mark.timeout(600)
def test_dev_restarts_an_operator_started_for_the_old_api_server(dev: Dev) -> None:
    old_pid, old_server = dev.pid(), LocalCluster(dev.state_dir).api_url
    # The cluster alone goes down (as with `make cluster-down`); the operator keeps running.
    down = subprocess.run(
        [sys.executable, "-m", "agentflow_devcluster", "down", "--state-dir", str(dev.state_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert group_members(old_pid)
    output = dev.run_example()
    new_server = LocalCluster(dev.state_dir).api_url
    assert new_server != old_server, "the apiserver came back on the same port by chance"
    assert (
        f"operator pid {old_pid} was started for the API server at {old_server}, but the local "
        f"cluster now serves {new_server}: restarting it"
    ) in output
    assert operator_record(dev.state_dir)["server"] == new_server
    assert not group_members(old_pid)

    # Healthy and current: the next run reuses it.
    output = dev.run_example()
    assert f"operator already running (pid {dev.pid()}, healthy, metrics on " in output


@pytest.mark.timeout(300)
def test_stop_leaves_nothing_running(dev: Dev) -> None:
    pids = recorded_pids(dev.state_dir)
    assert len(pids) == 5  # etcd, apiserver, controller manager, node, operator
    operator = dev.pid()
    code, output = stop(dev.state_dir)
    assert code == 0, output
    assert f"operator stopped (pid {operator})" in output
    # Each component ran in its own process group: nothing of any of them is left.
    wait_for(lambda: not any(group_members(pid) for pid in pids), 30, what="processes to exit")
    assert not (dev.state_dir / "operator.json").exists()
    code, status = agentflow_dev(dev.state_dir, "--status")
    assert code == 1
    assert "cluster: not running" in status
