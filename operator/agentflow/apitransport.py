"""HTTP to the Kubernetes API server from the event loop; used by :mod:`agentflow.kube` only.

The ``kubernetes`` client's transport is synchronous (urllib3): every request took a thread of
the default executor, two hand-offs between it and the loop, and a walk of its body by the
client's serializer before ``json.dumps``.  Here requests go out from the loop itself
(aiohttp, which kopf's own watches use too) over a pool of kept-alive connections.

What to reach and how to authenticate still comes from the client's ``Configuration``, as the
in-cluster service account or the kubeconfig loaders fill it in.  Its bearer token is read on
every request, through the configuration's refresh hook, so that a rotated token (the
projected service-account token, an exec plugin's) is picked up as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes.client.rest import should_bypass_proxies

from agentflow import __version__

USER_AGENT = f"agentflow-operator/{__version__}"
# Concurrent requests to the API server; more wait for a free connection.
CONNECTIONS = 32
REQUEST_SECONDS = 30.0
WATCH_CONNECT_SECONDS = 10.0


@dataclass(frozen=True)
class Response:
    status: int  # 0: no answer (the connection failed, or timed out)
    body: bytes


def ssl_context(configuration: Any) -> ssl.SSLContext | None:
    """The TLS settings of ``configuration``, as the ``kubernetes`` client applies them."""
    if not str(configuration.host).startswith("https:"):
        return None
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert or None, cadata=configuration.ca_cert_data or None
    )
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:  # the kubeconfig says insecure-skip-tls-verify
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    return context


def query_string(query: list[tuple[str, Any]] | None) -> list[tuple[str, str]]:
    """Query parameters as the API server reads them (booleans in lower case)."""
    out: list[tuple[str, str]] = []
    for key, value in query or ():
        out.append((key, ("true" if value else "false") if isinstance(value, bool) else str(value)))
    return out


class ApiTransport:
    """Requests to the API server that ``configuration`` names, on one aiohttp session.

    The session belongs to the event loop that made the first request (aiohttp's sessions
    cannot move between loops); :meth:`close` ends it.
    """

    def __init__(
        self,
        configuration: Any,
        *,
        connections: int = CONNECTIONS,
        request_timeout: float = REQUEST_SECONDS,
    ) -> None:
        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self.connections = connections
        self.request_timeout = request_timeout
        self._ssl = ssl_context(configuration)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        bearer = self.configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = str(bearer["value"])
        return headers

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self.connections, ssl=self._ssl if self._ssl is not None else True
            )
            self._session = aiohttp.ClientSession(connector=connector)
            self._loop = loop
        return self._session

    def _extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if self.configuration.tls_server_name:
            extras["server_hostname"] = self.configuration.tls_server_name
        proxy = self.configuration.proxy
        if proxy and not should_bypass_proxies(self.host, self.configuration.no_proxy or ""):
            extras["proxy"] = proxy
            if self.configuration.proxy_headers:
                extras["proxy_headers"] = self.configuration.proxy_headers
        return extras

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Response:
        """One request; a connection that fails, or no answer within ``request_timeout``
        seconds, is status 0 (the caller tells it from an answer of the API server)."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._client().request(
                method,
                self.host + path,
                params=query_string(query),
                data=data,
                headers=self._headers(content_type if data is not None else None),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                **self._extras(),
            ) as response:
                return Response(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as e:
            return Response(0, json.dumps({"message": f"{type(e).__name__}: {e}"}).encode())

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, query: list[tuple[str, Any]], *, read_timeout: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The open response of a watch (``async for line in response.content``); silence
        for ``read_timeout`` seconds raises TimeoutError."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=WATCH_CONNECT_SECONDS, sock_read=read_timeout
        )
        async with self._client().get(
            self.host + path,
            params=query_string(query),
            headers=self._headers(None),
            timeout=timeout,
            **self._extras(),
        ) as response:
            yield response

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
