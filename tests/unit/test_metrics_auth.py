"""MetricsAuthorizer: TokenReview then SubjectAccessReview, with a short per-token cache."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from agentflow.kube import UserInfo
from agentflow.metricsauth import MetricsAuthorizer


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


def _authorizer(
    reviews: FakeReviews, clock: Clock, allowed_ttl: float = 60.0, denied_ttl: float = 10.0
) -> MetricsAuthorizer:
    return MetricsAuthorizer(reviews, clock=clock, allowed_ttl=allowed_ttl, denied_ttl=denied_ttl)


def test_only_a_user_allowed_to_get_metrics_passes() -> None:
    reviews = FakeReviews(
        users={"good": SCRAPER, "other": OTHER}, allowed={(SCRAPER.username, "/metrics", "get")}
    )
    authorize = _authorizer(reviews, Clock())

    assert asyncio.run(authorize("good")) is True
    assert asyncio.run(authorize("other")) is False
    assert asyncio.run(authorize("unknown")) is False
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
    reviews = FakeReviews(users={"good": SCRAPER}, allowed={(SCRAPER.username, "/metrics", "get")})
    clock = Clock()
    authorize = _authorizer(reviews, clock, allowed_ttl=60.0, denied_ttl=10.0)

    async def scenario() -> list[bool]:
        verdicts = [await authorize("good"), await authorize("good")]
        clock.now += 59
        verdicts.append(await authorize("good"))
        clock.now += 2
        verdicts.append(await authorize("good"))  # expired: reviewed again
        return verdicts

    assert asyncio.run(scenario()) == [True, True, True, True]
    assert reviews.calls.count("TokenReview") == 2

    # A denial is remembered for the shorter TTL: a new RoleBinding takes effect soon.
    reviews.calls.clear()

    async def denied_then_bound() -> list[bool]:
        first = await authorize("late")
        reviews.users["late"] = OTHER
        reviews.allowed.add((OTHER.username, "/metrics", "get"))
        clock.now += 5
        cached = await authorize("late")
        clock.now += 6
        return [first, cached, await authorize("late")]

    assert asyncio.run(denied_then_bound()) == [False, False, True]


def test_the_cache_is_bounded_and_api_errors_are_not_cached() -> None:
    reviews = FakeReviews(users={f"t{i}": SCRAPER for i in range(10)})
    authorize = MetricsAuthorizer(reviews, clock=Clock(), max_entries=3)

    async def many() -> None:
        for i in range(10):
            await authorize(f"t{i}")

    asyncio.run(many())
    assert len(authorize._verdicts) == 3

    reviews.fail = True
    with pytest.raises(RuntimeError):
        asyncio.run(authorize("fresh"))
    reviews.fail = False
    reviews.users["fresh"] = SCRAPER
    reviews.allowed.add((SCRAPER.username, "/metrics", "get"))
    assert asyncio.run(authorize("fresh")) is True
