"""The transport's wiring, against a local HTTP server: what goes on the wire and what comes
back.  What the API server answers is in tests/integration/test_apitransport.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import kubernetes
from aiohttp import web

from agentflow.apitransport import USER_AGENT, ApiTransport, query_string, ssl_context


def configuration(host: str) -> Any:
    c = kubernetes.client.Configuration()
    c.host = host
    return c


def test_query_parameters_are_strings_with_booleans_as_the_api_server_spells_them() -> None:
    assert query_string([("watch", True), ("limitBytes", 10), ("x", False)]) == [
        ("watch", "true"),
        ("limitBytes", "10"),
        ("x", "false"),
    ]
    assert query_string(None) == []


def test_tls_follows_the_configuration() -> None:
    assert ssl_context(configuration("http://127.0.0.1:1")) is None
    verified = ssl_context(configuration("https://127.0.0.1:1"))
    assert verified is not None
    assert verified.verify_mode is ssl.CERT_REQUIRED and verified.check_hostname
    insecure = configuration("https://127.0.0.1:1")
    insecure.verify_ssl = False
    unverified = ssl_context(insecure)
    assert unverified is not None
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname


@contextlib.asynccontextmanager
async def serve(handler: Any) -> AsyncIterator[str]:
    """A local HTTP server answering every request with ``handler``; yields its address."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_a_request_carries_json_its_query_the_token_and_the_operators_name() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": list(request.query.items()),
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        return web.Response(status=409, body=b'{"kind":"Status"}')

    async def main() -> tuple[int, bytes]:
        async with serve(handler) as host:
            c = configuration(host)
            c.api_key["authorization"] = "Bearer t0ken"
            transport = ApiTransport(c)
            response = await transport.send(
                "DELETE",
                "/api/v1/namespaces/n/configmaps/a",
                body={"preconditions": {"uid": "é"}},
                query=[("dryRun", "All")],
            )
            await transport.close()
            return response.status, response.body

    assert asyncio.run(main()) == (409, b'{"kind":"Status"}')
    [request] = seen
    assert request["method"] == "DELETE" and request["path"] == "/api/v1/namespaces/n/configmaps/a"
    assert request["query"] == [("dryRun", "All")]
    assert json.loads(request["body"]) == {"preconditions": {"uid": "é"}}
    headers = request["headers"]
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT


def test_a_request_without_an_answer_in_time_is_status_zero() -> None:
    async def main() -> tuple[int, str]:
        answer = asyncio.Event()

        async def handler(request: web.Request) -> web.Response:
            await answer.wait()  # until the client has given up
            return web.Response(status=200)

        async with serve(handler) as host:
            transport = ApiTransport(configuration(host), request_timeout=0.2)
            response = await transport.send("GET", "/slow")
            answer.set()
            await transport.close()
            return response.status, json.loads(response.body)["message"]

    status, message = asyncio.run(main())
    assert status == 0 and "Timeout" in message


def test_the_configurations_proxy_is_used_unless_no_proxy_names_the_host() -> None:
    via_proxy: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        via_proxy.append(str(request.url))
        return web.Response(status=200, body=b"{}")

    async def main(no_proxy: str) -> int:
        async with serve(proxy) as proxy_url:
            c = configuration("http://127.0.0.1:9")  # nothing listens there
            c.proxy, c.no_proxy = proxy_url, no_proxy
            transport = ApiTransport(c)
            status = (await transport.send("GET", "/api/v1/namespaces")).status
            await transport.close()
            return status

    assert asyncio.run(main("")) == 200
    assert via_proxy == ["http://127.0.0.1:9/api/v1/namespaces"]
    assert asyncio.run(main("127.0.0.1")) == 0  # straight to the host, where nothing answers
    assert len(via_proxy) == 1
