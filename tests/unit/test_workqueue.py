"""agentflow.workqueue: client-go's work queue semantics, on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from agentflow.workqueue import ShutDown, WorkQueue


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keys_come_out_first_in_first_out_and_each_once() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        for key in ["a", "b", "a", "c", "b"]:
            q.add(key)
        assert len(q) == 3
        assert [await q.get() for _ in range(3)] == ["a", "b", "c"]
        assert len(q) == 0

    run(scenario())


def test_a_key_added_while_processed_comes_back_after_done_not_before() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        assert await q.get() == "a"
        q.add("a")  # an event during the pass
        q.add("a")
        assert len(q) == 0  # no second worker may take it while the first has it
        assert q.is_pending("a")
        q.done("a")
        assert len(q) == 1
        assert await q.get() == "a"
        q.done("a")
        assert len(q) == 0 and not q.is_pending("a")

    run(scenario())


def test_a_waiting_worker_is_woken_by_an_add() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        worker = asyncio.create_task(q.get())
        await asyncio.sleep(0.01)
        assert not worker.done()
        q.add("a")
        assert await asyncio.wait_for(worker, 1) == "a"

    run(scenario())


def test_two_workers_never_get_the_same_key() -> None:
    async def scenario() -> None:
        q: WorkQueue[int] = WorkQueue()
        seen: list[int] = []
        busy: set[int] = set()

        async def worker() -> None:
            while True:
                try:
                    key = await q.get()
                except ShutDown:
                    return
                assert key not in busy
                busy.add(key)
                seen.append(key)
                await asyncio.sleep(0)
                q.add(key % 3)  # wake-ups of keys in progress, as watch events bring them
                busy.discard(key)
                q.done(key)
                if len(seen) > 50:
                    q.shut_down()

        for key in range(6):
            q.add(key)
        await asyncio.wait_for(asyncio.gather(worker(), worker(), worker()), 5)
        assert set(range(6)) <= set(seen)

    run(scenario())


def test_add_after_keeps_the_earliest_timer_and_a_get_drops_it() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add_after("a", 0.05)
        q.add_after("a", 10)  # later: the earlier one stands
        assert q.is_timed("a") and len(q) == 0
        assert await asyncio.wait_for(q.get(), 1) == "a"
        q.done("a")
        q.add_after("b", 10)
        q.add_after("b", 0.05)  # earlier: replaces it
        assert await asyncio.wait_for(q.get(), 1) == "b"
        q.done("b")
        # Woken before its timer: the pass it gets says when it wants the next one.
        q.add_after("c", 0.05)
        q.add("c")
        assert await q.get() == "c"
        assert not q.is_timed("c")
        q.done("c")
        await asyncio.sleep(0.1)
        assert len(q) == 0

    run(scenario())


def test_forget_drops_the_place_and_the_timer_of_a_key() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        q.add("b")
        q.add_after("c", 0.05)
        q.forget("a")
        q.forget("c")
        assert await q.get() == "b"
        await asyncio.sleep(0.1)
        assert len(q) == 0 and not q.is_pending("a") and not q.is_timed("c")
        # Forgotten while processed: not queued again when its pass ends.
        q.add("d")
        assert await q.get() == "d"
        q.add("d")
        q.forget("d")
        q.done("d")
        assert len(q) == 0

    run(scenario())


def test_shut_down_releases_waiting_workers_and_takes_no_more_keys() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        worker = asyncio.create_task(q.get())
        await asyncio.sleep(0.01)
        q.add_after("a", 10)
        q.shut_down()
        with pytest.raises(ShutDown):
            await asyncio.wait_for(worker, 1)
        q.add("b")
        assert len(q) == 0 and not q.is_timed("a")

    run(scenario())
