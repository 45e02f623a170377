"""Every image format the service reads becomes a PDF page with its text layer (made-up words,
no OCR): img2pdf embeds what PDF holds as it is, the rest losslessly; an EXIF-turned JPEG keeps
its bytes and is shown turned, as the engine read it."""

from __future__ import annotations

import io
import time
from typing import Any

import img2pdf
import pikepdf
import pypdfium2
import pytest
from PIL import Image, ImageDraw

from ocr_common.render.pdf import PdfPage, PdfWord, searchable_pdf

WORD = PdfWord("Hello", 20, 20, 120, 60)


def drawing(mode: str, size: tuple[int, int] = (400, 200)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((20, 20, 120, 60), fill="black")
    return image.convert(mode)


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def extracted(pdf: bytes) -> tuple[str, tuple[float, float]]:
    document = pypdfium2.PdfDocument(pdf)
    try:
        page = document[0]
        return page.get_textpage().get_text_range(), page.get_size()
    finally:
        document.close()


CASES = {
    "GIF": (drawing("P"), "GIF", {}),
    "BMP": (drawing("RGB"), "BMP", {}),
    "WebP": (drawing("RGB"), "WEBP", {"lossless": True}),
    "PPM": (drawing("RGB"), "PPM", {}),
    "TIFF LZW": (drawing("RGB"), "TIFF", {"compression": "tiff_lzw"}),
    "TIFF G4": (drawing("1"), "TIFF", {"compression": "group4"}),
    "PNG RGBA": (drawing("RGBA"), "PNG", {}),
    "PNG 16-bit": (drawing("L").convert("I;16"), "PNG", {}),
    "PNG palette, transparent": (drawing("P"), "PNG", {"transparency": 0}),
    "PNG bilevel": (drawing("1"), "PNG", {}),
    "JPEG CMYK": (drawing("CMYK"), "JPEG", {}),
    "JPEG grey": (drawing("L"), "JPEG", {}),
    "JPEG 2000": (drawing("RGB"), "JPEG2000", {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_image_format_becomes_a_page_with_its_words(name: str) -> None:
    image, fmt, params = CASES[name]
    data = encoded(image, fmt, **params)
    page = PdfPage(1, 400, 200, 200, 0, ((WORD,),))
    text, size = extracted(searchable_pdf(data, [page]))
    assert text.split() == ["Hello"]
    assert size == pytest.approx((400 * 72 / 200, 200 * 72 / 200))


def test_a_jpeg_turned_by_its_exif_keeps_its_bytes_and_is_shown_turned() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    data = encoded(drawing("RGB"), "JPEG", exif=exif)
    # The engine read it turned: 200 wide, 400 tall.
    page = PdfPage(1, 200, 400, None, 0, ((WORD,),))
    pdf = searchable_pdf(data, [page])
    with pikepdf.open(io.BytesIO(pdf)) as document:
        (image,) = document.pages[0].get_images().values()
        assert image.read_raw_bytes() == data
    text, size = extracted(pdf)
    assert text.split() == ["Hello"]
    assert size == pytest.approx((200 * 72 / 300, 400 * 72 / 300))  # 300 dpi when none is known


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_the_same_result_is_the_same_bytes_a_second_later(fmt: str) -> None:
    # A PDF made when the job is read and again later must not differ (clients compare and
    # cache them): img2pdf's own document ID changes with the clock, qpdf would keep it.
    document = encoded(drawing("RGB"), fmt)
    page = PdfPage(1, 400, 200, 100.0, 0, ((WORD,),))
    first = searchable_pdf(document, [page])
    time.sleep(1.1)
    assert searchable_pdf(document, [page]) == first


def test_the_pages_read_of_a_tiff_are_its_pdf_and_only_those_frames_are_converted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Frame n is n * 100 + 200 pixels wide; pages 2 and 4 of 5 were read.
    frames = [drawing("1", (n * 100 + 200, 200)) for n in range(1, 6)]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:], compression="group4")
    read = [PdfPage(n, n * 100 + 200, 200, 100.0, 0, ((WORD,),)) for n in (2, 4)]
    converted: list[tuple[int, int]] = []
    convert = img2pdf.convert

    def counting(*sources: Any, layout_fun: Any, **options: Any) -> Any:
        def layout(width: int, height: int, dpi: Any) -> Any:
            converted.append((width, height))  # img2pdf asks once for each frame it converts
            return layout_fun(width, height, dpi)

        return convert(*sources, layout_fun=layout, **options)

    monkeypatch.setattr(img2pdf, "convert", counting)
    pdf = searchable_pdf(out.getvalue(), read)
    assert converted == [(400, 200), (600, 200)]  # not the three frames no one read
    with pikepdf.open(io.BytesIO(pdf)) as document:
        widths = [float(page.mediabox[2]) for page in document.pages]
    assert widths == pytest.approx([400 * 72 / 100, 600 * 72 / 100])
    single = pypdfium2.PdfDocument(pdf)
    try:
        assert [single[n].get_textpage().get_text_range().split() for n in (0, 1)] == [
            ["Hello"],
            ["Hello"],
        ]
    finally:
        single.close()
