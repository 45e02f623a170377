"""A preview of a page read: the page as Tesseract read it (upright, after any turn that
preprocessing applied), at most ``MAX_SIDE_PX`` on its long side, so that word boxes, scaled by
the preview's width over the page's, fall on their words."""

from __future__ import annotations

import io

from PIL import Image

from ..documents import PDF_POINTS_PER_INCH, is_pdf, pdf_page_size, render_page

MAX_SIDE_PX = 2000
PNG_MEDIA_TYPE = "image/png"
WEBP_MEDIA_TYPE = "image/webp"
# A colour preview's WebP quality: a 2,000 px photo in about 200 KB, its text still legible.
WEBP_QUALITY = 85
# A photo's EXIF orientation -> the transpose that shows it upright (as ImageOps.exif_transpose).
EXIF_ORIENTATION = 0x0112
_EXIF_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# How far clockwise the page was turned -> the transpose that makes it upright.
_UPRIGHT = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def page_preview(
    document: bytes, page: int, rotation: int, max_side_px: int = MAX_SIDE_PX
) -> tuple[bytes, str]:
    """Page ``page`` (1-based) of ``document``, upright, as PNG (bilevel and grey pages) or
    WebP (colour): its bytes and media type."""
    image = _page(document, page, max_side_px)
    if rotation % 360 in _UPRIGHT:
        image = image.transpose(_UPRIGHT[rotation % 360])
    out = io.BytesIO()
    if image.mode in ("1", "L"):
        image.save(out, "PNG", optimize=False)
        return out.getvalue(), PNG_MEDIA_TYPE
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.save(out, "WEBP", quality=WEBP_QUALITY)
    return out.getvalue(), WEBP_MEDIA_TYPE


def _page(document: bytes, page: int, max_side_px: int) -> Image.Image:
    if is_pdf(document):
        # Sized from the page's points before drawing: never more than the preview's pixels.
        long_side_pt = max(*pdf_page_size(document, page), 1.0)
        dpi = max(1, int(max_side_px * PDF_POINTS_PER_INCH / long_side_pt))
        return _smaller(
            render_page(document, page, dpi=dpi, max_pixels=max_side_px**2), max_side_px
        )
    with Image.open(io.BytesIO(document)) as opened:
        opened.seek(page - 1)
        # Decoded (a JPEG at 1/2, 1/4 or 1/8 of its size when that is enough), shrunk in place,
        # and turned upright once small: the pixels are held full size once at most (a 7,000 px
        # square colour page took 632 MB at its peak when turned and copied full size).
        opened.draft(opened.mode, (max_side_px, max_side_px))
        opened.load()
        # Read once loaded: Pillow turns a TIFF by its orientation tag as it loads it.
        orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
        image = _smaller(opened, max_side_px)
    if orientation in _EXIF_UPRIGHT:
        image = image.transpose(_EXIF_UPRIGHT[orientation])
    return image


def _smaller(image: Image.Image, max_side_px: int) -> Image.Image:
    """``image`` at most ``max_side_px`` on its long side, shrunk in place (a bilevel image
    first made grey, to shrink smoothly)."""
    if max(image.size) > max_side_px:
        if image.mode == "1":
            image = image.convert("L")
        image.thumbnail((max_side_px, max_side_px), Image.Resampling.LANCZOS)
    return image
