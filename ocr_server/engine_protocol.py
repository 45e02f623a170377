"""An engine process's body (one Tesseract model, a memory ceiling) and what it says to its
parent over the pipe: ``Ready``, then per page ``Rendered`` and ``PageRead`` or ``Failed``."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from multiprocessing.connection import Connection

from ocr_common.errors import DocumentTooComplex, EngineError, OcrError
from ocr_common.result import PackedPage
from ocr_common.settings import MIB

# After a page that left the engine this much above its start size, return the heap to the OS.
TRIM_ABOVE_BASELINE_BYTES = 32 * MIB


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space: past it, allocations fail (and pdfium or Tesseract
    abort), so no document can take the host's memory."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))


@dataclass(frozen=True)
class Ready:
    """The model is loaded: pages may come."""


@dataclass(frozen=True)
class Rendered:
    """The page is rendered and Tesseract starts on it: the recognition deadline starts."""


@dataclass(frozen=True)
class PageRead:
    """The page's result, packed as the engine's walk built it (tuples pickle several times
    faster than the models), and the process's resident memory after it."""

    packed: PackedPage
    rss_bytes: int


@dataclass(frozen=True)
class Failed:
    """The page (or the start) failed with ``error``, which crosses the pipe whole."""

    error: OcrError
    rss_bytes: int = 0


def engine_main(
    conn: Connection,
    page_timeout_s: float,
    max_pixels: int,
    max_memory_bytes: int = 0,
    data_dir: str | None = None,
) -> None:
    """Body of an engine process: load the model once, then read pages until told to stop."""
    # First of all, before libtesseract, pdfium or any page is loaded.
    if max_memory_bytes:
        limit_memory(max_memory_bytes)
    from ocr_common.memory import release_memory

    from .engine import TesseractEngine, resident_bytes

    try:
        engine = TesseractEngine(
            page_timeout_s=page_timeout_s, max_pixels=max_pixels, data_dir=data_dir
        )
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which refuses to start
        message = f"Tesseract failed to start: {exc!r}"
        conn.send(Failed(EngineError(message, code="engine_unavailable")))
        return

    baseline = resident_bytes()
    try:
        conn.send(Ready())
    except OSError:  # the parent stopped while we were loading the model
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if request is None:
            break
        page: PackedPage | None = None
        try:
            page = engine.read_page(request, on_rendered=lambda: conn.send(Rendered()))
        except OcrError as exc:
            error: OcrError = exc
        except MemoryError:
            # Python's own allocations hit the ceiling (C code aborts instead, see engine_process).
            error = too_complex(f"page {request.page}", max_memory_bytes)
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes a job error
            error = EngineError(f"Tesseract failed: {exc}")
        if resident_bytes() > baseline + TRIM_ABOVE_BASELINE_BYTES:
            release_memory()
        rss = resident_bytes()
        conn.send(PageRead(page, rss) if page is not None else Failed(error, rss))
    engine.close()


def too_complex(what: str, max_memory_bytes: int) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"reading {what} needed more memory than an engine may use ({max_memory_bytes // MIB} "
        "MB, OCR_ENGINE_MAX_MEMORY_MB): the document is too complex to read; the engine was "
        "restarted"
    )
