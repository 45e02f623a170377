"""Uploads are checked from their headers and structure: no pixel is decoded in the API."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from ocr_common.documents import check_document, check_image
from ocr_common.errors import InvalidImage, PayloadTooLarge
from ocr_common.image_structure import (
    MAX_JPEG_SCANS,
    MAX_TIFF_PAGES,
    jpeg_scan_count,
    tiff_page_count,
)
from ocr_testkit.hostile_images import (
    blank_png,
    chained_tiff,
    many_scan_jpeg,
    overlapping_tiff,
    sized_header_image,
)
from ocr_testkit.pages import HELLO_PNG

MIB = 1024 * 1024
PAGE = Image.open(io.BytesIO(HELLO_PNG)).convert("RGB")
FORMATS = [
    ("PNG", "RGB"),
    ("PNG", "LA"),
    ("JPEG", "RGB"),
    ("JPEG", "CMYK"),
    ("GIF", "P"),
    ("WEBP", "RGB"),
    ("TIFF", "RGB"),
    ("TIFF", "CMYK"),
    ("BMP", "RGB"),
    ("BMP", "1"),
    ("PPM", "RGB"),
    ("PPM", "L"),
    ("PNG", "I;16"),
]


def encode(fmt: str, mode: str, **options: object) -> bytes:
    image = PAGE.convert("I").convert("I;16") if mode == "I;16" else PAGE.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def check(data: bytes) -> str:
    return check_image(data, max_bytes=10 * MIB, max_pixels=50_000_000).format


def check_v1(data: bytes) -> str:
    document = check_document(
        data, wanted_pages=None, dpi=300, max_bytes=10 * MIB, max_pixels=50_000_000, max_pages=10
    )
    return document.format


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decode fails the test."""

    def refuse(_image: ImageFile.ImageFile) -> None:
        raise AssertionError("the API decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(("fmt", "mode"), FORMATS)
def test_whole_images_pass_without_decoding_a_pixel(fmt: str, mode: str, no_decoding: None) -> None:
    data = encode(fmt, mode)
    assert check(data) == fmt
    assert check_v1(data) == fmt


@pytest.mark.parametrize(("fmt", "mode"), FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_images_are_refused_at_upload(fmt: str, mode: str, keep: float) -> None:
    data = encode(fmt, mode)
    cut = data[: int(len(data) * keep)]
    # A WebP's header gives its length: Pillow does not open a shorter one at all.
    with pytest.raises(
        InvalidImage, match="WebP image, but its header" if fmt == "WEBP" else "truncated"
    ) as info:
        check(cut)
    assert info.value.status == 400
    with pytest.raises(InvalidImage):
        check_v1(cut)


def test_a_multi_page_tiff_with_a_truncated_later_page_is_refused() -> None:
    out = io.BytesIO()
    PAGE.save(out, "TIFF", save_all=True, append_images=[PAGE.convert("L")])
    data = out.getvalue()
    assert check_v1(data) == "TIFF"
    with pytest.raises(InvalidImage, match="truncated"):
        check_v1(data[: len(data) - 1000])


# Little- and big-endian, TIFF and BigTIFF (Pillow reads no big-endian BigTIFF of its own).
@pytest.mark.parametrize(("mode", "big_tiff"), [("L", False), ("I;16B", False), ("L", True)])
@pytest.mark.parametrize("pages", [1, 3])
def test_tiff_pages_are_counted_as_pillow_counts_them(
    mode: str, big_tiff: bool, pages: int
) -> None:
    frames = [Image.new(mode, (24, 16), 1) for _ in range(pages)]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:], big_tiff=big_tiff)
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        assert tiff_page_count(data) == image.n_frames == pages
    assert check_v1(data) == "TIFF"


def test_a_tiff_of_more_pages_than_a_document_may_have_is_refused_without_pillow_counting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 40,000 chained page directories in 4.9 MB: Pillow's n_frames took 16 s on them.
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "n_frames", property(_no_n_frames))
    last = check_document(
        chained_tiff(MAX_TIFF_PAGES),
        wanted_pages=(MAX_TIFF_PAGES,),
        dpi=300,
        max_bytes=10 * MIB,
        max_pixels=50_000_000,
        max_pages=10,
    )
    assert (last.page_count, last.pages) == (MAX_TIFF_PAGES, (MAX_TIFF_PAGES,))
    with pytest.raises(PayloadTooLarge, match=f"more than {MAX_TIFF_PAGES} pages") as info:
        check(chained_tiff(40_000))
    assert info.value.code == "too_many_pages"


def test_a_tiff_whose_page_directories_overlap_is_refused_as_corrupt() -> None:
    # 56 KB of 1,000 pages whose directories each claim the same 2,000 entries: Pillow took
    # 0.74 s to seek to page 200 (a 926 KB file of this kind: 12.9 s of the API's CPU for
    # pages=100, and minutes for later pages, a security re-test).
    data = overlapping_tiff()
    with pytest.raises(InvalidImage, match="directories overlap") as info:
        check(data)
    assert info.value.status == 400
    with pytest.raises(InvalidImage, match="directories overlap"):
        check_v1(data)


def _no_n_frames(_image: object) -> int:
    raise AssertionError("Pillow counted the frames")


@pytest.mark.parametrize(
    ("last_next", "said"),
    [
        (lambda data: len(data) + 100, "past the end"),  # before: Pillow's TypeError, a 500
        (lambda data: len(data) - 3, "runs past the end"),  # its entry count, cut short
        (lambda data: len(data) - 2, "past the end"),
        (lambda _data: 8, "loops back"),  # to the first page
    ],
)
@pytest.mark.parametrize("pages", [1, 4])
def test_a_tiff_whose_chain_of_pages_is_broken_is_refused_as_corrupt(
    last_next: Callable[[bytes], int], said: str, pages: int
) -> None:
    whole = chained_tiff(pages)
    with pytest.raises(InvalidImage, match=said) as info:
        check_v1(chained_tiff(pages, last_next=last_next(whole)))
    assert info.value.status == 400
    # The original API reads the first page only, but takes no broken file either.
    with pytest.raises(InvalidImage, match=said):
        check(chained_tiff(pages, last_next=last_next(whole)))


def test_a_png_with_a_broken_checksum_is_refused() -> None:
    data = bytearray(encode("PNG", "RGB"))
    data[60] ^= 0xFF  # inside the first IDAT chunk
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        check(bytes(data))


def test_a_progressive_jpeg_passes_and_its_scans_are_counted(no_decoding: None) -> None:
    data = encode("JPEG", "RGB", progressive=True)
    assert 2 < jpeg_scan_count(data) <= 12
    assert check(data) == "JPEG"


def test_a_jpeg_with_thousands_of_scans_is_refused_without_decoding(no_decoding: None) -> None:
    data = many_scan_jpeg()
    assert len(data) < 100_000
    for validate in (check, check_v1):
        with pytest.raises(PayloadTooLarge) as info:
            validate(data)
        assert (info.value.status, info.value.code) == (413, "document_too_complex")
        assert str(MAX_JPEG_SCANS) in info.value.message


def test_a_fifty_megapixel_png_is_accepted_without_decoding(no_decoding: None) -> None:
    data = blank_png()
    assert check(data) == "PNG"
    assert check_v1(data) == "PNG"


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "WEBP", "TIFF", "JPEG"])
@pytest.mark.parametrize("size", [(0, 0), (0, 2), (3, 0)])
def test_an_image_of_no_pixels_is_told_as_such(fmt: str, size: tuple[int, int]) -> None:
    data = sized_header_image(fmt, *size)
    for checker in (check, check_v1):
        with pytest.raises(InvalidImage) as refused:
            checker(data)
        assert refused.value.code == "invalid_image"
        shown = "WebP" if fmt == "WEBP" else fmt
        assert f"the {shown} image is {size[0]}×{size[1]} pixels" in refused.value.message
