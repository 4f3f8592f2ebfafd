"""The fallback policy decides by failure class: the built-in defaults, onFailure entries, the
bounds that keep uncounted retries finite, and where the class shows (status, events, facts)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentflow.api.models import AgentFallbackPolicySpec, AgentTemplate, FailureClass, StepPhase
from agentflow.engine import validate_policy
from agentflow.engine.failures import BUILTIN_CLASS_RULES, class_rule, classify
from agentflow.engine.types import AttemptFinished, JobState
from agentflow.observe import JobSummary, PodSummary, observe
from tests.support.world import T0, World, creates, events, fallback_policy, step, workflow


def two_agents(**step_fields: object) -> World:
    wf = workflow(
        [step("s", agent="a", **step_fields)],
        agents=[AgentTemplate(name="a"), AgentTemplate(name="b")],
    )
    return World(wf)


def attempts(w: World) -> list[tuple[str, str, str | None]]:
    return [(a.agent, a.outcome, a.reason) for a in w.step_status("s").attempts]


# -- classification, pure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "reasons", "expected"),
    [
        ("RateLimited", ("OOMKilled", "BackoffLimitExceeded"), FailureClass.RATE_LIMITED),
        ("NotAClass", ("OOMKilled",), FailureClass.OOM_KILLED),
        (None, ("OOMKilled", "BackoffLimitExceeded"), FailureClass.OOM_KILLED),
        (None, ("Error", "DeadlineExceeded"), FailureClass.TIMEOUT),
        (None, (None, "ErrImagePull"), FailureClass.IMAGE_PULL_FAILED),
        (None, (None, "ImagePullBackOff"), FailureClass.IMAGE_PULL_FAILED),
        (None, (None, "CreateContainerConfigError"), FailureClass.CONFIG_ERROR),
        (None, ("Error", "BackoffLimitExceeded"), FailureClass.AGENT_ERROR),
        (None, (None, None), FailureClass.AGENT_ERROR),
        (None, ("JobLost",), FailureClass.JOB_LOST),
        (None, ("JobRefused",), FailureClass.JOB_REFUSED),
    ],
)
def test_classify(
    reported: str | None, reasons: tuple[str | None, ...], expected: FailureClass
) -> None:
    assert classify(reported, *reasons) is expected


def job(**fields: object) -> JobSummary:
    values: dict[str, object] = {
        "name": "wf-s-1",
        "uid": "job-uid",
        "owner_uid": "wf-uid",
        "workflow": "wf",
        "step": "s",
        "run": 1,
        "iteration": 1,
        "attempt": 1,
        "agent": "a",
        "created_at": T0,
        "state": JobState.FAILED,
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "started_at": T0,
        "finished_at": T0,
    }
    values.update(fields)
    return JobSummary(**values)  # type: ignore[arg-type]


def pod(**fields: object) -> PodSummary:
    values: dict[str, object] = {
        "job_name": "wf-s-1",
        "job_uid": "job-uid",
        "name": "wf-s-1-x",
        "created_at": T0,
        "terminated": True,
        "exit_code": 1,
        "reason": "Error",
    }
    values.update(fields)
    return PodSummary(**values)  # type: ignore[arg-type]


def test_observe_takes_the_class_an_agent_reports_then_the_pods_reason() -> None:
    stated = (
        '{"v": 1, "status": "failure", "summary": "429", "truncated": false, "size": 3,'
        ' "failureClass": "RateLimited", "retryAfterSeconds": 20}'
    )
    [seen] = observe([job()], [pod(message=stated)], T0)
    assert (seen.failure_class, seen.retry_after_seconds) == ("RateLimited", 20.0)
    custom = '{"status": "failure", "summary": "no credit", "failureClass": "QuotaExceeded"}'
    [seen] = observe([job()], [pod(message=custom)], T0)
    assert (seen.failure_class, seen.message) == ("QuotaExceeded", "no credit")
    [seen] = observe([job()], [pod(reason="OOMKilled", exit_code=137, message=None)], T0)
    assert seen.failure_class == "OOMKilled"
    [seen] = observe([job(reason="DeadlineExceeded")], [pod(exit_code=143)], T0)
    assert seen.failure_class == "Timeout"
    [seen] = observe([job()], [pod(message="plain text failure")], T0)
    assert (seen.failure_class, seen.retry_after_seconds) == ("AgentError", None)
    [seen] = observe([job(state=JobState.SUCCEEDED, reason=None)], [pod(exit_code=0)], T0)
    assert seen.failure_class is None


# -- the built-in defaults ----------------------------------------------------------------------


def test_rate_limited_waits_for_retry_after_and_retries_the_same_agent_without_counting() -> None:
    w = two_agents()
    w.policy = fallback_policy({"agent": "a", "fallback": "b"})
    w.plan()
    w.fail(
        "s", summary="anthropic API returned HTTP 429", failure_class="RateLimited", retry_after=42
    )
    p = w.plan()
    status = w.step_status("s")
    assert creates(p) == []
    assert status.phase is StepPhase.RUNNING
    assert status.next_attempt_at == w.now + timedelta(seconds=42)
    assert p.requeue_after == 42
    assert status.message is not None
    assert "retrying in 42s (RateLimited: Retry-After 42s; not counted against maxAttempts" in (
        status.message
    )
    [retrying] = events(p, "StepRetrying")
    assert "RateLimited" in retrying.message and "42s" in retrying.message
    assert attempts(w) == [("a", "Failed", "RateLimited")]
    w.tick(42)
    [again] = creates(w.plan())
    assert (again.agent.name, again.attempt, again.fallback) == ("a", 2, False)
    w.succeed("s")
    w.plan()
    assert w.step_status("s").phase is StepPhase.SUCCEEDED
    assert not w.step_status("s").fallback_used


def test_the_wait_is_bounded_by_max_wait_seconds() -> None:
    w = two_agents()
    w.policy = fallback_policy(
        {
            "agent": "a",
            "onFailure": [
                {"classes": ["Overloaded"], "action": "RetrySameAgent", "maxWaitSeconds": 60}
            ],
        }
    )
    w.plan()
    w.fail("s", failure_class="Overloaded", retry_after=3600)
    w.plan()
    status = w.step_status("s")
    assert status.next_attempt_at == w.now + timedelta(seconds=60)
    assert status.message is not None and "at most 60s" in status.message


def test_without_retry_after_the_steps_backoff_is_used() -> None:
    w = two_agents(retries={"backoffSeconds": 7})
    w.plan()
    w.fail("s", failure_class="Overloaded")
    w.plan()
    assert w.step_status("s").next_attempt_at == w.now + timedelta(seconds=7)


def test_uncounted_retries_stop_at_max_retries_then_count_as_usual() -> None:
    w = two_agents()
    w.policy = fallback_policy(
        {
            "agent": "a",
            "fallback": "b",
            "maxAttempts": 2,
            "onFailure": [
                {"classes": ["RateLimited"], "action": "RetrySameAgent", "maxRetries": 2}
            ],
        }
    )
    w.plan()
    for _ in range(3):
        w.fail("s", failure_class="RateLimited", retry_after=1)
        w.plan()
        w.tick(1)
        [created] = creates(w.plan())
        assert created.agent.name == "a"
    # Two uncounted retries, then the third counts (attempt 1 of maxAttempts 2 used); the
    # fourth failure uses up maxAttempts and the fallback runs.
    w.fail("s", failure_class="RateLimited", retry_after=1)
    [fallback] = creates(w.plan())
    assert fallback.agent.name == "b" and fallback.fallback
    assert [a for a, _, _ in attempts(w)] == ["a", "a", "a", "a", "b"]


def test_auth_quota_and_context_errors_go_to_the_fallback_at_once() -> None:
    for failure in ("AuthFailed", "QuotaExceeded", "ContextTooLong"):
        w = two_agents(retries={"limit": 3})
        w.policy = fallback_policy({"agent": "a", "fallback": "b", "maxAttempts": 5})
        w.plan()
        w.fail("s", summary="HTTP 401", failure_class=failure)
        p = w.plan()
        [fallback] = creates(p)
        assert (fallback.agent.name, fallback.attempt) == ("b", 2), failure
        [used] = events(p, "FallbackUsed")
        assert failure in used.message


def test_other_classes_retry_up_to_max_attempts_as_before() -> None:
    w = two_agents()
    w.policy = fallback_policy({"agent": "a", "fallback": "b", "maxAttempts": 2})
    w.plan()
    w.fail("s", failure_class="Timeout")
    w.plan()
    w.tick(10)
    [retry] = creates(w.plan())
    assert retry.agent.name == "a"
    w.fail("s", failure_class="Timeout")
    [fallback] = creates(w.plan())
    assert fallback.agent.name == "b"


def test_fallback_without_a_fallback_agent_fails_or_skips_as_usual() -> None:
    w = two_agents()
    w.plan()
    w.fail("s", failure_class="AuthFailed")
    w.plan()
    assert w.step_status("s").phase is StepPhase.FAILED
    w = two_agents()
    w.policy = fallback_policy({"agent": "a", "criticality": "low", "skipIfUnavailable": True})
    w.plan()
    w.fail("s", failure_class="QuotaExceeded")
    w.plan()
    assert w.step_status("s").phase is StepPhase.SKIPPED


# -- onFailure entries ----------------------------------------------------------------------------


def test_fail_action_fails_the_step_without_retry_or_fallback() -> None:
    w = two_agents(retries={"limit": 3})
    w.policy = fallback_policy(
        {
            "agent": "a",
            "fallback": "b",
            "criticality": "low",
            "skipIfUnavailable": True,
            "onFailure": [{"classes": ["InvalidRequest"], "action": "Fail"}],
        }
    )
    w.plan()
    w.fail("s", summary="messages: field required", failure_class="InvalidRequest")
    p = w.plan()
    assert creates(p) == []
    status = w.step_status("s")
    assert status.phase is StepPhase.FAILED
    assert status.message is not None
    assert "the fallback policy fails the step on InvalidRequest" in status.message
    assert w.phase == "Failed"


def test_an_entry_overrides_the_builtin_default() -> None:
    w = two_agents()
    w.policy = fallback_policy(
        {
            "agent": "a",
            "fallback": "b",
            "onFailure": [{"classes": ["RateLimited"], "action": "Fallback"}],
        }
    )
    w.plan()
    w.fail("s", failure_class="RateLimited", retry_after=5)
    [fallback] = creates(w.plan())
    assert fallback.agent.name == "b"


def test_counted_retries_honour_retry_after_and_use_up_max_attempts() -> None:
    w = two_agents()
    w.policy = fallback_policy(
        default={
            "fallback": "b",
            "maxAttempts": 2,
            "onFailure": [
                {
                    "classes": ["RateLimited"],
                    "action": "RetrySameAgent",
                    "countsAgainstAttempts": True,
                }
            ],
        }
    )
    w.plan()
    w.fail("s", failure_class="RateLimited", retry_after=15)
    w.plan()
    status = w.step_status("s")
    assert status.next_attempt_at == w.now + timedelta(seconds=15)
    assert status.message is not None and "not counted" not in status.message
    w.tick(15)
    assert creates(w.plan())[0].agent.name == "a"
    w.fail("s", failure_class="RateLimited", retry_after=15)
    [fallback] = creates(w.plan())
    assert fallback.agent.name == "b"


def test_a_fallback_agents_own_rule_decides_its_failures() -> None:
    w = two_agents()
    w.policy = fallback_policy(
        {"agent": "a", "fallback": "b"},
        {"agent": "b", "onFailure": [{"classes": ["AgentError"], "action": "Fail"}]},
    )
    w.plan()
    w.fail("s", failure_class="AuthFailed")
    [fallback] = creates(w.plan())
    assert fallback.agent.name == "b"
    w.fail("s")
    w.plan()
    assert w.step_status("s").phase is StepPhase.FAILED
    assert attempts(w) == [("a", "Failed", "AuthFailed"), ("b", "Failed", "AgentError")]


def test_the_class_is_in_the_attempt_finished_fact() -> None:
    w = two_agents()
    w.plan()
    w.fail("s", failure_class="ContextTooLong")
    w.plan()
    [fact] = [f for f in w.facts if isinstance(f, AttemptFinished)]
    assert (fact.outcome, fact.failure_class) == ("failed", "ContextTooLong")


# -- schema and validation ------------------------------------------------------------------------


def test_a_class_in_two_entries_and_retry_settings_on_other_actions_are_rejected() -> None:
    with pytest.raises(ValidationError, match="failure class RateLimited is listed twice"):
        AgentFallbackPolicySpec.model_validate(
            {
                "default": {
                    "onFailure": [
                        {"classes": ["RateLimited"], "action": "Fallback"},
                        {"classes": ["Overloaded", "RateLimited"], "action": "Fail"},
                    ]
                }
            }
        )
    with pytest.raises(ValidationError, match="maxWaitSeconds apply only to action RetrySameAgent"):
        AgentFallbackPolicySpec.model_validate(
            {
                "default": {
                    "onFailure": [{"classes": ["Timeout"], "action": "Fail", "maxWaitSeconds": 5}]
                }
            }
        )
    with pytest.raises(ValidationError):
        AgentFallbackPolicySpec.model_validate(
            {"default": {"onFailure": [{"classes": ["Slow"], "action": "Fail"}]}}
        )
    ok = AgentFallbackPolicySpec.model_validate(
        {"default": {"onFailure": [{"classes": ["Timeout"], "action": "RetrySameAgent"}]}}
    )
    assert validate_policy(ok) == []


def test_builtin_rules_cover_the_documented_classes() -> None:
    assert class_rule((), "RateLimited") is BUILTIN_CLASS_RULES[0]
    assert class_rule((), "Overloaded") is BUILTIN_CLASS_RULES[0]
    for name in ("AuthFailed", "QuotaExceeded", "ContextTooLong"):
        assert class_rule((), name) is BUILTIN_CLASS_RULES[1]
    for name in ("AgentError", "Timeout", "QualityGateFailed", "Cancelled", "bogus", None):
        assert class_rule((), name) is None


# -- property: a step never loops for ever ---------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    failures=st.lists(
        st.sampled_from([c.value for c in FailureClass if c.value != "Cancelled"]),
        min_size=1,
        max_size=60,
    ),
    max_attempts=st.integers(1, 3),
    max_retries=st.integers(1, 4),
)
def test_any_run_of_failures_ends_within_the_bound(
    failures: list[str], max_attempts: int, max_retries: int
) -> None:
    """Whatever classes the agent fails with, the attempts of one agent are at most
    maxAttempts plus maxRetries per uncounted entry (two here: the rule's and the built-in
    Overloaded one), and every failure decides something."""
    w = two_agents(retries={"backoffSeconds": 0})
    w.policy = fallback_policy(
        {
            "agent": "a",
            "maxAttempts": max_attempts,
            "onFailure": [
                {"classes": ["RateLimited"], "action": "RetrySameAgent", "maxRetries": max_retries}
            ],
        }
    )
    w.plan()
    bound = max_attempts + max_retries + 5  # 5: the built-in entry for Overloaded
    for failure in failures:
        if w.step_status("s").phase is not StepPhase.RUNNING:
            break
        w.fail("s", failure_class=failure, retry_after=0)
        w.plan()
        w.plan()
    ran = len(w.step_status("s").attempts)
    assert ran <= bound
    if w.step_status("s").phase is StepPhase.RUNNING:
        assert ran == len(failures) + 1
