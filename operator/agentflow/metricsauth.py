"""Who may read ``/metrics`` (``agentflow operator --metrics-auth``).

The same check as controller-runtime's metrics filter: the caller's bearer token is sent to the
API server in a TokenReview, and the user it belongs to in a SubjectAccessReview for
``get`` on the non-resource URL ``/metrics``.  So access is granted with ordinary RBAC::

    rules:
      - nonResourceURLs: ["/metrics"]
        verbs: ["get"]

Anyone who can reach the metrics port can send a token, so a check must never cost the
operator more than it can spare:

- a token that cannot be a ServiceAccount token (a JWT: three base64url parts, a JSON header
  and payload, at most :data:`MAX_TOKEN_LENGTH` characters) is refused without an API call;
- at most :data:`MAX_CONCURRENT_REVIEWS` checks are under way at once, and the reviews have a
  rate limit of their own (``Kube.review_limiter``), apart from the reconcile loop's; a check
  beyond either is answered at once with :class:`~agentflow.metrics.TooManyRequests` (429);
- verdicts are remembered for a short time per token (by its SHA-256, never the token itself),
  so a scraper every few seconds costs two API requests per TTL rather than per scrape.  A
  denial is remembered for less time than a grant, so a newly bound scraper is let in soon.
  Grants and denials are kept apart, each bounded, so a flood of refused tokens cannot push
  a real scraper's grant out of the cache;
- a token never granted before is checked within a budget of its own
  (:data:`FIRST_CHECK_RATE` per second), below the reviews' rate limit, and in at most
  :data:`MAX_CONCURRENT_REVIEWS` checks at once; a token granted in the last
  :data:`KNOWN_SECONDS` whose grant has expired is checked again in a lane of its own
  (:data:`MAX_CONCURRENT_RENEWALS` at once, outside that budget).  A flood of new tokens
  therefore cannot spend the reviews a known scraper needs to renew its grant.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol

from agentflow.kube import Throttled, TokenBucket, UserInfo
from agentflow.metrics import TooManyRequests

METRICS_PATH = "/metrics"
ALLOWED_TTL_SECONDS = 60.0
DENIED_TTL_SECONDS = 10.0
MAX_CACHED_TOKENS = 256
# A ServiceAccount token is about 1 KB; 4 KiB leaves room for long names and extra claims.
MAX_TOKEN_LENGTH = 4096
# Checks under way at once.  Each holds one of the event loop's worker threads while its review
# is in flight; a scraper needs one, and only when its cached verdict has expired.
MAX_CONCURRENT_REVIEWS = 2
# Renewals of known grants have their own slot, so checks of new tokens never hold it.
MAX_CONCURRENT_RENEWALS = 1
# A check is up to two reviews (TokenReview, then SubjectAccessReview).  Checks of tokens never
# granted before get at most 3 of the reviews' 5 per second (burst 6 of 10): the rest stays for
# renewals, which a flood of new tokens therefore cannot spend.
FIRST_CHECK_RATE = 1.5
FIRST_CHECK_BURST = 3
# How long a granted token counts as known: a scraper renews every ALLOWED_TTL_SECONDS.
KNOWN_SECONDS = 3600.0
RETRY_AFTER_SECONDS = 1

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class ReviewApi(Protocol):
    async def review_token(self, token: str) -> UserInfo | None: ...

    async def may_access_path(self, user: UserInfo, path: str, verb: str) -> bool: ...


def _json_object(part: str) -> dict[str, object] | None:
    try:
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: "[[[[..." nesting
        return None
    return value if isinstance(value, dict) else None


def could_be_a_service_account_token(token: str) -> bool:
    """Whether ``token`` has the shape of a JWT, as every ServiceAccount token does.

    Only the shape: the signature, issuer and expiry are the API server's to judge.  Tokens of
    other authenticators (static token files, bootstrap tokens) are refused too: the chart's
    scrapers use ServiceAccount tokens.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        return False
    parts = token.split(".")
    if len(parts) != 3 or not all(_BASE64URL.fullmatch(p) for p in parts):
        return False
    header = _json_object(parts[0])
    return (
        header is not None
        and isinstance(header.get("alg"), str)
        and _json_object(parts[1]) is not None
    )


class _Verdicts:
    """sha256(token) -> expiry, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def holds(self, key: str, now: float) -> bool:
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[key]
            return False
        self._expiry.move_to_end(key)
        return True

    def forget(self, key: str) -> None:
        self._expiry.pop(key, None)

    def add(self, key: str, expiry: float) -> None:
        self._expiry[key] = expiry
        self._expiry.move_to_end(key)
        while len(self._expiry) > self.limit:
            self._expiry.popitem(last=False)


class _Lane:
    """At most ``limit`` checks under way at once; one more is refused with 429 at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise TooManyRequests(RETRY_AFTER_SECONDS)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


class MetricsAuthorizer:
    """``await authorizer(token)`` is True when the token's user may ``get /metrics``.

    Raises :class:`~agentflow.metrics.TooManyRequests` when the check cannot be made now (too
    many under way, or the reviews' rate limit is spent).  Other API errors propagate: the
    metrics server answers 503 then, rather than guess.
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
        max_concurrent: int = MAX_CONCURRENT_REVIEWS,
        first_checks: TokenBucket | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.path = path
        self.verb = verb
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self.clock = clock
        self.allowed = _Verdicts(max_entries)
        self.denied = _Verdicts(max_entries)
        # Tokens granted lately, whose expired grant is renewed in the renewal lane.
        self.known = _Verdicts(max_entries)
        self.first_checks = first_checks or TokenBucket(FIRST_CHECK_RATE, FIRST_CHECK_BURST)
        self.first = _Lane(max_concurrent)
        self.renewals = _Lane(MAX_CONCURRENT_RENEWALS)

    async def __call__(self, token: str | None) -> bool:
        if not token or not could_be_a_service_account_token(token):
            return False
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        now = self.clock()
        if self.allowed.holds(key, now):
            return True
        if self.denied.holds(key, now):
            return False
        if self.known.holds(key, now):
            with self.renewals.slot():
                return await self._check(key, token)
        with self.first.slot():
            if not self.first_checks.try_acquire():
                raise TooManyRequests(RETRY_AFTER_SECONDS)
            return await self._check(key, token)

    async def _check(self, key: str, token: str) -> bool:
        try:
            allowed = await self._review(token)
        except Throttled:
            raise TooManyRequests(RETRY_AFTER_SECONDS) from None
        if allowed:
            self.allowed.add(key, self.clock() + self.allowed_ttl)
            self.known.add(key, self.clock() + KNOWN_SECONDS)
        else:
            self.denied.add(key, self.clock() + self.denied_ttl)
            self.known.forget(key)
        return allowed

    async def _review(self, token: str) -> bool:
        user = await self.api.review_token(token)
        if user is None:
            return False
        return await self.api.may_access_path(user, self.path, self.verb)
