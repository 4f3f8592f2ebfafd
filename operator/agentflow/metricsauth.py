"""Who may read ``/metrics`` (``agentflow operator --metrics-auth``).

The same check as controller-runtime's metrics filter: the caller's bearer token is sent to the
API server in a TokenReview, and the user it belongs to in a SubjectAccessReview for
``get`` on the non-resource URL ``/metrics``.  So access is granted with ordinary RBAC::

    rules:
      - nonResourceURLs: ["/metrics"]
        verbs: ["get"]

Verdicts are remembered for a short time per token (by its SHA-256, never the token itself), so
a scraper every few seconds costs two API requests per TTL rather than per scrape.  A denial is
remembered for less time than a grant, so a newly bound scraper is let in soon.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from agentflow.kube import UserInfo

METRICS_PATH = "/metrics"
ALLOWED_TTL_SECONDS = 60.0
DENIED_TTL_SECONDS = 10.0
MAX_CACHED_TOKENS = 256


class ReviewApi(Protocol):
    async def review_token(self, token: str) -> UserInfo | None: ...

    async def may_access_path(self, user: UserInfo, path: str, verb: str) -> bool: ...


class MetricsAuthorizer:
    """``await authorizer(token)`` is True when the token's user may ``get /metrics``.

    API errors propagate: the metrics server answers 503 then, rather than guess.
    """

    def __init__(
        self,
        api: ReviewApi,
        *,
        path: str = METRICS_PATH,
        verb: str = "get",
        allowed_ttl: float = ALLOWED_TTL_SECONDS,
        denied_ttl: float = DENIED_TTL_SECONDS,
        max_entries: int = MAX_CACHED_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.path = path
        self.verb = verb
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self.max_entries = max_entries
        self.clock = clock
        # sha256(token) -> (verdict, expires at); oldest first.
        self._verdicts: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    async def __call__(self, token: str | None) -> bool:
        if not token:
            return False
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        now = self.clock()
        cached = self._verdicts.get(key)
        if cached is not None and cached[1] > now:
            self._verdicts.move_to_end(key)
            return cached[0]
        allowed = await self._review(token)
        ttl = self.allowed_ttl if allowed else self.denied_ttl
        self._verdicts[key] = (allowed, self.clock() + ttl)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.max_entries:
            self._verdicts.popitem(last=False)
        return allowed

    async def _review(self, token: str) -> bool:
        user = await self.api.review_token(token)
        if user is None:
            return False
        return await self.api.may_access_path(user, self.path, self.verb)
