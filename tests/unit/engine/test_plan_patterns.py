"""The workflow patterns: sequential, parallel, DAG, iterative and conditional."""

from __future__ import annotations

from agentflow.api.models import ConditionType, StepPhase, WorkflowPhase
from agentflow.engine import job_name, plan
from agentflow.engine.types import FallbackPolicy, no_cache
from tests.support.world import T0, UID, World, creates, events, step, workflow


def test_first_pass_starts_run_one_and_the_first_sequential_step() -> None:
    wf = workflow([step("plan"), step("build"), step("ship")], generation=3)
    p = plan(wf, FallbackPolicy(), [], no_cache, T0)
    status = p.status
    assert status.run == 1
    assert status.observed_generation == 3
    assert status.started_at == T0
    assert status.phase is WorkflowPhase.RUNNING
    assert [s.phase for s in status.steps] == [
        StepPhase.RUNNING,
        StepPhase.PENDING,
        StepPhase.PENDING,
    ]
    [create] = creates(p)
    assert (create.job_name, create.step, create.run, create.iteration, create.attempt) == (
        job_name("wf", "plan", 1, 1, 1, uid=UID),
        "plan",
        1,
        1,
        1,
    )
    assert create.fallback is False
    attempt = status.steps[0].attempts[0]
    assert (attempt.job_name, attempt.agent, attempt.outcome, attempt.started_at) == (
        job_name("wf", "plan", 1, 1, 1, uid=UID),
        "a",
        "Running",
        T0,
    )
    assert [e.reason for e in events(p)] == ["WorkflowStarted", "StepStarted"]
    assert status.progress == "0/3"
    assert status.message == "Steps: 3 (Running 1, Pending 2)"
    assert wf.status is None  # the input is not touched


def test_sequential_runs_one_step_at_a_time_and_feeds_outputs_forward() -> None:
    w = World(
        workflow(
            [
                step("plan", prompt="make a plan"),
                step("build", prompt="build this: {{ steps.plan.summary }}"),
                step("ship", prompt="ship {{ steps.build.artifacts }} ({{ steps.plan.status }})"),
            ]
        )
    )
    w.plan()
    assert [j.step for j in w.active()] == ["plan"]
    w.succeed("plan", "three tasks")
    p = w.plan()
    assert [j.step for j in w.active()] == ["build"]
    assert creates(p)[0].prompt == "build this: three tasks"
    w.succeed("build", artifacts=["src/a.py", "src/b.py"])
    p = w.plan()
    assert creates(p)[0].prompt == "ship src/a.py, src/b.py (success)"
    w.succeed("ship")
    p = w.plan()
    assert w.phase == "Succeeded"
    assert w.wf.status is not None
    assert w.wf.status.progress == "3/3"
    assert w.wf.status.message == "Steps: 3 (Succeeded 3)"
    assert w.wf.status.finished_at == w.now
    assert [e.reason for e in events(p)] == ["StepSucceeded", "WorkflowSucceeded"]
    ready = w.wf.status.condition(ConditionType.READY)
    assert ready is not None and (ready.status, ready.reason) == ("True", "Succeeded")
    stalled = w.wf.status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.status == "False"


def test_parallel_respects_the_parallelism_bound() -> None:
    w = World(workflow([step(f"s{i}") for i in range(5)], strategy="Parallel", parallelism=2))
    w.plan()
    assert sorted(j.step for j in w.active()) == ["s0", "s1"]
    w.succeed("s0")
    w.plan()
    assert sorted(j.step for j in w.active()) == ["s1", "s2"]
    w.succeed("s1")
    w.succeed("s2")
    w.plan()
    assert sorted(j.step for j in w.active()) == ["s3", "s4"]


def test_parallel_without_a_bound_starts_everything() -> None:
    w = World(workflow([step(f"s{i}") for i in range(6)], strategy="Parallel"))
    p = w.plan()
    assert len(creates(p)) == 6


def test_dag_starts_a_step_when_all_its_dependencies_are_done() -> None:
    w = World(
        workflow(
            [
                step("fetch"),
                step("lint", depends_on=["fetch"]),
                step("test", depends_on=["fetch"]),
                step("report", depends_on=["lint", "test"]),
            ],
            strategy="DAG",
        )
    )
    w.plan()
    assert [j.step for j in w.active()] == ["fetch"]
    w.succeed("fetch")
    w.plan()
    assert sorted(j.step for j in w.active()) == ["lint", "test"]
    w.succeed("lint")
    w.plan()
    assert [j.step for j in w.active()] == ["test"]  # report still waits for test
    assert w.step_status("report").phase is StepPhase.PENDING
    w.succeed("test")
    w.plan()
    assert [j.step for j in w.active()] == ["report"]


def test_repeat_runs_until_the_condition_holds_and_sees_its_previous_result() -> None:
    optimize = step(
        "optimize",
        prompt="iteration {{ step.iteration }}; last time: {{ steps.optimize.summary }}",
        repeat={"until": "result.metrics.extra.latencyMs < 200.0", "maxIterations": 5},
    )
    w = World(workflow([optimize]))
    p = w.plan()
    assert creates(p)[0].prompt == "iteration 1; last time: "
    w.succeed("optimize", "now 310 ms", metrics={"latencyMs": 310})
    p = w.plan()
    [create] = creates(p)
    assert (create.iteration, create.attempt, create.job_name) == (
        2,
        1,
        job_name("wf", "optimize", 1, 2, 1, uid=UID),
    )
    assert create.prompt == "iteration 2; last time: now 310 ms"
    assert events(p, "StepIterating")
    assert w.step_status("optimize").phase is StepPhase.RUNNING
    w.succeed("optimize", "now 180 ms", metrics={"latencyMs": 180})
    w.plan()
    status = w.step_status("optimize")
    assert status.phase is StepPhase.SUCCEEDED
    assert status.iteration == 2
    assert status.result is not None and status.result.summary == "now 180 ms"
    assert status.message is None
    assert w.phase == "Succeeded"


def test_repeat_stops_at_max_iterations_and_says_so() -> None:
    w = World(workflow([step("loop", repeat={"until": "false", "maxIterations": 2})]))
    w.plan()
    w.succeed("loop")
    w.plan()
    w.succeed("loop")
    w.plan()
    status = w.step_status("loop")
    assert status.phase is StepPhase.SUCCEEDED
    assert status.iteration == 2
    assert status.message == "repeat: maxIterations reached before until was true"
    assert len(w.created) == 2


def test_until_that_fails_to_evaluate_fails_the_step() -> None:
    w = World(workflow([step("loop", repeat={"until": "result.metrics.extra.missing > 1.0"})]))
    w.plan()
    w.succeed("loop")
    w.plan()
    status = w.step_status("loop")
    assert status.phase is StepPhase.FAILED
    assert status.message is not None
    assert status.message.startswith("spec.steps[0].repeat.until: evaluation failed")
    assert w.phase == "Failed"


def test_when_true_runs_and_when_false_skips_with_an_event() -> None:
    w = World(
        workflow(
            [
                step("diff"),
                step("audit", depends_on=["diff"], when='steps.diff.summary.contains("auth")'),
                step("perf", depends_on=["diff"], when="size(steps.diff.artifacts) > 2"),
            ],
            strategy="DAG",
        )
    )
    w.plan()
    w.succeed("diff", "touches auth", artifacts=["a.go"])
    p = w.plan()
    assert [c.step for c in creates(p)] == ["audit"]
    perf = w.step_status("perf")
    assert perf.phase is StepPhase.SKIPPED
    assert perf.message == "when: size(steps.diff.artifacts) > 2 was false"
    [skipped] = events(p, "StepSkipped")
    assert skipped.type == "Normal" and "perf" in skipped.message
    w.succeed("audit")
    w.plan()
    assert w.phase == "Succeeded"
    assert w.wf.status is not None and w.wf.status.degraded is False  # a when-skip is normal
    assert w.wf.status.message == "Steps: 3 (Succeeded 2, Skipped 1)"


def test_skip_propagates_only_to_steps_whose_dependencies_were_all_skipped() -> None:
    w = World(
        workflow(
            [
                step("check"),
                step("optional", depends_on=["check"], when="false"),
                step("only-optional", depends_on=["optional"]),
                step(
                    "mixed",
                    depends_on=["check", "optional"],
                    prompt="[{{ steps.optional.summary }}] {{ steps.optional.phase }}",
                ),
            ],
            strategy="DAG",
        )
    )
    w.plan()
    w.succeed("check")
    p = w.plan()
    assert w.step_status("optional").phase is StepPhase.SKIPPED
    assert w.step_status("only-optional").phase is StepPhase.SKIPPED
    assert w.step_status("only-optional").message == "every dependency was skipped (optional)"
    [create] = creates(p)
    assert create.step == "mixed"
    assert create.prompt == "[] Skipped"  # a skipped step has no result, but a phase


def test_a_skipped_step_in_a_sequence_does_not_skip_the_rest() -> None:
    w = World(workflow([step("lint"), step("fix", when="false"), step("test")]))
    w.plan()
    w.succeed("lint")
    p = w.plan()
    assert w.step_status("fix").phase is StepPhase.SKIPPED
    assert [c.step for c in creates(p)] == ["test"]


def test_when_sees_workflow_and_upstream_step_fields() -> None:
    w = World(
        workflow(
            [
                step("a"),
                step(
                    "b",
                    when='workflow.name == "wf" && workflow.namespace == "team" && '
                    'steps.a.phase == "Succeeded" && steps.a.status == "success" && '
                    "steps.a.metrics.toolCalls == 3 && steps.a.metrics.extra.score > 0.5 && "
                    '"x.py" in steps.a.artifacts && steps.a.iteration == 1',
                ),
            ]
        )
    )
    w.plan()
    w.succeed("a", artifacts=["x.py"], metrics={"tool_calls": 3, "score": 0.75})
    p = w.plan()
    assert [c.step for c in creates(p)] == ["b"]


def test_when_that_fails_to_evaluate_fails_the_step_and_the_workflow() -> None:
    w = World(workflow([step("a"), step("b", when="steps.a.metrics.errors == 0")]))
    w.plan()
    w.succeed("a")  # reports no errors metric at all
    p = w.plan()
    b = w.step_status("b")
    assert b.phase is StepPhase.FAILED
    assert b.message is not None and b.message.startswith("spec.steps[1].when: evaluation failed")
    assert creates(p) == []
    assert w.phase == "Failed"
    # b never ran: the progress counts a of the two, as a reader takes 2/2 for all done.
    assert w.wf.status is not None and w.wf.status.progress == "1/2"


def test_progress_counts_a_step_that_failed_after_running_its_job() -> None:
    w = World(workflow([step("a"), step("b")]))
    w.plan()
    w.succeed("a")
    w.plan()
    w.fail("b")
    w.plan()
    assert w.phase == "Failed"
    assert w.wf.status is not None and w.wf.status.progress == "2/2"
