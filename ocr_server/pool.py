"""A pool of engine processes, each with one Tesseract model loaded once, handed out by priority."""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ocr_common.result import PackedPage

from .engine import PageTask, installed_languages, tessdata_dir
from .engine_process import EngineProcess

# Who gets a free engine first: synchronous requests, then the further pages of documents
# already being read (so a started job finishes before new ones start), then new jobs.
URGENT, PAGES, BACKGROUND = 0, 1, 2
PRIORITIES = (URGENT, PAGES, BACKGROUND)
# But synchronous reads that keep every engine busy do not starve the queue: once engines have
# gone only to them for this long, the next free engine goes to a further page or a job of the
# queue (the queue's turn), and the claim loop claims a job for it. Four clients looping
# synchronous reads on two engines kept a one-line job queued for as long as they ran (84 s).
QUEUE_TURN_S = 2.0


class Engine(Protocol):
    """An engine slot (a fake in unit tests): a page read, stopped once ``abandoned`` is set."""

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage: ...


class EnginePool:
    """Hands engines to async callers, by priority; each call runs on a thread of its own
    (the pipe I/O blocks), one per engine."""

    def __init__(self, engines: Sequence[Engine], languages: tuple[str, ...] = ("eng",)):
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines = list(engines)
        # What the engines' models read: what a request may ask for.
        self.languages = languages
        self._free: collections.deque[Engine] = collections.deque(engines)
        # One wait list per priority (URGENT, PAGES, BACKGROUND), served in that order.
        self._waiters: list[collections.deque[asyncio.Future[Engine]]] = [
            collections.deque() for _ in PRIORITIES
        ]
        self._executor = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix="engine")
        self.queue_turn_s = QUEUE_TURN_S
        # Since when (monotonic) engines have gone only to synchronous reads (None: the last
        # went to the queue's work, or the queue was found empty since).
        self._urgent_only_since: float | None = None

    @classmethod
    def start(cls, size: int, *, data_dir: str | None = None, **limits: Any) -> EnginePool:
        """``size`` engine processes reading the models in ``data_dir``, started with ``limits``."""
        os.environ["OMP_THREAD_LIMIT"] = "1"
        data_dir = data_dir or tessdata_dir()
        engines: list[EngineProcess] = []
        try:
            for index in range(size):
                engines.append(EngineProcess(index=index, data_dir=data_dir, **limits))
        except Exception:
            for engine in engines:
                engine.kill()
            raise
        return cls(engines, installed_languages(data_dir))

    @property
    def size(self) -> int:
        return len(self.engines)

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    @property
    def idle(self) -> int:
        """Engines a queued job would get now (``acquire_nowait``): free, and nobody waits."""
        return 0 if any(self._waiters) else len(self._free)

    @property
    def contended(self) -> bool:
        """Whether a synchronous read or a further page of a document being read waits for an
        engine: the next free one goes to it, not to a new job (but see ``queue_turn_due``)."""
        return bool(self._waiters[URGENT] or self._waiters[PAGES])

    @property
    def queue_turn_due(self) -> bool:
        """Whether engines have gone only to synchronous reads for ``queue_turn_s``, and the
        queue was not found empty since: the next free engine goes to the queue's work."""
        since = self._urgent_only_since
        return since is not None and time.monotonic() - since >= self.queue_turn_s

    def queue_found_empty(self) -> None:
        """The claim loop found no job to take: no turn is owed to the queue until engines
        have gone only to synchronous reads for ``queue_turn_s`` from now."""
        self._urgent_only_since = None

    @property
    def waiting_pages(self) -> bool:
        """Whether further pages of a document being read wait for an engine."""
        return bool(self._waiters[PAGES])

    def waiting(self, urgent: bool) -> int:
        return len(self._waiters[URGENT if urgent else BACKGROUND])

    async def acquire(self, urgent: bool = False, *, priority: int | None = None) -> Engine:
        level = priority if priority is not None else URGENT if urgent else BACKGROUND
        if self._free and not any(self._waiters[p] for p in range(level + 1)):
            return self._handed(self._free.popleft(), level)
        future: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        self._waiters[level].append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            elif future in self._waiters[level]:  # release may have dropped it already
                self._waiters[level].remove(future)
            raise

    def acquire_nowait(self) -> Engine | None:
        """A free engine for a queued job, or None: none is free, or another caller waits."""
        if self._free and not any(self._waiters):
            return self._handed(self._free.popleft(), BACKGROUND)
        return None

    def release(self, engine: Engine) -> None:
        # Synchronous reads first, but the queue's turn before them once it is due.
        order = (PAGES, BACKGROUND, URGENT) if self.queue_turn_due else PRIORITIES
        for level in order:
            waiters = self._waiters[level]
            while waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_result(self._handed(engine, level))
                    return
        self._free.append(engine)

    def _handed(self, engine: Engine, level: int) -> Engine:
        if level != URGENT:
            self._urgent_only_since = None
        elif self._urgent_only_since is None:
            self._urgent_only_since = time.monotonic()
        return engine

    def try_acquire_urgent(self, max_waiting: int) -> bool:
        """Whether an urgent caller may queue: False when the pool is saturated."""
        return bool(self._free) or len(self._waiters[URGENT]) < max_waiting

    async def recognize_pages(
        self,
        task: PageTask,
        pages: tuple[int, ...],
        *,
        urgent: bool,
        engine: Engine | None = None,
        on_page: Callable[[PackedPage], Awaitable[None]] | None = None,
    ) -> list[PackedPage]:
        """Read ``pages`` in parallel, one engine each (``engine``: one the caller holds), in
        order; the first failing page fails the document; a cancelled caller stops them all."""
        loop = asyncio.get_running_loop()
        priority = URGENT if urgent else PAGES
        abandoned = threading.Event()

        async def one(page: int, held: Engine | None) -> PackedPage:
            current = held if held is not None else await self.acquire(priority=priority)
            future = loop.run_in_executor(
                self._executor,
                current.recognize_page,
                PageTask(task.document, page, task.options, task.default_dpi),
                abandoned,
            )
            # The engine goes back only when its page is really done, even if we are
            # cancelled meanwhile: its pipe is busy until then. The page's error is taken here
            # too: no one awaits the page of a caller that has gone (asyncio would log it as
            # an ERROR, "exception was never retrieved", on each hang-up).
            future.add_done_callback(functools.partial(self._page_done, current))
            result = await asyncio.shield(future)
            if on_page is not None:
                await on_page(result)
            return result

        tasks = [
            asyncio.create_task(one(page, engine if index == 0 else None))
            for index, page in enumerate(pages)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                abandoned.set()
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _page_done(self, engine: Engine, page: asyncio.Future[PackedPage]) -> None:
        self.release(engine)
        if not page.cancelled():
            page.exception()  # taken, whoever awaits it (its caller may have gone)

    def stop_replacing(self) -> None:
        """The stop's grace is over: the engines of pages abandoned now are killed, not replaced
        (starting one takes seconds, which the stop would wait for)."""
        for engine in self.engines:
            if isinstance(engine, EngineProcess):
                engine.stop_replacing()

    def close(self, wait_s: float = 5.0) -> None:
        """Stop every engine; one still reading a page is killed after ``wait_s`` (in all)."""
        processes = [engine for engine in self.engines if isinstance(engine, EngineProcess)]
        for process in processes:
            process.request_stop()
        deadline = time.monotonic() + wait_s
        for process in processes:
            process.stop(max(0.0, deadline - time.monotonic()))
        self._executor.shutdown(wait=False, cancel_futures=True)
