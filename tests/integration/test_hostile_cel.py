"""Hostile CEL and names against the real API server and the running operator.

- A Workflow author in one namespace writes conditions that would take hours to evaluate: one
  that hides macros nested six deep behind a triple-quoted string (the old text scan took the
  rest of the expression for the inside of a string), and one within the nesting bound whose
  regular expressions take seconds.  The first is rejected naming the field; the second is
  stopped at the evaluation budget and fails its step naming the field.  Another tenant's
  ordinary Workflow, in another namespace, finishes in the time it takes on its own.
- Many Workflows in one namespace whose conditions each cost a good part of the evaluation
  budget, all different (so no answer is reused): they spend their namespace's CEL time, wait
  for more saying so and carry on, while another tenant's Workflow finishes in its usual time.
- A Workflow name that cannot be a label value (more than 63 characters) is refused by the API
  server with the reason; one of 63 characters runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from agentflow.api.models import MAX_WORKFLOW_NAME_LENGTH, WORKFLOW_NAME_MESSAGE
from agentflow.engine.expressions import EVALUATION_BUDGET_SECONDS
from agentflow.engine.planner import WAITING_CEL_TIME
from tests.conftest import Kubectl, namespace_name
from tests.integration.conftest import OperatorProcess, wait_for
from tests.integration.workflows import (
    apply,
    get,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.integration

_ITEMS = "[" + ",".join(str(i) for i in range(30)) + "]"
# 30^6 iterations: hours on the operator's event loop, had it run.
HIDDEN_NESTING = "'''it's''' != '' && " + (
    "".join(f"{_ITEMS}.all(v{d}, " for d in range(6)) + "true" + ")" * 6
)
# Two levels of ten, each compiling a regular expression near the library's size limit (about
# 0.1 s): over ten seconds, within the nesting bound and with nothing static to give it away.
_REGEX = '!"x".matches("\\\\w{200}")'
COSTLY = f"[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, {_REGEX}))"
# What a hostile Workflow may add to another tenant's run: the one evaluation that is cut at its
# budget, a planning pass's budget, and scheduling noise on a busy machine.
ALLOWED_DELAY_SECONDS = EVALUATION_BUDGET_SECONDS + 1.0 + 5.0
# Two of those regular expressions: about 0.15 s on an idle machine, twice that on a busy one,
# so within the budget of one expression.  False, so each step is skipped and starts no Job.
HOSTILE_WORKFLOWS = 12
HOSTILE_STEPS = 48


def near_the_limit(i: int) -> str:
    return f"[0, 1].all(a, {_REGEX}) && {i} < 0"


@pytest.fixture
def tenant_namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second namespace: the other tenant's."""
    name = namespace_name(f"tenant-{request.node.name}")
    created = kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    kubectl("label", "namespace", name, "agentflow.dev/test=true")
    wait_for(
        lambda: kubectl("get", "-n", name, "serviceaccount", "default").returncode == 0,
        30,
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def tenant_workflow(name: str) -> dict[str, Any]:
    return workflow(
        name,
        [
            {"name": "first", "agent": "a", "prompt": "one"},
            {"name": "second", "agent": "a", "prompt": "{{ steps.first.summary }}"},
        ],
        [script_agent("a")],
        strategy="Sequential",
    )


def run_timed(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> tuple[float, Any]:
    started = time.monotonic()
    apply(kubectl, namespace, [doc])
    wf = wait_finished(kubectl, namespace, doc["metadata"]["name"])
    return time.monotonic() - started, wf


def test_costly_cel_in_one_namespace_fails_clearly_and_another_tenant_runs_on_time(
    kubectl: Kubectl, namespace: str, tenant_namespace: str, operator: OperatorProcess
) -> None:
    alone, wf = run_timed(kubectl, tenant_namespace, tenant_workflow("alone"))
    assert wf["status"]["phase"] == "Succeeded", wf["status"]

    hidden = workflow(
        "hidden-nesting", [{"name": "s", "agent": "a", "when": HIDDEN_NESTING}], [script_agent("a")]
    )
    costly_when = workflow(
        "costly-when",
        [
            {"name": "first", "agent": "a", "prompt": "one"},
            {"name": "judged", "agent": "a", "dependsOn": ["first"], "when": COSTLY},
        ],
        [script_agent("a")],
        strategy="DAG",
    )
    costly_until = workflow(
        "costly-until",
        [{"name": "loop", "agent": "a", "repeat": {"until": COSTLY, "maxIterations": 3}}],
        [script_agent("a")],
    )
    apply(kubectl, namespace, [hidden, costly_when, costly_until])
    beside, wf = run_timed(kubectl, tenant_namespace, tenant_workflow("beside"))
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert beside < alone + ALLOWED_DELAY_SECONDS, (alone, beside)

    rejected = wait_finished(kubectl, namespace, "hidden-nesting")
    assert rejected["status"]["phase"] == "Failed", rejected["status"]
    assert (
        "spec.steps[0].when: macros such as all/exists/map nest more than 2 deep (6)"
        in rejected["status"]["message"]
    ), rejected["status"]["message"]
    assert step_jobs(kubectl, namespace, "hidden-nesting") == []

    over = f"evaluation took longer than {EVALUATION_BUDGET_SECONDS:g} s"
    for name, step_name, field in [
        ("costly-when", "judged", "spec.steps[1].when"),
        ("costly-until", "loop", "spec.steps[0].repeat.until"),
    ]:
        cut = wait_finished(kubectl, namespace, name)
        assert cut["status"]["phase"] == "Failed", cut["status"]
        failed = step(cut, step_name)
        assert failed["phase"] == "Failed", failed
        assert failed["message"].startswith(f"{field}: {over}"), failed
        assert cut["status"]["message"].startswith(f"step {step_name} failed: {field}: {over}")
    assert operator.proc is not None and operator.proc.poll() is None


def hostile_workflow(name: str) -> dict[str, Any]:
    """Steps whose conditions all differ (no answer is reused) and cost about 0.15 s each: 7 s
    of CEL in all, more than a planning pass may spend."""
    steps = [
        {"name": f"s{i}", "agent": "a", "when": near_the_limit(i)} for i in range(HOSTILE_STEPS)
    ]
    return workflow(name, steps, [script_agent("a")], strategy="Parallel")


def skipped_steps(kubectl: Kubectl, namespace: str) -> dict[str, int]:
    found = kubectl("get", "-n", namespace, "workflows.agentflow.dev", "-o", "json")
    assert found.returncode == 0, found.stderr
    return {
        wf["metadata"]["name"]: sum(
            s["phase"] == "Skipped" for s in (wf.get("status") or {}).get("steps", [])
        )
        for wf in yaml.safe_load(found.stdout)["items"]
    }


def test_many_costly_conditions_wait_for_their_namespaces_cel_time_and_another_tenant_is_on_time(
    kubectl: Kubectl, namespace: str, tenant_namespace: str, operator: OperatorProcess
) -> None:
    usual, wf = run_timed(kubectl, tenant_namespace, tenant_workflow("usual"))
    assert wf["status"]["phase"] == "Succeeded", wf["status"]

    names = [f"hostile-{n}" for n in range(HOSTILE_WORKFLOWS)]
    apply(kubectl, namespace, [hostile_workflow(name) for name in names])
    wait_for(
        lambda: sum(skipped_steps(kubectl, namespace).values()) > 0,
        60,
        what="the hostile Workflows' first conditions to be judged",
    )
    beside, wf = run_timed(kubectl, tenant_namespace, tenant_workflow("beside"))
    print(f"usual {usual:.1f}s, beside {HOSTILE_WORKFLOWS} hostile Workflows {beside:.1f}s")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert beside <= 1.5 * usual + 5.0, (usual, beside)

    # The hostile Workflows are not stuck: those not finished say why they wait, and their
    # conditions keep being judged, at their namespace's pace.
    before = skipped_steps(kubectl, namespace)
    assert sum(before.values()) < HOSTILE_WORKFLOWS * HOSTILE_STEPS, before
    for name in names:
        hostile = get(kubectl, namespace, "workflows.agentflow.dev", name)
        assert hostile is not None
        status = hostile.get("status") or {}
        if status.get("phase") != "Succeeded":
            assert WAITING_CEL_TIME in status.get("message", ""), status.get("message")
    wait_for(
        lambda: sum(skipped_steps(kubectl, namespace).values()) >= sum(before.values()) + 3,
        60,
        what="more of the hostile Workflows' conditions to be judged",
    )
    assert operator.proc is not None and operator.proc.poll() is None


def test_a_workflow_name_that_cannot_be_a_label_value_is_refused_with_the_reason(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    too_long = tenant_workflow("w" * (MAX_WORKFLOW_NAME_LENGTH + 1))
    for verb in (("apply", "-f", "-"), ("create", "-f", "-")):
        result = kubectl(*verb, "-n", namespace, input=yaml.safe_dump(too_long))
        assert result.returncode != 0
        assert WORKFLOW_NAME_MESSAGE in result.stderr, result.stderr
    assert kubectl("get", "-n", namespace, "workflows.agentflow.dev", "-o", "name").stdout == ""

    longest = "w" * MAX_WORKFLOW_NAME_LENGTH
    apply(kubectl, namespace, [tenant_workflow(longest)])
    wf = wait_finished(kubectl, namespace, longest)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    labels = {
        j["metadata"]["labels"]["agentflow.dev/workflow"]
        for j in step_jobs(kubectl, namespace, longest)
    }
    assert labels == {longest}
