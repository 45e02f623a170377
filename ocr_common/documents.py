"""Documents: images and PDFs, told apart by their bytes, checked by the API server before
it stores them and rendered by the engines here, so both agree on what a page is."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

from .errors import InvalidImage, PayloadTooLarge
from .image_structure import check_structure, tiff_page_count, unopened_reason

PDF = "PDF"
# What Pillow decodes for us (the magic bytes decide, never a name or a Content-Type).
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "PPM", "JPEG2000"})
# Pillow's name for a JPEG that holds more pictures (phones write them); we read the first.
FORMAT_ALIASES = {"MPO": "JPEG"}
# What the v1 API reads; the original API reads images only.
DOCUMENT_FORMATS = IMAGE_FORMATS | {PDF}
# Formats whose every frame is a page; in the others (GIF, WebP animations) the first is.
MULTI_PAGE_FORMATS = frozenset({"TIFF", PDF})
PDF_POINTS_PER_INCH = 72
# Smaller than this cannot hold a character.
MIN_SIDE_PX = 3
# Tesseract refuses wider or taller images (its coordinates are 16-bit signed integers).
MAX_SIDE_PX = 32_767
# Where a PDF's header may start: readers accept junk before it within the first kilobyte.
PDF_HEADER_WITHIN = 1024
# pdfium is not thread-safe; the API server checks PDFs from several threads.
_PDFIUM = threading.Lock()
# Pillow's own bomb check is a warning; we refuse by our own limit, before decoding.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Document:
    """What the checks found: the format, every page of the file, and the pages to read."""

    format: str
    page_count: int
    pages: tuple[int, ...]


def is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:PDF_HEADER_WITHIN]


def describe_formats(formats: frozenset[str] = DOCUMENT_FORMATS) -> str:
    return "PNG, JPEG, TIFF, BMP, GIF, WebP" + (" or PDF" if PDF in formats else "")


@contextmanager
def _open_pdf(data: bytes) -> Iterator[object]:
    import pypdfium2

    with _PDFIUM:
        try:
            pdf = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise InvalidImage(
                    "the PDF is encrypted with a password; send it without one",
                    code="pdf_encrypted",
                ) from None
            raise InvalidImage(f"the PDF could not be read: {exc}", code="invalid_pdf") from None
        try:
            yield pdf
        finally:
            pdf.close()


def select_pages(
    wanted: tuple[int, ...] | None, page_count: int, max_pages: int
) -> tuple[int, ...]:
    """The 1-based pages to read: every page, or the wanted ones; at most ``max_pages``."""
    pages = tuple(range(1, page_count + 1)) if wanted is None else wanted
    beyond = [page for page in pages if page > page_count]
    if beyond:
        raise InvalidImage(
            f'"pages": the document has {page_count} page(s); there is no page {beyond[0]}',
            code="invalid_option",
            field="pages",
        )
    if len(pages) > max_pages:
        raise PayloadTooLarge(
            f"the document has {len(pages)} pages to read, more than the {max_pages} allowed "
            "per document (OCR_MAX_PAGES); select fewer with pages=, e.g. pages=1-"
            f"{max_pages}",
            code="too_many_pages",
            field="pages",
        )
    return pages


def check_sync_pages(pages: int, max_pages: int) -> None:
    """Refuse a synchronous read of more than ``max_pages`` pages: that is for the job queue."""
    if pages > max_pages:
        raise PayloadTooLarge(
            f"the document has {pages} pages to read, more than the {max_pages} a synchronous "
            "read takes (OCR_SYNC_MAX_PAGES): queue it with POST /v1/jobs and poll GET "
            f"/v1/jobs/{{id}}, or select fewer with pages=, e.g. pages=1-{max_pages}",
            code="too_many_pages_to_wait_for",
            field="pages",
        )


def check_size(width: int, height: int, max_pixels: int, what: str, hint: str) -> None:
    """Refuse a page over OCR_MAX_PIXELS (from its header, before decoding), wider or taller than
    Tesseract reads, or too small to read; ``what`` names it in the message ("page 3")."""
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{what} is {width}x{height} = {width * height} pixels, more than the "
            f"{max_pixels} allowed (OCR_MAX_PIXELS); {hint}",
            code="too_many_pixels",
        )
    if max(width, height) > MAX_SIDE_PX:
        raise PayloadTooLarge(
            f"{what} is {width}x{height} pixels; Tesseract reads at most {MAX_SIDE_PX} pixels "
            f"wide and {MAX_SIDE_PX} tall; {hint}",
            code="too_wide_or_tall",
        )
    if min(width, height) < MIN_SIDE_PX:
        raise InvalidImage(
            f"{what} is {width}x{height} pixels: too small to hold text",
            code="image_too_small",
        )


def check_document(
    data: bytes,
    *,
    wanted_pages: tuple[int, ...] | None,
    dpi: int,
    max_bytes: int,
    max_pixels: int,
    max_pages: int,
    formats: frozenset[str] = DOCUMENT_FORMATS,
) -> Document:
    """The one upload check of both APIs, before a document is stored: format from the bytes,
    pages, pixel limits from headers (nothing decoded), structure."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the document is larger than {max_bytes} bytes (OCR_MAX_UPLOAD_BYTES)",
            code="image_too_large",
        )
    if not data:
        raise InvalidImage("the document is empty (0 bytes)", code="empty_image")
    if is_pdf(data):
        if PDF not in formats:
            raise InvalidImage(
                "PDF documents are read by the v1 API (POST /v1/ocr now, POST /v1/jobs queued); "
                f"send {describe_formats(formats)}"
            )
        return _check_pdf(data, wanted_pages, dpi, max_pixels, max_pages)
    return _check_image(data, wanted_pages, max_pixels, max_pages, formats)


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Document:
    """The original API's upload: ``check_document`` for an image's first page."""
    return check_document(
        data,
        wanted_pages=(1,),
        dpi=PDF_POINTS_PER_INCH,  # unused: no PDF gets this far
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_pages=1,
        formats=IMAGE_FORMATS,
    )


def _check_pdf(
    data: bytes, wanted: tuple[int, ...] | None, dpi: int, max_pixels: int, max_pages: int
) -> Document:
    import pypdfium2

    # Here, not at the top: the engine processes, which import this module, need no qpdf.
    from .pdf_structure import check_drawings

    # Sizes from the page dictionaries: no page is loaded (that parses all its content).
    with _open_pdf(data) as pdf:
        page_count = len(pdf)  # type: ignore[arg-type]
        if page_count == 0:
            raise InvalidImage("the PDF has no pages", code="invalid_pdf")
        pages = select_pages(wanted, page_count, max_pages)
        for page in pages:
            try:
                size = pdf.get_page_size(page - 1)  # type: ignore[attr-defined]
            except pypdfium2.PdfiumError:
                raise _unreadable_page(page) from None
            _check_pdf_page(size, dpi, max_pixels, page)
    check_drawings(data)
    return Document(PDF, page_count, pages)


def _unreadable_page(page: int) -> InvalidImage:
    # pdfium finds no page there: the page tree loops, nests too deep, or counts wrong.
    return InvalidImage(
        f"page {page} of the PDF cannot be found: its page tree is malformed (a loop, too deep, "
        "or a wrong page count); re-save it (print it to PDF) and send that",
        code="invalid_pdf",
    )


def _check_pdf_page(size_pt: tuple[float, float], dpi: int, max_pixels: int, page: int) -> None:
    width, height = (max(1, round(points * dpi / PDF_POINTS_PER_INCH)) for points in size_pt)
    check_size(width, height, max_pixels, f"page {page}", f"ask for a lower dpi than {dpi}")


def _open_image(data: bytes, formats: frozenset[str] = DOCUMENT_FORMATS) -> tuple[Image.Image, str]:
    """The image (its header read, no pixel) and its format, which must be one of ``formats``."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for non-images
        what = "neither an image nor a PDF" if PDF in formats else "not an image"
        reason = unopened_reason(data) or f"the data is {what} (it starts with {data[:8]!r})"
        raise InvalidImage(f"{reason}; send {describe_formats(formats)}") from None
    fmt = image.format or "unknown"
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in formats:
        image.close()
        raise InvalidImage(
            f"{fmt} images are not supported; send {describe_formats(formats)}",
            code="unsupported_format",
        )
    return image, fmt


def _check_image(
    data: bytes,
    wanted: tuple[int, ...] | None,
    max_pixels: int,
    max_pages: int,
    formats: frozenset[str],
) -> Document:
    image, fmt = _open_image(data, formats)
    with image:
        try:
            page_count = tiff_page_count(data) if fmt == "TIFF" else 1
            pages = select_pages(wanted, page_count, max_pages)
            # Sizes from each page's header, wholeness from its structure: no pixel is decoded
            # in the API server (see image_structure).
            for page in pages:
                image.seek(page - 1)
                check_size(*image.size, max_pixels, f"page {page}", "scale it down")
                check_structure(image, data)
        except (InvalidImage, PayloadTooLarge):
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
            raise InvalidImage(f"the {fmt} image is truncated or corrupt: {exc}") from None
    return Document(fmt, page_count, pages)


def pdf_page_size(data: bytes, page: int) -> tuple[float, float]:
    """The size (points, as shown: /Rotate applied) of page ``page`` (1-based) of a PDF."""
    import pypdfium2

    with _open_pdf(data) as pdf:
        try:
            width, height = pdf.get_page_size(page - 1)  # type: ignore[attr-defined]
        except pypdfium2.PdfiumError:
            raise _unreadable_page(page) from None
    return float(width), float(height)


def render_page(data: bytes, page: int, *, dpi: int, max_pixels: int) -> Image.Image:
    """Page ``page`` (1-based) as pixels: a PDF page rendered at ``dpi`` (in ``info["dpi"]``,
    which Tesseract sizes text by), or an image frame."""
    if is_pdf(data):
        import pypdfium2

        with _open_pdf(data) as pdf:
            try:
                pdf_page = pdf[page - 1]  # type: ignore[index]
            except pypdfium2.PdfiumError:
                raise _unreadable_page(page) from None
            try:
                _check_pdf_page(pdf_page.get_size(), dpi, max_pixels, page)
                bitmap = pdf_page.render(scale=dpi / PDF_POINTS_PER_INCH)
                rendered = bitmap.to_pil()
                # to_pil shares pdfium's buffer: copy before the bitmap is freed.
                image = rendered.copy()
                bitmap.close()
            finally:
                pdf_page.close()
        image.info["dpi"] = (dpi, dpi)
        return image
    try:
        image, _ = _open_image(data)
        image.seek(page - 1)
        check_size(*image.size, max_pixels, f"page {page}", "scale it down")
        image.load()
    except (InvalidImage, PayloadTooLarge):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"page {page} could not be decoded: {exc}") from None
    return image
