"""What a reader finds in a searchable PDF, as pdfium finds it: the words in reading order and
where each is, in pixels of the page as rendered; shared by the tests and bench/searchable_pdf.py.
"""

from __future__ import annotations

import ctypes
import difflib
import io
import re
from dataclasses import dataclass
from typing import Any

import pypdfium2
import pypdfium2.raw as pdfium_c

from ocr_common.render.pdf import PdfPage

Box = tuple[float, float, float, float]  # left, top, right, bottom
# pdfium writes a hyphen that ends a line as U+FFFE and joins the line to the next.
_SOFT_HYPHEN = "\ufffe"
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class FoundWord:
    text: str
    box: Box  # pixels of the page as pdfium renders it at the page's dpi


def found_words(pdf: bytes, index: int, dpi: float) -> list[FoundWord]:
    """The words pdfium extracts from page ``index`` (0-based), in its order, with the union of
    their characters' boxes in pixels of the page rendered at ``dpi``."""
    document = pypdfium2.PdfDocument(pdf)
    try:
        page = document[index]
        width, height = (round(points * dpi / 72) for points in page.get_size())
        text_page = page.get_textpage()
        words: list[FoundWord] = []
        chars: list[str] = []
        box: list[float] = []

        def close() -> None:
            if chars:
                words.append(FoundWord("".join(chars), (box[0], box[1], box[2], box[3])))
            chars.clear()
            box.clear()

        for at in range(text_page.count_chars()):
            char = text_page.get_text_range(at, 1)
            if not char or char.isspace():
                close()
                continue
            left, bottom, right, top = text_page.get_charbox(at, loose=True)
            x0, y0 = _to_device(page, width, height, left, top)
            x1, y1 = _to_device(page, width, height, right, bottom)
            corners = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if not box:
                box.extend(corners)
            else:
                box[:] = [min(box[0], corners[0]), min(box[1], corners[1])] + [
                    max(box[2], corners[2]),
                    max(box[3], corners[3]),
                ]
            if char == _SOFT_HYPHEN:
                chars.append("-")
                close()
            else:
                chars.append(char)
        close()
        text_page.close()
        page.close()
        return words
    finally:
        document.close()


def _to_device(page: Any, width: int, height: int, x: float, y: float) -> tuple[int, int]:
    device_x, device_y = ctypes.c_int(), ctypes.c_int()
    pdfium_c.FPDF_PageToDevice(
        page, 0, 0, width, height, 0, x, y, ctypes.byref(device_x), ctypes.byref(device_y)
    )
    return device_x.value, device_y.value


def rendered_box(page: PdfPage, left: int, top: int, right: int, bottom: int) -> Box:
    """A box in pixels of the upright page read, in pixels of the page as rendered (before the
    turn preprocessing applied)."""
    w, h = page.width, page.height
    corners = {
        0: [(left, top), (right, bottom)],
        # The page as sent was turned clockwise by ``rotation``: turn the box back.
        90: [(h - top, left), (h - bottom, right)],
        180: [(w - left, h - top), (w - right, h - bottom)],
        270: [(top, w - left), (bottom, w - right)],
    }[page.rotation % 360]
    (x0, y0), (x1, y1) = corners
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class Comparison:
    words: int  # words the OCR read
    found: int  # of them, found by pdfium in the same order
    worst_px: float  # the largest distance of a found word's edge from its OCR box's


def compare(pdf: bytes, index: int, page: PdfPage, *, shown_upright: bool = False) -> Comparison:
    """How many of ``page``'s words pdfium finds on page ``index`` of ``pdf`` in reading order,
    and how far from their OCR boxes; ``shown_upright``: the PDF page shows the page as read
    (an image's page), not as sent."""
    dpi = page.dpi or 300
    ocr = [word for line in page.lines for word in line if word.text.strip()]
    expected = [_SPACES.sub("", word.text) for word in ocr]
    found = found_words(pdf, index, dpi)
    matcher = difflib.SequenceMatcher(a=expected, b=[w.text for w in found], autojunk=False)
    matched, worst = 0, 0.0
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            word = ocr[block.a + offset]
            want = (
                (word.left, word.top, word.right, word.bottom)
                if shown_upright
                else rendered_box(page, word.left, word.top, word.right, word.bottom)
            )
            got = found[block.b + offset].box
            worst = max(worst, *(abs(a - b) for a, b in zip(want, got, strict=True)))
            matched += 1
    return Comparison(len(ocr), matched, worst)


def render_pixels(pdf: bytes, index: int, scale: float) -> bytes:
    """Page ``index`` rendered by pdfium: its size and raw pixels."""
    document = pypdfium2.PdfDocument(pdf)
    try:
        page = document[index]
        bitmap = page.render(scale=scale)
        image = bitmap.to_pil()
        out = io.BytesIO()
        out.write(repr(image.size).encode())
        out.write(image.tobytes())
        bitmap.close()
        page.close()
        return out.getvalue()
    finally:
        document.close()
