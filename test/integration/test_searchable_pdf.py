"""The searchable PDF on real pages read by real Tesseract: the pages kept as they were, the
words found by pdfium where they are and in reading order, images embedded without re-encoding,
and made-up edge cases (turned, cropped and scaled PDF pages, a blank page)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import img2pdf
import pikepdf
import pytest
from PIL import Image

from ocr_common.documents import check_document
from ocr_common.errors import InvalidImage
from ocr_common.options import OcrOptions, Preprocess
from ocr_common.render.pdf import FONT_RESOURCE, PdfPage, searchable_pdf, text_pages
from ocr_server.engine import TesseractEngine
from ocr_server.pool import PageTask
from ocr_testkit.pages import ORIENTATION_LINES, encode, render_page_image
from ocr_testkit.searchable import compare, render_pixels

SHARED_DATA = Path(
    os.environ.get("OCR_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
BOOK_PAGES = ("a022", "c035", "j060")
# The bound: each word's box within 2 points of its OCR box (in pixels at 300 dpi).
BOX_TOLERANCE_PT = 2


def shared(name: str) -> bytes:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is missing: set OCR_SHARED_DATA to the folder of real pages")
    return path.read_bytes()


@pytest.fixture(scope="module")
def engine() -> Iterator[TesseractEngine]:
    engine = TesseractEngine(page_timeout_s=60, max_pixels=10**8)
    yield engine
    engine.close()


def read_document(
    engine: TesseractEngine, data: bytes, pages: list[int], options: OcrOptions | None = None
) -> list[PdfPage]:
    options = options or OcrOptions()
    read = [engine.recognize_page(PageTask(data, page, options, 300)) for page in pages]
    return text_pages(read)


def book_pdf() -> bytes:
    """A multi-page PDF made from book scans, losslessly (each page its PNG's rows)."""
    return bytes(img2pdf.convert(*[shared(f"books/{name}.png") for name in BOOK_PAGES]))


def assert_found(pdf: bytes, pages: list[PdfPage], *, shown_upright: bool = False) -> None:
    for index, page in enumerate(pages):
        found = compare(pdf, index, page, shown_upright=shown_upright)
        assert found.words > 0
        assert found.found >= 0.99 * found.words, found
        assert found.worst_px <= BOX_TOLERANCE_PT * (page.dpi or 300) / 72, found


def canonical(value: Any, skip: frozenset[str] = frozenset(), depth: int = 0) -> Any:
    """An object with every reference followed (streams as their raw bytes and dictionary),
    to compare what two documents hold whatever their object numbers."""
    assert depth < 30
    if isinstance(value, pikepdf.Stream):
        return ("stream", value.read_raw_bytes(), canonical(value.stream_dict, skip, depth + 1))
    if isinstance(value, pikepdf.Dictionary):
        return {
            key: canonical(value[key], frozenset(), depth + 1)
            for key in value
            if key not in skip and key != "/Parent"
        }
    if isinstance(value, pikepdf.Array):
        return [canonical(item, frozenset(), depth + 1) for item in value]
    return repr(value)


def test_book_pages_keep_every_object_and_their_words_are_found(engine: TesseractEngine) -> None:
    data = book_pdf()
    pages = read_document(engine, data, [1, 2, 3])
    out = searchable_pdf(data, pages)
    assert_found(out, pages)
    with pikepdf.open(io.BytesIO(data)) as before, pikepdf.open(io.BytesIO(out)) as after:
        assert len(after.pages) == 3
        for old, new in zip(before.pages, after.pages, strict=True):
            # The page's own content streams, byte for byte, between the q and Q around them and
            # the text layer after.
            old_contents = old.obj.Contents
            old_streams = (
                list(old_contents) if isinstance(old_contents, pikepdf.Array) else [old_contents]
            )
            new_streams = list(new.obj.Contents)
            assert len(new_streams) == len(old_streams) + 2
            assert new_streams[0].read_bytes().strip() == b"q"
            assert [s.read_raw_bytes() for s in new_streams[1:-1]] == [
                s.read_raw_bytes() for s in old_streams
            ]
            assert new_streams[-1].read_bytes().startswith(b"\nQ\n")
            # Its resources as they were, its images' bytes too, plus the one font.
            assert canonical(new.obj.Resources, frozenset({"/Font"})) == canonical(
                old.obj.Resources, frozenset({"/Font"})
            )
            old_fonts = old.obj.Resources.get("/Font", pikepdf.Dictionary())
            new_fonts = new.obj.Resources.Font
            assert set(new_fonts.keys()) == set(old_fonts.keys()) | {FONT_RESOURCE}
            for key in (k for k in old.obj if k not in ("/Contents", "/Resources", "/Parent")):
                assert canonical(new.obj[key]) == canonical(old.obj[key]), key
        # The text layer adds no ink.
        for index in range(3):
            assert render_pixels(out, index, 0.5) == render_pixels(data, index, 0.5)
    # Small: at most 2 % more, plus 15 KB a page.
    assert len(out) <= len(data) * 1.02 + 15_000 * 3


def test_pages_not_read_are_left_out(engine: TesseractEngine) -> None:
    data = book_pdf()
    pages = read_document(engine, data, [2])
    out = searchable_pdf(data, pages)
    with pikepdf.open(io.BytesIO(out)) as pdf:
        assert len(pdf.pages) == 1
    assert_found(out, pages)


def made_up_pdf(rotate: int, *, crop: bool, user_unit: float | None) -> bytes:
    """One page drawing a page of text as an image, with /Rotate (the image drawn turned the
    other way, so that the page is shown upright), a MediaBox and CropBox away from the origin,
    and a UserUnit as asked."""
    image = render_page_image(ORIENTATION_LINES, width=1200).rotate(rotate % 360, expand=True)
    raw = encode(image, "JPEG", quality=95)
    pdf = pikepdf.new()
    page = pdf.add_blank_page()
    width, height = image.width * 72 / 200, image.height * 72 / 200  # drawn at 200 dpi
    x0, y0 = (50, 120) if crop else (0, 0)
    page.MediaBox = [
        x0 - (20 if crop else 0),
        y0 - (30 if crop else 0),
        x0 + width + 40,
        y0 + height,
    ]
    if crop:
        page.CropBox = [x0, y0, x0 + width, y0 + height]
    if rotate:
        page.Rotate = rotate
    if user_unit:
        page.obj.UserUnit = user_unit
    xobject = pdf.make_stream(
        raw,
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=image.width,
        Height=image.height,
        ColorSpace=pikepdf.Name.DeviceGray,
        BitsPerComponent=8,
        Filter=pikepdf.Name.DCTDecode,
    )
    page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=xobject))
    page.Contents = pdf.make_stream(f"q {width} 0 0 {height} {x0} {y0} cm /Im0 Do Q".encode())
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("rotate", "crop", "user_unit"),
    [(0, True, None), (90, True, None), (180, False, None), (270, True, 2.0), (-90, False, 3.0)],
)
def test_turned_cropped_and_scaled_pdf_pages_get_their_words_in_place(
    engine: TesseractEngine, rotate: int, crop: bool, user_unit: float | None
) -> None:
    data = made_up_pdf(rotate, crop=crop, user_unit=user_unit)
    pages = read_document(engine, data, [1])
    assert pages[0].rotation == 0
    out = searchable_pdf(data, pages)
    found = compare(out, 0, pages[0])
    assert found.found == found.words >= 10 and found.worst_px <= BOX_TOLERANCE_PT * 300 / 72, found
    assert render_pixels(out, 0, 1) == render_pixels(data, 0, 1)


@pytest.mark.parametrize("turn", [90, 270])
def test_a_pdf_page_turned_by_preprocess_keeps_its_look_and_gets_its_words(
    engine: TesseractEngine, turn: int
) -> None:
    scan = Image.open(io.BytesIO(shared("books/a022.png")))
    # A scan turned clockwise: preprocess=auto reads it upright, the PDF keeps it as it was.
    data = bytes(img2pdf.convert(encode(scan.rotate(-turn, expand=True), "PNG", dpi=(300, 300))))
    pages = read_document(engine, data, [1], OcrOptions(preprocess=Preprocess.AUTO))
    assert pages[0].rotation == turn
    out = searchable_pdf(data, pages)
    assert_found(out, pages)
    assert render_pixels(out, 0, 0.5) == render_pixels(data, 0, 0.5)


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_an_image_turned_by_preprocess_is_shown_upright(engine: TesseractEngine, turn: int) -> None:
    scan = Image.open(io.BytesIO(shared("books/c035.png")))
    data = encode(scan.rotate(-turn, expand=True), "PNG", dpi=(300, 300))
    pages = read_document(engine, data, [1], OcrOptions(preprocess=Preprocess.AUTO))
    assert pages[0].rotation == turn
    out = searchable_pdf(data, pages)
    assert_found(out, pages, shown_upright=True)
    with pikepdf.open(io.BytesIO(out)) as pdf:
        assert int(pdf.pages[0].obj.Rotate) == 360 - turn


def test_a_receipt_jpeg_is_embedded_as_its_own_bytes(engine: TesseractEngine) -> None:
    data = shared("receipts/000.jpg")
    pages = read_document(engine, data, [1])
    out = searchable_pdf(data, pages)
    with pikepdf.open(io.BytesIO(out)) as pdf:
        (image,) = pdf.pages[0].get_images().values()
        assert image.Filter == pikepdf.Name.DCTDecode
        assert image.read_raw_bytes() == data
        # Sized from the resolution the engine read at.
        width_pt = float(pdf.pages[0].mediabox[2] - pdf.pages[0].mediabox[0])
        assert width_pt == pytest.approx(pages[0].width * 72 / (pages[0].dpi or 300), abs=0.01)
    assert len(out) <= len(data) + 15_000
    assert_found(out, pages)


def test_a_book_png_is_embedded_losslessly(engine: TesseractEngine) -> None:
    data = shared("books/j060.png")
    pages = read_document(engine, data, [1])
    out = searchable_pdf(data, pages)
    with pikepdf.open(io.BytesIO(out)) as pdf:
        (image,) = pdf.pages[0].get_images().values()
        decoded = pikepdf.PdfImage(image).as_pil_image()
    original = Image.open(io.BytesIO(data))
    assert decoded.size == original.size
    assert decoded.convert("L").tobytes() == original.convert("L").tobytes()
    assert_found(out, pages)


def test_a_multi_page_tiff_gives_a_multi_page_pdf(engine: TesseractEngine) -> None:
    frames = [Image.open(io.BytesIO(shared(f"books/{name}.png"))) for name in BOOK_PAGES[:2]]
    out_tiff = io.BytesIO()
    frames[0].convert("1").save(
        out_tiff, "TIFF", save_all=True, append_images=[frames[1].convert("1")],
        compression="group4", dpi=(300, 300),
    )  # fmt: skip
    data = out_tiff.getvalue()
    pages = read_document(engine, data, [1, 2])
    out = searchable_pdf(data, pages)
    with pikepdf.open(io.BytesIO(out)) as pdf:
        assert len(pdf.pages) == 2
        for page in pdf.pages:
            (image,) = page.get_images().values()
            filters = image.Filter if isinstance(image.Filter, pikepdf.Array) else [image.Filter]
            assert list(filters) == [pikepdf.Name.CCITTFaxDecode]  # the TIFF's G4 bytes
    assert_found(out, pages)


def test_a_blank_page_gets_an_empty_text_layer(engine: TesseractEngine) -> None:
    data = encode(Image.new("L", (1200, 1600), 255), "PNG", dpi=(200, 200))
    pages = read_document(engine, data, [1])
    assert not any(pages[0].lines)
    out = searchable_pdf(data, pages)
    with pikepdf.open(io.BytesIO(out)) as pdf:
        assert len(pdf.pages) == 1
        assert float(pdf.pages[0].mediabox[2]) == pytest.approx(1200 * 72 / 200)
    blank = encode(Image.new("L", (1200, 1600), 255), "PNG", dpi=(200, 200))
    assert render_pixels(out, 0, 0.5) == render_pixels(bytes(img2pdf.convert(blank)), 0, 0.5)


def test_an_encrypted_pdf_is_refused_at_submission() -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    out = io.BytesIO()
    pdf.save(out, encryption=pikepdf.Encryption(user="secret", owner="secret"))
    with pytest.raises(InvalidImage) as refused:
        check_document(
            out.getvalue(), wanted_pages=None, dpi=300, max_bytes=10**7, max_pixels=10**8,
            max_pages=10,
        )  # fmt: skip
    assert refused.value.code == "pdf_encrypted"
