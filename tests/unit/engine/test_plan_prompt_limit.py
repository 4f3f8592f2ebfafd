"""A step whose prompt renders past the byte limit fails instead of becoming a huge Job."""

from __future__ import annotations

from agentflow.api.models import MAX_PROMPT_LENGTH, StepPhase, WorkflowPhase
from agentflow.engine.templating import MAX_RENDERED_PROMPT_BYTES
from tests.support.world import World, creates, events, step, workflow

REFERENCE = "{{ steps.big.summary }}"
HOSTILE = REFERENCE * (MAX_PROMPT_LENGTH // len(REFERENCE))


def test_a_prompt_rendering_past_the_limit_fails_the_step_and_creates_no_job() -> None:
    w = World(
        workflow(
            [
                step("big"),
                step("echo", prompt=HOSTILE, dependsOn=["big"]),
                step("after", dependsOn=["echo"]),
            ],
            strategy="DAG",
        )
    )
    w.plan()
    # 2,000 characters (the summary cap), 712 times: 1.4 MB rendered.
    w.succeed("big", "s" * 2000)
    p = w.plan()

    assert creates(p) == []
    echo = w.step_status("echo")
    assert echo.phase is StepPhase.FAILED and echo.attempts == []
    assert echo.message == (
        f"prompt: the rendered prompt of step echo is larger than {MAX_RENDERED_PROMPT_BYTES} "
        "bytes, the limit for a rendered prompt: refer to fewer or shorter results"
    )
    assert w.phase == WorkflowPhase.FAILED
    assert w.wf.status is not None and w.wf.status.message == f"step echo failed: {echo.message}"
    assert [e.message for e in events(p, "StepFailed")] == [f"step echo failed: {echo.message}"]
    # Planning again changes nothing: the failure is settled, not retried.
    again = w.plan()
    assert creates(again) == [] and events(again) == []


def test_a_prompt_just_under_the_limit_still_runs() -> None:
    refs = MAX_RENDERED_PROMPT_BYTES // 2000
    w = World(workflow([step("big"), step("echo", prompt=REFERENCE * refs)]))
    w.plan()
    w.succeed("big", "s" * 2000)
    [job] = creates(w.plan())
    assert job.step == "echo" and len(job.prompt.encode()) == refs * 2000
