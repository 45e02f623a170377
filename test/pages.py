"""Test pages the tests render themselves: known words, in a font Tesseract reads reliably."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw, ImageFont

FONT_PX = 40


def render_lines(lines: list[str], *, width: int = 900, fmt: str = "PNG", mode: str = "L") -> bytes:
    """A white page with each line in black, encoded as ``fmt``."""
    font = ImageFont.load_default(size=FONT_PX)
    line_h = FONT_PX + 30
    image = Image.new("L", (width, 40 + line_h * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((30, 20 + index * line_h), line, fill=0, font=font)
    out = io.BytesIO()
    image.convert(mode).save(out, fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def words(text: str) -> list[str]:
    return text.split()


HELLO = ["Hello OCR world 42", "The quick brown fox"]
HELLO_PNG = render_lines(HELLO)
