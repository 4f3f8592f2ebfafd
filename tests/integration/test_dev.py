"""``agentflow dev`` end to end: its own cluster, the operator, the example, then ``--stop``.

This starts a second local cluster (about a minute of CPU), in a fresh state directory, and
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.localcluster.controlplane import group_members
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AGENTFLOW = str(Path(sys.executable).parent / "agentflow")
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def recorded_pids(state_dir: Path) -> list[int]:
    """Every process ``dev`` recorded: the cluster's components and the operator."""
    pids: list[int] = []
    cluster = state_dir / "cluster.json"
    if cluster.exists():
        components = json.loads(cluster.read_text()).get("components", {})
        pids += [int(c["pid"]) for c in components.values()]
    operator = state_dir / "operator.pid"
    if operator.exists():
        pids.append(int(operator.read_text().strip()))
    return pids


def stop(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTFLOW, "dev", "--stop", "--state-dir", str(state_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = REPO / ".agentflow" / f"dev-test-{secrets.token_hex(3)}"
    yield path
    if path.exists():
        stop(path)  # the test's own stop may not have been reached
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(900)
def test_dev_runs_the_example_to_success_and_stop_leaves_nothing_running(
    state_dir: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "AGENTFLOW_STATE_DIR")}
    result = subprocess.run(
        [AGENTFLOW, "dev", "--exit-when-done", "--state-dir", str(state_dir), "--timeout", "300"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    kubeconfig = state_dir / "kubeconfig"
    assert "workflow default/finance-feature Succeeded" in output
    assert f"export KUBECONFIG={kubeconfig.relative_to(REPO)}" in output
    assert "agentflow submit workflows/health-check.yaml --watch" in output
    assert f"agentflow dev --stop --state-dir {state_dir.relative_to(REPO)}" in output

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
    operator_pid = int((state_dir / "operator.pid").read_text())
    assert group_members(operator_pid)
    assert (state_dir / "logs" / "operator.log").stat().st_size > 0

    pids = recorded_pids(state_dir)
    assert len(pids) == 5  # etcd, apiserver, controller manager, node, operator
    stopped = stop(state_dir)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "operator stopped" in stopped.stdout
    # Each component ran in its own process group: nothing of any of them is left.
    wait_for(lambda: not any(group_members(pid) for pid in pids), 30, what="processes to exit")
    assert not (state_dir / "operator.pid").exists()
