"""The ``anthropic`` and ``openai`` providers: one model call over HTTP (standard library only).

The model gets a system prompt that asks for the report format, and the step's prompt as the
user message; its answer is the report, with the token usage the API reports written into the
report's Metrics.  API keys come from ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` (the operator
injects them from a Secret) and appear in no output and no error: a key that cannot be an HTTP
header value is refused without being shown, and every message is redacted
(:mod:`agentflow.runner.redact`) before it is cut short.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from agentflow.api.models import FailureClass, Provider
from agentflow.report import MAX_RETRY_AFTER_SECONDS, with_metrics
from agentflow.runner.config import (
    ConfigError,
    RunnerConfig,
    bounded_float,
    bounded_int,
)
from agentflow.runner.outcome import Outcome, ProviderError
from agentflow.runner.redact import Redactor
from agentflow.runner.workspace import context_files, context_section, prompt_with_context

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODELS = {Provider.ANTHROPIC: "claude-sonnet-4-5", Provider.OPENAI: "gpt-4o-mini"}

DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_MAX_TOKENS = 4_096
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
# A 429 or 5xx is retried once in the pod when the wait it asks for is this short; a longer
# one fails the attempt at once with its Retry-After, and the operator waits instead.
MAX_INLINE_RETRY_SECONDS = 10.0
DEFAULT_RETRY_DELAY_SECONDS = 2.0
MAX_ERROR_MESSAGE_CHARS = 500

SYSTEM_PROMPT = """\
You are {agent}, an agent running step "{step}" (iteration {iteration}, attempt {attempt}) \
of the workflow {namespace}/{workflow}.
Do the task in the user's message. Then answer with a report in Markdown with these sections:

## Summary
One or two paragraphs: what you did and what you found.

## Actions Taken
- one bullet per action

## Files Created/Modified
- Created: path/to/new-file
- Modified: path/to/changed-file
- Deleted: path/to/removed-file

## Metrics
- Tool calls: <number>
- Files read: <number>
- Lines generated: <number>
- Errors: <number>
(add any other "- Name: number" lines that measure the result)

## Status
success or failure
"""


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    # The model stopped at the token limit: the report may be cut short.
    cut_short: bool


@dataclass(frozen=True)
class Api:
    provider: Provider
    key_variable: str
    base_url_variable: str
    default_base_url: str
    # (config, base URL, model, max tokens if set) -> (URL, headers, body)
    request: Callable[[RunnerConfig, str, str, int | None], tuple[str, dict[str, str], bytes]]
    response: Callable[[Any], Completion]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the API key to wherever it points: treat it as an error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _endpoint(base_url: str, path: Callable[[str], str]) -> str:
    """The URL of an API operation: ``path`` maps the base URL's path to the operation's."""
    try:
        parsed = urllib.parse.urlsplit(base_url.strip())
        valid = parsed.scheme in ("http", "https") and bool(parsed.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"base URL {_display_url(base_url)!r} is not an http(s) URL")
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(
            f"base URL {_display_url(base_url)!r} has credentials in it: use the API key variable"
        )
    full_path = path(parsed.path.rstrip("/"))
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, full_path, "", ""))


def anthropic_url(base_url: str) -> str:
    """ANTHROPIC_BASE_URL is the API root, as in Anthropic's SDKs; ``/v1`` is accepted too."""
    return _endpoint(base_url, lambda p: (p if p.endswith("/v1") else p + "/v1") + "/messages")


def openai_url(base_url: str) -> str:
    """OPENAI_BASE_URL includes the version, as in OpenAI's SDKs; a bare host gets ``/v1``."""
    return _endpoint(base_url, lambda p: (p or "/v1") + "/chat/completions")


def _display_url(url: str) -> str:
    """The URL without credentials or query, for messages."""
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname or ""
        port = f":{parsed.port}" if parsed.port else ""
    except ValueError:
        return "(invalid URL)"
    return urllib.parse.urlunsplit((parsed.scheme, host + port, parsed.path, "", ""))


def _system_prompt(config: RunnerConfig) -> str:
    return SYSTEM_PROMPT.format(
        agent=config.agent or "an agent",
        step=config.step,
        iteration=config.iteration,
        attempt=config.attempt,
        namespace=config.namespace,
        workflow=config.workflow,
    )


def _anthropic_request(
    config: RunnerConfig, base_url: str, model: str, max_tokens: int | None
) -> tuple[str, dict[str, str], bytes]:
    body = {
        "model": model,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        "system": _system_prompt(config),
        "messages": [{"role": "user", "content": config.prompt or "(no prompt)"}],
    }
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    return anthropic_url(base_url), headers, json.dumps(body).encode("utf-8")


def _anthropic_response(data: Any) -> Completion:
    if not isinstance(data, dict):
        raise ProviderError(
            "the Anthropic API answered with something other than an object",
            failure_class=FailureClass.BAD_OUTPUT,
        )
    if data.get("stop_reason") == "refusal":
        raise ProviderError(
            "the Anthropic API refused to answer (stop_reason refusal)",
            failure_class=FailureClass.CONTENT_FILTERED,
        )
    blocks = data.get("content")
    texts = [
        block["text"]
        for block in (blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    if not texts:
        raise ProviderError(
            "the Anthropic API answered without any text content",
            failure_class=FailureClass.BAD_OUTPUT,
        )
    usage = _object(data.get("usage"))
    return Completion(
        text="".join(texts),
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        cut_short=data.get("stop_reason") == "max_tokens",
    )


def _openai_request(
    config: RunnerConfig, base_url: str, model: str, max_tokens: int | None
) -> tuple[str, dict[str, str], bytes]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": _system_prompt(config)},
            {"role": "user", "content": config.prompt or "(no prompt)"},
        ],
    }
    if max_tokens is not None:
        # Only when asked: models and compatible servers differ in the limits they accept.
        body["max_completion_tokens"] = max_tokens
    return openai_url(base_url), {}, json.dumps(body).encode("utf-8")


def _openai_response(data: Any) -> Completion:
    if not isinstance(data, dict):
        raise ProviderError(
            "the OpenAI API answered with something other than an object",
            failure_class=FailureClass.BAD_OUTPUT,
        )
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    if isinstance(first, dict) and first.get("finish_reason") == "content_filter":
        raise ProviderError(
            "the OpenAI API withheld the answer (finish_reason content_filter)",
            failure_class=FailureClass.CONTENT_FILTERED,
        )
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content:
        raise ProviderError(
            "the OpenAI API answered without any message content",
            failure_class=FailureClass.BAD_OUTPUT,
        )
    usage = _object(data.get("usage"))
    return Completion(
        text=content,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        cut_short=isinstance(first, dict) and first.get("finish_reason") == "length",
    )


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


APIS = {
    Provider.ANTHROPIC: Api(
        Provider.ANTHROPIC,
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        ANTHROPIC_BASE_URL,
        _anthropic_request,
        _anthropic_response,
    ),
    Provider.OPENAI: Api(
        Provider.OPENAI,
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        OPENAI_BASE_URL,
        _openai_request,
        _openai_response,
    ),
}
# The variables holding secrets, for the redaction of everything the runner prints.
KEY_VARIABLES = tuple(api.key_variable for api in APIS.values())


def _auth_headers(api: Api, key: str) -> dict[str, str]:
    if api.provider is Provider.ANTHROPIC:
        return {"x-api-key": key}
    return {"Authorization": f"Bearer {key}"}


def check_key(variable: str, key: str) -> None:
    """Refuse a key that cannot be an HTTP header value, without showing any of it.

    http.client would refuse it too, but with ``Invalid header value b'Bearer <the key>'``: an
    exception that quotes the key into the pod log.
    """
    if "\r" in key or "\n" in key:
        raise ConfigError(
            f"{variable} has a line break (CR or LF) inside it, which an HTTP header cannot "
            "carry: store the key in its Secret as a single line"
        )
    if not all(" " <= c <= "~" for c in key):
        raise ConfigError(
            f"{variable} has a control or non-ASCII character inside it, which an HTTP header "
            "cannot carry: store the key in its Secret exactly as the provider issued it"
        )


# Words in an error's type, code or message that say which kind of 4xx it is.
_QUOTA_MARKERS = ("insufficient_quota", "quota", "credit balance", "billing", "payment")
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "context limit",
    "prompt is too long",
    "maximum context",
    "too many tokens",
    "request_too_large",
)
_FILTER_MARKERS = ("content_filter", "content_policy", "content management policy", "safety system")


def _error_fields(body: bytes) -> str:
    """The error's type, code and message (both APIs use ``{"error": {...}}``), lower case."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return body.decode("utf-8", "replace").lower()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        parts = [error.get(key) for key in ("type", "code", "message")]
        return " ".join(p for p in parts if isinstance(p, str)).lower()
    return str(error if error is not None else data).lower()


def classify_http(status: int, body: bytes) -> FailureClass:
    """The failure class of an HTTP error of the Anthropic or OpenAI API.

    401/403: AuthFailed; 402, and any error that speaks of quota, credit or billing (OpenAI's
    429 ``insufficient_quota``, Anthropic's 400 "credit balance is too low"): QuotaExceeded;
    429: RateLimited; 503, 529, ``overloaded_error`` and other 5xx: Overloaded (504: Timeout);
    408: Timeout; 413 and context-length errors: ContextTooLong; content-policy errors:
    ContentFiltered; any other status: InvalidRequest.
    """
    text = _error_fields(body[:MAX_ERROR_BODY_BYTES])
    if status in (401, 403) and not any(m in text for m in _QUOTA_MARKERS):
        return FailureClass.AUTH_FAILED
    if status == 402 or any(m in text for m in _QUOTA_MARKERS):
        return FailureClass.QUOTA_EXCEEDED
    if status == 429:
        return FailureClass.RATE_LIMITED
    if status in (408, 504):
        return FailureClass.TIMEOUT
    if status >= 500 or "overloaded" in text:
        return FailureClass.OVERLOADED
    if status == 413 or any(m in text for m in _CONTEXT_MARKERS):
        return FailureClass.CONTEXT_TOO_LONG
    if any(m in text for m in _FILTER_MARKERS):
        return FailureClass.CONTENT_FILTERED
    return FailureClass.INVALID_REQUEST


def retry_after(headers: Message | None, now: datetime | None = None) -> float | None:
    """The wait an answer asks for: ``retry-after-ms``, else ``Retry-After`` in seconds or as
    an HTTP date; clamped to 0..:data:`MAX_RETRY_AFTER_SECONDS`; None when it asks for none."""
    if headers is None:
        return None
    seconds: float | None = None
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("Retry-After")
    try:
        if milliseconds is not None:
            seconds = float(milliseconds) / 1000.0
    except ValueError:
        seconds = None
    if seconds is None and value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _api_error_message(body: bytes, redact: Redactor) -> str:
    """The error message in an API error body (both APIs use ``{"error": {"message"}}``).

    Redacted whole, then cut: a cut through a quoted key would leave a prefix of it behind.
    """
    return redact(_error_text(body))[:MAX_ERROR_MESSAGE_CHARS]


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split()) or "(no error message)"
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(error, dict) and isinstance(message, str):
        kind = error.get("type")
        prefix = f"{kind}: " if isinstance(kind, str) and kind else ""
        return prefix + message
    if isinstance(error, str):
        return error
    return " ".join(text.split())


def _post(
    api: Api,
    url: str,
    headers: dict[str, str],
    body: bytes,
    key: str,
    timeout: float,
    redact: Redactor,
) -> Any:
    name = api.provider.value
    shown_url = _display_url(url)
    for attempt in (1, 2):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"content-type": "application/json", **headers, **_auth_headers(api, key)},
        )
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            status = error.code
            try:
                error_body = error.read(MAX_ERROR_BODY_BYTES)
            except (OSError, http.client.HTTPException):
                error_body = b""
            message = _api_error_message(error_body, redact)
            failure = classify_http(status, error_body)
            wait = retry_after(error.headers)
            transient = failure in (FailureClass.RATE_LIMITED, FailureClass.OVERLOADED)
            delay = DEFAULT_RETRY_DELAY_SECONDS if wait is None else wait
            if attempt == 1 and transient and delay <= MAX_INLINE_RETRY_SECONDS:
                print(
                    f"agentflow-runner: {name} API returned HTTP {status}; retrying in {delay:g}s",
                    file=sys.stderr,
                )
                time.sleep(delay)
                continue
            after = f" (Retry-After {wait:g}s)" if wait is not None else ""
            raise ProviderError(
                f"{name} API returned HTTP {status} from {shown_url}: {message}{after}",
                failure_class=failure,
                retry_after_seconds=wait,
            ) from None
        except TimeoutError:
            raise ProviderError(
                f"{name} API did not answer within {timeout:g}s",
                failure_class=FailureClass.TIMEOUT,
            ) from None
        except urllib.error.URLError as error:
            reason = redact(str(error.reason))
            timed_out = isinstance(error.reason, TimeoutError)
            raise ProviderError(
                f"could not reach the {name} API at {shown_url}: {reason}",
                failure_class=FailureClass.TIMEOUT if timed_out else FailureClass.NETWORK_ERROR,
            ) from None
        except (OSError, http.client.HTTPException) as error:
            reason = redact(str(error) or type(error).__name__)
            raise ProviderError(
                f"{name} API request to {shown_url} failed: {reason}",
                failure_class=FailureClass.NETWORK_ERROR,
            ) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ProviderError(
                f"{name} API response is larger than {MAX_RESPONSE_BYTES} bytes",
                failure_class=FailureClass.BAD_OUTPUT,
            )
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise ProviderError(
                f"{name} API answered with invalid JSON", failure_class=FailureClass.BAD_OUTPUT
            ) from None
    raise AssertionError("unreachable: the second attempt returns or raises")


def budget_bound(limit: int | None, budget: int | None) -> int | None:
    """The max-tokens bound of the request: the agent's own ``AGENTFLOW_MAX_TOKENS`` (None:
    the provider's default), capped by what is left of the Workflow's budget
    (``AGENTFLOW_BUDGET_MAX_TOKENS``, set by the operator).  Without a limit of its own the cap
    is at most :data:`DEFAULT_MAX_TOKENS`, which every model accepts."""
    if budget is None:
        return limit
    if limit is None:
        return min(budget, DEFAULT_MAX_TOKENS)
    return min(limit, budget)


def run_llm(config: RunnerConfig) -> Outcome:
    api = APIS[config.provider]
    env: Mapping[str, str] = config.env
    key = env.get(api.key_variable, "").strip()
    if not key:
        raise ConfigError(
            f"{api.key_variable} is not set: give the agent an env entry with a secretKeyRef"
        )
    check_key(api.key_variable, key)
    redact = Redactor.from_env(env, KEY_VARIABLES)
    base_url = env.get(api.base_url_variable, "").strip() or api.default_base_url
    model = config.model or DEFAULT_MODELS[config.provider]
    timeout = bounded_float(
        "AGENTFLOW_HTTP_TIMEOUT_SECONDS",
        env.get("AGENTFLOW_HTTP_TIMEOUT_SECONDS"),
        default=DEFAULT_TIMEOUT_SECONDS,
        maximum=86_400.0,
    )
    if timeout <= 0:
        raise ConfigError("AGENTFLOW_HTTP_TIMEOUT_SECONDS must be more than 0")
    limit = bounded_int(
        "AGENTFLOW_MAX_TOKENS", env.get("AGENTFLOW_MAX_TOKENS"), default=0, maximum=10**7
    )
    max_tokens = budget_bound(
        limit or None,
        bounded_int(
            "AGENTFLOW_BUDGET_MAX_TOKENS",
            env.get("AGENTFLOW_BUDGET_MAX_TOKENS"),
            default=0,
            maximum=10**15,
        )
        or None,
    )
    # Files of the workspace the agent is given (AGENTFLOW_CONTEXT_FILES), after the prompt.
    context = context_files(env)
    if context:
        config = replace(config, prompt=prompt_with_context(config.prompt, context))
    url, headers, body = api.request(config, base_url, model, max_tokens)
    completion = api.response(_post(api, url, headers, body, key, timeout, redact))
    if completion.cut_short:
        print(
            "agentflow-runner: the model stopped at its token limit; "
            "the report may be incomplete (raise AGENTFLOW_MAX_TOKENS)",
            file=sys.stderr,
        )
    usage = {
        name: value
        for name, value in (
            ("inputTokens", completion.input_tokens),
            ("outputTokens", completion.output_tokens),
        )
        if value is not None
    }
    if context:
        usage["filesRead"] = len(context)
    text = completion.text
    if context:
        section = context_section(context)
        print(f"agentflow-runner: gave the model {section}", file=sys.stderr)
        if not text.lstrip().startswith("{"):  # a JSON report stays one document
            text = text.rstrip("\n") + "\n\n" + section
    report = redact(with_metrics(text, usage))
    return Outcome(report=report.encode("utf-8", "replace"))
