from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agentflow.api.models import StepResult
from agentflow.engine.types import JobState
from agentflow.observe import observe, summarize_job, summarize_pod, with_log_report
from agentflow.report import (
    MAX_SUMMARY_CHARS,
    decode_termination_message,
    encode_termination_message,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
LABELS = {
    "agentflow.dev/workflow": "wf",
    "agentflow.dev/step": "s",
    "agentflow.dev/run": "2",
    "agentflow.dev/iteration": "1",
    "agentflow.dev/attempt": "3",
    "agentflow.dev/agent": "a",
}


JOB_UID = "job-uid-1"
WORKFLOW_UID = "wf-uid-1"


def _ts(delta: float) -> str:
    return (NOW + timedelta(seconds=delta)).isoformat().replace("+00:00", "Z")


def _job(conditions: list[dict[str, Any]] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "wf-s-2-1-3",
            "uid": JOB_UID,
            "labels": LABELS,
            "ownerReferences": [
                {"kind": "Workflow", "name": "wf", "uid": WORKFLOW_UID, "controller": True}
            ],
            "creationTimestamp": _ts(-100),
            **meta,
        },
        "status": {"conditions": conditions or [], "startTime": _ts(-99)},
    }


def _pod(state: dict[str, Any], created: float = -99, job_uid: str = JOB_UID) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "labels": {"batch.kubernetes.io/job-name": "wf-s-2-1-3"},
            "ownerReferences": [
                {"kind": "Job", "name": "wf-s-2-1-3", "uid": job_uid, "controller": True}
            ],
            "creationTimestamp": _ts(created),
        },
        "status": {"containerStatuses": [{"state": state}]},
    }


def test_job_labels_become_the_attempt_identity() -> None:
    summary = summarize_job(_job())
    assert summary is not None
    assert (summary.step, summary.run, summary.iteration, summary.attempt) == ("s", 2, 1, 3)
    assert summary.state is JobState.ACTIVE
    assert summarize_job({"metadata": {"name": "x", "labels": {}}}) is None


def test_finished_job_reports_exit_code_and_termination_message() -> None:
    job = summarize_job(
        _job([{"type": "Complete", "status": "True", "lastTransitionTime": _ts(-5)}])
    )
    pod = summarize_pod(
        _pod(
            {
                "terminated": {
                    "exitCode": 0,
                    "message": '{"v":1}',
                    "startedAt": _ts(-50),
                    "finishedAt": _ts(-6),
                }
            }
        )
    )
    assert job and pod
    (seen,) = observe([job], [pod], NOW)
    assert seen.state is JobState.SUCCEEDED
    assert seen.result == decode_termination_message('{"v":1}')
    assert seen.exit_code == 0
    assert not seen.stuck


def test_a_finished_job_waits_briefly_for_its_pod_status() -> None:
    job = summarize_job(
        _job([{"type": "Complete", "status": "True", "lastTransitionTime": _ts(-1)}])
    )
    assert job
    (seen,) = observe([job], [], NOW)
    assert seen.state is JobState.ACTIVE
    (later,) = observe([job], [], NOW + timedelta(seconds=30))
    assert later.state is JobState.SUCCEEDED


def test_failed_job_carries_the_reason() -> None:
    job = summarize_job(
        _job(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "too slow",
                    "lastTransitionTime": _ts(-30),
                }
            ]
        )
    )
    assert job
    (seen,) = observe([job], [], NOW)
    assert seen.state is JobState.FAILED and seen.reason == "DeadlineExceeded"


def test_pod_stuck_on_image_pull_fails_the_attempt_after_a_grace_period() -> None:
    job = summarize_job(_job())
    fresh = summarize_pod(
        _pod({"waiting": {"reason": "ErrImagePull", "message": "no such image"}}, -5)
    )
    old = summarize_pod(
        _pod({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}, -90)
    )
    assert job and fresh and old
    (seen,) = observe([job], [fresh], NOW)
    assert seen.state is JobState.ACTIVE and not seen.stuck
    (seen,) = observe([job], [old], NOW)
    assert seen.state is JobState.FAILED and seen.reason == "ImagePullBackOff"
    assert seen.stuck and seen.name == "wf-s-2-1-3"


def test_a_job_deleted_by_hand_is_a_failed_attempt() -> None:
    job = summarize_job(_job(deletionTimestamp=_ts(-1)))
    assert job
    (seen,) = observe([job], [], NOW)
    assert seen.state is JobState.FAILED and seen.reason == "JobDeleted"


def test_a_succeeded_pod_finishes_its_step_before_the_job_controller_marks_the_job() -> None:
    job = summarize_job(_job())  # the Job has no Complete condition yet
    pod_body = _pod(
        {
            "terminated": {
                "exitCode": 0,
                "message": '{"v":1}',
                "startedAt": _ts(-5),
                "finishedAt": _ts(-1),
            }
        }
    )
    pod_body["status"]["phase"] = "Succeeded"
    pod = summarize_pod(pod_body)
    assert job and pod and pod.succeeded
    (seen,) = observe([job], [pod], NOW)
    assert seen.state is JobState.SUCCEEDED
    assert seen.result == decode_termination_message('{"v":1}')
    running = summarize_pod(_pod({"running": {"startedAt": _ts(-5)}}))
    assert running is not None and not running.succeeded
    (still,) = observe([job], [running], NOW)
    assert still.state is JobState.ACTIVE


def test_a_job_belongs_to_the_workflow_its_controlling_owner_reference_names() -> None:
    summary = summarize_job(_job())
    assert summary is not None and (summary.uid, summary.owner_uid) == (JOB_UID, WORKFLOW_UID)
    # The labels alone (anyone who can create Jobs can copy them) make no owner.
    copied = summarize_job(_job(ownerReferences=[]))
    assert copied is not None and copied.owner_uid is None
    not_controller = [{"kind": "Workflow", "uid": WORKFLOW_UID, "controller": False}]
    assert summarize_job(_job(ownerReferences=not_controller)).owner_uid is None  # type: ignore[union-attr]


def test_a_pod_joins_its_job_by_uid_not_by_name() -> None:
    job = summarize_job(_job())
    terminated = {"terminated": {"exitCode": 7, "message": "not ours", "finishedAt": _ts(-2)}}
    stranger = summarize_pod(_pod(terminated, job_uid="another-job-of-the-same-name"))
    assert job and stranger and stranger.job_name == job.name
    (seen,) = observe([job], [stranger], NOW)
    assert seen.state is JobState.ACTIVE and seen.exit_code is None
    assert seen.result is None and not seen.stuck
    # A pod that no Job controls is nobody's.
    orphan = _pod(terminated)
    orphan["metadata"]["ownerReferences"] = []
    assert summarize_pod(orphan) is None


def test_observation_parses_what_an_attempt_reported_once() -> None:
    """A succeeded attempt carries its parsed result, a failed one its failure message, and an
    attempt that wrote no termination message gets its result from its log report, parsed and
    cut to a result's bounds."""
    done = summarize_job(
        _job([{"type": "Complete", "status": "True", "lastTransitionTime": _ts(-5)}])
    )
    failed = summarize_job(
        _job([{"type": "Failed", "status": "True", "lastTransitionTime": _ts(-5)}])
    )
    message = encode_termination_message(StepResult(summary="all good"), full_size=10)
    reported = summarize_pod(_pod({"terminated": {"exitCode": 0, "message": message}}))
    failure = encode_termination_message(
        StepResult(status="failure", summary="tests broke"), full_size=10
    )
    broke = summarize_pod(_pod({"terminated": {"exitCode": 3, "message": failure}}))
    silent = summarize_pod(_pod({"terminated": {"exitCode": 0}}))
    assert done and failed and reported and broke and silent
    (ok,) = observe([done], [reported], NOW)
    assert ok.result is not None and ok.result.summary == "all good" and ok.message == ""
    (bad,) = observe([failed], [broke], NOW)
    assert bad.result is None and bad.message == "tests broke"
    (quiet,) = observe([done], [silent], NOW)
    assert quiet.result is None
    log = "## Summary\n" + "word " * 5_000
    full = with_log_report(quiet, log)
    assert full.log_report == log and full.result is not None
    assert full.result.truncated and len(full.result.summary) <= MAX_SUMMARY_CHARS
    # A result from the termination message stays the result; the log is only kept.
    assert with_log_report(ok, log).result == ok.result
