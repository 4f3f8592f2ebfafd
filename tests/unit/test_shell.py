"""The kopf shell in-process: ``controller.reconcile`` against an in-memory fake of
``agentflow.kube`` (tests/support), on a fake clock.

These cover the shell's own paths quickly; the same behaviour on Kubernetes is proven on the
real control plane (tests/integration).
"""

from __future__ import annotations

from typing import Any

from agentflow.api.models import WORKFLOW_NAME_MESSAGE
from agentflow.controller import PassResult
from tests.support.shell import Clock, Shell
from tests.unit.engine.world import T0


def script_spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps), "agents": [{"name": "a", "provider": "script"}]}


def test_a_name_too_long_fails_the_workflow_naming_metadata_name_not_spec() -> None:
    shell = Shell(Clock(T0))
    key = shell.submit("w" * 64, script_spec({"name": "s", "agent": "a"}))
    assert shell.reconcile(key) == PassResult(requeue_after=None, finished=True)
    status = shell.status(key)
    assert status["phase"] == "Failed"
    assert status["message"] == f"invalid spec: {WORKFLOW_NAME_MESSAGE}"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["message"] == WORKFLOW_NAME_MESSAGE and stalled["reason"] == "InvalidSpec"
    assert shell.kube.jobs == {}
