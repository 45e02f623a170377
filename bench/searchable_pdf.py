"""What the searchable PDF (format=pdf) costs beside reading the document, and what a reader
finds in it.

Each document is read page by page as an engine reads it (defaults, model loaded once,
OMP_THREAD_LIMIT=1), then made into its searchable PDF (``ocr_common.render.pdf``); both are
timed in CPU seconds of this process. pdfium (pypdfium2) then extracts the words of every page:
how many of the words read it finds in reading order, and the largest distance (points) of a
found word's box from its OCR box.

Rows: a 10-page PDF made losslessly from 10 book scans (one document); the 30 book scans, each
sent as its PNG; the receipts, each sent as its JPEG.

    .venv/bin/python bench/searchable_pdf.py
    .venv/bin/python bench/searchable_pdf.py --data ../shared/data --limit 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ocr_common.options import OcrOptions
from ocr_common.render.pdf import PdfPage, searchable_pdf, text_pages
from ocr_server.engine import TesseractEngine
from ocr_server.pool import PageTask
from ocr_testkit.searchable import compare

DEFAULT_DATA = Path(
    os.environ.get("OCR_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)
T = TypeVar("T")


def cpu_s(call: Callable[[], T]) -> tuple[T, float]:
    started = time.process_time()
    out = call()
    return out, time.process_time() - started


class Row:
    def __init__(self, name: str) -> None:
        self.name = name
        self.read_s = self.pdf_s = 0.0
        self.bytes_in = self.bytes_out = self.pages = 0
        self.words = self.found = 0
        self.worst_pt = 0.0

    def add(self, engine: TesseractEngine, data: bytes, pages: int) -> None:
        def read() -> list[PdfPage]:
            options = OcrOptions()
            results = [
                engine.recognize_page(PageTask(data, n, options, 300)) for n in range(1, pages + 1)
            ]
            return text_pages(results)

        read_pages, read_s = cpu_s(read)
        pdf, pdf_s = cpu_s(lambda: searchable_pdf(data, read_pages))
        self.read_s += read_s
        self.pdf_s += pdf_s
        self.bytes_in += len(data)
        self.bytes_out += len(pdf)
        self.pages += pages
        for index, page in enumerate(read_pages):
            found = compare(pdf, index, page)
            self.words += found.words
            self.found += found.found
            self.worst_pt = max(self.worst_pt, found.worst_px * 72 / (page.dpi or 300))

    def line(self) -> str:
        growth_kb = (self.bytes_out - self.bytes_in) / 1000
        return (
            f"{self.name:<24} {self.pages:>5} {self.read_s:>8.2f} {self.pdf_s:>7.3f} "
            f"{100 * self.pdf_s / self.read_s:>6.2f}% {self.bytes_in / 1000:>9.0f} "
            f"{growth_kb / self.pages:>8.1f} {100 * (self.bytes_out / self.bytes_in - 1):>6.1f}% "
            f"{100 * self.found / max(1, self.words):>7.2f}% {self.worst_pt:>6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="at most this many files a row")
    args = parser.parse_args()
    import img2pdf

    books = sorted((args.data / "books").glob("*.png"))[: args.limit]
    receipts = sorted((args.data / "receipts").glob("*.jpg"))[: args.limit]
    if not books:
        sys.exit(f"no book pages in {args.data / 'books'}: set --data or OCR_SHARED_DATA")
    engine = TesseractEngine(page_timeout_s=120, max_pixels=100_000_000)
    rows: list[Any] = []
    try:
        ten = Row("10-page PDF (books)")
        ten.add(
            engine, bytes(img2pdf.convert(*[p.read_bytes() for p in books[:10]])), len(books[:10])
        )
        rows.append(ten)
        each = Row(f"{len(books)} book PNGs")
        for path in books:
            each.add(engine, path.read_bytes(), 1)
        rows.append(each)
        if receipts:
            jpegs = Row(f"{len(receipts)} receipt JPEGs")
            for path in receipts:
                jpegs.add(engine, path.read_bytes(), 1)
            rows.append(jpegs)
    finally:
        engine.close()
    print(
        f"python bench/searchable_pdf.py --data {args.data}"
        + (f" --limit {args.limit}" if args.limit else "")
    )
    print(
        f"{'document':<24} {'pages':>5} {'read s':>8} {'pdf s':>7} {'pdf/rd':>7} {'in KB':>9} "
        f"{'+KB/pg':>8} {'grown':>7} {'words':>8} {'box pt':>6}"
    )
    for row in rows:
        print(row.line())
    print("read s, pdf s: CPU seconds; words: words read that pdfium finds in reading order;")
    print("box pt: the largest distance of a found word's box from its OCR box")


if __name__ == "__main__":
    main()
