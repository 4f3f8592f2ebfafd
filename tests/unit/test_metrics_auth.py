"""MetricsAuthorizer: TokenReview then SubjectAccessReview, with a short per-token cache;
tokens that cannot be ServiceAccount tokens, and checks past the concurrency cap or the reviews'
own rate limit, cost no API call."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest

from agentflow.apitransport import ApiTransport, Response
from agentflow.kube import REVIEW_BURST, REVIEW_QPS, Kube, Throttled, TokenBucket, UserInfo
from agentflow.metrics import TooManyRequests
from agentflow.metricsauth import (
    FIRST_CHECK_BURST,
    FIRST_CHECK_RATE,
    MAX_TOKEN_LENGTH,
    MetricsAuthorizer,
    could_be_a_service_account_token,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(subject: str, signature: str | None = None) -> str:
    """A token shaped like a ServiceAccount token (the signature is random: only the API
    server could tell it is not real)."""
    header = _b64(json.dumps({"alg": "RS256", "kid": "k"}).encode())
    payload = _b64(json.dumps({"sub": subject}).encode())
    return f"{header}.{payload}.{signature or _b64(secrets.token_bytes(256))}"


@dataclass
class FakeReviews:
    """Tokens to users, and the users allowed each (path, verb); every call is recorded."""

    users: dict[str, UserInfo] = field(default_factory=dict)
    allowed: set[tuple[str, str, str]] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    fail: bool = False

    async def review_token(self, token: str) -> UserInfo | None:
        self.calls.append("TokenReview")
        if self.fail:
            raise RuntimeError("API server unavailable")
        return self.users.get(token)

    async def may_access_path(self, user: UserInfo, path: str, verb: str) -> bool:
        self.calls.append(f"SubjectAccessReview {user.username} {verb} {path}")
        return (user.username, path, verb) in self.allowed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SCRAPER = UserInfo(username="system:serviceaccount:monitoring:prometheus", groups=("a",))
OTHER = UserInfo(username="system:serviceaccount:team:app")


def unlimited() -> TokenBucket:
    """A first-check budget that is never spent, for tests whose subject is something else."""
    return TokenBucket(1e9, 10**9)


def _authorizer(
    reviews: FakeReviews, clock: Clock, allowed_ttl: float = 60.0, denied_ttl: float = 10.0
) -> MetricsAuthorizer:
    return MetricsAuthorizer(reviews, clock=clock, allowed_ttl=allowed_ttl, denied_ttl=denied_ttl)


def test_only_a_user_allowed_to_get_metrics_passes() -> None:
    good, other, unknown = jwt("good"), jwt("other"), jwt("unknown")
    reviews = FakeReviews(
        users={good: SCRAPER, other: OTHER}, allowed={(SCRAPER.username, "/metrics", "get")}
    )
    authorize = _authorizer(reviews, Clock())

    assert asyncio.run(authorize(good)) is True
    assert asyncio.run(authorize(other)) is False
    assert asyncio.run(authorize(unknown)) is False
    assert asyncio.run(authorize(None)) is False
    assert asyncio.run(authorize("")) is False
    assert reviews.calls == [
        "TokenReview",
        f"SubjectAccessReview {SCRAPER.username} get /metrics",
        "TokenReview",
        f"SubjectAccessReview {OTHER.username} get /metrics",
        "TokenReview",  # not authenticated: no access review
    ]


def test_verdicts_are_cached_per_token_until_their_ttl() -> None:
    good, late = jwt("good"), jwt("late")
    reviews = FakeReviews(users={good: SCRAPER}, allowed={(SCRAPER.username, "/metrics", "get")})
    clock = Clock()
    authorize = _authorizer(reviews, clock, allowed_ttl=60.0, denied_ttl=10.0)

    async def scenario() -> list[bool]:
        verdicts = [await authorize(good), await authorize(good)]
        clock.now += 59
        verdicts.append(await authorize(good))
        clock.now += 2
        verdicts.append(await authorize(good))  # expired: reviewed again
        return verdicts

    assert asyncio.run(scenario()) == [True, True, True, True]
    assert reviews.calls.count("TokenReview") == 2

    # A denial is remembered for the shorter TTL: a new RoleBinding takes effect soon.
    reviews.calls.clear()

    async def denied_then_bound() -> list[bool]:
        first = await authorize(late)
        reviews.users[late] = OTHER
        reviews.allowed.add((OTHER.username, "/metrics", "get"))
        clock.now += 5
        cached = await authorize(late)
        clock.now += 6
        return [first, cached, await authorize(late)]

    assert asyncio.run(denied_then_bound()) == [False, False, True]


def test_the_cache_is_bounded_and_api_errors_are_not_cached() -> None:
    tokens = [jwt(f"t{i}") for i in range(10)]
    reviews = FakeReviews(users=dict.fromkeys(tokens, SCRAPER))
    authorize = MetricsAuthorizer(reviews, clock=Clock(), max_entries=3, first_checks=unlimited())

    async def many() -> None:
        for token in tokens:
            await authorize(token)

    asyncio.run(many())
    assert (len(authorize.allowed), len(authorize.denied)) == (0, 3)

    fresh = jwt("fresh")
    reviews.fail = True
    with pytest.raises(RuntimeError):
        asyncio.run(authorize(fresh))
    reviews.fail = False
    reviews.users[fresh] = SCRAPER
    reviews.allowed.add((SCRAPER.username, "/metrics", "get"))
    assert asyncio.run(authorize(fresh)) is True


def test_a_flood_of_refused_tokens_cannot_push_a_grant_out_of_the_cache() -> None:
    scraper = jwt("scraper")
    reviews = FakeReviews(users={scraper: SCRAPER}, allowed={(SCRAPER.username, "/metrics", "get")})
    authorize = MetricsAuthorizer(reviews, clock=Clock(), max_entries=8, first_checks=unlimited())

    async def scenario() -> list[bool]:
        first = await authorize(scraper)
        for i in range(100):
            assert await authorize(jwt(f"random-{i}")) is False
        reviews.calls.clear()
        return [first, await authorize(scraper)]

    assert asyncio.run(scenario()) == [True, True]
    assert reviews.calls == []  # still cached: no review for the scraper
    assert len(authorize.denied) == 8


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "a.b",
        "a.b.c.d",
        "abcdef.0123456789abcdef",  # a bootstrap token's shape
        jwt("x").replace(".", "..", 1),
        jwt("x") + "=",  # padding is not base64url as JWTs use it
        jwt("x", signature="sig") + "+",
        _b64(b"not json") + "." + _b64(b"{}") + ".sig",
        _b64(b"[1]") + "." + _b64(b"{}") + ".sig",
        _b64(b'{"typ": "JWT"}') + "." + _b64(b"{}") + ".sig",  # no alg
        _b64(b'{"alg": "RS256"}') + "." + _b64(b"null") + ".sig",
        _b64(b"[" * 2000) + "." + _b64(b"{}") + ".sig",  # nesting too deep for the parser
        jwt("x", signature="s" * MAX_TOKEN_LENGTH),
        "\u00e9" * 10,
    ],
)
def test_a_token_that_cannot_be_a_service_account_token_costs_no_review(token: str) -> None:
    reviews = FakeReviews(users={token: SCRAPER}, allowed={(SCRAPER.username, "/metrics", "get")})
    authorize = MetricsAuthorizer(reviews, clock=Clock())

    assert could_be_a_service_account_token(token) is False
    assert asyncio.run(authorize(token)) is False
    assert reviews.calls == []
    assert (len(authorize.allowed), len(authorize.denied)) == (0, 0)


def test_a_real_service_account_token_has_the_shape() -> None:
    # Header and payload of a token from `kubectl create token` (signature shortened).
    token = (
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IlVqLW1rZ3BvbEt0In0."
        "eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjIl0sImV4cCI6MTcwMDAwMDAwMCwi"
        "c3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50Om1vbml0b3Jpbmc6cHJvbWV0aGV1cyJ9."
        "c2lnbmF0dXJl"
    )
    assert could_be_a_service_account_token(token)
    assert could_be_a_service_account_token(jwt("x"))


@dataclass
class BlockedReviews(FakeReviews):
    """Reviews that wait until released, so that checks pile up."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def review_token(self, token: str) -> UserInfo | None:
        self.calls.append("TokenReview")
        await self.release.wait()
        return None


def test_checks_past_the_concurrency_cap_are_refused_at_once_without_a_review() -> None:
    async def scenario() -> None:
        reviews = BlockedReviews()
        authorize = MetricsAuthorizer(reviews, clock=Clock(), max_concurrent=2)
        pending = [asyncio.create_task(authorize(jwt(f"slow-{i}"))) for i in range(2)]
        await asyncio.sleep(0)  # both are now waiting for their review
        assert reviews.calls == ["TokenReview", "TokenReview"]
        with pytest.raises(TooManyRequests):
            await asyncio.wait_for(authorize(jwt("one-too-many")), timeout=1)
        assert len(reviews.calls) == 2
        reviews.release.set()
        assert await asyncio.gather(*pending) == [False, False]
        # The slots are free again.
        assert await authorize(jwt("later")) is False
        assert len(reviews.calls) == 3
        assert authorize.first.in_flight == 0

    asyncio.run(scenario())


@dataclass
class ThrottledReviews(FakeReviews):
    async def review_token(self, token: str) -> UserInfo | None:
        self.calls.append("TokenReview")
        raise Throttled()


def test_a_spent_review_rate_limit_is_429_and_is_not_cached() -> None:
    reviews = ThrottledReviews()
    authorize = MetricsAuthorizer(reviews, clock=Clock())
    token = jwt("x")
    for _ in range(2):
        with pytest.raises(TooManyRequests):
            asyncio.run(authorize(token))
    assert reviews.calls == ["TokenReview", "TokenReview"]
    assert authorize.first.in_flight == 0


class FakeTransport(ApiTransport):
    """A transport that sends nothing: it records the paths and answers every review "no"."""

    def __init__(self) -> None:
        super().__init__(kubernetes.client.Configuration())
        self.paths: list[str] = []

    async def send(self, method: str, path: str, **_: Any) -> Response:
        self.paths.append(path)
        return Response(201, json.dumps({"status": {"authenticated": False}}).encode())


async def tally(
    calls: Iterator[Coroutine[Any, Any, object]], refusal: type[Exception]
) -> tuple[int, int]:
    """Await ``calls`` one by one: how many were answered, and how many raised ``refusal``."""
    answered = refused = 0
    for call in calls:
        try:
            await asyncio.wait_for(call, timeout=1)
            answered += 1
        except refusal:
            refused += 1
    return answered, refused


def test_reviews_have_their_own_rate_limit_and_never_take_the_reconcile_loops() -> None:
    api = FakeTransport()
    counted: list[tuple[str, int]] = []
    kube = Kube(api, qps=50.0, burst=100, count=lambda verb, code: counted.append((verb, code)))

    calls = (kube.review_token(jwt("random")) for _ in range(REVIEW_BURST + 40))
    reviewed, throttled = asyncio.run(tally(calls, Throttled))
    # The burst was reviewed (plus what the bucket refilled meanwhile); the rest was refused
    # without a request, and the reconcile loop's bucket is untouched.
    assert REVIEW_BURST <= reviewed <= REVIEW_BURST + 2
    assert throttled == REVIEW_BURST + 40 - reviewed
    assert len(api.paths) == reviewed == len(counted)
    assert kube.limiter.tokens == 100.0


def test_checks_of_new_tokens_have_a_budget_below_the_reviews_rate_limit() -> None:
    # A check is up to two reviews: new tokens may use at most part of the reviews' rate, so
    # what is left is there for renewals of known grants.
    assert 2 * FIRST_CHECK_RATE < REVIEW_QPS
    assert 2 * FIRST_CHECK_BURST < REVIEW_BURST
    reviews = FakeReviews()
    authorize = MetricsAuthorizer(reviews, clock=Clock())

    calls = (authorize(jwt(f"random-{i}")) for i in range(FIRST_CHECK_BURST + 20))
    checked, refused = asyncio.run(tally(calls, TooManyRequests))
    assert FIRST_CHECK_BURST <= checked <= FIRST_CHECK_BURST + 1
    assert reviews.calls.count("TokenReview") == checked
    assert refused == FIRST_CHECK_BURST + 20 - checked


@dataclass
class ScraperAndFlood(FakeReviews):
    """The scraper's token is answered at once; every other token's review hangs."""

    scraper: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def review_token(self, token: str) -> UserInfo | None:
        if token == self.scraper:
            return await super().review_token(token)
        self.calls.append("TokenReview")
        await self.release.wait()
        return None


def test_a_known_scraper_renews_its_grant_while_new_tokens_fill_every_slot() -> None:
    async def scenario() -> None:
        scraper = jwt("scraper")
        reviews = ScraperAndFlood(
            users={scraper: SCRAPER},
            allowed={(SCRAPER.username, "/metrics", "get")},
            scraper=scraper,
        )
        clock = Clock()
        authorize = MetricsAuthorizer(reviews, clock=clock, allowed_ttl=60.0, max_concurrent=2)
        assert await authorize(scraper) is True
        # The flood takes both slots for new tokens and spends the first-check budget.
        hanging = [asyncio.create_task(authorize(jwt(f"random-{i}"))) for i in range(2)]
        await asyncio.sleep(0)
        while authorize.first_checks.try_acquire():
            pass
        with pytest.raises(TooManyRequests):
            await authorize(jwt("one-more"))
        # The scraper's grant expires: it is renewed in its own lane, with a real review.
        clock.now += 61
        reviews.calls.clear()
        assert await asyncio.wait_for(authorize(scraper), timeout=1) is True
        assert reviews.calls == [
            "TokenReview",
            f"SubjectAccessReview {SCRAPER.username} get /metrics",
        ]
        reviews.release.set()
        assert await asyncio.gather(*hanging) == [False, False]
        assert (authorize.first.in_flight, authorize.renewals.in_flight) == (0, 0)

    asyncio.run(scenario())


def test_a_revoked_grant_leaves_the_renewal_lane() -> None:
    scraper = jwt("scraper")
    reviews = FakeReviews(users={scraper: SCRAPER}, allowed={(SCRAPER.username, "/metrics", "get")})
    clock = Clock()
    authorize = MetricsAuthorizer(reviews, clock=clock, first_checks=TokenBucket(1e-9, 1))

    async def scenario() -> list[bool]:
        granted = await authorize(scraper)  # spends the only first check
        reviews.allowed.clear()  # its RoleBinding is deleted
        clock.now += 61
        renewed = await authorize(scraper)  # known: renewed, and now denied
        clock.now += 11
        return [granted, renewed]

    assert asyncio.run(scenario()) == [True, False]
    # No longer known: the next check is a first check again, and that budget is spent.
    with pytest.raises(TooManyRequests):
        asyncio.run(authorize(scraper))
