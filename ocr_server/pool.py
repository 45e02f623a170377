"""A pool of engine processes, each with one Tesseract model loaded once.

The parent talks to each process over a pipe. Each process runs under a memory ceiling the
kernel enforces (``RLIMIT_AS``), and the parent gives it a deadline to render a page, then one
to recognise it. A process that dies, overruns a deadline or runs out of memory is killed and
replaced; the page it held gets ``EngineCrashed``, ``EngineTimeout`` or ``DocumentTooComplex``
and the pool keeps serving. Free engines go first to synchronous requests, then to queued jobs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from ocr_common.errors import (
    DocumentTooComplex,
    EngineCrashed,
    EngineError,
    EngineTimeout,
    OcrError,
    Unavailable,
)

from . import metrics as server_metrics
from .engine import PageTask

log = logging.getLogger(__name__)

# The parent waits this much longer than Tesseract's own timeout before it kills the process.
HARD_DEADLINE_GRACE_S = 10.0
# How long an engine may take to render (or decode) a page when no one says otherwise.
DEFAULT_RENDER_TIMEOUT_S = 30.0
# How often the parent looks at a busy engine's address space (to tell why one died).
SAMPLE_MEMORY_S = 0.05
# An engine killed by a signal after its address space reached this share of its ceiling died
# of the ceiling: pdfium and Tesseract abort when an allocation fails. The margin covers the
# allocation that failed and the growth since the last sample.
NEAR_CEILING = 0.75
ENGINE_START_TIMEOUT_S = 60.0
# After a page that left the engine this much above its start size, return the heap to the OS.
TRIM_ABOVE_BASELINE_BYTES = 32 * 1024 * 1024
MIB = 1024 * 1024
# Who gets a free engine first: synchronous requests, then the further pages of documents
# already being read (so a started job finishes before new ones start), then new jobs.
URGENT, PAGES, BACKGROUND = 0, 1, 2
PRIORITIES = (URGENT, PAGES, BACKGROUND)


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space: past it, allocations fail (and pdfium or Tesseract
    abort), so no document can take the host's memory."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))


# -- what an engine process says to its parent over the pipe --------------------------------


@dataclass(frozen=True)
class Ready:
    """The model is loaded: the process's pid, and its resident memory at rest."""

    pid: int
    rss_bytes: int


@dataclass(frozen=True)
class Rendered:
    """The page is rendered and Tesseract starts on it: the recognition deadline starts."""


@dataclass(frozen=True)
class PageRead:
    """The page's result, and the process's resident memory after it."""

    page: dict[str, Any]
    rss_bytes: int


@dataclass(frozen=True)
class Failed:
    """The page (or the start) failed with ``error``, which crosses the pipe whole."""

    error: OcrError
    rss_bytes: int = 0


def engine_main(
    conn: Connection, page_timeout_s: float, max_pixels: int, max_memory_bytes: int = 0
) -> None:
    """Body of an engine process: load the model once, then read pages until told to stop.

    Before each page is recognised it says ``Rendered()``, so that the parent can hold
    rendering and recognition to deadlines of their own. Each reply (``PageRead`` or
    ``Failed``) carries the process's resident memory, so the parent can recycle an engine
    that stays too large.
    """
    # First of all, before libtesseract, pdfium or any page is loaded.
    if max_memory_bytes:
        limit_memory(max_memory_bytes)
    from .engine import TesseractEngine, release_memory, resident_bytes

    try:
        engine = TesseractEngine(page_timeout_s=page_timeout_s, max_pixels=max_pixels)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which refuses to start
        message = f"Tesseract failed to start: {exc!r}"
        conn.send(Failed(EngineError(message, code="engine_unavailable")))
        return

    def rendered() -> None:
        conn.send(Rendered())

    baseline = resident_bytes()
    try:
        conn.send(Ready(os.getpid(), baseline))
    except OSError:  # the parent stopped while we were loading the model
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if request is None:
            break
        page: dict[str, Any] | None = None
        try:
            page = engine.recognize_page(request, on_rendered=rendered)
        except OcrError as exc:
            error: OcrError = exc
        except MemoryError:
            # Python's own allocations hit the ceiling (C code aborts instead, see _exchange).
            error = too_complex(f"page {request.page}", max_memory_bytes)
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes a job error
            error = EngineError(f"Tesseract failed: {exc}")
        if resident_bytes() > baseline + TRIM_ABOVE_BASELINE_BYTES:
            release_memory()
        rss = resident_bytes()
        conn.send(PageRead(page, rss) if page is not None else Failed(error, rss))
    engine.close()


class Engine(Protocol):
    """What the pool needs of an engine slot (a fake in unit tests)."""

    def recognize_page(self, task: PageTask) -> dict[str, Any]: ...


class EngineProcess:
    """One engine process and the parent's end of its pipe; used by one thread at a time."""

    def __init__(
        self,
        ctx: Any,
        page_timeout_s: float,
        max_pixels: int,
        index: int,
        max_rss_bytes: int = 0,
        *,
        render_timeout_s: float = DEFAULT_RENDER_TIMEOUT_S,
        max_memory_bytes: int = 0,
    ):
        self._ctx = ctx
        self._page_timeout_s = page_timeout_s
        self._render_timeout_s = render_timeout_s
        self._max_pixels = max_pixels
        # An engine still above this after a page (0: no limit) is replaced by a fresh one.
        self._max_rss_bytes = max_rss_bytes
        # The kernel's ceiling on the process's address space (0: none).
        self._max_memory_bytes = max_memory_bytes
        # The largest address space of the process seen during the current page.
        self._peak_vm_bytes = 0
        self.index = index
        self.restarts = 0
        self._stopping = False
        self._lock = threading.Lock()
        self.last_rss_bytes = 0
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=engine_main,
            args=(child, self._page_timeout_s, self._max_pixels, self._max_memory_bytes),
            name=f"ocr-engine-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()
        if not parent.poll(ENGINE_START_TIMEOUT_S):
            process.kill()
            raise EngineError("Tesseract did not start within a minute", code="engine_unavailable")
        try:
            message = parent.recv()
        except EOFError:
            process.join(5)
            hint = (
                f"; is OCR_ENGINE_MAX_MEMORY_MB={self._max_memory_bytes // MIB} too small?"
                if self._max_memory_bytes
                else ""
            )
            raise EngineError(
                f"the engine process died while starting (exit code {process.exitcode}){hint}",
                code="engine_unavailable",
            ) from None
        if isinstance(message, Failed):
            process.join(5)
            raise message.error
        self._process, self._conn = process, parent

    def _replace(self, cause: str) -> None:
        self.kill()
        if self._stopping:
            # Shutting down: a page cut off by the stop must not start a new engine.
            return
        self.restarts += 1
        server_metrics.RESTARTS.labels(cause).inc()
        log.warning("engine %d replaced (restart %d)", self.index, self.restarts)
        try:
            self._start()
        except OcrError as exc:
            # Left without a process: the next page tries to start one again.
            log.error("engine %d could not be restarted: %s", self.index, exc.message)

    def recognize_page(self, task: PageTask) -> dict[str, Any]:
        return self._call(task)

    def _call(self, request: PageTask) -> dict[str, Any]:
        """One page on this engine, counted by outcome."""
        try:
            result = self._exchange(request)
        except OcrError as exc:
            server_metrics.PAGES.labels(exc.code).inc()
            raise
        server_metrics.PAGES.labels("ok").inc()
        return result

    def _exchange(self, request: PageTask) -> dict[str, Any]:
        if self._conn is None and not self._stopping:
            try:
                self._start()
            except OcrError as exc:
                raise EngineCrashed(
                    f"the engine process could not be started again: {exc.message}"
                ) from None
        conn = self._conn
        if conn is None:
            raise EngineCrashed("the OCR server stopped before reading this page")
        what = f"page {request.page}"
        process = self._process
        self._peak_vm_bytes = 0
        try:
            conn.send(request)
            reply = self._receive(conn, what)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.kill()
            code = process.exitcode if process else None
            self._replace("memory_ceiling" if self._died_of_ceiling(code) else "crash")
            if self._stopping:
                raise EngineCrashed("the OCR server stopped while reading this page") from None
            if self._died_of_ceiling(code):
                raise too_complex(what, self._max_memory_bytes) from None
            raise EngineCrashed(
                f"the Tesseract engine process crashed while reading {what} "
                f"(exit code {code}); it was restarted"
            ) from None
        self.last_rss_bytes = reply.rss_bytes
        if isinstance(reply, Failed) and isinstance(reply.error, DocumentTooComplex):
            # Out of memory in Python code: start afresh rather than from a broken heap.
            self._replace("memory_ceiling")
        elif self._max_rss_bytes and self.last_rss_bytes > self._max_rss_bytes:
            log.warning(
                "engine %d holds %d MB after a page; replacing it",
                self.index,
                self.last_rss_bytes // MIB,
            )
            self._replace("memory_held")
        if isinstance(reply, Failed):
            raise reply.error
        return reply.page

    def _receive(self, conn: Connection, what: str) -> PageRead | Failed:
        """The engine's reply, within the render deadline and then the recognition deadline;
        a late engine is killed and replaced."""
        rendering = True
        deadline = time.monotonic() + self._render_timeout_s
        while True:
            if not self._wait(conn, deadline):
                self._replace("render_timeout" if rendering else "page_timeout")
                if rendering:
                    raise EngineTimeout(
                        f"rendering {what} took longer than {self._render_timeout_s:g} s "
                        "(OCR_RENDER_TIMEOUT_S); the engine was restarted"
                    )
                raise EngineTimeout(
                    f"the engine did not answer within {self._page_timeout_s:g} s "
                    "(OCR_PAGE_TIMEOUT_S) and was restarted"
                )
            message: PageRead | Failed | Rendered = conn.recv()
            if not isinstance(message, Rendered):
                return message
            rendering = False
            deadline = time.monotonic() + self._page_timeout_s + HARD_DEADLINE_GRACE_S

    def _wait(self, conn: Connection, deadline: float) -> bool:
        """Whether the engine said something before ``deadline``; meanwhile its address space
        is sampled, to tell afterwards whether a death was the memory ceiling's doing."""
        pid = self.pid
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if conn.poll(min(left, SAMPLE_MEMORY_S) if self._max_memory_bytes else left):
                return True
            if pid is not None:
                self._peak_vm_bytes = max(self._peak_vm_bytes, peak_address_space(pid))

    def _died_of_ceiling(self, exit_code: int | None) -> bool:
        # Killed by a signal (pdfium and Tesseract abort when an allocation fails) once its
        # address space had come near the ceiling.
        return bool(
            self._max_memory_bytes
            and exit_code is not None
            and exit_code < 0
            and self._peak_vm_bytes >= self._max_memory_bytes * NEAR_CEILING
        )

    def kill(self) -> None:
        # The stopping thread and the thread waiting on a page may both get here: only one
        # of them takes the process and the pipe to close.
        with self._lock:
            process, conn = self._process, self._conn
            self._process, self._conn = None, None
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def request_stop(self) -> None:
        """Ask the process to exit once it has finished its current page (for good: it is not
        replaced after this)."""
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)

    def stop(self, wait_s: float = 5.0) -> None:
        """Ask the process to exit; kill it if it has not within ``wait_s``."""
        self.request_stop()
        if self._process is not None:
            self._process.join(wait_s)
        self.kill()


def too_complex(what: str, max_memory_bytes: int) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"reading {what} needed more memory than an engine may use ({max_memory_bytes // MIB} "
        "MB, OCR_ENGINE_MAX_MEMORY_MB): the document is too complex to read; the engine was "
        "restarted"
    )


def peak_address_space(pid: int) -> int:
    """The largest address space (VmPeak) a process has had, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class EnginePool:
    """Hands engines to async callers: synchronous requests first, then queued jobs.

    Each call runs on a thread of its own (the pipe I/O blocks), one per engine.
    """

    def __init__(self, engines: list[Engine]):
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines = engines
        self._free: collections.deque[Engine] = collections.deque(engines)
        # One wait list per priority (URGENT, PAGES, BACKGROUND), served in that order.
        self._waiters: list[collections.deque[asyncio.Future[Engine]]] = [
            collections.deque() for _ in PRIORITIES
        ]
        self._executor = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix="engine")

    @classmethod
    def start(
        cls,
        size: int,
        page_timeout_s: float,
        max_pixels: int,
        max_rss_bytes: int = 0,
        *,
        render_timeout_s: float = DEFAULT_RENDER_TIMEOUT_S,
        max_memory_bytes: int = 0,
    ) -> EnginePool:
        # spawn, not fork: the parent has threads (aiohttp, SQLAlchemy pools) a fork would copy.
        ctx = multiprocessing.get_context("spawn")
        os.environ["OMP_THREAD_LIMIT"] = "1"
        engines: list[Engine] = []
        try:
            for index in range(size):
                engines.append(
                    EngineProcess(
                        ctx,
                        page_timeout_s,
                        max_pixels,
                        index,
                        max_rss_bytes,
                        render_timeout_s=render_timeout_s,
                        max_memory_bytes=max_memory_bytes,
                    )
                )
        except Exception:
            for engine in engines:
                assert isinstance(engine, EngineProcess)
                engine.kill()
            raise
        return cls(engines)

    @property
    def size(self) -> int:
        return len(self.engines)

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    def waiting(self, urgent: bool) -> int:
        return len(self._waiters[URGENT if urgent else BACKGROUND])

    async def acquire(self, urgent: bool = False, *, priority: int | None = None) -> Engine:
        level = priority if priority is not None else URGENT if urgent else BACKGROUND
        if self._free and not any(self._waiters[p] for p in range(level + 1)):
            return self._free.popleft()
        future: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        self._waiters[level].append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            else:
                self._waiters[level].remove(future)
            raise

    def acquire_nowait(self) -> Engine | None:
        """A free engine for a queued job, or None: none is free, or another caller waits."""
        if self._free and not any(self._waiters):
            return self._free.popleft()
        return None

    def release(self, engine: Engine) -> None:
        for waiters in self._waiters:
            while waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_result(engine)
                    return
        self._free.append(engine)

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
        on_page: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> list[dict[str, Any]]:
        """Read ``pages`` of a document in parallel, one engine per page, in page order.

        ``engine``, when given, is one the caller already holds: it reads the first page and
        is released here. ``on_page`` is awaited as each page is done (progress). The first
        failing page fails the whole document; pages not started yet are not started.
        """
        loop = asyncio.get_running_loop()
        priority = URGENT if urgent else PAGES

        async def one(page: int, held: Engine | None) -> dict[str, Any]:
            current = held if held is not None else await self.acquire(priority=priority)
            future = loop.run_in_executor(
                self._executor,
                current.recognize_page,
                PageTask(task.document, page, task.options, task.default_dpi),
            )
            # The engine goes back only when its page is really done, even if we are
            # cancelled meanwhile: its pipe is busy until then.
            future.add_done_callback(lambda _done: self.release(current))
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
        except BaseException:
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def close(self, wait_s: float = 5.0) -> None:
        """Stop every engine: an idle one exits at once, one still reading a page is killed
        when ``wait_s`` (one deadline for all of them) has passed."""
        processes = [engine for engine in self.engines if isinstance(engine, EngineProcess)]
        for process in processes:
            process.request_stop()
        deadline = time.monotonic() + wait_s
        for process in processes:
            process.stop(max(0.0, deadline - time.monotonic()))
        self._executor.shutdown(wait=False, cancel_futures=True)


def saturated_error(retry_after_s: int) -> Unavailable:
    return Unavailable(
        "every OCR engine is busy and the wait list is full; retry shortly",
        code="ocr_busy",
        retry_after_s=retry_after_s,
    )
