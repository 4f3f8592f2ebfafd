"""Runs, annotations, suspend, deadlines, timeouts, lost Jobs, truncated reports, TTL, limits."""

from __future__ import annotations

from dataclasses import replace

from agentflow.api.models import AgentTemplate, ConditionType, StepPhase, WorkflowPhase
from agentflow.engine import LOST_JOB_GRACE_SECONDS, STEP_TIMEOUT_GRACE_SECONDS, job_name, plan
from agentflow.engine.types import (
    ANNOTATION_RERUN,
    ANNOTATION_RETRY,
    DeleteWorkflow,
    FallbackPolicy,
    JobState,
    Limits,
    ObservedJob,
)
from agentflow.observe import reported
from tests.support.world import (
    T0,
    UID,
    World,
    creates,
    deletes,
    events,
    kinds,
    report_message,
    step,
    workflow,
)


def _edit(w: World, *, generation: int | None = None, **annotations: str) -> None:
    meta = w.wf.metadata.model_copy(
        update={
            "generation": generation if generation is not None else w.wf.metadata.generation,
            "annotations": {**w.wf.metadata.annotations, **annotations},
        }
    )
    w.wf = w.wf.model_copy(update={"metadata": meta})


def test_spec_change_starts_a_new_run_and_deletes_the_old_runs_jobs() -> None:
    w = World(workflow([step("a"), step("b")], strategy="Parallel"))
    w.plan()
    w.succeed("a")
    w.plan()
    old_b = w.job_of("b").name
    spec = w.wf.spec.model_copy(update={"steps": [step("a"), step("b", prompt="new")]})
    w.wf = w.wf.model_copy(update={"spec": spec})
    _edit(w, generation=2)
    p = w.plan()
    status = w.wf.status
    assert status is not None
    assert (status.run, status.observed_generation) == (2, 2)
    assert [(d.job_name, d.reason) for d in deletes(p)] == [(old_b, "superseded by run 2")]
    started = events(p, "WorkflowStarted")
    assert started and "spec changed" in started[0].message
    # a is unchanged: cached from run 1; b's prompt changed: a new Job with the new run number.
    assert w.step_status("a").phase is StepPhase.CACHED
    assert [c.job_name for c in creates(p)] == [job_name("wf", "b", 2, 1, 1, uid=UID)]


def test_old_run_results_are_ignored() -> None:
    w = World(workflow([step("a", cache={"enabled": False})]))
    w.plan()
    old = w.job_of("a")
    edited = [step("a", prompt="edited", cache={"enabled": False})]
    w.wf = w.wf.model_copy(update={"spec": w.wf.spec.model_copy(update={"steps": edited})})
    _edit(w, generation=2)
    w.plan()
    new = next(j for j in w.active("a") if j.run == 2)
    # The old Job finishing late (its deletion raced) changes nothing.
    stale, _ = reported(JobState.SUCCEEDED, report_message("stale"))
    w.jobs[old.name] = replace(old, state=JobState.SUCCEEDED, exit_code=0, result=stale)
    p = w.plan()
    assert p.actions == []
    assert w.step_status("a").phase is StepPhase.RUNNING
    assert w.step_status("a").attempts[0].job_name == new.name


def test_editing_a_finished_workflow_runs_it_again() -> None:
    w = World(workflow([step("a")]))
    w.plan()
    w.succeed("a")
    w.plan()
    assert w.phase == "Succeeded"
    finished_at = w.wf.status.finished_at if w.wf.status else None
    w.tick(5)
    w.wf = w.wf.model_copy(
        update={"spec": w.wf.spec.model_copy(update={"steps": [step("a", prompt="v2")]})}
    )
    _edit(w, generation=2)
    p = w.plan()
    assert w.phase == "Running"
    assert w.wf.status is not None
    assert w.wf.status.finished_at is None and finished_at is not None
    assert w.wf.status.started_at == w.now
    assert [c.job_name for c in creates(p)] == [job_name("wf", "a", 2, 1, 1, uid=UID)]


def test_rerun_annotation_starts_a_new_run_once_and_reuses_the_cache() -> None:
    w = World(workflow([step("a"), step("b")]))
    for _ in range(2):
        w.plan()
        w.succeed(w.active()[0].step)
    w.plan()
    assert w.phase == "Succeeded"
    _edit(w, **{ANNOTATION_RERUN: "2025-01-01T13:00"})
    p = w.plan()
    assert w.wf.status is not None and w.wf.status.run == 2
    assert w.wf.status.rerun_token == "2025-01-01T13:00"
    assert set(w.phases().values()) == {"Cached"}
    assert creates(p) == []
    p = w.plan()
    assert w.wf.status.run == 2  # the same token does nothing more
    assert p.actions == []


def test_retry_annotation_reruns_only_failed_and_unstarted_steps() -> None:
    w = World(
        workflow(
            [
                step("ok"),
                step("bad", depends_on=["ok"]),
                step("ok2"),
                step("after", depends_on=["bad"]),
            ],
            strategy="DAG",
        )
    )
    w.plan()
    w.succeed("ok")
    w.succeed("ok2")
    w.plan()
    w.fail("bad")
    w.plan()
    assert w.phase == "Failed"
    ok_result = w.step_status("ok").result
    _edit(w, **{ANNOTATION_RETRY: "try-2"})
    p = w.plan()
    status = w.wf.status
    assert status is not None
    assert (status.run, status.phase, status.retry_token) == (2, WorkflowPhase.RUNNING, "try-2")
    assert w.step_status("ok").phase is StepPhase.SUCCEEDED
    assert w.step_status("ok").result == ok_result
    assert w.step_status("ok2").phase is StepPhase.SUCCEEDED
    assert [c.job_name for c in creates(p)] == [job_name("wf", "bad", 2, 1, 1, uid=UID)]
    w.succeed("bad")
    w.plan()
    w.succeed("after")
    w.plan()
    assert w.phase == "Succeeded"


def test_retry_annotation_on_a_workflow_that_did_not_fail_is_only_remembered() -> None:
    w = World(workflow([step("a")]))
    w.plan()
    _edit(w, **{ANNOTATION_RETRY: "t1"})
    p = w.plan()
    assert w.wf.status is not None
    assert (w.wf.status.run, w.wf.status.retry_token) == (1, "t1")
    assert p.actions == []
    w.fail("a")
    w.plan()
    assert w.phase == "Failed"  # the old token does not retry it


def test_annotations_present_at_creation_do_not_trigger_a_second_run() -> None:
    w = World(workflow([step("a")], annotations={ANNOTATION_RERUN: "x", ANNOTATION_RETRY: "y"}))
    w.plan()
    p = w.plan()
    assert w.wf.status is not None and w.wf.status.run == 1
    assert p.actions == []


def test_suspend_creates_no_jobs_but_lets_running_ones_finish() -> None:
    w = World(workflow([step("a"), step("b")], suspend=True))
    p = w.plan()
    assert creates(p) == []
    assert w.phase == "Pending"
    status = w.wf.status
    assert status is not None
    reconciling = status.condition(ConditionType.RECONCILING)
    assert reconciling is not None
    assert (reconciling.status, reconciling.reason, reconciling.message) == (
        "True",
        "Suspended",
        "suspended",
    )
    assert status.message == "Steps: 2 (Pending 2); suspended"

    w.wf = w.wf.model_copy(update={"spec": w.wf.spec.model_copy(update={"suspend": False})})
    w.plan()
    assert [j.step for j in w.active()] == ["a"]
    w.wf = w.wf.model_copy(update={"spec": w.wf.spec.model_copy(update={"suspend": True})})
    w.succeed("a")
    p = w.plan()
    assert w.step_status("a").phase is StepPhase.SUCCEEDED
    assert creates(p) == []
    assert w.step_status("b").phase is StepPhase.PENDING


def test_workflow_deadline_fails_it_and_deletes_running_jobs() -> None:
    w = World(workflow([step("a")], active_deadline_seconds=600))
    p = w.plan()
    assert p.requeue_after is not None and p.requeue_after <= 600
    job = w.job_of("a").name
    w.tick(599)
    assert deletes(w.plan()) == []
    w.tick(1)
    p = w.plan()
    assert w.phase == "Failed"
    assert [(d.job_name, d.reason) for d in deletes(p)] == [(job, "workflow failed")]
    assert w.wf.status is not None
    stalled = w.wf.status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == "DeadlineExceeded"
    assert w.wf.status.message == "workflow exceeded activeDeadlineSeconds (600s)"


def test_step_timeout_deletes_a_job_that_never_started_and_retries() -> None:
    w = World(workflow([step("a", timeout_seconds=60, retries={"limit": 1, "backoffSeconds": 0})]))
    p = w.plan()
    assert creates(p)[0].timeout_seconds == 60
    job = w.job_of("a").name
    limit = 60 + STEP_TIMEOUT_GRACE_SECONDS
    p = w.plan()
    assert p.requeue_after == limit
    w.tick(limit)
    assert deletes(w.plan()) == []  # at the limit, not past it
    w.tick(1)
    p = w.plan()
    assert [d.job_name for d in deletes(p)] == [job]
    first = w.step_status("a").attempts[0]
    assert (first.outcome, first.reason) == ("Failed", "Timeout")
    assert [c.attempt for c in creates(p)] == [2]


def test_a_job_that_disappears_is_lost_only_after_the_grace_period() -> None:
    w = World(workflow([step("a")]))
    w.plan()
    del w.jobs[w.job_of("a").name]
    w.tick(LOST_JOB_GRACE_SECONDS - 1)
    p = w.plan()
    assert w.step_status("a").attempts[0].outcome == "Running"
    assert p.requeue_after == 1
    w.tick(1)
    w.plan()
    attempt = w.step_status("a").attempts[0]
    assert (attempt.outcome, attempt.reason) == ("Failed", "JobLost")
    assert w.phase == "Failed"


def test_a_truncated_report_waits_for_the_output_ref() -> None:
    w = World(workflow([step("big")]))
    w.plan()
    done = w.succeed("big", "long story", full_size=200_000)
    p = w.plan()
    assert w.step_status("big").phase is StepPhase.RUNNING
    assert p.requeue_after == 60
    w.jobs[done.name] = replace(done, output_ref="wf-big-1-1-1-report")
    w.tick(2)
    w.plan()
    status = w.step_status("big")
    assert status.phase is StepPhase.SUCCEEDED
    assert status.result is not None
    assert (status.result.truncated, status.result.output_ref) == (True, "wf-big-1-1-1-report")


def test_a_truncated_report_is_accepted_without_output_ref_after_a_minute() -> None:
    w = World(workflow([step("big")]))
    w.plan()
    w.succeed("big", "long story", full_size=200_000)
    w.tick(61)
    w.plan()
    status = w.step_status("big")
    assert status.phase is StepPhase.SUCCEEDED
    assert status.result is not None and status.result.summary == "long story"


def test_ttl_after_finished_deletes_the_workflow_when_due() -> None:
    w = World(workflow([step("a")], ttl_seconds_after_finished=300))
    w.plan()
    w.succeed("a")
    p = w.plan()
    assert p.requeue_after == 300
    w.tick(299)
    p = w.plan()
    assert kinds(p.actions, DeleteWorkflow) == [] and p.requeue_after == 1
    w.tick(1)
    p = w.plan()
    assert len(kinds(p.actions, DeleteWorkflow)) == 1


def test_namespace_job_slots_hold_steps_back_and_say_so() -> None:
    w = World(
        workflow([step(f"s{i}") for i in range(3)], strategy="Parallel"),
        limits=Limits(namespace_job_slots=1),
    )
    p = w.plan()
    assert [c.step for c in creates(p)] == ["s0"]
    assert w.wf.status is not None and w.wf.status.message is not None
    assert w.wf.status.message.endswith("waiting: namespace step-Job limit reached")
    assert p.requeue_after is not None
    w.limits = Limits(namespace_job_slots=5)
    p = w.plan()
    assert [c.step for c in creates(p)] == ["s1", "s2"]
    assert "waiting" not in (w.wf.status.message or "")


def test_an_image_that_is_not_allowed_fails_the_step_without_a_job() -> None:
    w = World(
        workflow([step("a")], agents=[AgentTemplate(name="a", image="evil/miner:1")]),
        limits=Limits(allowed_images=frozenset({"agentflow/agent-runner:0.1.0"})),
    )
    p = w.plan()
    assert creates(p) == []
    assert w.phase == "Failed"
    message = w.step_status("a").message or ""
    assert "evil/miner:1" in message and "not allowed" in message


def test_invalid_spec_fails_at_once_with_every_message_in_the_condition() -> None:
    wf = workflow(
        [step("a", depends_on=["nope"]), step("b", agent="ghost")],
        agents=[AgentTemplate(name="a")],
        strategy="DAG",
    )
    p = plan(wf, FallbackPolicy(), [], lambda _k: None, T0)
    assert creates(p) == []
    assert p.status.phase is WorkflowPhase.FAILED
    assert p.status.message == (
        "invalid spec: spec.steps[0].dependsOn: unknown step 'nope' (and 1 more)"
    )
    stalled = p.status.condition(ConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    assert stalled.message == (
        "spec.steps[0].dependsOn: unknown step 'nope'; "
        "spec.steps[1].agent: unknown agent 'ghost' (declared: a)"
    )
    ready = p.status.condition(ConditionType.READY)
    assert ready is not None and ready.status == "False"
    assert [e.reason for e in events(p)] == ["WorkflowStarted", "WorkflowFailed"]


def test_conditions_keep_their_transition_time_until_status_flips() -> None:
    w = World(workflow([step("a"), step("b")]))
    w.plan()
    assert w.wf.status is not None
    ready = w.wf.status.condition(ConditionType.READY)
    assert ready is not None and ready.last_transition_time == T0
    w.tick(10)
    w.succeed("a")
    w.plan()
    ready = w.wf.status.condition(ConditionType.READY)
    assert ready is not None and ready.last_transition_time == T0  # still False
    assert ready.observed_generation == 1
    w.tick(10)
    w.succeed("b")
    w.plan()
    ready = w.wf.status.condition(ConditionType.READY)
    assert ready is not None and (ready.status, ready.last_transition_time) == ("True", w.now)


def test_replanning_the_same_observation_adds_nothing() -> None:
    w = World(
        workflow(
            [step("a", retries={"limit": 1}), step("b", depends_on=["a"]), step("c")],
            strategy="DAG",
            active_deadline_seconds=3600,
        )
    )
    observations: list[list[ObservedJob]] = []  # what each pass saw, for the final count

    def plan_twice() -> None:
        jobs = w.observed()
        first = plan(w.wf, w.policy, jobs, w.cache.get, w.now, w.limits)
        replanned = w.wf.model_copy(update={"status": first.status})
        second = plan(replanned, w.policy, jobs, w.cache.get, w.now, w.limits)
        assert second.actions == []
        assert second.status == first.status
        w.apply(first)
        observations.append(jobs)

    plan_twice()
    w.fail("a")
    plan_twice()
    w.tick(10)
    plan_twice()
    w.succeed("a")
    w.succeed("c")
    plan_twice()
    w.succeed("b")
    plan_twice()
    assert w.phase == "Succeeded"
    assert len(observations) == 5


def _set_suspend(w: World, suspend: bool) -> None:
    """What `kubectl patch --type merge -p '{"spec":{"suspend":...}}'` does: a new generation."""
    meta = w.wf.metadata.model_copy(update={"generation": (w.wf.metadata.generation or 1) + 1})
    spec = w.wf.spec.model_copy(update={"suspend": suspend})
    w.wf = w.wf.model_copy(update={"metadata": meta, "spec": spec})


def test_toggling_suspend_pauses_the_same_run_instead_of_starting_a_new_one() -> None:
    w = World(workflow([step("a"), step("b")]))
    w.plan()
    assert w.wf.status is not None and w.wf.status.run == 1
    running = [a.job_name for a in w.step_status("a").attempts]
    _set_suspend(w, True)
    p = w.plan()
    assert w.wf.status.run == 1
    assert deletes(p) == []
    assert w.wf.status.observed_generation == w.wf.metadata.generation == 2
    w.succeed("a")
    assert creates(w.plan()) == []  # suspended: b waits, a's result is kept
    assert w.step_status("a").phase is StepPhase.SUCCEEDED
    _set_suspend(w, False)
    p = w.plan()
    assert w.wf.status.run == 1
    assert [c.step for c in creates(p)] == ["b"]
    assert [a.job_name for a in w.step_status("a").attempts] == running


def test_a_real_spec_change_still_starts_a_new_run() -> None:
    w = World(workflow([step("a", prompt="one")]))
    w.plan()
    meta = w.wf.metadata.model_copy(update={"generation": 2})
    spec = w.wf.spec.model_copy(
        update={"steps": [w.wf.spec.steps[0].model_copy(update={"prompt": "two"})]}
    )
    w.wf = w.wf.model_copy(update={"metadata": meta, "spec": spec})
    w.plan()
    assert w.wf.status is not None and w.wf.status.run == 2


def test_a_stuck_job_fails_its_attempt_and_is_deleted_on_every_pass_it_is_seen() -> None:
    w = World(workflow([step("s")]))
    w.plan()
    job = w.job_of("s")
    stuck = replace(job, state=JobState.FAILED, reason="ErrImagePull", stuck=True)
    w.jobs[job.name] = stuck
    p = w.plan()
    assert [(d.job_name, d.reason) for d in deletes(p)] == [
        (job.name, "its pod cannot start (ErrImagePull)")
    ]
    [attempt] = w.step_status("s").attempts
    assert (attempt.outcome, attempt.reason) == ("Failed", "ImagePullFailed")
    assert attempt.message is not None and attempt.message.startswith(
        "ImagePullFailed (ErrImagePull)"
    )
    # The delete did not get through: the Job is seen again, after the attempt is settled.
    w.jobs[job.name] = stuck
    assert [d.job_name for d in deletes(w.plan())] == [job.name]
