"""v1 documents through real Tesseract: PDFs and TIFFs, word boxes, rotation, options, and the
pages of one document read in parallel by real engine processes and by the dispatcher."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import JobFiles
from ocr_common.documents import check_document
from ocr_common.models import JobStatus
from ocr_common.options import ORIGINAL_API_OPTIONS, OcrOptions, Preprocess
from ocr_common.render.hocr import page_hocr, render_hocr
from ocr_common.render.tsv import page_tsv, render_tsv
from ocr_common.result import Page, Word, document_text, packed_text, unpack_page
from ocr_common.settings import load_settings
from ocr_server.dispatcher import Dispatcher
from ocr_server.engine import TesseractEngine, _read_out, tessdata_dir
from ocr_server.pool import EnginePool, PageTask
from ocr_testkit.database import queue_document
from ocr_testkit.pages import (
    HELLO,
    ORIENTATION_LINES,
    encode,
    page_with_words_at,
    render_document,
    render_page_image,
)
from ocr_testkit.waits import wait_until_async

BOX_TOLERANCE_PX = 4
# Real pages with ground truth (the benchmarks' data), beside the project: ../shared/data.
SHARED_DATA = Path(
    os.environ.get("OCR_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)


THREE_PAGES = [[f"Page {n} says hello"] + ORIENTATION_LINES[:2] for n in (1, 2, 3)]
DEFAULTS = OcrOptions()


def read(
    engine: TesseractEngine, data: bytes, options: OcrOptions = DEFAULTS, page: int = 1
) -> Page:
    """Page ``page`` of ``data``, read with ``options``."""
    return engine.recognize_page(PageTask(data, page, options, 300))


@pytest.fixture(scope="module")
def engine() -> Iterator[TesseractEngine]:
    engine = TesseractEngine(page_timeout_s=30, max_pixels=10**8)
    yield engine
    engine.close()


@pytest.mark.parametrize("fmt", ["PDF", "TIFF"])
def test_every_page_of_a_pdf_and_a_tiff_is_read(engine: TesseractEngine, fmt: str) -> None:
    data = render_document(THREE_PAGES, fmt)
    document = check_document(
        data, wanted_pages=None, dpi=200, max_bytes=10**7, max_pixels=10**8, max_pages=10
    )
    assert (document.format, document.page_count, document.pages) == (fmt, 3, (1, 2, 3))
    pages = [read(engine, data, OcrOptions(dpi=200), n) for n in (1, 2, 3)]
    assert [p.text.split("\n")[0] for p in pages] == [
        "Page 1 says hello",
        "Page 2 says hello",
        "Page 3 says hello",
    ]
    assert document_text(pages).count("\f") == 2
    if fmt == "PDF":
        # Rendered at the asked dpi: the page was drawn 900 px wide at 100 dpi.
        assert pages[0].width == 1800 and pages[0].dpi == 200


def words_where_drawn(
    page: Page, drawn: dict[str, tuple[int, int, int, int]], tolerance_px: int
) -> dict[str, Word]:
    """The words read, each drawn one among them with a box within ``tolerance_px`` of its ink."""
    words = {w.text: w for line in page.lines for w in line.words}
    assert set(drawn) <= set(words), words
    for text, (left, top, right, bottom) in drawn.items():
        box = words[text].bbox
        assert abs(box.left - left) <= tolerance_px, (text, box, drawn[text])
        assert abs(box.top - top) <= tolerance_px, (text, box, drawn[text])
        assert abs(box.right - right) <= tolerance_px, (text, box, drawn[text])
        assert abs(box.bottom - bottom) <= tolerance_px, (text, box, drawn[text])
    return words


def test_words_come_with_boxes_where_they_were_drawn(engine: TesseractEngine) -> None:
    data, drawn = page_with_words_at(
        [("Alpha", 100, 100), ("Bravo", 600, 300), ("Charlie", 250, 550)]
    )
    page = read(engine, data, OcrOptions(psm=11))
    words = words_where_drawn(page, drawn, BOX_TOLERANCE_PX)
    assert set(words) == set(drawn)
    assert all(80 <= word.confidence <= 100 for word in words.values()), words
    assert (page.width, page.height, page.rotation) == (1000, 700, 0)


@pytest.mark.parametrize("turned_ccw", [90, 180, 270])
def test_auto_preprocess_turns_sideways_and_upside_down_pages_upright(
    engine: TesseractEngine, turned_ccw: int
) -> None:
    upright = render_page_image(ORIENTATION_LINES, width=1300)
    data = encode(upright.rotate(turned_ccw, expand=True))
    page = read(engine, data, OcrOptions(preprocess=Preprocess.AUTO))
    # Turned counter-clockwise by N is turned clockwise by 360 - N.
    assert page.rotation == (360 - turned_ccw) % 360
    assert page.rotation_confidence == "high"
    assert (page.width, page.height) == upright.size
    assert page.text.split("\n")[0] == ORIENTATION_LINES[0]
    first = page.lines[0].bbox
    assert first.top < upright.height / 4  # boxes are on the upright page


@pytest.fixture(scope="module")
def book_page(engine: TesseractEngine) -> tuple[Image.Image, Page]:
    """A real book page, and its reading upright with preprocess=auto."""
    path = SHARED_DATA / "books" / "a022.png"
    if not path.exists():
        pytest.skip(f"{path} is missing: set OCR_SHARED_DATA to the folder of real pages")
    image = Image.open(path)
    return image, read(engine, encode(image), OcrOptions(preprocess=Preprocess.AUTO))


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_a_turned_real_page_says_its_turn_and_has_the_upright_reading_s_boxes(
    engine: TesseractEngine, book_page: tuple[Image.Image, Page], turn: int
) -> None:
    # Issue 21: turned pages were read right but said 90 for 180 and 180 for 270 (Tesseract
    # turned the last 90 degrees itself), so their boxes were not on the upright page.
    image, upright = book_page
    turned = read(
        engine, encode(image.rotate(-turn, expand=True)), OcrOptions(preprocess=Preprocess.AUTO)
    )
    assert (turned.rotation, turned.rotation_confidence) == (turn, "high")
    assert (turned.width, turned.height) == (upright.width, upright.height)
    assert turned.text == upright.text
    boxes = [(word.text, word.bbox) for line in turned.lines for word in line.words]
    assert boxes == [(word.text, word.bbox) for line in upright.lines for word in line.words]


def test_auto_leaves_an_upright_page_as_it_is_and_says_it_is_sure(
    engine: TesseractEngine,
) -> None:
    data = encode(render_page_image(ORIENTATION_LINES, width=1300))
    page = read(engine, data, OcrOptions(preprocess=Preprocess.AUTO))
    assert (page.rotation, page.rotation_confidence, page.warnings) == (0, "high", [])
    assert page.text.split("\n")[0] == ORIENTATION_LINES[0]


def test_auto_keeps_upright_a_real_receipt_the_orientation_model_calls_upside_down(
    engine: TesseractEngine,
) -> None:
    # receipts/004.jpg is upright; Tesseract's orientation model says 180 degrees (confidence
    # 5.1), and auto used to turn it over. Real pages are not copied into the project.
    path = SHARED_DATA / "receipts" / "004.jpg"
    if not path.exists():
        pytest.skip(f"{path} is missing: set OCR_SHARED_DATA to the folder of real pages")
    page = read(engine, path.read_bytes(), OcrOptions(preprocess=Preprocess.AUTO))
    assert (page.rotation, page.rotation_confidence) == (0, "high")
    assert {"INVOICE", "CASH", "CHANGE"} <= set(page.text.replace("-", " ").split())


def test_auto_enlarges_small_grey_text_and_gives_boxes_on_the_page_as_sent(
    engine: TesseractEngine,
) -> None:
    # Small anti-aliased text, as a phone photo of a receipt has: read enlarged, the boxes and
    # the size are still those of the page sent.
    words_at = [("Total", 40, 40), ("Cash", 40, 80), ("Change", 40, 120), ("Receipt", 220, 40)]
    data, drawn = page_with_words_at(words_at, size=(400, 170), font_px=16)
    page = read(engine, data, OcrOptions(psm=11, preprocess=Preprocess.AUTO))
    words_where_drawn(page, drawn, 3)
    assert (page.width, page.height) == (400, 170)
    assert "bbox 0 0 400 170" in page_hocr(page)


def test_without_preprocess_a_turned_page_is_read_as_it_is(engine: TesseractEngine) -> None:
    data = encode(render_page_image(ORIENTATION_LINES, width=1300).rotate(180, expand=True))
    page = read(engine, data)
    assert page.rotation == 0
    assert ORIENTATION_LINES[0] not in page.text


@pytest.mark.parametrize("options", [ORIGINAL_API_OPTIONS, OcrOptions(preprocess=Preprocess.AUTO)])
def test_exif_orientation_is_applied_whatever_the_options(
    engine: TesseractEngine, options: OcrOptions
) -> None:
    # A phone photo: stored sideways, shown upright. It was applied only with preprocess=auto
    # on the v1 path, and always on the original API's (issue 10): now always, on the one.
    upright = render_page_image(["Hello OCR world 42"])
    exif = upright.getexif()
    exif[0x0112] = 6  # stored turned a quarter counter-clockwise, shown upright
    data = encode(upright.rotate(90, expand=True), "JPEG", exif=exif, quality=95)
    page = read(engine, data, options)
    assert page.text.split() == ["Hello", "OCR", "world", "42"]
    assert (page.width, page.height, page.rotation) == (*upright.size, 0)


def test_psm_and_whitelist_reach_tesseract_and_are_reset(engine: TesseractEngine) -> None:
    data = encode(render_page_image(["Room 42 is on floor 7"]))
    digits = read(engine, data, OcrOptions(psm=7, char_whitelist="0123456789"))
    assert set(digits.text.strip()) <= set("0123456789 ")
    again = read(engine, data)
    assert again.text.split() == ["Room", "42", "is", "on", "floor", "7"]
    assert read(engine, data, ORIGINAL_API_OPTIONS).text.split() == again.text.split()


def test_hocr_is_xhtml_and_tsv_has_every_word(engine: TesseractEngine) -> None:
    data = render_document(THREE_PAGES[:2], "TIFF")
    pages = [read(engine, data, DEFAULTS, n) for n in (1, 2)]
    root = ET.fromstring(render_hocr(pages))
    ns = {"x": "http://www.w3.org/1999/xhtml"}
    assert len(root.findall(".//x:div[@class='ocr_page']", ns)) == 2
    words = [w.text for w in root.findall(".//x:span[@class='ocrx_word']", ns)]
    assert words[:4] == ["Page", "1", "says", "hello"]
    rows = [line.split("\t") for line in render_tsv(pages).splitlines()]
    assert rows[0][0] == "level" and len(rows[0]) == 12
    assert {row[1] for row in rows[1:]} == {"1", "2"}
    assert [row[11] for row in rows[1:] if row[0] == "5"][:4] == ["Page", "1", "says", "hello"]


def tesseract_and_ours(image: Image.Image, psm: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Tesseract's own text, TSV and hOCR of a reading, and those the engine writes from its
    walk of the words."""
    import tesserocr

    api = tesserocr.PyTessBaseAPI(path=tessdata_dir(), psm=psm)
    try:
        dpi = TesseractEngine._set_pixels(api, image, image.info.get("dpi"))
        assert api.Recognize()
        page = unpack_page(_read_out(api, 1, image.width, image.height, dpi))
        ours = (page.text, page_tsv(page), page_hocr(page))
        return (api.GetUTF8Text(), api.GetTSVText(0), api.GetHOCRText(0)), ours
    finally:
        api.End()


@pytest.mark.parametrize(
    ("name", "psm"),
    [
        # Photos, rules, headings, captions, quotes and ampersands; a bilevel book page; a
        # colour receipt, laid out automatically and as sparse text.
        ("unlv/8087_054.3B.png", 3),
        ("books/a022.png", 3),
        ("receipts/004.jpg", 3),
        ("receipts/004.jpg", 11),
    ],
)
def test_text_tsv_and_hocr_are_the_bytes_tesseract_writes(name: str, psm: int) -> None:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is missing: set OCR_SHARED_DATA to the folder of real pages")
    tesseract, ours = tesseract_and_ours(Image.open(path), psm)
    assert ours == tesseract


def test_text_tsv_and_hocr_of_a_turned_page_and_a_blank_one_are_tesseract_s() -> None:
    # With orientation detection (psm 1) Tesseract says the lines are turned, and not where.
    turned = render_page_image(ORIENTATION_LINES).rotate(90, expand=True)
    tesseract, ours = tesseract_and_ours(turned, 1)
    assert "textangle" in tesseract[2] and ours == tesseract
    tesseract, ours = tesseract_and_ours(render_page_image(["", ""]), 3)
    assert ours == tesseract


@pytest.fixture(scope="module")
def two_engines() -> Iterator[EnginePool]:
    pool = EnginePool.start(2, page_timeout_s=30, max_pixels=10**8)
    yield pool
    pool.close()


def test_real_engines_read_the_pages_of_one_document_in_order(two_engines: EnginePool) -> None:
    data = render_document([[f"Page {n} says hello"] for n in range(1, 5)])
    task = PageTask(data, 0, OcrOptions(), 300)
    pages = asyncio.run(two_engines.recognize_pages(task, (1, 2, 3, 4), urgent=True))
    # How much faster this is on free cores is bench/pages.py's business (timing here would
    # be flaky on a shared machine); test_pool shows the pages really run side by side.
    assert [packed_text(p).split("\n")[0] for p in pages] == [
        f"Page {n} says hello" for n in range(1, 5)
    ]


def test_the_dispatcher_reads_a_document_job_with_progress(
    sessions: sessionmaker[Session], files: JobFiles, two_engines: EnginePool
) -> None:
    data = render_document(THREE_PAGES, "PDF")
    options = OcrOptions(pages=(1, 3), dpi=150)
    job = queue_document(
        sessions, files, data, max_attempts=2, options=options, fmt="PDF", pages_total=2
    )
    settings = load_settings(lease_s=3, poll_interval_s=0.05)
    dispatcher = Dispatcher(sessions, two_engines, settings, files)

    def ended() -> bool:
        with sessions() as session:
            current = job_store.get_job(session, job.id)
        return current is not None and current.status.is_final

    async def run() -> None:
        dispatcher.start()
        try:
            await wait_until_async(ended, 30, "the document job to end", interval_s=0.05)
        finally:
            await dispatcher.stop(grace_s=5)

    asyncio.run(run())
    with sessions() as session:
        done = job_store.get_job(session, job.id)
        stored = job_store.get_pages(session, job.id)
    assert done is not None and done.status == JobStatus.SUCCEEDED
    assert (done.pages_done, done.pages_total) == (2, 2)
    assert stored is not None
    assert [p.page for p in stored] == [1, 3]
    assert done.text is not None and done.text.split("\f")[1].startswith("Page 3 says hello")


# A page with nothing on it, as big as the others (three empty lines).
BLANK = ["", "", ""]


@pytest.mark.parametrize("preprocess", [Preprocess.NONE, Preprocess.AUTO])
@pytest.mark.parametrize("fmt", ["PDF", "TIFF"])
def test_a_blank_page_is_empty_text_and_its_neighbours_are_read(
    engine: TesseractEngine, fmt: str, preprocess: Preprocess
) -> None:
    data = render_document([THREE_PAGES[0], BLANK, THREE_PAGES[2]], fmt)
    options = OcrOptions(preprocess=preprocess)
    pages = [read(engine, data, options, n) for n in (1, 2, 3)]
    first, blank, third = pages
    assert first.text.startswith("Page 1 says hello")
    assert third.text.startswith("Page 3 says hello")
    assert (blank.text, blank.lines, blank.confidence) == ("", [], None)
    assert document_text(pages).split("\f")[1] == ""
    divs = ET.fromstring(render_hocr(pages)).findall(".//{http://www.w3.org/1999/xhtml}div")
    assert [div.get("class") for div in divs].count("ocr_page") == 3


def test_a_blank_image_is_empty_text(engine: TesseractEngine) -> None:
    blank = encode(render_page_image(BLANK))
    assert read(engine, blank, ORIGINAL_API_OPTIONS).text == ""
    page = read(engine, blank)
    assert (page.text, page.lines) == ("", [])


@pytest.mark.parametrize(
    ("mode", "stated_dpi", "used_dpi"),
    [("RGBA", 300, 300), ("L", 300, 300), ("L", 10, None), ("RGBA", 10, None)],
)
def test_one_dpi_rule_whatever_the_colour_model(
    engine: TesseractEngine, mode: str, stated_dpi: int, used_dpi: int | None
) -> None:
    # Before issue 10 the original API's path told Tesseract any resolution a file stated,
    # and the v1 path lost it when it converted an image with alpha: now a stated resolution
    # of at least MIN_DPI is used, a lower one ("unknown", often 1 or 10) left to Tesseract.
    image = render_page_image(HELLO).convert(mode)
    data = encode(image, "PNG", dpi=(stated_dpi, stated_dpi))
    page = read(engine, data, ORIGINAL_API_OPTIONS)
    assert page.dpi == used_dpi
    assert page.text.split() == " ".join(HELLO).split()
