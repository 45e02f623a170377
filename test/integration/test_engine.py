"""Real Tesseract in real engine processes: text, crashes, timeouts."""

from __future__ import annotations

import asyncio
import io
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ocr_common.errors import (
    DocumentTooComplex,
    EngineCrashed,
    EngineError,
    EngineTimeout,
    PayloadTooLarge,
)
from ocr_common.options import ORIGINAL_API_OPTIONS, OcrOptions, Preprocess
from ocr_common.result import document_text, unpack_page
from ocr_common.settings import MIB, Settings, SettingsError
from ocr_server.engine import (
    PageTask,
    TesseractEngine,
    _PageRead,
    installed_languages,
    models_folder,
    probe,
    tessdata_dir,
)
from ocr_server.engine_process import EngineProcess
from ocr_server.pool import EnginePool
from ocr_testkit.hostile_pdfs import nested_forms_pdf, slow_pages_pdf
from ocr_testkit.pages import HELLO, HELLO_PNG, render_lines
from ocr_testkit.scenarios import long_page


def read(engine: TesseractEngine | EngineProcess, data: bytes) -> str:
    """The text of an image's first page, read as the original API reads it."""
    return document_text([engine.recognize_page(PageTask(data, 1, ORIGINAL_API_OPTIONS, 300))])


def test_probe_finds_tesseract_and_the_english_model() -> None:
    info = probe()
    assert info.version.startswith("tesseract 5")
    assert "eng" in info.languages


def test_models_of_another_folder_are_read_beside_the_wheels(tmp_path: Path) -> None:
    # A model of its own name in OCR_TESSDATA_DIR (here English again, under another name).
    (tmp_path / "xeng.traineddata").symlink_to(Path(tessdata_dir()) / "eng.traineddata")
    (tmp_path / "notes.txt").write_text("not a model")
    with models_folder(tmp_path) as folder:
        assert folder != tessdata_dir()
        assert installed_languages(folder) == ("eng", "xeng")
        assert "osd" in probe(folder).languages
        engine = TesseractEngine(page_timeout_s=30, max_pixels=10**8, data_dir=folder)
        try:
            task = PageTask(HELLO_PNG, 1, OcrOptions(lang="eng+xeng"), 300)
            assert "quick brown fox" in engine.recognize_page(task).text
        finally:
            engine.close()
    assert not Path(folder).exists()
    with models_folder(None) as folder:
        assert folder == tessdata_dir()
    with pytest.raises(SettingsError, match="OCR_TESSDATA_DIR"), models_folder(tmp_path / "no"):
        pass


def test_engine_reads_a_rendered_page_as_tesseract_gives_it() -> None:
    engine = TesseractEngine(page_timeout_s=30, max_pixels=10**8)
    try:
        text = read(engine, HELLO_PNG)
    finally:
        engine.close()
    assert text.split() == " ".join(HELLO).split()
    assert text.endswith("\n") and "\x0c" not in text


def test_engine_refuses_a_bomb_before_decoding_it() -> None:
    engine = TesseractEngine(page_timeout_s=30, max_pixels=1000)
    try:
        with pytest.raises(PayloadTooLarge, match="OCR_MAX_PIXELS"):
            read(engine, HELLO_PNG)
    finally:
        engine.close()


# The memory ceiling an engine has unless OCR_ENGINE_MAX_MEMORY_MB says otherwise.
DEFAULT_CEILING = Settings.model_fields["engine_max_memory_mb"].default * MIB


@contextmanager
def spawned(page_timeout_s: float = 30, **limits: Any) -> Iterator[EngineProcess]:
    """An engine process with these limits (beside the page timeout), stopped at the end."""
    process = EngineProcess(page_timeout_s=page_timeout_s, max_pixels=10**8, index=0, **limits)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def engine_process() -> Iterator[EngineProcess]:
    with spawned(max_memory_bytes=DEFAULT_CEILING) as process:
        yield process


def test_a_crashed_engine_is_replaced_and_keeps_serving(engine_process: EngineProcess) -> None:
    pid = engine_process.pid
    assert pid is not None
    # Rendered before the timer starts: on a loaded machine rendering alone can take 0.3 s, and
    # the kill would then find the engine idle (a replacement, not a crash).
    page = long_page("A long page")
    killer = threading.Timer(0.3, os.kill, args=(pid, signal.SIGKILL))
    killer.start()
    # Killed far below its memory ceiling: a crash, not document_too_complex.
    with pytest.raises(EngineCrashed, match="crashed"):
        read(engine_process, page)
    killer.join()
    assert engine_process.restarts == 1
    assert engine_process.pid != pid
    assert "Hello" in read(engine_process, HELLO_PNG)


def test_an_engine_killed_while_idle_is_replaced_before_its_next_page(
    engine_process: EngineProcess,
) -> None:
    pid = engine_process.pid
    assert pid is not None
    exited = os.pidfd_open(pid)  # readable once the process has exited
    os.kill(pid, signal.SIGKILL)
    assert select.select([exited], [], [], 10)[0], f"engine {pid} alive 10 s after SIGKILL"
    os.close(exited)
    # The page goes to a fresh engine, not down with the dead one.
    assert "Hello" in read(engine_process, HELLO_PNG)
    assert engine_process.restarts == 1
    assert engine_process.pid not in (pid, None)


def test_tesseract_timeout_is_an_engine_timeout() -> None:
    with spawned(page_timeout_s=0.5) as process:
        started = time.monotonic()
        with pytest.raises(EngineTimeout, match="OCR_PAGE_TIMEOUT_S"):
            read(process, long_page("A long page"))
        assert time.monotonic() - started < 15
        # The same engine reads the next page.
        assert "Hello" in read(process, HELLO_PNG)


def test_a_page_tesseract_refuses_at_once_is_not_called_a_timeout() -> None:
    # Tesseract's Recognize says False both when the time is up and when it cannot lay out
    # the page at all (here: wider than its 32,767-pixel coordinates); only one is a timeout.
    # Uploads that wide are refused before they are stored (test_documents), so the pixels go
    # to Tesseract straight, past the page's own checks.
    engine = TesseractEngine(page_timeout_s=30, max_pixels=10**8)
    api = engine._api_for("eng")
    try:
        engine._set_pixels(api, Image.new("L", (40_000, 60), 255), None)
        with pytest.raises(EngineError) as info:
            engine._recognize(_PageRead(api, 1, None, time.monotonic() + 30), "page 1")
    finally:
        api.Clear()
        engine.close()
    assert not isinstance(info.value, EngineTimeout)
    assert info.value.code == "recognition_failed" and not info.value.retryable
    assert "32767 pixels a side" in info.value.message


def test_pool_of_real_engines_reads_pages_in_parallel() -> None:
    pool = EnginePool.start(2, page_timeout_s=30, max_pixels=10**8)
    pages = [render_lines([f"Page number {i}"]) for i in range(4)]

    async def read_all() -> list[str]:
        tasks = [PageTask(page, 0, ORIGINAL_API_OPTIONS, 300) for page in pages]
        read = await asyncio.gather(*(pool.recognize_pages(t, (1,), urgent=False) for t in tasks))
        return [document_text(result) for result in read]

    try:
        texts = asyncio.run(read_all())
    finally:
        pool.close()
    assert [text.split()[-1] for text in texts] == ["0", "1", "2", "3"]


def forty_megapixel_colour_page() -> bytes:
    image = Image.new("RGB", (7300, 5500), (255, 255, 255))
    page = Image.open(io.BytesIO(render_lines(HELLO, width=1400))).convert("RGB")
    for top in range(0, 5500 - page.height, page.height * 3):
        image.paste(page, (200, top))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def peak_and_current_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return (int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024)


def test_a_forty_megapixel_page_stays_under_400_mb_and_memory_returns(
    engine_process: EngineProcess,
) -> None:
    pid = engine_process.pid
    assert pid is not None
    assert "Hello" in read(engine_process, HELLO_PNG)
    _, baseline_mb = peak_and_current_mb(pid)
    text = read(engine_process, forty_megapixel_colour_page())
    assert text.count("Hello") >= 10
    peak_mb, after_mb = peak_and_current_mb(pid)
    assert engine_process.pid == pid  # not recycled: it stayed within bounds
    assert peak_mb < 400, f"peak {peak_mb:.0f} MB"
    assert after_mb < baseline_mb + 40, f"{after_mb:.0f} MB after, {baseline_mb:.0f} MB before"


def test_the_largest_pdf_page_the_default_limits_allow_is_read_under_the_default_ceiling(
    engine_process: EngineProcess,
) -> None:
    # A 9 x 21.4 inch colour page at 500 dpi: 4500 x 10700, just under OCR_MAX_PIXELS's 50 Mpx,
    # rendered, turned upright by OSD and read (measured: about 660 MB of address space).
    sheet = Image.new("RGB", (900, 2140), (250, 240, 200))
    sheet.paste(Image.open(io.BytesIO(render_lines(HELLO * 12))).convert("RGB"), (0, 200))
    pdf = io.BytesIO()
    sheet.save(pdf, "PDF", resolution=100)
    pid = engine_process.pid
    options = OcrOptions(dpi=500, preprocess=Preprocess.AUTO)
    page = unpack_page(engine_process.recognize_page(PageTask(pdf.getvalue(), 1, options, 300)))
    assert page.width == 4500 and page.width * page.height > 48_000_000
    assert page.text.count("Hello") == 12
    assert engine_process.pid == pid and engine_process.restarts == 0


def test_an_engine_over_its_memory_bound_is_replaced() -> None:
    # A bound below any real engine's size: every page ends with a fresh process.
    with spawned(max_rss_bytes=1024 * 1024) as process:
        first = process.pid
        assert "Hello" in read(process, HELLO_PNG)
        assert process.restarts == 1 and process.pid != first
        assert "Hello" in read(process, HELLO_PNG)


def bomb_task(levels: int = 8) -> PageTask:
    return PageTask(nested_forms_pdf(levels), 1, OcrOptions(), 300)


def test_a_pdf_bomb_hits_the_memory_ceiling_and_the_engine_is_replaced() -> None:
    ceiling = 768 * MIB
    with spawned(max_memory_bytes=ceiling) as process:
        first = process.pid
        assert first is not None
        # The kernel holds the engine to its ceiling, set before Tesseract was loaded.
        assert _address_space_limit(first) == ceiling
        # It fails for its memory, not by a deadline (without the ceiling: 160 GB, 30 minutes).
        with pytest.raises(DocumentTooComplex, match="OCR_ENGINE_MAX_MEMORY_MB") as info:
            process.recognize_page(bomb_task())
        # Not tried again: it would be over the ceiling on any engine.
        assert not info.value.retryable and "page 1" in info.value.message
        assert process.restarts == 1 and process.pid != first
        assert "Hello" in read(process, HELLO_PNG)


def test_a_page_that_renders_too_long_is_an_engine_timeout() -> None:
    with spawned(render_timeout_s=1.0) as process:
        first = process.pid
        # Six levels: 10**6 squares, about 15 s of pdfium and 1.6 GB, when left alone; the
        # render deadline (not the 30 s recognition one) stops it.
        with pytest.raises(EngineTimeout, match="rendering page 1 took longer than 1 s"):
            process.recognize_page(bomb_task(levels=6))
        assert process.restarts == 1 and process.pid != first
        # Rendering an ordinary page is well within the deadline; recognising has its own.
        page = unpack_page(process.recognize_page(PageTask(HELLO_PNG, 1, OcrOptions(), 300)))
        assert "Hello" in page.text


def test_a_page_no_one_waits_for_any_more_is_stopped_and_its_engine_replaced() -> None:
    with spawned() as process:
        first = process.pid
        abandoned = threading.Event()
        threading.Timer(1.0, abandoned.set).start()
        started = time.monotonic()
        with pytest.raises(EngineError) as info:
            # Half a minute of pdfium, left alone.
            process.recognize_page(PageTask(slow_pages_pdf(), 1, OcrOptions(), 300), abandoned)
        assert info.value.code == "abandoned"
        assert time.monotonic() - started < 10
        assert process.restarts == 1 and process.pid != first
        assert "Hello" in read(process, HELLO_PNG)


def test_once_the_server_stops_an_abandoned_page_ends_its_engine_for_good() -> None:
    # The stop's grace is over: the engine is killed, not replaced only to be stopped (starting
    # one takes seconds the stop would wait for), and a later page is refused at once.
    with spawned() as process:
        process.stop_replacing()
        abandoned = threading.Event()
        threading.Timer(1.0, abandoned.set).start()
        with pytest.raises(EngineError) as info:
            process.recognize_page(PageTask(slow_pages_pdf(), 1, OcrOptions(), 300), abandoned)
        assert info.value.code == "abandoned"
        assert process.restarts == 0 and process.pid is None
        with pytest.raises(EngineCrashed, match="stopped"):
            read(process, HELLO_PNG)


def _address_space_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return int(line.split()[3])
    raise AssertionError("no address space limit in /proc/PID/limits")
