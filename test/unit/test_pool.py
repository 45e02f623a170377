"""The engine pool hands free engines to synchronous callers before queued jobs."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest

from ocr_common.errors import EngineError
from ocr_common.options import OcrOptions
from ocr_common.result import PackedPage, document_text
from ocr_server.pool import BACKGROUND, PAGES, URGENT, EnginePool, PageTask
from ocr_testkit.pages import packed_reading
from ocr_testkit.waits import wait_until_async


class FakeEngine:
    def __init__(self, name: str):
        self.name = name

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        return packed_reading(task.page, f"{self.name}:{task.document.decode()}\n")


def test_urgent_waiters_are_served_first() -> None:
    async def scenario() -> list[str]:
        pool = EnginePool([FakeEngine("a")])
        held = await pool.acquire(urgent=False)
        order: list[str] = []

        async def wait(label: str, urgent: bool) -> None:
            engine = await pool.acquire(urgent=urgent)
            order.append(label)
            pool.release(engine)

        background = asyncio.create_task(wait("job", urgent=False))
        await asyncio.sleep(0)
        sync = asyncio.create_task(wait("sync", urgent=True))
        await asyncio.sleep(0)
        pool.release(held)
        await asyncio.gather(background, sync)
        pool.close()
        return order

    assert asyncio.run(scenario()) == ["sync", "job"]


@pytest.mark.parametrize("waiting", [PAGES, BACKGROUND])
def test_once_engines_have_gone_only_to_synchronous_reads_for_a_while_the_queue_gets_one(
    waiting: int,
) -> None:
    # Synchronous reads first, but not for ever: a further page or a job held ahead gets the
    # next engine once every engine has gone to synchronous reads for queue_turn_s.
    async def scenario() -> list[str]:
        pool = EnginePool([FakeEngine("a")])
        pool.queue_turn_s = 0.3
        order: list[str] = []

        async def wait(label: str, priority: int, hold_s: float = 0.0) -> None:
            engine = await pool.acquire(priority=priority)
            order.append(label)
            await asyncio.sleep(hold_s)
            pool.release(engine)

        held = await pool.acquire(urgent=True)  # engines go only to synchronous reads from now
        queued = asyncio.create_task(wait("queue", waiting))
        syncs = [
            asyncio.create_task(wait(f"sync{n}", URGENT, 0.5 if n == 0 else 0)) for n in range(2)
        ]
        await asyncio.sleep(0)
        assert not pool.queue_turn_due
        pool.release(held)  # within the turn's time: a synchronous read still comes first
        await asyncio.sleep(0.4)  # sync0 has it, and holds it past queue_turn_s
        assert pool.queue_turn_due
        await asyncio.gather(queued, *syncs)
        assert not pool.queue_turn_due  # the queue had its turn
        pool.close()
        return order

    assert asyncio.run(scenario()) == ["sync0", "queue", "sync1"]


def test_a_queue_found_empty_is_owed_no_turn() -> None:
    async def scenario() -> None:
        pool = EnginePool([FakeEngine("a")])
        pool.queue_turn_s = 0.1
        pool.release(await pool.acquire(urgent=True))
        await asyncio.sleep(0.15)
        assert pool.queue_turn_due
        pool.queue_found_empty()
        assert not pool.queue_turn_due
        pool.close()

    asyncio.run(scenario())


def test_recognize_pages_runs_on_an_engine_and_gives_it_back() -> None:
    async def scenario() -> tuple[list[str], int]:
        pool = EnginePool([FakeEngine("a"), FakeEngine("b")])
        tasks = [PageTask(str(i).encode(), 0, OcrOptions(), 300) for i in range(6)]
        results = await asyncio.gather(
            *(pool.recognize_pages(task, (1,), urgent=True) for task in tasks)
        )
        busy = pool.busy
        pool.close()
        return [document_text(pages) for pages in results], busy

    texts, busy = asyncio.run(scenario())
    assert [t.split(":")[1] for t in texts] == [f"{i}\n" for i in range(6)]
    assert busy == 0


def test_saturation_is_reported() -> None:
    async def scenario() -> tuple[bool, bool]:
        pool = EnginePool([FakeEngine("a")])
        held = await pool.acquire(urgent=True)
        waiter = asyncio.create_task(pool.acquire(urgent=True))
        await asyncio.sleep(0)
        full = pool.try_acquire_urgent(max_waiting=1)
        room = pool.try_acquire_urgent(max_waiting=2)
        pool.release(held)
        pool.release(await waiter)
        pool.close()
        return full, room

    assert asyncio.run(scenario()) == (False, True)


def test_a_cancelled_waiter_does_not_swallow_an_engine() -> None:
    async def scenario() -> int:
        pool = EnginePool([FakeEngine("a")])
        held = await pool.acquire(urgent=False)
        waiter = asyncio.create_task(pool.acquire(urgent=False))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        pool.release(held)
        free = pool.size - pool.busy
        pool.close()
        return free

    assert asyncio.run(scenario()) == 1


class PageEngine:
    """Takes ``delay_s`` per page and counts how many pages run at the same time."""

    running = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, delay_s: float = 0.2, fail_on: int | None = None):
        self.delay_s = delay_s
        self.fail_on = fail_on

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        with PageEngine.lock:
            PageEngine.running += 1
            PageEngine.most = max(PageEngine.most, PageEngine.running)
        try:
            time.sleep(self.delay_s)
            if task.page == self.fail_on:
                raise EngineError(f"page {task.page} is unreadable")
            return packed_reading(task.page, f"page {task.page}\n")
        finally:
            with PageEngine.lock:
                PageEngine.running -= 1


def test_the_pages_of_one_document_run_side_by_side_on_every_engine() -> None:
    PageEngine.most = 0
    pool = EnginePool([PageEngine(), PageEngine(), PageEngine()])
    task = PageTask(b"doc", 0, OcrOptions(), 300)
    done: list[int] = []

    async def on_page(page: PackedPage) -> None:
        done.append(page["page"])

    async def scenario() -> tuple[float, list[dict[str, object]]]:
        started = time.perf_counter()
        pages = await pool.recognize_pages(task, tuple(range(1, 7)), urgent=False, on_page=on_page)
        return time.perf_counter() - started, pages

    seconds, pages = asyncio.run(scenario())
    assert [p["page"] for p in pages] == [1, 2, 3, 4, 5, 6]
    assert sorted(done) == [1, 2, 3, 4, 5, 6]
    assert PageEngine.most == 3  # six pages on three engines: two rounds, not six
    assert seconds < 0.2 * 6 * 0.75
    assert pool.busy == 0


def test_a_failing_page_fails_the_document_and_gives_every_engine_back() -> None:
    pool = EnginePool([PageEngine(0.05, fail_on=2), PageEngine(0.05, fail_on=2)])
    task = PageTask(b"doc", 0, OcrOptions(), 300)

    async def scenario() -> int:
        with pytest.raises(EngineError, match="page 2"):
            await pool.recognize_pages(task, (1, 2, 3, 4, 5), urgent=True)
        # An engine goes back when the page it holds is really done, not when we stop waiting.
        await wait_until_async(lambda: pool.busy == 0, 5, "every engine back")
        return pool.busy

    assert asyncio.run(scenario()) == 0


class WaitingEngine:
    """Reads a page until it is abandoned (or ``read_s`` has passed); says which it was."""

    def __init__(self, read_s: float = 5.0):
        self.read_s = read_s
        self.abandoned: list[int] = []

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        assert abandoned is not None
        if abandoned.wait(self.read_s):
            self.abandoned.append(task.page)
            raise EngineError(f"page {task.page} was abandoned", code="abandoned")
        return packed_reading(task.page, "")


def test_a_read_whose_caller_is_cancelled_stops_its_pages_and_frees_the_engines() -> None:
    engines = [WaitingEngine(), WaitingEngine()]
    pool = EnginePool(engines)
    task = PageTask(b"doc", 0, OcrOptions(), 300)

    unhandled: list[dict[str, Any]] = []

    async def scenario() -> float:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, c: unhandled.append(c))
        read = asyncio.create_task(pool.recognize_pages(task, (1, 2, 3, 4, 5), urgent=True))
        await wait_until_async(lambda: pool.busy == 2, 5, "both engines reading")
        started = time.perf_counter()
        read.cancel()  # its caller hung up, or its time ran out
        with pytest.raises(asyncio.CancelledError):
            await read
        # The engines come back now, not when their pages would have ended (5 s); the three
        # pages still waiting for one are never started, and no one else waits behind them.
        await wait_until_async(lambda: pool.busy == 0, 2, "every engine back")
        took = time.perf_counter() - started
        gc.collect()  # a future whose error no one took says so as it goes
        return took

    assert asyncio.run(scenario()) < 1.0
    # The abandoned pages' errors were taken: a hang-up is not an ERROR in the server's log.
    assert unhandled == []
    assert sorted(page for engine in engines for page in engine.abandoned) == [1, 2]
    assert pool.waiting(urgent=True) == 0
    pool.close()


def test_a_failing_page_does_not_abandon_the_pages_beside_it() -> None:
    # Only a caller that goes away stops the pages being read: a page that fails leaves the
    # others to end (their engines are not restarted for it).
    reader = WaitingEngine(read_s=0.3)
    pool = EnginePool([PageEngine(0.05, fail_on=1), reader])
    task = PageTask(b"doc", 0, OcrOptions(), 300)

    async def scenario() -> None:
        with pytest.raises(EngineError, match="page 1"):
            await pool.recognize_pages(task, (1, 2), urgent=True)
        await wait_until_async(lambda: pool.busy == 0, 5, "every engine back")

    asyncio.run(scenario())
    assert reader.abandoned == []
    pool.close()


def test_a_wait_cancelled_just_before_an_engine_comes_ends_cancelled_and_loses_no_engine() -> None:
    # release() skips the cancelled waiter before the waiting coroutine resumes.
    pool = EnginePool([FakeEngine("a")])

    async def scenario() -> object:
        held = pool.acquire_nowait()
        assert held is not None
        waiting = asyncio.ensure_future(pool.acquire(urgent=False))
        await asyncio.sleep(0)
        waiting.cancel()
        pool.release(held)
        [outcome] = await asyncio.gather(waiting, return_exceptions=True)
        return outcome

    assert isinstance(asyncio.run(scenario()), asyncio.CancelledError)
    assert pool.busy == 0
