"""Step and Workflow Events, aggregated before they are posted.

A fast chain records two Events per step (``StepSucceeded`` of one step and ``StepStarted`` of
the next, in the same pass); posted one by one they were half of the operator's writes per
step.  Like client-go's event recorder (its spam filter keeps a token bucket per involved
object; its aggregator groups Events of one object, type and reason that differ only in their
message), every Workflow has a token bucket per Event type.  Unlike client-go's, nothing is
dropped: an Event that finds no token is held and merged with the others held for its Workflow,
type and reason, and the merged Event is posted when the next token is due.  Its message lists
every message it combines.

:class:`EventAggregator` makes every decision, over times the caller passes in (pure, tested
without a loop); :class:`EventRecorder` is the thin asyncio part: it posts, and keeps one timer
for the next flush of the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("agentflow.events")

EventPoster = Callable[[Mapping[str, Any], str, str, str], None]

# The component named as the Events' source (kopf's settings.posting.reporting_component).
REPORTING_COMPONENT = "agentflow-operator"
EVENT_NAME_PREFIX = "agentflow-event-"
# The API server keeps an Event's message to this many characters (kopf cuts it there too).
MESSAGE_LIMIT = 1024
# Normal Events: a pass that moves a chain on records two (one step succeeded, the next
# started), so a burst of 2 posts one transition at once; one token per 10 s means a chain
# whose steps take 20 s or longer gets every Event on its own, and a faster one about one
# Event per reason every 10 s (each listing the steps it combines).
NORMAL_BURST = 2
NORMAL_PERIOD_SECONDS = 10.0
# Warnings have buckets of their own, so they never wait behind Normal Events, and a larger
# burst: a failure, its retry and a fallback in quick succession are each posted at once.  They
# are still aggregated, so a Workflow that fails on every pass cannot flood the API server.
WARNING_BURST = 5
WARNING_PERIOD_SECONDS = 10.0
# A Workflow's finishing Events flush everything held for it, so its Events are complete when
# it finishes (a run finishes once: a new one takes a change by the Workflow's author).
FINISHING_REASONS = frozenset({"WorkflowSucceeded", "WorkflowFailed"})
# Merged groups held per Workflow and type: a group is full when one more message would not fit
# into MESSAGE_LIMIT, and the next message starts a new group (posted in the same flush).  Past
# this many groups, messages are only counted in the last group ("and N more").
MAX_GROUPS = 8
SEPARATOR = "; "
SUFFIX_ROOM = 24  # " (and 1234567 more)", and the count in front growing by a digit or two
# Tokens are fractions of time; a timer that fires at the due time may see 0.999... of one.
EPSILON = 1e-9

ObjectKey = tuple[str, str, str]  # (namespace, name, uid) of the involved Workflow


@dataclass(frozen=True)
class Post:
    """One Event to post now."""

    body: Mapping[str, Any]  # the involved object (apiVersion, kind and metadata's identity)
    type: str
    reason: str
    message: str
    # How many recorded Events it combines (1: posted as recorded).
    count: int = 1


@dataclass
class Group:
    """Held Events of one Workflow, type and reason, in the order they were recorded."""

    reason: str
    messages: list[str] = field(default_factory=list)
    uncounted: int = 0  # recorded past MAX_GROUPS: only counted

    @property
    def count(self) -> int:
        return len(self.messages) + self.uncounted

    def render(self) -> str:
        return render_message(self.messages, self.uncounted)

    def fits(self, message: str) -> bool:
        """Whether ``message`` fits in, with room left for an " (and N more)"."""
        messages = [*self.messages, message]
        length = len(f"({len(messages) + self.uncounted} events) ") + len(SEPARATOR.join(messages))
        return length + SUFFIX_ROOM <= MESSAGE_LIMIT


def render_message(messages: list[str], uncounted: int = 0) -> str:
    """The message of an Event combining ``messages`` (and ``uncounted`` more), at most
    MESSAGE_LIMIT characters (a group's messages fit; only the counted ones past MAX_GROUPS
    can cut the last of them short)."""
    if len(messages) == 1 and not uncounted:
        return messages[0]
    prefix = f"({len(messages) + uncounted} events) "
    suffix = f" (and {uncounted} more)" if uncounted else ""
    body = SEPARATOR.join(messages)[: MESSAGE_LIMIT - len(prefix) - len(suffix)]
    return prefix + body + suffix


@dataclass
class Bucket:
    """One Workflow's token bucket and held Events, for one Event type."""

    tokens: float
    at: float  # when ``tokens`` was last brought up to date
    groups: list[Group] = field(default_factory=list)
    body: Mapping[str, Any] = field(default_factory=dict)


def involved(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an Event needs of its object: kind, apiVersion and the metadata's identity."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid") if k in meta},
    }


def object_key(body: Mapping[str, Any]) -> ObjectKey:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "", meta.get("uid") or "")


class EventAggregator:
    """Decides which Events are posted when; keeps what is held.  No I/O, no clock of its own."""

    def __init__(
        self,
        *,
        burst: Mapping[str, int] | None = None,
        period: Mapping[str, float] | None = None,
    ) -> None:
        self.burst = dict(burst or {"Normal": NORMAL_BURST, "Warning": WARNING_BURST})
        self.period = dict(
            period or {"Normal": NORMAL_PERIOD_SECONDS, "Warning": WARNING_PERIOD_SECONDS}
        )
        self.buckets: dict[tuple[ObjectKey, str], Bucket] = {}

    def _params(self, type_: str) -> tuple[int, float]:
        kind = type_ if type_ in self.burst else "Warning"
        return self.burst[kind], self.period[kind]

    def _bucket(self, key: ObjectKey, type_: str, now: float) -> Bucket:
        burst, period = self._params(type_)
        bucket = self.buckets.get((key, type_))
        if bucket is None:
            bucket = self.buckets[(key, type_)] = Bucket(tokens=float(burst), at=now)
        elif now > bucket.at:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) / period)
            bucket.at = now
        return bucket

    def record(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str, now: float
    ) -> list[Post]:
        """The Events to post now for one recorded Event (none: it is held)."""
        message = message[:MESSAGE_LIMIT]
        key = object_key(body)
        bucket = self._bucket(key, type_, now)
        bucket.body = involved(body)
        if not bucket.groups and bucket.tokens >= 1.0 - EPSILON:
            bucket.tokens -= 1.0
            posts = [Post(bucket.body, type_, reason, message)]
        else:
            self._hold(bucket, reason, message)
            posts = []
        if reason in FINISHING_REASONS:
            posts += self.flush_object(key, now)
        return posts

    @staticmethod
    def _hold(bucket: Bucket, reason: str, message: str) -> None:
        groups = [g for g in bucket.groups if g.reason == reason]
        if groups and groups[-1].fits(message):
            groups[-1].messages.append(message)
        elif len(bucket.groups) < MAX_GROUPS or not groups:
            bucket.groups.append(Group(reason, [message]))
        else:
            groups[-1].uncounted += 1

    def _take(self, bucket: Bucket, type_: str) -> list[Post]:
        posts = [Post(bucket.body, type_, g.reason, g.render(), g.count) for g in bucket.groups]
        bucket.groups = []
        # Each Event posted takes a token; a flush of several groups leaves the bucket in debt,
        # which puts the next flush further off, so the rate stays one Event per period.
        bucket.tokens -= len(posts)
        return posts

    def _due(self, bucket: Bucket, type_: str) -> float:
        return bucket.at + max(0.0, 1.0 - bucket.tokens) * self._params(type_)[1]

    def due(self) -> float | None:
        """When the next held Event is due (its bucket has a token again), or None."""
        times = [self._due(b, type_) for (_, type_), b in self.buckets.items() if b.groups]
        return min(times) if times else None

    def due_for(self, body: Mapping[str, Any], type_: str) -> float | None:
        """When the Events held for ``body``'s Workflow and ``type_`` are due, or None."""
        bucket = self.buckets.get((object_key(body), type_))
        return self._due(bucket, type_) if bucket is not None and bucket.groups else None

    def flush(self, now: float) -> list[Post]:
        """The held Events that are due at ``now``, merged per Workflow, type and reason."""
        posts: list[Post] = []
        for (key, type_), bucket in list(self.buckets.items()):
            self._bucket(key, type_, now)
            if bucket.groups and bucket.tokens >= 1.0 - EPSILON:
                posts += self._take(bucket, type_)
            elif not bucket.groups and bucket.tokens >= self._params(type_)[0] - EPSILON:
                # Full again and holding nothing: the same as no bucket at all.
                del self.buckets[(key, type_)]
        return posts

    def flush_object(self, key: ObjectKey, now: float) -> list[Post]:
        """Everything held for one Workflow, due or not."""
        posts: list[Post] = []
        for (k, type_), bucket in self.buckets.items():
            if k == key and bucket.groups:
                posts += self._take(self._bucket(k, type_, now), type_)
        return posts

    def flush_all(self) -> list[Post]:
        """Everything held, due or not (the operator is stopping)."""
        posts: list[Post] = []
        for (_, type_), bucket in self.buckets.items():
            if bucket.groups:
                posts += self._take(bucket, type_)
        return posts

    def forget(self, namespace: str, name: str) -> int:
        """Drop a deleted Workflow's buckets and what they hold; returns how many were held."""
        dropped = 0
        for key in [k for k in self.buckets if k[0][:2] == (namespace, name)]:
            dropped += sum(g.count for g in self.buckets.pop(key).groups)
        return dropped


class EventRecorder:
    """An ``EventPoster`` in front of another: posts what the aggregator lets through, and
    flushes what it holds when it is due, with one timer for the whole process."""

    def __init__(
        self,
        poster: EventPoster,
        aggregator: EventAggregator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.poster = poster
        self.aggregator = aggregator or EventAggregator()
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def post(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self._send(self.aggregator.record(body, type_, reason, message, self.clock()))
        # Only this bucket's due time can have come nearer (others' only move off).
        self._schedule(self.aggregator.due_for(body, type_))

    def _send(self, posts: list[Post]) -> None:
        for post in posts:
            try:
                self.poster(post.body, post.type, post.reason, post.message)
            except Exception as e:  # an Event is never worth a pass
                logger.warning("could not post event %s: %s", post.reason, e)

    def _schedule(self, due: float | None) -> None:
        if due is None or (self._timer_at is not None and self._timer_at <= due):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): flushed by the next post or close()
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = loop.call_later(max(0.0, due - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self._send(self.aggregator.flush(self.clock()))
        self._schedule(self.aggregator.due())

    def forget(self, namespace: str, name: str) -> None:
        """A deleted Workflow: its held Events have no object to be about any more."""
        self.aggregator.forget(namespace, name)

    async def close(self, create: Callable[[dict[str, Any]], Awaitable[Any]]) -> int:
        """Post everything held through ``create`` (an Event manifest to the API server), as the
        operator stops; returns how many Events were posted.

        ``create`` posts at once, not behind a queue whose poster is stopping too.
        """
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        posted = 0
        now = datetime.now(UTC)
        for post in self.aggregator.flush_all():
            try:
                await create(event_manifest(post, now))
                posted += 1
            except Exception as e:  # stopping: what cannot be posted now is lost
                logger.warning("could not post event %s: %s", post.reason, e)
        return posted


class EventSender:
    """An ``EventPoster`` that posts through the operator's own client, one Event at a time and
    in the order they were recorded, off the pass that recorded them (as kopf's poster does).

    ``kopf.event`` works only inside kopf's handlers, where kopf has set up its poster; the
    passes run in the operator's own workers.  The queue needs no bound of its own: the
    recorder in front of it lets through a few Events per Workflow and 10 s.
    """

    def __init__(
        self,
        create: Callable[[dict[str, Any]], Awaitable[Any]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.create = create
        self.clock = clock
        self.count = count  # called with the type of each Event posted
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def post(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self._queue.put_nowait(event_manifest(Post(body, type_, reason, message), self.clock()))

    def __len__(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        while True:
            await self._send(await self._queue.get())

    async def close(self) -> int:
        """Post what is still queued (the operator stops); returns how many were posted."""
        posted = 0
        while not self._queue.empty():
            posted += await self._send(self._queue.get_nowait())
        return posted

    async def _send(self, manifest: dict[str, Any]) -> bool:
        try:
            await self.create(manifest)
        except Exception as e:  # an Event is never worth more than a log line
            logger.warning("could not post event %s: %s", manifest.get("reason"), e)
            return False
        if self.count is not None:
            self.count(manifest["type"])
        return True


def event_manifest(post: Post, now: datetime) -> dict[str, Any]:
    """A core/v1 Event, with the fields kopf gives the Events it posts (same source)."""
    meta = post.body.get("metadata") or {}
    stamp = now.isoformat()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": meta.get("namespace"), "generateName": EVENT_NAME_PREFIX},
        "type": post.type,
        "reason": post.reason,
        "message": post.message[:MESSAGE_LIMIT],
        "action": "Action?",
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "source": {"component": REPORTING_COMPONENT},
        "involvedObject": {
            "apiVersion": post.body.get("apiVersion"),
            "kind": post.body.get("kind"),
            **{k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
        },
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": stamp,
    }
