"""Tesseract's TSV (``tesseract ... tsv``, GetTSVText), byte for byte, from the pages."""

from __future__ import annotations

from collections.abc import Sequence

from ocr_common.result import BoundingBox, Page

MEDIA_TYPE = "text/tab-separated-values"
HEADER = (
    "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\t"
    "left\ttop\twidth\theight\tconf\ttext\n"
)


def render_tsv(pages: Sequence[Page]) -> str:
    """Every page's rows under one header line."""
    return HEADER + "".join(page_tsv(page) for page in pages)


def page_tsv(page: Page) -> str:
    """A page's rows: the page, then each block, paragraph, line and word, numbered within its
    parent (blocks without words have no row)."""
    if page.tesseract is not None:
        return page.tesseract.tsv
    n = page.page
    rows = [f"1\t{n}\t0\t0\t0\t0\t0\t0\t{page.width}\t{page.height}\t-1\t\n"]
    numbered = [block for block in page.blocks if block.paragraphs]
    for b, block in enumerate(numbered, 1):
        rows.append(_row(2, n, f"{b}\t0\t0\t0", block.bbox, "-1", ""))
        for p, paragraph in enumerate(block.paragraphs, 1):
            rows.append(_row(3, n, f"{b}\t{p}\t0\t0", paragraph.bbox, "-1", ""))
            for li, line in enumerate(paragraph.lines, 1):
                rows.append(_row(4, n, f"{b}\t{p}\t{li}\t0", line.bbox, "-1", ""))
                for w, word in enumerate(line.words, 1):
                    where = f"{b}\t{p}\t{li}\t{w}"
                    rows.append(_row(5, n, where, word.bbox, f"{word.confidence:f}", word.text))
    return "".join(rows)


def _row(level: int, page: int, where: str, box: BoundingBox, conf: str, text: str) -> str:
    return (
        f"{level}\t{page}\t{where}\t{box.left}\t{box.top}\t{box.width}\t{box.height}\t"
        f"{conf}\t{text}\n"
    )
