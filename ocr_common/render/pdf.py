"""The searchable PDF: the submitted document's own pages with an invisible text layer.

A PDF keeps every page as it was (its content streams, resources and images are written back
untouched); each page read gets one more content stream that draws its words in text render
mode 3 (neither filled nor stroked) with a glyphless font, as Tesseract's and OCRmyPDF's
renderers do. An image becomes a page of its own size at its resolution, embedded without
re-encoding where PDF allows (img2pdf: a JPEG as its own bytes, a PNG's compressed rows, a
CCITT G4 TIFF as it is), with the same text layer over it.

Each word is placed in the pixels of the page Tesseract read (upright, after any turn that
preprocessing applied); one matrix per page maps those pixels onto the page as a PDF reader
draws it (its CropBox, turned by its /Rotate), the way pdfium rendered it for Tesseract.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pikepdf
from PIL import Image, ImageOps

from ..documents import MULTI_PAGE_FORMATS, PDF_POINTS_PER_INCH, is_pdf
from ..result import Page

PDF_MEDIA_TYPE = "application/pdf"
# The resolution a page is sized at when neither the file nor Tesseract says one.
FALLBACK_DPI = 300
# The font's name in each page's resources, and every glyph's advance (thousandths of an em):
# a word's characters are stretched to its box (the text matrix), whatever this is.
FONT_RESOURCE = "/OCRGlyphless"
GLYPH_WIDTH = 500
# Text state: render mode 3 draws nothing (the words are found and selected, never seen).
INVISIBLE = 3

Matrix = tuple[float, float, float, float, float, float]
# img2pdf says at WARNING how it stores an alpha channel (as a soft mask): nothing to act on.
logging.getLogger("img2pdf").setLevel(logging.ERROR)


@dataclass(frozen=True)
class PdfWord:
    """A word read, and its box in pixels of the upright page (right and bottom exclusive)."""

    text: str
    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class PdfPage:
    """What the text layer of one page needs: which page of the document it is (1-based), the
    size of the upright page Tesseract read (pixels), its resolution (None: unknown), how far
    clockwise the page as sent was turned from upright, and its lines of words."""

    number: int
    width: int
    height: int
    dpi: float | None
    rotation: int
    lines: tuple[tuple[PdfWord, ...], ...]


def text_pages(pages: Sequence[Page]) -> list[PdfPage]:
    """The one adapter from the page model to what the PDF writer reads."""
    return [
        PdfPage(
            number=page.page,
            width=page.width,
            height=page.height,
            dpi=page.dpi,
            rotation=page.rotation,
            lines=tuple(
                tuple(
                    PdfWord(
                        word.text, word.bbox.left, word.bbox.top, word.bbox.right, word.bbox.bottom
                    )
                    for word in line.words
                )
                for line in page.lines
            ),
        )
        for page in pages
    ]


def searchable_pdf(document: bytes, pages: Sequence[PdfPage]) -> bytes:
    """The document as a PDF of the pages read, in page order, each with its text layer."""
    ordered = sorted(pages, key=lambda page: page.number)
    image = not is_pdf(document)
    pdf = _image_pdf(document, ordered) if image else pikepdf.open(io.BytesIO(document))
    with pdf:
        if not image:  # an image's PDF holds only the pages read already
            _keep_pages(pdf, [page.number for page in ordered])
        font = _font(pdf)
        for pdf_page, page in zip(pdf.pages, ordered, strict=True):
            _add_text_layer(pdf, pdf_page, page, font)
            if image and page.rotation:
                # A page of ours is shown the way it was read, upright (a reader also finds
                # the words of a line in order then); a PDF's pages stay as they were.
                turned = page_rotation(pdf_page.obj) + 360 - page.rotation
                pdf_page.obj.Rotate = turned % 360
        out = io.BytesIO()
        # What the document held is written back as it was: no stream decoded or recompressed,
        # object streams kept, its metadata left alone; the same result, the same bytes.
        pdf.save(
            out,
            deterministic_id=True,
            stream_decode_level=pikepdf.StreamDecodeLevel.none,
            recompress_flate=False,
            fix_metadata_version=False,
        )
        return out.getvalue()


def _keep_pages(pdf: pikepdf.Pdf, numbers: list[int]) -> None:
    """Leave only the pages read (1-based ``numbers``, ascending) in ``pdf``."""
    wanted = set(numbers)
    if max(numbers, default=0) > len(pdf.pages):
        raise ValueError(f"the document has {len(pdf.pages)} page(s), the result more")
    for index in range(len(pdf.pages) - 1, -1, -1):
        if index + 1 not in wanted:
            del pdf.pages[index]


# -- images --------------------------------------------------------------------------------------


def _image_pdf(document: bytes, pages: list[PdfPage]) -> pikepdf.Pdf:
    """A PDF of the image's pages read (frames of a TIFF, the first of other formats), each
    page the size of its image at its resolution."""
    import img2pdf

    if not pages:
        return pikepdf.new()
    with Image.open(io.BytesIO(document)) as image:
        fmt = image.format or ""
        frames = getattr(image, "n_frames", 1) if fmt in MULTI_PAGE_FORMATS else 1
        orientations = []
        for frame in range(frames):
            image.seek(frame)
            orientations.append(image.getexif().get(0x0112, 1))
    sizes = {page.number: page for page in pages}
    if max(sizes, default=0) > frames:
        raise ValueError(f"the document has {frames} page(s), the result more")

    def layout(width_px: int, height_px: int, _dpi: Any) -> tuple[float, float, float, float]:
        # img2pdf asks once a frame, in order: each is a page read.
        dpi = sizes[next(numbers)].dpi or FALLBACK_DPI
        width, height = width_px * PDF_POINTS_PER_INCH / dpi, height_px * PDF_POINTS_PER_INCH / dpi
        return width, height, width, height

    # img2pdf turns a JPEG by its EXIF orientation with the page's /Rotate, as the engine turned
    # its pixels; other orientations (mirrored, or in other formats, where img2pdf may read
    # them otherwise) are turned here, and the frame kept losslessly as PNG. So are the frames
    # read of a TIFF when not all of them were: img2pdf would convert every frame.
    read = [page.number for page in pages]
    if fmt in ("JPEG", "MPO") and orientations[0] in (1, 3, 6, 8):
        sources: list[bytes] = [document]
    elif all(orientation == 1 for orientation in orientations) and len(read) == frames:
        sources = [document]
    else:
        sources = list(_upright_frames(document, read))
    numbers = iter(read)  # whichever way, the frames converted are the pages read
    data = img2pdf.convert(
        *sources,
        layout_fun=layout,
        first_frame_only=fmt not in MULTI_PAGE_FORMATS,
        rotation=img2pdf.Rotation.ifvalid,
        nodate=True,
    )
    pdf = pikepdf.open(io.BytesIO(data))
    # qpdf keeps a document's first /ID when it saves; img2pdf's is not made from the content
    # alone, so without this the same result would not be the same bytes twice.
    del pdf.trailer.ID
    return pdf


def _upright_frames(document: bytes, numbers: list[int]) -> Iterator[bytes]:
    """The frames ``numbers`` (1-based) of an image, each upright, as PNG."""
    with Image.open(io.BytesIO(document)) as image:
        for number in numbers:
            image.seek(number - 1)
            upright = ImageOps.exif_transpose(image)
            if upright.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                upright = upright.convert("RGB")
            out = io.BytesIO()
            dpi = image.info.get("dpi")
            upright.save(out, "PNG", **({"dpi": dpi} if dpi else {}))
            yield out.getvalue()


# -- where the words go --------------------------------------------------------------------------


def _inherited(page: pikepdf.Dictionary, key: str) -> Any:
    """A page attribute, from the page or the nearest node of the page tree that sets it."""
    node: Any = page
    for _ in range(64):  # a page tree deeper than this is refused at intake
        if key in node:
            return node[key]
        if "/Parent" not in node:
            return None
        node = node.Parent
    return None


def _box(value: Any) -> tuple[float, float, float, float] | None:
    try:
        x0, y0, x1, y1 = (float(number) for number in value)
    except (TypeError, ValueError):
        return None
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return box if box[2] > box[0] and box[3] > box[1] else None


def visible_box(page: pikepdf.Dictionary) -> tuple[float, float, float, float]:
    """The part of the page a reader shows, in user space: its CropBox within its MediaBox
    (pdfium's rule: a missing or empty CropBox is the MediaBox, a missing MediaBox is Letter)."""
    media = _box(_inherited(page, "/MediaBox")) or (0.0, 0.0, 612.0, 792.0)
    crop = _box(_inherited(page, "/CropBox"))
    if crop is None:
        return media
    clipped = (
        max(crop[0], media[0]),
        max(crop[1], media[1]),
        min(crop[2], media[2]),
        min(crop[3], media[3]),
    )
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else crop


def page_rotation(page: pikepdf.Dictionary) -> int:
    """How far clockwise a reader turns the page (/Rotate, as pdfium reads it)."""
    try:
        value = int(_inherited(page, "/Rotate") or 0)
    except (TypeError, ValueError):
        return 0
    return int(value / 90) % 4 * 90  # towards zero first, as C divides


def _multiply(first: Matrix, then: Matrix) -> Matrix:
    """The matrix that applies ``first``, then ``then`` (PDF's row-vector convention)."""
    a, b, c, d, e, f = first
    a2, b2, c2, d2, e2, f2 = then
    return (
        a * a2 + b * c2,
        a * b2 + b * d2,
        c * a2 + d * c2,
        c * b2 + d * d2,
        e * a2 + f * c2 + e2,
        e * b2 + f * d2 + f2,
    )


def pixels_to_page(page: pikepdf.Dictionary, text_page: PdfPage) -> Matrix:
    """From pixels of the upright page read (y up from its bottom left) to the page's user
    space.

    The page was rendered (by pdfium, or is the image itself) as a reader shows it: its visible
    box turned by /Rotate, over a grid of pixels; preprocessing may then have turned that image
    by ``rotation`` to read it upright.
    """
    x0, y0, x1, y1 = visible_box(page)
    rotate = page_rotation(page)
    upright_w, upright_h = text_page.width, text_page.height
    turn = text_page.rotation % 360
    # 1. Upright pixels -> pixels of the page as rendered (turned back clockwise by ``turn``).
    undo_turn: Matrix = {
        0: (1, 0, 0, 1, 0, 0),
        90: (0, -1, 1, 0, 0, upright_w),
        180: (-1, 0, 0, -1, upright_w, upright_h),
        270: (0, 1, -1, 0, upright_h, 0),
    }.get(turn, (1, 0, 0, 1, 0, 0))
    rendered_w, rendered_h = (upright_h, upright_w) if turn in (90, 270) else (upright_w, upright_h)
    # 2. Rendered pixels -> points of the page as shown (the pixel grid spans it).
    shown_w, shown_h = (y1 - y0, x1 - x0) if rotate in (90, 270) else (x1 - x0, y1 - y0)
    scale: Matrix = (shown_w / rendered_w, 0, 0, shown_h / rendered_h, 0, 0)
    # 3. The page as shown -> user space (undoing /Rotate, from the visible box's corner).
    unrotate: Matrix = {
        0: (1, 0, 0, 1, x0, y0),
        90: (0, 1, -1, 0, x1, y0),
        180: (-1, 0, 0, -1, x1, y1),
        270: (0, -1, 1, 0, x0, y1),
    }[rotate]
    return _multiply(_multiply(undo_turn, scale), unrotate)


# -- the text layer ------------------------------------------------------------------------------


def _number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _hex(text: str) -> str:
    # UTF-16 code units, one code a character: the ToUnicode map reads them back. Characters
    # beyond the first plane (two units) are written as U+FFFD.
    return "".join(f"{ord(ch):04X}" if ord(ch) < 0x10000 else "FFFD" for ch in text)


def text_layer(page: PdfPage, to_page: Matrix) -> bytes:
    """The content stream drawing ``page``'s words, invisible, each stretched over its box."""
    parts = [f"q {' '.join(map(_number, to_page))} cm BT {INVISIBLE} Tr {FONT_RESOURCE} 1 Tf"]
    em = GLYPH_WIDTH / 1000
    for line in page.lines:
        for word in line:
            text = word.text.strip()
            if not text or word.right <= word.left:
                continue
            height = max(1, word.bottom - word.top)
            stretch = (word.right - word.left) / (len(text) * em)
            # Every word is followed by a space in the same string, the last of a line too: a
            # reader then never joins two words, whatever it makes of the lines.
            parts.append(
                f"{_number(stretch)} 0 0 {height} {word.left} {page.height - word.bottom} Tm "
                f"<{_hex(text)}0020> Tj"
            )
    parts.append("ET Q")
    return "\n".join(parts).encode("ascii")


def _add_text_layer(
    pdf: pikepdf.Pdf, pdf_page: pikepdf.Page, page: PdfPage, font: pikepdf.Object
) -> None:
    """Wrap the page's own content in q/Q (whatever state it leaves, the text layer starts
    from the page's), then draw the text layer after it."""
    stream = text_layer(page, pixels_to_page(pdf_page.obj, page))
    pdf_page.contents_add(pdf.make_stream(b"q\n"), prepend=True)
    layer = pdf.make_stream(zlib.compress(b"\nQ\n" + stream), Filter=pikepdf.Name.FlateDecode)
    pdf_page.contents_add(layer)
    _add_font(pdf_page.obj, font)


def _copy(value: Any) -> pikepdf.Dictionary:
    """A new direct dictionary holding what ``value`` (a dictionary, or nothing) holds."""
    copy = pikepdf.Dictionary()
    if isinstance(value, pikepdf.Dictionary):
        for key, item in value.items():
            copy[key] = item
    return copy


def _add_font(page: pikepdf.Dictionary, font: pikepdf.Object) -> None:
    """Name the glyphless font in the page's resources without changing any object the page
    shares: the page gets a /Resources (and /Font) of its own, holding what it held."""
    inherited = _inherited(page, "/Resources")
    resources = _copy(inherited)
    fonts = _copy(resources.get("/Font"))
    fonts[FONT_RESOURCE] = font
    resources[pikepdf.Name.Font] = fonts
    page[pikepdf.Name.Resources] = resources


# -- the glyphless font --------------------------------------------------------------------------


def _font(pdf: pikepdf.Pdf) -> pikepdf.Object:
    """A Type 0 font of two-byte codes (UTF-16 code units) whose every glyph is empty, with the
    ToUnicode map that gives the codes back as text."""
    program = pdf.make_stream(glyphless_truetype())
    descriptor = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.FontDescriptor,
            FontName=pikepdf.Name.GlyphLessFont,
            Flags=5,  # fixed pitch, symbolic
            FontBBox=[0, 0, GLYPH_WIDTH, 1000],
            ItalicAngle=0,
            Ascent=1000,
            Descent=0,
            CapHeight=1000,
            StemV=80,
            FontFile2=program,
        )
    )
    # Every code drawn with glyph 1 (empty): two bytes a code, compressed to almost nothing.
    cid_to_gid = pdf.make_stream(b"\x00\x01" * 65536)
    cid_font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.CIDFontType2,
        BaseFont=pikepdf.Name.GlyphLessFont,
        CIDSystemInfo=pikepdf.Dictionary(Registry="Adobe", Ordering="Identity", Supplement=0),
        FontDescriptor=descriptor,
        DW=GLYPH_WIDTH,
        CIDToGIDMap=cid_to_gid,
    )
    return pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.Type0,
            BaseFont=pikepdf.Name.GlyphLessFont,
            Encoding=pikepdf.Name("/Identity-H"),
            DescendantFonts=[pdf.make_indirect(cid_font)],
            ToUnicode=pdf.make_stream(_to_unicode()),
        )
    )


def _to_unicode() -> bytes:
    # Each code is its own UTF-16 unit; a range may not cross a change of its first byte.
    ranges = [f"<{high:02X}00> <{high:02X}FF> <{high:02X}00>" for high in range(256)]
    blocks = []
    for start in range(0, len(ranges), 100):  # at most 100 a block
        chunk = ranges[start : start + 100]
        blocks.append(f"{len(chunk)} beginbfrange\n" + "\n".join(chunk) + "\nendbfrange")
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        + "\n".join(blocks)
        + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def _checksum(data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 4)
    return sum(struct.unpack(f">{len(padded) // 4}I", padded)) & 0xFFFFFFFF


@functools.cache
def glyphless_truetype() -> bytes:
    """A TrueType font of two glyphs (.notdef, empty, and the one every code draws, a line),
    an em of 1,000 units, ascent 1,000, no descent: a small program readers accept embedded."""
    name = "GlyphLessFont".encode("utf-16-be")
    tables = {
        b"cmap": struct.pack(">HHHHI", 0, 1, 3, 1, 12)
        # Format 4 with the closing segment only: no character maps to a glyph by itself.
        + struct.pack(">HHHHHHHHHHHH", 4, 24, 0, 2, 2, 0, 0, 0xFFFF, 0, 0xFFFF, 1, 0),
        # Glyph 1: one contour of two points, a line across its box and never drawn (render
        # mode 3), so that the glyph has a box: pdfium skips text whose box has no width.
        b"glyf": struct.pack(
            ">hhhhhHHBBhhhh", 1, 0, 0, GLYPH_WIDTH, 1000, 1, 0, 1, 1, 0, GLYPH_WIDTH, 0, 1000
        ),  # fmt: skip
        b"head": struct.pack(
            ">IIIIHHqqhhhhHHhhh",
            0x00010000,
            0x00010000,
            0,
            0x5F0F3CF5,
            0x000B,
            1000,
            0,
            0,
            0,
            0,
            GLYPH_WIDTH,
            1000,
            0,
            8,
            2,
            0,
            0,
        ),  # fmt: skip
        b"hhea": struct.pack(
            ">IhhhHhhhhhhhhhhhH",
            0x00010000,
            1000,
            0,
            0,
            GLYPH_WIDTH,
            0,
            0,
            GLYPH_WIDTH,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ),  # fmt: skip
        b"hmtx": struct.pack(">Hhh", GLYPH_WIDTH, 0, 0),
        b"loca": struct.pack(">HHH", 0, 0, 12),  # offsets / 2: .notdef empty, glyph 1 24 bytes
        b"maxp": struct.pack(">IH13H", 0x00010000, 2, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
        b"name": struct.pack(">HHHHHHHHH", 0, 1, 18, 3, 1, 0x409, 6, len(name), 0) + name,
        b"post": struct.pack(">IIhhIIIII", 0x00030000, 0, 0, 0, 1, 0, 0, 0, 0),
    }
    count = len(tables)
    power = 1 << (count.bit_length() - 1)
    header = struct.pack(">IHHHH", 0x00010000, count, power * 16, power.bit_length() - 1,
                         (count - power) * 16)  # fmt: skip
    offset = len(header) + 16 * count
    directory, body = b"", b""
    for tag, data in sorted(tables.items()):
        directory += struct.pack(">4sIII", tag, _checksum(data), offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    font = bytearray(header + directory + body)
    # head.checkSumAdjustment: the whole font then sums to the magic number.
    head_at = _table_offset(font, b"head")
    struct.pack_into(">I", font, head_at + 8, (0xB1B0AFBA - _checksum(bytes(font))) & 0xFFFFFFFF)
    return bytes(font)


def _table_offset(font: bytearray, tag: bytes) -> int:
    count = struct.unpack_from(">H", font, 4)[0]
    for index in range(count):
        found, _, at, _ = struct.unpack_from(">4sIII", font, 12 + 16 * index)
        if found == tag:
            return int(at)
    raise KeyError(tag)
