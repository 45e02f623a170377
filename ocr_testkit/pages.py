"""Test pages the tests render themselves: known words, in a font Tesseract reads reliably."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ocr_common.result import Block, BoundingBox, Line, PackedPage, Page, Paragraph, Word, pack_page

FONT_PX = 40
# A font with umlauts, accents and ß (Pillow's own has none): Debian's fonts-dejavu-core.
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def render_lines(
    lines: list[str],
    *,
    width: int = 900,
    fmt: str = "PNG",
    mode: str = "L",
    font_file: Path | None = None,
) -> bytes:
    """A white page with each line in black, encoded as ``fmt``; in Pillow's own font (ASCII
    only) unless ``font_file`` names another."""
    if font_file is None:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=FONT_PX)
    elif font_file.exists():
        font = ImageFont.truetype(str(font_file), FONT_PX)
    else:
        raise FileNotFoundError(f"{font_file} is missing: apt-get install fonts-dejavu-core")
    line_h = FONT_PX + 30
    image = Image.new("L", (width, 40 + line_h * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((30, 20 + index * line_h), line, fill=0, font=font)
    out = io.BytesIO()
    image.convert(mode).save(out, fmt)
    return out.getvalue()


def text_wall(width: int, height: int, font_px: int = 20) -> bytes:
    """A PNG page covered in lines of small text, edge to edge: slow to read (about 2 s of
    Tesseract per megapixel on one core) and small to send."""
    font = ImageFont.load_default(size=font_px)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    line = "the quick brown fox jumps over the lazy dog 0123456789 " * (width // (font_px * 8) + 1)
    for top in range(0, height, font_px * 3 // 2):
        draw.text((10, top), line, fill=0, font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def words(text: str) -> list[str]:
    return text.split()


HELLO = ["Hello OCR world 42", "The quick brown fox"]
HELLO_PNG = render_lines(HELLO)
# Words of HELLO that every reading of it holds.
HELLO_WORDS = ["Hello", "OCR", "quick", "brown", "fox"]


def assert_reads(text: object, words: list[str] = HELLO_WORDS) -> None:
    """``text`` is a page's text as the original API answers it, holding each of ``words``."""
    assert isinstance(text, str), text
    for word in words:
        assert word in text, text
    assert text.endswith("\n"), repr(text)
    assert "\x0c" not in text


def render_page_image(lines: list[str], *, width: int = 900) -> Image.Image:
    """A fresh white page (grey) with each line in black."""
    return Image.open(io.BytesIO(render_lines(lines, width=width))).convert("L")


def render_document(pages: list[list[str]], fmt: str = "PDF", *, resolution: float = 100) -> bytes:
    """A multi-page PDF or TIFF, one page per list of lines (Pillow writes both)."""
    images = [render_page_image(lines).convert("RGB") for lines in pages]
    out = io.BytesIO()
    extra = {"resolution": resolution} if fmt == "PDF" else {}
    images[0].save(out, fmt, save_all=True, append_images=images[1:], **extra)
    return out.getvalue()


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def page_with_words_at(
    words_at: list[tuple[str, int, int]],
    *,
    size: tuple[int, int] = (1000, 700),
    font_px: int = FONT_PX,
) -> tuple[bytes, dict[str, tuple[int, int, int, int]]]:
    """A PNG page with each word drawn at (x, y), and each word's ink box (left, top, right,
    bottom) as Pillow measured it."""
    font = ImageFont.load_default(size=font_px)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    boxes = {}
    for word, x, y in words_at:
        draw.text((x, y), word, fill=0, font=font)
        left, top, right, bottom = draw.textbbox((x, y), word, font=font)
        boxes[word] = (int(left), int(top), int(right), int(bottom))
    return encode(image), boxes


# A page with enough text for Tesseract's orientation detection to be sure of itself.
ORIENTATION_LINES = [
    "The quick brown fox jumps over the lazy dog",
    "Pack my box with five dozen liquor jugs now",
    "How vexingly quick daft zebras jump today",
    "Sphinx of black quartz judge my vow again",
    "The five boxing wizards jump quickly here",
    "Jackdaws love my big sphinx of quartz too",
]


def page_reading(number: int, text: str | None = None) -> Page:
    """What a fake engine reads on page ``number``: ``text`` (by default "page<N>"), a line of
    the text a line of the page, each word 80 pixels wide and read at 95.5."""
    lines = (text if text is not None else f"page{number}\n").splitlines()
    box = _box(10, 20, 80, 30 * max(1, len(lines)))
    paragraph = Paragraph(
        bbox=box, lang="eng", lines=[_line(line, 20 + 30 * n) for n, line in enumerate(lines)]
    )
    blocks = [Block(kind=1, bbox=box, paragraphs=[paragraph])] if lines else []
    return Page(page=number, width=200, height=100, dpi=300, blocks=blocks)


def packed_reading(number: int, text: str | None = None) -> PackedPage:
    """``page_reading`` packed, as an engine answers."""
    return pack_page(page_reading(number, text))


def _line(text: str, top: int) -> Line:
    words = [
        Word(text=word, confidence=95.5, bbox=_box(10 + 90 * n, top, 80, 30))
        for n, word in enumerate(text.split())
    ]
    return Line(confidence=95.5, bbox=_box(10, top, 80, 30), words=words)


def _box(left: int, top: int, width: int, height: int) -> BoundingBox:
    return BoundingBox(left=left, top=top, width=width, height=height)
