"""Document checks before storing: what Tesseract cannot take is refused at upload, with a 413."""

from __future__ import annotations

import io

import pytest
from pages import encode
from PIL import Image

from api_server.uploads import validate_image
from ocr_common.documents import MAX_SIDE_PX, check_document
from ocr_common.errors import PayloadTooLarge

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
        lambda: validate_image(image, max_bytes=10 * MIB, max_pixels=50_000_000),
        lambda: check(image),
    ):
        with pytest.raises(PayloadTooLarge) as info:
            validate()
        assert (info.value.status, info.value.code) == (413, "too_wide_or_tall")
        assert "32767" in info.value.message and f"{size[0]}x{size[1]}" in info.value.message


def test_the_widest_image_tesseract_takes_is_accepted() -> None:
    image = strip(MAX_SIDE_PX, 40)
    assert validate_image(image, max_bytes=10 * MIB, max_pixels=50_000_000)[1:] == (
        MAX_SIDE_PX,
        40,
    )
    check(image)


def test_a_pdf_page_too_wide_at_the_asked_dpi_is_a_413_that_suggests_a_lower_dpi() -> None:
    # 120 inches wide: 36,000 pixels at 300 dpi, 12,000 at 100 dpi.
    banner = pdf_strip(120, 1)
    with pytest.raises(PayloadTooLarge) as info:
        check(banner, dpi=300)
    assert info.value.code == "too_wide_or_tall"
    assert "lower dpi than 300" in info.value.message
    check(banner, dpi=100)
