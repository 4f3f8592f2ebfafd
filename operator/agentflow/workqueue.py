"""A work queue of Workflow keys, drained by a fixed number of workers.

The semantics are client-go's ``workqueue`` (which Argo Workflows' controller uses), so that a
pass per key replaces a task per Workflow:

- a key is queued at most once, however often it is added before a worker takes it (a burst
  of watch events costs one pass);
- a key is never processed by two workers at once: added while a worker has it, it is marked
  and queued again when that worker is done, so the change is not lost;
- keys are handed out first in, first out: a Workflow submitted in the middle of a burst waits
  for the keys ahead of it, not for every pass they cause later;
- ``add_after`` queues a key once a delay has passed (a requeue the plan asked for); a key has
  at most one such timer, the earliest, and a worker taking the key drops it, because the pass
  it is about to run says anew when it wants the next one.

Nothing is kept for a key that is neither queued, processed nor timed: a finished Workflow
costs the queue nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down: no key will be handed out any more."""


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()  # waiting to be processed (queued, or marked while processed)
        self._processing: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._ready = asyncio.Event()  # something is queued (or the queue is shut down)
        self._shut_down = False

    def __len__(self) -> int:
        return len(self._queue)

    def is_pending(self, key: K) -> bool:
        """Whether ``key`` waits for a worker (queued, or marked while one processes it)."""
        return key in self._dirty

    def is_timed(self, key: K) -> bool:
        return key in self._timers

    def add(self, key: K) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds, unless an earlier timer of it is set already."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer[0] <= due:
                return
            timer[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        """The next key, marked as processed until :meth:`done` is called with it."""
        while not self._queue:
            if self._shut_down:
                raise ShutDown
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        return key

    def done(self, key: K) -> None:
        """``key``'s pass is over; queue it again if it was added meanwhile."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def forget(self, key: K) -> None:
        """Drop ``key``'s timer and its place in the queue (its object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        if key in self._dirty:
            self._dirty.discard(key)
            if key not in self._processing:
                self._queue.remove(key)  # O(queue); deletions are rare next to additions

    def shut_down(self) -> None:
        self._shut_down = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._ready.set()
