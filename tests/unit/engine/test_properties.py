"""Properties of ``plan`` over generated workflows, policies and Job outcomes.

A small simulator plays the cluster: plan, carry out the actions, let some active Jobs succeed
or fail at random, move the clock (to the requested requeue time when nothing is running), and
plan again until the Workflow is finished.  On every pass it checks that:

- no step's Job is created before every step it depends on is terminal;
- never more Jobs are active than ``parallelism`` (one for Sequential), nor than the namespace
  allows;
- planning again on the returned status and the same observation creates, deletes and
  records nothing, and returns the same status (idempotence);
- every Job name is new;

and that the Workflow finishes within a bounded number of passes, with no Job left running.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentflow.api.models import (
    TERMINAL_STEP_PHASES,
    TERMINAL_WORKFLOW_PHASES,
    AgentTemplate,
    StepPhase,
    Workflow,
    WorkflowPhase,
    WorkflowStatus,
)
from agentflow.engine import plan, step_dependencies
from agentflow.engine.types import (
    ANNOTATION_RERUN,
    AttemptFinished,
    FallbackPolicy,
    FallbackTaken,
    Limits,
    Plan,
    RecordEvent,
    StepFinished,
    StepStarted,
    WorkflowFinished,
)
from tests.support.world import World, creates, deletes, fallback_policy, step, workflow

MAX_PASSES = 3_000


@dataclass
class Scenario:
    workflow: Workflow
    policy: FallbackPolicy
    namespace_cap: int | None
    success_rate: float
    rerun_at_pass: int | None
    seed: int


@st.composite
def scenarios(draw: st.DrawFn, hostile: bool = False) -> Scenario:
    """A scenario; ``hostile`` adds, now and then, a condition the core must reject."""
    count = draw(st.integers(min_value=1, max_value=7))
    strategy = draw(st.sampled_from(["Sequential", "Parallel", "DAG"]))
    agents = [f"agent{i}" for i in range(draw(st.integers(min_value=1, max_value=3)))]
    names = [f"s{i}" for i in range(count)]
    steps = []
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        upstream = [*deps, names[i - 1]] if strategy == "Sequential" and i else deps
        fields: dict[str, Any] = {
            "prompt": " ".join([f"task {i}", *(f"{{{{ steps.{d}.summary }}}}" for d in deps)]),
            "depends_on": deps,
            "retries": {
                "limit": draw(st.integers(min_value=0, max_value=2)),
                "backoffSeconds": draw(st.sampled_from([0, 1, 5])),
            },
            "cache": {"enabled": draw(st.booleans())},
        }
        hidden = ["hidden"] if hostile and draw(st.integers(0, 7)) == 0 else []
        when = draw(st.sampled_from([None, None, "true", "false", "upstream", "quoted", *hidden]))
        if when == "upstream":
            when = f'steps.{upstream[0]}.phase != "Skipped"' if upstream else None
        elif when == "quoted" and upstream:  # literals of every form, read as the library does
            when = "'''it's''' != r\"\\\" && " + f'steps["{upstream[0]}"].summary != "("'
        elif when == "quoted":
            when = None
        elif when == "hidden":  # macros nested three deep behind a triple-quoted string
            when = "'''it's''' != '' && [1].all(a, [1].all(b, [1].all(c, true)))"
        if when:
            fields["when"] = when
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            until = draw(st.integers(min_value=1, max_value=4))
            fields["repeat"] = {
                "until": f"result.iteration >= {until}",
                "maxIterations": draw(st.integers(min_value=1, max_value=3)),
            }
        steps.append(step(name, agent=draw(st.sampled_from(agents)), **fields))

    rules = []
    for i, agent in enumerate(agents):
        if not draw(st.booleans()):
            continue
        critical = draw(st.booleans())
        rules.append(
            {
                "agent": agent,
                # Only to later agents: chains without loops, as validation demands.
                "fallback": draw(st.none() | st.sampled_from(agents[i + 1 :] or [None])),
                "criticality": "critical" if critical else draw(st.sampled_from(["high", "low"])),
                "skipIfUnavailable": False if critical else draw(st.booleans()),
                "maxAttempts": draw(st.integers(min_value=1, max_value=2)),
            }
        )
    default = draw(st.none() | st.just({"skipIfUnavailable": True, "criticality": "low"}))
    wf = workflow(
        steps,
        agents=[AgentTemplate(name=a) for a in agents],
        strategy=strategy,
        parallelism=draw(st.none() | st.integers(min_value=1, max_value=3)),
    )
    return Scenario(
        workflow=wf,
        policy=fallback_policy(*rules, default=default),
        namespace_cap=draw(st.none() | st.integers(min_value=1, max_value=4)),
        success_rate=draw(st.sampled_from([0.4, 0.8, 1.0])),
        rerun_at_pass=draw(st.none() | st.integers(min_value=1, max_value=6)),
        seed=draw(st.integers(min_value=0, max_value=2**32 - 1)),
    )


def _slots(w: World, cap: int | None) -> Limits:
    return Limits(namespace_job_slots=None if cap is None else max(cap - len(w.active()), 0))


def _check_pass(w: World, p: Plan, limits: Limits, scenario: Scenario) -> None:
    jobs = w.observed()
    deps = step_dependencies(w.wf.spec)
    for create in creates(p):
        for dep in deps[create.step]:
            dep_status = p.status.step(dep)
            assert dep_status is not None and dep_status.phase in TERMINAL_STEP_PHASES, (
                f"{create.step} started before {dep} finished"
            )
        assert create.job_name not in w.created, f"{create.job_name} reused"

    again_limits = limits
    if limits.namespace_job_slots is not None:
        again_limits = Limits(
            namespace_job_slots=max(limits.namespace_job_slots - len(creates(p)), 0)
        )
    replanned = w.wf.model_copy(update={"status": p.status})
    again = plan(replanned, w.policy, jobs, w.cache.get, w.now, again_limits)
    assert creates(again) == [] and deletes(again) == []
    assert [a for a in again.actions if isinstance(a, RecordEvent)] == []
    assert again.facts == [], "planning again reported changes a second time"
    assert again.status == p.status


def simulate(scenario: Scenario) -> World:
    rng = random.Random(scenario.seed)
    w = World(scenario.workflow, policy=scenario.policy)
    spec = scenario.workflow.spec
    bound = 1 if spec.strategy == "Sequential" else spec.parallelism
    for pass_number in range(MAX_PASSES):
        if pass_number == scenario.rerun_at_pass:
            meta = w.wf.metadata.model_copy(update={"annotations": {ANNOTATION_RERUN: "again"}})
            w.wf = w.wf.model_copy(update={"metadata": meta})
        limits = _slots(w, scenario.namespace_cap)
        w.limits = limits
        given_status = w.wf.status.model_copy(deep=True) if w.wf.status else None
        p = plan(w.wf, w.policy, w.observed(), w.cache.get, w.now, limits)
        # The operator plans its next pass from the very model it wrote (controller.status_of):
        # the planner must not change the status it is given, and the model must come back
        # equal from its wire form, as a pass from the API server's copy would read it.
        assert w.wf.status == given_status, "plan changed the status it was given"
        assert WorkflowStatus.model_validate(p.status.wire()) == p.status
        _check_pass(w, p, limits, scenario)
        w.apply(p)

        active = w.active()
        if bound is not None:
            assert len(active) <= bound, f"{len(active)} active Jobs, bound {bound}"
        if scenario.namespace_cap is not None:
            assert len(active) <= scenario.namespace_cap
        rerun_pending = scenario.rerun_at_pass is not None and pass_number < scenario.rerun_at_pass
        if p.status.phase in TERMINAL_WORKFLOW_PHASES and not rerun_pending:
            assert active == [], "a finished Workflow left Jobs running"
            return w

        finished = 0
        for job in active:
            if rng.random() < 0.5:
                finished += 1
                if rng.random() < scenario.success_rate:
                    w.succeed(job.step)
                else:
                    w.fail(job.step)
        if finished or w.active():
            w.tick(1)  # a Job changed (the operator is woken by its watch) or is still running
        elif p.requeue_after is not None:
            w.tick(p.requeue_after)
        else:
            # Nothing runs, nothing changed and nothing is due: only a finished Workflow rests.
            assert p.status.phase in TERMINAL_WORKFLOW_PHASES, p.status
            w.tick(1)
    raise AssertionError(f"not finished after {MAX_PASSES} passes: {w.phases()}")


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(hostile=True))
def test_generated_workflows_finish_and_keep_the_invariants(scenario: Scenario) -> None:
    w = simulate(scenario)
    status = w.wf.status
    assert status is not None
    steps = status.steps
    event(f"phase {status.phase}, run {status.run}, degraded {status.degraded}")
    event(f"{len(w.created)} Jobs created" if len(w.created) < 10 else "10+ Jobs created")
    if status.phase is WorkflowPhase.SUCCEEDED:
        assert all(s.phase in TERMINAL_STEP_PHASES for s in steps)
        assert not any(s.phase is StepPhase.FAILED for s in steps)
    else:
        assert status.phase is WorkflowPhase.FAILED
        assert status.message and status.finished_at is not None
    hidden = [i for i, s in enumerate(w.wf.spec.steps) if (s.when or "").endswith("c, true)))")]
    if hidden:  # rejected before anything runs; the message names the first such field
        event("a condition with hidden nested macros")
        assert f"spec.steps[{hidden[0]}].when: macros such as all/exists" in (status.message or "")
        assert w.created == []
    # Progress counts the steps that are over, less those that failed before they ran a Job.
    over = [s for s in steps if s.phase in TERMINAL_STEP_PHASES]
    never_ran = [s for s in over if s.phase is StepPhase.FAILED and not s.attempts]
    assert status.progress == f"{len(over) - len(never_ran)}/{len(steps)}"
    # A finished Workflow stays as it is.
    settled = plan(w.wf, w.policy, w.observed(), w.cache.get, w.now, Limits())
    assert settled.actions == [] and settled.status == status


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_second_run_from_the_cache_creates_jobs_only_for_uncached_steps(
    scenario: Scenario,
) -> None:
    scenario = replace(scenario, success_rate=1.0, rerun_at_pass=None)
    first = simulate(scenario)
    assert first.phase == "Succeeded"
    again = World(
        scenario.workflow.model_copy(
            update={"metadata": scenario.workflow.metadata.model_copy(update={"name": "again"})}
        ),
        policy=scenario.policy,
        cache=dict(first.cache),
        now=first.now,
    )
    p = again.plan()
    cached = {s.name for s in scenario.workflow.spec.steps if s.cache is None or s.cache.enabled}
    assert {c.step for c in creates(p)}.isdisjoint(cached)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_facts_of_a_run_add_up_to_its_status(scenario: Scenario) -> None:
    """What the metrics count: over a whole run, one AttemptFinished per attempt (with its
    outcome), one StepStarted per step that ran a Job, one StepFinished per step that ended
    Succeeded, Cached or Skipped, one FallbackTaken per step that used a fallback agent, and
    exactly one WorkflowFinished, with the run's phase and degraded flag."""
    w = simulate(replace(scenario, rerun_at_pass=None))
    status = w.wf.status
    assert status is not None and status.run == 1
    finished = [f for f in w.facts if isinstance(f, WorkflowFinished)]
    assert finished == [WorkflowFinished(phase=status.phase, degraded=status.degraded)]

    def outcome(fallback: bool, succeeded: bool) -> str:
        return ("fallback" if fallback else "succeeded") if succeeded else "failed"

    attempts = sorted(
        (s.name, a.agent, outcome(a.fallback, a.outcome == "Succeeded"))
        for s in status.steps
        for a in s.attempts
    )
    reported = sorted(
        (f.step, f.agent, f.outcome) for f in w.facts if isinstance(f, AttemptFinished)
    )
    assert reported == attempts
    started = sorted((f.step, f.agent) for f in w.facts if isinstance(f, StepStarted))
    assert started == sorted((s.name, s.attempts[0].agent) for s in status.steps if s.attempts)
    ended = (StepPhase.SUCCEEDED, StepPhase.CACHED, StepPhase.SKIPPED)
    steps_ended = sorted((s.name, s.phase) for s in status.steps if s.phase in ended)
    assert sorted((f.step, f.phase) for f in w.facts if isinstance(f, StepFinished)) == steps_ended
    fallbacks = sorted(f.step for f in w.facts if isinstance(f, FallbackTaken))
    assert fallbacks == sorted(s.name for s in status.steps if any(a.fallback for a in s.attempts))
