"""A fake model provider on 127.0.0.1: the Anthropic Messages and OpenAI Chat Completions wire
formats, scripted per request.

Each POST takes the next :class:`Reply` of the queue for its path's API (``/v1/messages`` is
Anthropic, ``.../chat/completions`` is OpenAI; one queue each), else of the shared queue
``replies`` (for tests that script both APIs in the order they are called); with none left it
answers 500.  The helpers build the answers the providers give: success with usage, 429 with
Retry-After, 401, 402 and quota errors, 400 context-length errors, 5xx and 529.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Api = Literal["anthropic", "openai"]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # Hold the answer until the fake provider is closed (to provoke a client timeout).
    stall: bool = False


@dataclass
class Request:
    api: Api
    path: str
    headers: dict[str, str]
    body: Any


def api_of(path: str) -> Api:
    return "openai" if path.rstrip("/").endswith("/chat/completions") else "anthropic"


class FakeProvider:
    """The server; ``script(api, *replies)`` queues answers, ``requests`` records the calls."""

    def __init__(self) -> None:
        self.queues: dict[Api, list[Reply]] = {"anthropic": [], "openai": []}
        self.replies: list[Reply] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                api = api_of(self.path)
                with provider.lock:
                    provider.requests.append(
                        Request(
                            api, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                        )
                    )
                    queue = provider.queues[api] or provider.replies
                    reply = queue.pop(0) if queue else Reply(500, {"error": "no reply scripted"})
                if reply.stall:
                    provider.closing.wait(60)
                    return
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, api: Api, *replies: Reply) -> None:
        with self.lock:
            self.queues[api].extend(replies)

    def calls(self, api: Api) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.api == api]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    try:
        yield provider
    finally:
        provider.close()


# -- answers ----------------------------------------------------------------------------------


def success(api: Api, text: str, input_tokens: int = 120, output_tokens: int = 45) -> Reply:
    if api == "anthropic":
        return Reply(
            200,
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
        )
    return Reply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        },
    )


def error(api: Api, status: int, kind: str, message: str, code: str | None = None) -> Reply:
    """An error body as each API shapes it."""
    if api == "anthropic":
        return Reply(status, {"type": "error", "error": {"type": kind, "message": message}})
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def rate_limited(api: Api, retry_after: str | None = "30") -> Reply:
    reply = error(api, 429, "rate_limit_error", "rate limit reached", "rate_limit_exceeded")
    if retry_after is not None:
        reply.headers["Retry-After"] = retry_after
    return reply


def unauthorized(api: Api) -> Reply:
    return error(api, 401, "authentication_error", "invalid x-api-key", "invalid_api_key")


def quota(api: Api) -> Reply:
    """The quota error each provider really gives: OpenAI 429 insufficient_quota, Anthropic a
    400 about the credit balance."""
    if api == "openai":
        return error(
            api,
            429,
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
        )
    return error(
        api,
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
    )


def payment_required(api: Api) -> Reply:
    return error(api, 402, "billing_error", "payment required")


def context_too_long(api: Api) -> Reply:
    if api == "openai":
        return error(
            api,
            400,
            "invalid_request_error",
            "This model's maximum context length is 128000 tokens.",
            "context_length_exceeded",
        )
    return error(
        api, 400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )


def invalid_request(api: Api) -> Reply:
    return error(api, 400, "invalid_request_error", "messages: field required", "invalid_value")


def overloaded(api: Api, status: int = 529, retry_after: str | None = None) -> Reply:
    reply = error(api, status, "overloaded_error", "Overloaded")
    if retry_after is not None:
        reply.headers["Retry-After"] = retry_after
    return reply
