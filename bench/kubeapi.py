"""A small, cheap client for the bench's own cluster: plain JSON over urllib3.

The harness shares two cores with the controllers it measures, so it avoids the kubernetes
client's models; watches parse one JSON line per event and record when it arrived.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

Obj = dict[str, Any]
# (event type, object, time.monotonic() when the event arrived)
WatchHandler = Callable[[str, Obj, float], None]


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:500]}")
        self.status = status


class Api:
    """Admin access to the bench cluster with its client certificate."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path, pool: int = 32) -> None:
        self.server = server.rstrip("/")
        self.http = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca),
            cert_file=str(cert),
            key_file=str(key),
            retries=False,
        )

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        return self.server + path + ("?" + urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        response = self.http.request(
            method,
            self.url(path, query),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
        )
        raw = response.data
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, parsed = self.request(method, path, body, **kwargs)
        if status >= 400:
            raise ApiError(status, method, path, json.dumps(parsed)[:500])
        return parsed

    def text(self, path: str) -> str:
        response = self.http.request("GET", self.url(path), timeout=30.0)
        if response.status >= 400:
            raise ApiError(response.status, "GET", path, response.data.decode(errors="replace"))
        return str(response.data.decode())

    def items(self, path: str, selector: str | None = None) -> list[Obj]:
        """All objects of a list, page by page."""
        result: list[Obj] = []
        query: dict[str, Any] = {"limit": 500}
        if selector:
            query["labelSelector"] = selector
        while True:
            page = self.call("GET", path, query=query)
            result.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return result
            query["continue"] = token

    def count(self, path: str, selector: str | None = None) -> int:
        return len(self.items(path, selector))

    def create_many(self, path: str, objects: list[Obj], workers: int = 8) -> None:
        """POST every object, ``workers`` at a time (a user submitting a burst)."""

        def create(obj: Obj) -> None:
            for attempt in range(5):
                status, parsed = self.request("POST", path, obj)
                if status < 400 or status == 409:
                    return
                if status in (429, 500, 503) and attempt < 4:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise ApiError(status, "POST", path, json.dumps(parsed)[:500])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(create, objects))

    def wait(
        self, what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.5
    ) -> bool:
        """Poll ``predicate`` until true or ``timeout``; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return False


class Watcher:
    """A background watch on one collection, calling ``handler`` for every event.

    It lists first (so objects that already exist are reported as ``ADDED`` too), then
    watches from that resourceVersion, and re-lists when the watch expires.
    """

    def __init__(
        self, api: Api, path: str, handler: WatchHandler, selector: str | None = None
    ) -> None:
        self.api = api
        self.path = path
        self.selector = selector
        self.handler = handler
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.errors: list[str] = []
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)

    def start(self, timeout: float = 30.0) -> Watcher:
        self._thread.start()
        if not self.synced.wait(timeout):
            raise RuntimeError(f"watch of {self.path} did not sync: {self.errors[-3:]}")
        return self

    def stop(self) -> None:
        self.stopping.set()
        response = self._response
        if response is not None:
            # Unblocks the thread's read at once, rather than at the next event.
            with contextlib.suppress(Exception):
                response.shutdown()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    version = self._list()
                    self.synced.set()
                version = self._watch(version)
            except Exception as e:  # a broken connection: list again
                self.errors.append(repr(e))
                version = ""
                time.sleep(0.5)

    def _list(self) -> str:
        query: dict[str, Any] = {}
        if self.selector:
            query["labelSelector"] = self.selector
        page = self.api.call("GET", self.path, query=query)
        now = time.monotonic()
        for item in page.get("items") or []:
            self.handler("ADDED", item, now)
        return str((page.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, version: str) -> str:
        query: dict[str, Any] = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": 60,
        }
        if self.selector:
            query["labelSelector"] = self.selector
        response = self.api.http.request(
            "GET",
            self.api.url(self.path, query),
            preload_content=False,
            timeout=urllib3.Timeout(connect=10.0, read=90.0),
        )
        self._response = response
        try:
            if response.status >= 400:
                raise ApiError(response.status, "WATCH", self.path, response.read().decode())
            for line in _lines(response):
                if self.stopping.is_set():
                    break
                now = time.monotonic()
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return ""  # 410 Gone and friends: list again
                version = (obj.get("metadata") or {}).get("resourceVersion", version)
                if kind != "BOOKMARK":
                    self.handler(kind, obj, now)
        finally:
            self._response = None
            response.release_conn()
        return version


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(64 * 1024, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
