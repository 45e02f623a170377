"""format=alto on real pages: the bytes Tesseract's own ALTO renderer writes for them (asked of
the libtesseract the engine uses, through its C API), well-formed, in the ALTO namespace."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocr_common.documents import render_page
from ocr_common.options import OcrOptions
from ocr_common.render.alto import NAMESPACE, page_alto, render_alto
from ocr_server.engine import TesseractEngine, _to_tesseract_mode, tessdata_dir
from ocr_server.pool import PageTask
from ocr_testkit.tesseract_alto import tesseract_alto

SHARED_DATA = Path(
    os.environ.get("OCR_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
PAGES = [
    "books/a022.png",
    "books/c035.png",
    "books/j060.png",
    "receipts/000.jpg",
    "receipts/004.jpg",
    "unlv/8071_093.3B.png",
    "unlv/8087_054.3B.png",
    "unlv/phototest.png",
]


@pytest.fixture(scope="module")
def engine() -> Iterator[TesseractEngine]:
    engine = TesseractEngine(page_timeout_s=60, max_pixels=10**8)
    yield engine
    engine.close()


def shared(name: str) -> bytes:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is missing: set OCR_SHARED_DATA to the folder of real pages")
    return path.read_bytes()


@pytest.mark.parametrize("name", PAGES)
def test_a_page_s_alto_is_tesseract_s(engine: TesseractEngine, name: str) -> None:
    data = shared(name)
    page = engine.recognize_page(PageTask(data, 1, OcrOptions(), 300))
    image = _to_tesseract_mode(render_page(data, 1, dpi=300, max_pixels=10**8))
    # The first page's IDs, and a later page's (which carry its number).
    for number in (0, 3):
        assert page_alto(page, number) == tesseract_alto(image, number, tessdata_dir())


def test_a_document_s_alto_is_well_formed_alto(engine: TesseractEngine) -> None:
    pages = [
        engine.recognize_page(PageTask(shared(name), 1, OcrOptions(), 300))
        for name in ("books/a022.png", "receipts/000.jpg")
    ]
    pages = [pages[0], pages[1].model_copy(update={"page": 2})]
    root = ET.fromstring(render_alto(pages, "5.5.4", "scan.pdf"))
    assert root.tag == f"{{{NAMESPACE}}}alto"
    found = root.findall(f".//{{{NAMESPACE}}}Page")
    assert [p.get("ID") for p in found] == ["page_0", "page_1"]
    strings = root.findall(f".//{{{NAMESPACE}}}String")
    # Every word but those of images and rules (which are boxes of their own).
    assert len(strings) == sum(
        len(line.words)
        for page in pages
        for block in page.blocks
        if not block.drawn
        for paragraph in block.paragraphs
        for line in paragraph.lines
    )
    assert root.findtext(f".//{{{NAMESPACE}}}fileName") == "scan.pdf"
