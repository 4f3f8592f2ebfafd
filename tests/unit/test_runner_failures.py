"""The agent runner classifies how an attempt failed, against a local fake provider.

The runner runs in this process (``agentflow.runner.main`` with an environment of its own) and
talks to :mod:`tests.support.fake_provider` on 127.0.0.1; the class and Retry-After it reports
are read back from its termination message the way the operator reads them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime
from pathlib import Path

import pytest

from agentflow.api.models import FailureClass
from agentflow.report import decode_termination_message, reported_failure
from agentflow.runner import main
from agentflow.runner.llm import MAX_INLINE_RETRY_SECONDS, classify_http, retry_after
from tests.support import fake_provider as fp
from tests.support.fake_provider import Api, FakeProvider

API_KEY = "sk-test-failure-classes-not-shown"


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with fp.fake_provider() as fake:
        yield fake


def run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], api: Api, provider: FakeProvider, **env: str
) -> tuple[int, str, str]:
    path = tmp_path / "termination-log"
    path.write_text("")
    base = provider.url + ("/v1" if api == "openai" else "")
    settings = {
        "PATH": "/usr/bin:/bin",
        "AGENTFLOW_TERMINATION_MESSAGE_PATH": str(path),
        "AGENTFLOW_PROVIDER": api,
        "AGENTFLOW_STEP": "review",
        "AGENTFLOW_PROMPT": "Review the change.",
        f"{api.upper()}_API_KEY": API_KEY,
        f"{api.upper()}_BASE_URL": base,
        **env,
    }
    code = main([], settings)
    _out, err = capfd.readouterr()
    message = path.read_text()
    assert API_KEY not in message + err
    return code, message, err


CASES = [
    ("anthropic", fp.rate_limited("anthropic", "30"), FailureClass.RATE_LIMITED, 30.0),
    ("openai", fp.rate_limited("openai", "45"), FailureClass.RATE_LIMITED, 45.0),
    ("anthropic", fp.unauthorized("anthropic"), FailureClass.AUTH_FAILED, None),
    ("openai", fp.unauthorized("openai"), FailureClass.AUTH_FAILED, None),
    ("anthropic", fp.payment_required("anthropic"), FailureClass.QUOTA_EXCEEDED, None),
    ("anthropic", fp.quota("anthropic"), FailureClass.QUOTA_EXCEEDED, None),
    ("openai", fp.quota("openai"), FailureClass.QUOTA_EXCEEDED, None),
    ("anthropic", fp.context_too_long("anthropic"), FailureClass.CONTEXT_TOO_LONG, None),
    ("openai", fp.context_too_long("openai"), FailureClass.CONTEXT_TOO_LONG, None),
    ("openai", fp.invalid_request("openai"), FailureClass.INVALID_REQUEST, None),
    ("anthropic", fp.overloaded("anthropic", 529, "60"), FailureClass.OVERLOADED, 60.0),
    ("openai", fp.overloaded("openai", 503, "3600"), FailureClass.OVERLOADED, 3600.0),
]


@pytest.mark.parametrize(
    ("api", "reply", "expected", "wait"), CASES, ids=[f"{c[0]}-{c[2].value}" for c in CASES]
)
def test_each_provider_error_is_reported_with_its_class(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    provider: FakeProvider,
    api: Api,
    reply: fp.Reply,
    expected: FailureClass,
    wait: float | None,
) -> None:
    provider.script(api, reply)
    code, message, err = run(tmp_path, capfd, api, provider)
    assert code == 1
    failure = reported_failure(message)
    assert (failure.failure_class, failure.retry_after_seconds) == (expected, wait)
    # A long Retry-After is not waited for in the pod: one request, and the operator waits.
    assert len(provider.calls(api)) == 1
    result = decode_termination_message(message)
    assert result.status == "failure" and f"HTTP {reply.status}" in result.summary
    assert f"HTTP {reply.status}" in err


def test_a_short_retry_after_is_waited_for_once_in_the_pod(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    provider.script(
        "anthropic", fp.rate_limited("anthropic", "0"), fp.rate_limited("anthropic", "0")
    )
    code, message, err = run(tmp_path, capfd, "anthropic", provider)
    assert code == 1 and len(provider.calls("anthropic")) == 2
    assert "HTTP 429; retrying in 0s" in err
    assert reported_failure(message).failure_class is FailureClass.RATE_LIMITED


def test_success_after_a_short_overload_carries_no_class(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    provider.script(
        "openai", fp.overloaded("openai", 500, "0"), fp.success("openai", "## Summary\nok\n")
    )
    code, message, _ = run(tmp_path, capfd, "openai", provider)
    assert code == 0
    assert reported_failure(message).failure_class is None
    assert decode_termination_message(message).metrics.input_tokens == 120


def test_an_unreachable_provider_is_a_network_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    provider.close()
    code, message, _ = run(tmp_path, capfd, "openai", provider)
    assert code == 1
    assert reported_failure(message).failure_class is FailureClass.NETWORK_ERROR


def test_a_content_filter_and_an_empty_answer_are_classified(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    filtered = fp.success("openai", "")
    filtered.body["choices"][0]["finish_reason"] = "content_filter"
    provider.script("openai", filtered, fp.success("openai", ""))
    _, first, _ = run(tmp_path, capfd, "openai", provider)
    _, second, _ = run(tmp_path, capfd, "openai", provider)
    assert reported_failure(first).failure_class is FailureClass.CONTENT_FILTERED
    assert reported_failure(second).failure_class is FailureClass.BAD_OUTPUT


def test_a_missing_key_is_a_config_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    code, message, _ = run(tmp_path, capfd, "anthropic", provider, ANTHROPIC_API_KEY="")
    assert code == 2
    assert reported_failure(message).failure_class is FailureClass.CONFIG_ERROR
    assert provider.calls("anthropic") == []


def test_a_scripted_failure_reports_the_class_it_is_given(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    code, message, _ = run(
        tmp_path,
        capfd,
        "anthropic",
        provider,
        AGENTFLOW_PROVIDER="script",
        AGENTFLOW_SCRIPT_FAIL="always",
        AGENTFLOW_SCRIPT_FAILURE_CLASS="Overloaded",
        AGENTFLOW_SCRIPT_RETRY_AFTER_SECONDS="7",
    )
    assert code == 1
    failure = reported_failure(message)
    assert (failure.failure_class, failure.retry_after_seconds) == (FailureClass.OVERLOADED, 7.0)
    code, message, err = run(
        tmp_path,
        capfd,
        "anthropic",
        provider,
        AGENTFLOW_PROVIDER="script",
        AGENTFLOW_SCRIPT_FAIL="always",
        AGENTFLOW_SCRIPT_FAILURE_CLASS="Slow",
    )
    assert code == 2 and "AGENTFLOW_SCRIPT_FAILURE_CLASS='Slow' is not one of" in err


def test_a_command_agent_states_its_own_class_in_its_json_report(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    report = {"status": "failure", "summary": "quota gone", "failureClass": "QuotaExceeded"}
    script = f"import sys; print({json.dumps(json.dumps(report))}); sys.exit(3)"
    code, message, _ = run(
        tmp_path,
        capfd,
        "anthropic",
        provider,
        AGENTFLOW_PROVIDER="command",
        AGENTFLOW_COMMAND=json.dumps(["python3", "-c", script]),
    )
    assert code == 3
    assert reported_failure(message).failure_class is FailureClass.QUOTA_EXCEEDED
    assert decode_termination_message(message).summary == "quota gone"


# -- the tables, pure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {}, FailureClass.AUTH_FAILED),
        (403, {"error": {"type": "permission_error", "message": "no"}}, FailureClass.AUTH_FAILED),
        (403, {"error": {"message": "billing hard limit"}}, FailureClass.QUOTA_EXCEEDED),
        (402, {}, FailureClass.QUOTA_EXCEEDED),
        (429, {"error": {"code": "insufficient_quota"}}, FailureClass.QUOTA_EXCEEDED),
        (429, {}, FailureClass.RATE_LIMITED),
        (408, {}, FailureClass.TIMEOUT),
        (504, {}, FailureClass.TIMEOUT),
        (500, {}, FailureClass.OVERLOADED),
        (503, {}, FailureClass.OVERLOADED),
        (529, {"error": {"type": "overloaded_error"}}, FailureClass.OVERLOADED),
        (413, {}, FailureClass.CONTEXT_TOO_LONG),
        (400, {"error": {"code": "context_length_exceeded"}}, FailureClass.CONTEXT_TOO_LONG),
        (400, {"error": {"message": "prompt is too long"}}, FailureClass.CONTEXT_TOO_LONG),
        (400, {"error": {"code": "content_filter"}}, FailureClass.CONTENT_FILTERED),
        (400, {"error": {"message": "bad"}}, FailureClass.INVALID_REQUEST),
        (404, {"error": {"message": "model not found"}}, FailureClass.INVALID_REQUEST),
        (307, {}, FailureClass.INVALID_REQUEST),
    ],
)
def test_http_classification_table(status: int, body: object, expected: FailureClass) -> None:
    assert classify_http(status, json.dumps(body).encode()) is expected


def headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def test_retry_after_in_seconds_milliseconds_or_as_a_date_and_bounded() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after(headers(Retry_After="12")) == 12.0
    assert retry_after(headers(retry_after_ms="1500", Retry_After="9")) == 1.5
    assert (
        retry_after(headers(Retry_After=format_datetime(now + timedelta(seconds=90))), now) == 90.0
    )
    assert retry_after(headers(Retry_After=format_datetime(now - timedelta(seconds=5))), now) == 0.0
    assert retry_after(headers(Retry_After="86400")) == 3600.0
    assert retry_after(headers(Retry_After="-3")) == 0.0
    assert retry_after(headers(Retry_After="soon")) is None
    assert retry_after(headers(Retry_After="nan")) is None
    assert retry_after(headers()) is None
    assert MAX_INLINE_RETRY_SECONDS < 30


def test_an_anthropic_refusal_is_content_filtered(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], provider: FakeProvider
) -> None:
    refused = fp.success("anthropic", "I can't help with that.")
    refused.body["stop_reason"] = "refusal"
    provider.script("anthropic", refused)
    code, message, _ = run(tmp_path, capfd, "anthropic", provider)
    assert code == 1
    assert reported_failure(message).failure_class is FailureClass.CONTENT_FILTERED


def test_a_provider_that_never_answers_is_a_timeout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A listening socket that never accepts: the connection is made, the answer never comes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]

        class Silent:
            url = f"http://127.0.0.1:{port}"

            def calls(self, api: Api) -> list[fp.Request]:
                return []

        code, message, _ = run(
            tmp_path,
            capfd,
            "openai",
            Silent(),  # type: ignore[arg-type]
            AGENTFLOW_HTTP_TIMEOUT_SECONDS="0.5",
        )
    assert code == 1
    assert reported_failure(message).failure_class is FailureClass.TIMEOUT
    assert "did not answer within 0.5s" in decode_termination_message(message).summary
