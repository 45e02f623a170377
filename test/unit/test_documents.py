"""Document checks before storing: what Tesseract cannot take is refused at upload, with a 413."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ocr_common.documents import MAX_SIDE_PX, check_document, check_image, render_page
from ocr_common.errors import InvalidImage, PayloadTooLarge
from ocr_common.pdf_structure import MAX_FORM_DRAWS
from ocr_testkit.hostile_pdfs import (
    broken_page_trees,
    miscounted_page_trees,
    nested_forms_pdf,
    pdf_file,
    pdf_stream,
)
from ocr_testkit.pages import encode

MIB = 1024 * 1024


def strip(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A white image of that size (a few KB however large: one colour compresses well)."""
    return encode(Image.new("L", (width, height), 255), fmt)


def pdf_strip(width_in: float, height_in: float) -> bytes:
    """A one-page PDF of that size in inches (Pillow writes the page at 10 dpi)."""
    out = io.BytesIO()
    Image.new("L", (round(width_in * 10), round(height_in * 10)), 255).save(
        out, "PDF", resolution=10
    )
    return out.getvalue()


def check(data: bytes, dpi: int = 300) -> None:
    check_document(
        data, wanted_pages=None, dpi=dpi, max_bytes=10 * MIB, max_pixels=50_000_000, max_pages=10
    )


@pytest.mark.parametrize("size", [(MAX_SIDE_PX + 1, 40), (40, MAX_SIDE_PX + 1), (40_000, 100)])
def test_an_image_wider_or_taller_than_tesseract_takes_is_a_413_on_both_apis(
    size: tuple[int, int],
) -> None:
    image = strip(*size)
    for validate in (
        lambda: check_image(image, max_bytes=10 * MIB, max_pixels=50_000_000),
        lambda: check(image),
    ):
        with pytest.raises(PayloadTooLarge) as info:
            validate()
        assert (info.value.status, info.value.code) == (413, "too_wide_or_tall")
        assert "32767" in info.value.message and f"{size[0]}x{size[1]}" in info.value.message


def test_the_widest_image_tesseract_takes_is_accepted() -> None:
    image = strip(MAX_SIDE_PX, 40)
    assert check_image(image, max_bytes=10 * MIB, max_pixels=50_000_000).format == "PNG"
    check(image)


def test_a_pdf_page_too_wide_at_the_asked_dpi_is_a_413_that_suggests_a_lower_dpi() -> None:
    # 120 inches wide: 36,000 pixels at 300 dpi, 12,000 at 100 dpi.
    banner = pdf_strip(120, 1)
    with pytest.raises(PayloadTooLarge) as info:
        check(banner, dpi=300)
    assert info.value.code == "too_wide_or_tall"
    assert "lower dpi than 300" in info.value.message
    check(banner, dpi=100)


def test_a_pdf_bomb_is_refused_before_it_is_stored_without_being_drawn() -> None:
    # 10**8 nested drawings: pdfium would take 160 GB and half an hour to expand them; qpdf
    # counts them from the objects (nothing is drawn, no page is loaded).
    with pytest.raises(PayloadTooLarge) as info:
        check(nested_forms_pdf())
    assert (info.value.status, info.value.code) == (413, "document_too_complex")
    assert "page 1" in info.value.message and f"{MAX_FORM_DRAWS:,}" in info.value.message


@pytest.mark.parametrize(("levels", "refused"), [(5, False), (6, True)])
def test_nested_forms_are_refused_past_half_a_million_drawings(levels: int, refused: bool) -> None:
    # 5 levels of 10: 111,111 drawings (pdfium: 186 MB); 6 levels: 1,111,111 (1.6 GB).
    document = nested_forms_pdf(levels)
    if refused:
        with pytest.raises(PayloadTooLarge, match="document_too_complex|form XObjects"):
            check(document)
    else:
        check(document)


def test_a_form_that_draws_itself_is_not_followed_round() -> None:
    # pdfium stops such a loop at once; counting it must stop too.
    loop = pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /XObject << /X 5 0 R >> >> >>",
            pdf_stream(b"", b"/X Do /X Do"),
            pdf_stream(
                b"/Type /XObject /Subtype /Form /BBox [0 0 9 9] "
                b"/Resources << /XObject << /X 5 0 R >> >>",
                b"0 0 1 1 re f /X Do /X Do",
            ),
        ]
    )
    check(loop)


def test_an_ordinary_pdf_with_forms_is_accepted() -> None:
    check(nested_forms_pdf(levels=2, copies=50))


BROKEN_TREES = broken_page_trees()
MISCOUNTED_TREES = miscounted_page_trees()


@pytest.mark.parametrize("name", BROKEN_TREES)
@pytest.mark.parametrize("pages", [None, (1,)], ids=["every page", "page 1"])
def test_a_page_tree_no_reader_can_walk_is_a_400_invalid_pdf(
    name: str, pages: tuple[int, ...] | None
) -> None:
    with pytest.raises(InvalidImage) as info:
        check_document(
            BROKEN_TREES[name],
            wanted_pages=pages,
            dpi=300,
            max_bytes=10 * MIB,
            max_pixels=50_000_000,
            max_pages=10,
        )
    assert (info.value.status, info.value.code) == (400, "invalid_pdf")
    assert "page tree" in info.value.message or "Pages" in info.value.message


@pytest.mark.parametrize("name", MISCOUNTED_TREES)
def test_a_page_tree_that_miscounts_is_read_as_far_as_it_goes_or_a_400(name: str) -> None:
    # Readers count the pages that are there: what is accepted renders, the rest is a 400.
    data = MISCOUNTED_TREES[name]
    for pages in (None, (1,)):
        try:
            document = check_document(
                data,
                wanted_pages=pages,
                dpi=300,
                max_bytes=10 * MIB,
                max_pixels=50_000_000,
                max_pages=10,
            )
        except InvalidImage as exc:
            assert exc.code == "invalid_pdf" and "page tree" in exc.message
            continue
        for page in document.pages:
            assert render_page(data, page, dpi=20, max_pixels=50_000_000).size == (170, 220)


def test_a_page_the_engine_cannot_find_is_invalid_pdf_there_too() -> None:
    # Counted 5 pages, holding 1: the engine asked for page 2 says so rather than crash.
    data = MISCOUNTED_TREES["a Count of 5 for 1 page"]
    with pytest.raises(InvalidImage, match="page 2 of the PDF cannot be found"):
        render_page(data, 2, dpi=20, max_pixels=50_000_000)
