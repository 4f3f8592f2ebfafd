"""Quality gates: ``steps[].accept`` judges each attempt's result; a result that fails it is a
failed attempt of class QualityGateFailed (retries, fallback), is never cached, and comes
before ``repeat.until``."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.api.models import AgentTemplate, StepPhase, StepResult, WorkflowSpec
from agentflow.engine import plan, validate_workflow
from agentflow.engine.expressions import PassBudget
from agentflow.engine.gates import gate_values
from agentflow.engine.planner import WAITING_CEL_TIME
from agentflow.engine.types import CacheEntry, WriteCache
from tests.support.world import World, creates, events, fallback_policy, kinds, step, workflow

GATE = "result.metrics.extra.score >= 80 && size(result.artifacts) > 0"


def gated(**fields: object) -> World:
    wf = workflow(
        [step("s", agent="a", accept=GATE, **fields)],
        agents=[AgentTemplate(name="a"), AgentTemplate(name="b")],
    )
    w = World(wf)
    w.policy = fallback_policy({"agent": "a", "fallback": "b"})
    return w


def test_a_result_that_fails_the_gate_fails_the_attempt_and_the_fallback_passes() -> None:
    w = gated()
    w.plan()
    w.succeed("s", "draft", metrics={"score": 42}, artifacts=["a.md"])
    p = w.plan()
    first = w.step_status("s").attempts[0]
    assert (first.outcome, first.reason, first.exit_code) == ("Failed", "QualityGateFailed", 0)
    assert first.message == (
        f"QualityGateFailed: accept: {GATE} was false (score = 42, size(artifacts) = 1)"
    )
    assert kinds(p.actions, WriteCache) == []
    [fallback] = creates(p)
    assert fallback.agent.name == "b" and fallback.fallback
    [used] = events(p, "FallbackUsed")
    assert "QualityGateFailed: accept:" in used.message and "score = 42" in used.message
    w.succeed("s", "good", metrics={"score": 91}, artifacts=["a.md"])
    w.plan()
    status = w.step_status("s")
    assert status.phase is StepPhase.SUCCEEDED and status.result is not None
    assert status.result.summary == "good"
    assert w.wf.status is not None and w.wf.status.degraded


def test_a_missing_metric_fails_the_gate_and_says_so() -> None:
    w = gated()
    w.plan()
    w.succeed("s", "no score at all", artifacts=["a.md"])
    w.plan()
    first = w.step_status("s").attempts[0]
    assert first.reason == "QualityGateFailed"
    assert first.message is not None and "could not be judged" in first.message
    assert "score missing" in first.message


def test_the_gate_retries_like_any_failure_and_passes_on_the_second_attempt() -> None:
    w = gated(retries={"limit": 1, "backoffSeconds": 5})
    w.plan()
    w.succeed("s", metrics={"score": 10}, artifacts=["x"])
    w.plan()
    status = w.step_status("s")
    assert status.next_attempt_at == w.now + timedelta(seconds=5)
    assert status.message is not None and "QualityGateFailed" in status.message
    w.tick(5)
    [retry] = creates(w.plan())
    assert retry.agent.name == "a"
    w.succeed("s", metrics={"score": 80}, artifacts=["x"])
    p = w.plan()
    assert w.step_status("s").phase is StepPhase.SUCCEEDED
    [written] = kinds(p.actions, WriteCache)
    assert written.result.metrics.extra == {"score": 80.0}


def test_the_policy_can_fail_the_step_on_a_failed_gate() -> None:
    w = gated()
    w.policy = fallback_policy(
        {
            "agent": "a",
            "fallback": "b",
            "onFailure": [{"classes": ["QualityGateFailed"], "action": "Fail"}],
        }
    )
    w.plan()
    w.succeed("s", metrics={"score": 1}, artifacts=["x"])
    p = w.plan()
    assert creates(p) == [] and w.step_status("s").phase is StepPhase.FAILED
    assert w.phase == "Failed"


def test_a_cached_result_that_fails_the_gate_is_not_reused() -> None:
    w = gated()
    w.plan()
    [job] = w.active("s")
    key = w.step_status("s").cache_key
    assert key is not None
    # A result stored before the step had its gate: the next run must not reuse it.
    w2 = gated()
    w2.cache[key] = CacheEntry(
        key=key,
        result=StepResult(summary="old"),
        created_at=w.now,
        expires_at=w.now + timedelta(hours=1),
    )
    p = w2.plan()
    assert [c.agent.name for c in creates(p)] == ["a"]
    assert w2.step_status("s").phase is StepPhase.RUNNING
    assert [o.result for o in p.cache_outcomes] == ["miss"]
    # One that passes it is.
    w3 = gated()
    w3.cache[key] = CacheEntry(
        key=key,
        result=StepResult.model_validate(
            {"summary": "fine", "artifacts": [{"path": "a"}], "metrics": {"extra": {"score": 99}}}
        ),
        created_at=w.now,
        expires_at=w.now + timedelta(hours=1),
    )
    p = w3.plan()
    assert creates(p) == [] and w3.step_status("s").phase is StepPhase.CACHED
    assert job.name


def test_accept_comes_before_until_in_each_iteration() -> None:
    """A rejected iteration is retried (or falls back) within the same iteration; only an
    accepted result is judged by until."""
    wf = workflow(
        [
            step(
                "s",
                agent="a",
                accept="result.metrics.extra.score >= 50",
                repeat={"until": "result.metrics.extra.score >= 90", "maxIterations": 3},
                retries={"limit": 1, "backoffSeconds": 0},
            )
        ]
    )
    w = World(wf)
    w.plan()
    w.succeed("s", metrics={"score": 60})  # accepted, until false: iteration 2
    w.plan()
    status = w.step_status("s")
    assert status.iteration == 2 and status.phase is StepPhase.RUNNING
    w.succeed("s", metrics={"score": 95})  # accepted, and until is true
    w.plan()
    assert w.step_status("s").phase is StepPhase.SUCCEEDED

    w = World(wf)
    w.plan()
    w.succeed("s", metrics={"score": 99, "note": 1})
    w.plan()
    assert w.step_status("s").phase is StepPhase.SUCCEEDED  # until true at once

    w = World(wf)
    w.plan()
    w.succeed("s", metrics={"score": 10})  # rejected: retried in iteration 1
    w.plan()
    status = w.step_status("s")
    assert status.iteration == 1
    assert [(a.iteration, a.outcome, a.reason) for a in status.attempts] == [
        (1, "Failed", "QualityGateFailed"),
        (1, "Running", None),
    ]
    w.succeed("s", metrics={"score": 95})
    w.plan()
    status = w.step_status("s")
    assert status.phase is StepPhase.SUCCEEDED and status.result is not None
    assert status.result.metrics.extra["score"] == 95.0


def test_accept_is_validated_like_until() -> None:
    def problems(accept: str, depends: list[str] | None = None) -> list[str]:
        spec = WorkflowSpec.model_validate(
            {
                "steps": [
                    {"name": "first", "agent": "a"},
                    {"name": "s", "agent": "a", "accept": accept, "dependsOn": depends or []},
                ],
                "agents": [{"name": "a"}],
                "strategy": "DAG",
            }
        )
        return validate_workflow(spec)

    assert problems("result.metrics.extra.score >= 80") == []
    assert problems("steps.first.phase == 'Succeeded'", ["first"]) == []
    [bad] = problems("result.metrics.extra.score >=")
    assert bad.startswith("spec.steps[1].accept: ")
    [unknown] = problems("inputs.x > 1")
    assert unknown == "spec.steps[1].accept: unknown input 'x' (declared in spec.arguments: none)"
    [typed] = problems("result.metrics.nosuch > 1")
    assert typed.startswith("spec.steps[1].accept: ") and "nosuch" in typed
    [upstream] = problems("steps.first.phase == 'Succeeded'")
    assert upstream == (
        "spec.steps[1].accept: references step 'first' which is not an upstream dependency"
    )


def test_gate_values() -> None:
    view = {
        "summary": "s",
        "status": "success",
        "metrics": {"toolCalls": 3, "extra": {"score": 42.0}},
        "artifacts": ["a", "b"],
        "iteration": 2,
    }
    assert gate_values("result.metrics.extra.score >= 80", view) == "score = 42"
    assert (
        gate_values(
            "result.metrics.extra.score > 1 && result.metrics.latency < 2"
            " && size(result.artifacts) > 3 && result.status == 'ok'",
            view,
        )
        == 'score = 42, latency missing, size(artifacts) = 2, status = "success"'
    )
    assert gate_values("true", view) == ""


@settings(max_examples=30, deadline=None)
@given(scores=st.lists(st.integers(0, 100), min_size=1, max_size=4))
def test_a_step_succeeds_exactly_when_some_attempt_passes_its_gate(scores: list[int]) -> None:
    """With as many attempts as scores, the step succeeds with the first passing result and
    caches only that one; if none passes, it fails."""
    wf = workflow(
        [
            step(
                "s",
                agent="a",
                accept="result.metrics.extra.score >= 50",
                retries={"limit": len(scores) - 1, "backoffSeconds": 0},
            )
        ]
    )
    w = World(wf)
    w.plan()
    written: list[WriteCache] = []
    for score in scores:
        if w.step_status("s").phase is not StepPhase.RUNNING:
            break
        w.succeed("s", metrics={"score": score})
        p = w.plan()
        written += kinds(p.actions, WriteCache)
    passing = [s for s in scores if s >= 50]
    status = w.step_status("s")
    if passing:
        assert status.phase is StepPhase.SUCCEEDED
        assert [c.result.metrics.extra["score"] for c in written] == [float(passing[0])]
        assert len(status.attempts) == scores.index(passing[0]) + 1
    else:
        assert status.phase is StepPhase.FAILED and written == []
        assert all(a.reason == "QualityGateFailed" for a in status.attempts)


def test_a_pass_whose_cel_time_is_spent_judges_the_gate_in_a_later_pass() -> None:
    """As for repeat.until: with the namespace's CEL time spent, the attempt stays Running and
    the step waits; the next pass with time judges it."""
    w = gated()
    w.plan()
    w.succeed("s", metrics={"score": 90}, artifacts=["a"])
    spent = plan(w.wf, w.policy, w.observed(), w.cache.get, w.now, w.limits, PassBudget(seconds=0))
    assert spent.status.step("s") is not None
    waiting = spent.status.step("s")
    assert waiting is not None and waiting.attempts[-1].outcome == "Running"
    assert spent.status.message is not None and WAITING_CEL_TIME in spent.status.message
    assert spent.requeue_after is not None
    w.apply(spent)
    w.plan()
    assert w.step_status("s").phase is StepPhase.SUCCEEDED
