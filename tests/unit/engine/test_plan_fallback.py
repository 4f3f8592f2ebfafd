"""The three fallback tiers (retry, fallback agent, skip) and what is left when all fail."""

from __future__ import annotations

from datetime import timedelta

from agentflow.api.models import AgentTemplate, ConditionType, StepPhase
from agentflow.engine import job_name
from agentflow.engine.types import WriteCache
from tests.support.world import (
    UID,
    World,
    creates,
    deletes,
    events,
    fallback_policy,
    kinds,
    step,
    workflow,
)


def test_retry_waits_with_exponential_backoff_then_succeeds() -> None:
    retries = {"limit": 2, "backoffSeconds": 10, "backoffFactor": 3, "maxBackoffSeconds": 20}
    w = World(workflow([step("flaky", retries=retries)]))
    w.plan()
    w.fail("flaky", reason="BackoffLimitExceeded", exit_code=2, summary="network down")
    p = w.plan()
    status = w.step_status("flaky")
    assert creates(p) == []
    assert status.phase is StepPhase.RUNNING
    assert status.next_attempt_at == w.now + timedelta(seconds=10)
    assert p.requeue_after == 10
    [retrying] = events(p, "StepRetrying")
    assert retrying.type == "Warning" and "network down" in retrying.message
    failed = status.attempts[0]
    assert (failed.outcome, failed.reason, failed.exit_code) == (
        "Failed",
        "AgentError",
        2,
    )
    assert failed.message == "AgentError (exit code 2): network down"

    w.tick(9)
    assert creates(w.plan()) == []  # not yet
    w.tick(1)
    [second] = creates(w.plan())
    assert (second.attempt, second.job_name, second.agent.name) == (
        2,
        job_name("wf", "flaky", 1, 1, 2, uid=UID),
        "a",
    )
    w.fail("flaky")
    p = w.plan()
    # 10 * 3 = 30, capped at 20
    assert w.step_status("flaky").next_attempt_at == w.now + timedelta(seconds=20)
    assert p.requeue_after == 20
    w.tick(20)
    [third] = creates(w.plan())
    assert third.attempt == 3
    w.succeed("flaky")
    w.plan()
    assert w.phase == "Succeeded"
    assert w.wf.status is not None and w.wf.status.degraded is False


def test_policy_max_attempts_bounds_retries_of_the_primary_agent() -> None:
    policy = fallback_policy({"agent": "a", "maxAttempts": 3})
    w = World(workflow([step("s", retries={"limit": 1, "backoffSeconds": 0})]), policy=policy)
    w.plan()
    for expected in (2, 3):
        w.fail("s")
        [create] = creates(w.plan())  # no backoff: the retry starts in the same pass
        assert create.attempt == expected
    w.fail("s")
    w.plan()
    assert w.phase == "Failed"
    assert len(w.step_status("s").attempts) == 3


def test_fallback_agent_takes_over_and_the_workflow_is_degraded() -> None:
    policy = fallback_policy({"agent": "primary", "fallback": "backup", "criticality": "high"})
    spec_agents = [
        AgentTemplate(name="primary", image="ex/primary:1"),
        AgentTemplate(name="backup"),
    ]
    w = World(
        workflow([step("work", agent="primary", override={"model": "big"})], agents=spec_agents),
        policy=policy,
    )
    w.plan()
    w.fail("work", reason="ErrImagePull", exit_code=None)
    p = w.plan()
    [create] = creates(p)
    assert (create.agent.name, create.fallback, create.attempt) == ("backup", True, 2)
    assert create.agent.model is None  # the step's override is for its own agent only
    assert create.cache_key is None
    [used] = events(p, "FallbackUsed")
    assert used.type == "Warning"
    assert "primary" in used.message and "backup" in used.message and "ErrImagePull" in used.message
    status = w.step_status("work")
    assert status.fallback_used is True
    assert status.attempts[-1].fallback is True
    assert w.wf.status is not None and w.wf.status.degraded is True

    w.succeed("work", "backup did it")
    p = w.plan()
    assert w.phase == "Succeeded"
    assert [e.reason for e in events(p)] == [
        "StepSucceeded",
        "WorkflowSucceeded",
        "WorkflowDegraded",
    ]
    assert kinds(p.actions, WriteCache) == []  # a fallback's result is not the key's
    status = w.step_status("work")
    assert [a.agent for a in status.attempts] == ["primary", "backup"]
    assert status.result is not None and status.result.summary == "backup did it"
    assert w.wf.status.message == "Steps: 1 (Fallback 1)"
    degraded = w.wf.status.condition(ConditionType.DEGRADED)
    assert degraded is not None
    assert (degraded.status, degraded.reason) == ("True", "FallbackUsed")
    assert "work" in degraded.message


def test_fallback_agent_gets_its_own_attempts_and_chains_without_revisiting() -> None:
    policy = fallback_policy(
        {"agent": "a", "fallback": "b"},
        {"agent": "b", "fallback": "c", "maxAttempts": 2},
        default={"fallback": "a"},  # c's rule: back to a, which was tried already
    )
    no_wait = {"backoffSeconds": 0}
    w = World(
        workflow([step("s", retries=no_wait)], agents=[AgentTemplate(name=n) for n in "abc"]),
        policy=policy,
    )
    agents_run = []
    p = w.plan()
    for _ in range(4):
        [create] = creates(p)
        agents_run.append(create.agent.name)
        w.fail("s")
        p = w.plan()
    assert agents_run == ["a", "b", "b", "c"]
    assert creates(p) == []
    assert w.phase == "Failed"


def test_skippable_step_is_skipped_when_every_agent_failed() -> None:
    policy = fallback_policy(
        {"agent": "flaky", "fallback": "spare", "criticality": "low", "skipIfUnavailable": True}
    )
    w = World(
        workflow(
            [
                step("optional", agent="flaky"),
                step("after", agent="solid", depends_on=["optional"]),
                step("main", agent="solid"),
            ],
            strategy="Parallel",
            agents=[AgentTemplate(name=n) for n in ("flaky", "spare", "solid")],
        ),
        policy=policy,
    )
    w.plan()
    w.fail("optional")
    w.plan()
    w.fail("optional")
    p = w.plan()
    optional = w.step_status("optional")
    assert optional.phase is StepPhase.SKIPPED
    assert optional.message is not None and optional.message.startswith("agent spare unavailable")
    [skipped, propagated] = events(p, "StepSkipped")
    assert skipped.type == "Warning" and "optional" in skipped.message
    assert propagated.type == "Normal" and "after" in propagated.message
    w.succeed("main")
    p = w.plan()
    assert w.phase == "Succeeded"
    assert w.wf.status is not None and w.wf.status.degraded is True
    degraded = w.wf.status.condition(ConditionType.DEGRADED)
    assert degraded is not None and degraded.status == "True"
    assert "optional" in degraded.message
    assert events(p, "WorkflowDegraded")


def test_critical_failure_fails_the_workflow_and_stops_running_jobs() -> None:
    policy = fallback_policy(
        {"agent": "validator", "criticality": "critical"},
    )
    w = World(
        workflow(
            [step("validate", agent="validator"), step("slow", agent="slowpoke"), step("later")],
            strategy="DAG",
            parallelism=2,
        ),
        policy=policy,
    )
    w.plan()
    slow_job = w.job_of("slow").name
    w.fail("validate", reason="Error", exit_code=3, summary="schema mismatch")
    p = w.plan()
    assert w.phase == "Failed"
    assert [(d.job_name, d.reason) for d in deletes(p)] == [(slow_job, "workflow failed")]
    status = w.wf.status
    assert status is not None
    assert status.message == "step validate failed: AgentError (exit code 3): schema mismatch"
    stalled = status.condition(ConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "StepFailed")
    assert "validate" in stalled.message
    ready = status.condition(ConditionType.READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "Failed")
    reconciling = status.condition(ConditionType.RECONCILING)
    assert reconciling is not None and reconciling.status == "False"
    assert [e.reason for e in events(p)] == ["StepFailed", "WorkflowFailed"]
    assert all(e.type == "Warning" for e in events(p))
    slow = w.step_status("slow")
    assert slow.phase is StepPhase.FAILED and slow.message == "cancelled: workflow failed"
    assert slow.attempts[0].outcome == "Failed" and slow.attempts[0].reason == "Cancelled"
    assert w.step_status("later").phase is StepPhase.PENDING
    assert status.finished_at == w.now

    # Terminal: nothing changes any more, nothing is created.
    w.tick(60)
    again = w.plan()
    assert again.actions == []
    assert again.status == status


def test_critical_agent_is_not_skipped_even_if_the_default_would_allow_it() -> None:
    policy = fallback_policy(
        {"agent": "core", "criticality": "critical"},
        default={"skipIfUnavailable": True, "criticality": "low"},
    )
    w = World(workflow([step("main", agent="core"), step("extra", agent="other")]), policy=policy)
    w.plan()
    w.fail("main")
    w.plan()
    assert w.phase == "Failed"

    w2 = World(workflow([step("extra", agent="other"), step("main", agent="core")]), policy=policy)
    w2.plan()
    w2.fail("extra")
    p = w2.plan()
    assert w2.step_status("extra").phase is StepPhase.SKIPPED  # the default rule applies
    assert [c.step for c in creates(p)] == ["main"]


def test_undeclared_fallback_agent_fails_the_workflow_up_front() -> None:
    policy = fallback_policy({"agent": "a", "fallback": "ghost"})
    w = World(workflow([step("s")]), policy=policy)
    p = w.plan()
    assert creates(p) == []
    assert w.phase == "Failed"
    assert w.wf.status is not None
    assert (
        w.wf.status.message == "fallback agent 'ghost' of agent 'a' is not declared in spec.agents"
    )
    stalled = w.wf.status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == "InvalidFallbackPolicy"


def test_a_missing_or_invalid_policy_fails_with_its_error() -> None:
    from agentflow.engine import resolve_policy

    w = World(workflow([step("s")]), policy=resolve_policy(None, "gone"))
    w.plan()
    assert w.phase == "Failed"
    assert w.wf.status is not None
    assert w.wf.status.message == "fallback policy 'gone' not found"
    stalled = w.wf.status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == "InvalidFallbackPolicy"


def test_failure_reason_comes_from_the_job_and_its_report() -> None:
    w = World(workflow([step("s")]))
    w.plan()
    w.fail("s", reason="DeadlineExceeded", exit_code=None)
    w.plan()
    assert w.wf.status is not None
    assert w.wf.status.message == "step s failed: Timeout (DeadlineExceeded)"
