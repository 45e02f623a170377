"""CPU a page costs in recognition and in each extraction, and whether the text, TSV and hOCR
rendered from the page-result model are the bytes Tesseract writes.

Each page of each folder is read once as the engine reads it (defaults, model loaded once,
OMP_THREAD_LIMIT=1); then, on that one reading, timed apart: Tesseract's GetUTF8Text,
GetTSVText and GetHOCRText; the engine's one walk of the words (``_read_out``: the page
packed, all the engine does after recognising); and the renderings made when a format is
asked (the page's model from its packed form, then text, TSV and hOCR, in the API server). It
prints the mean CPU milliseconds a page of each, and on how many pages the rendered text, TSV
and hOCR equal Tesseract's.

    python bench/extraction.py
    python bench/extraction.py ../shared/data/books --limit 5
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from throughput import DEFAULT_DATA, MAX_PIXELS, page_images

COLUMNS = ("recognize", "GetUTF8Text", "GetTSVText", "GetHOCRText", "one walk", "renderings")


def cpu_ms(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.process_time()
    out = call()
    return out, (time.process_time() - started) * 1000


def renderings(packed: Any) -> tuple[str, str, str]:
    """The page's text, TSV and hOCR, rendered from its model as the API renders them."""
    from ocr_common.render.hocr import page_hocr
    from ocr_common.render.tsv import page_tsv
    from ocr_common.result import unpack_page

    page = unpack_page(packed)
    return page.text, page_tsv(page), page_hocr(page)


def measure(folder: Path, limit: int | None, engine: Any) -> tuple[int, list[float], int]:
    """Pages read, mean CPU ms a page of each column, pages whose outputs are Tesseract's."""
    from ocr_common.documents import render_page
    from ocr_server.engine import _read_out, _to_tesseract_mode

    api = engine._api
    paths = page_images(folder)[:limit]
    totals, same = [0.0] * len(COLUMNS), 0
    for path in paths:
        image = _to_tesseract_mode(
            render_page(path.read_bytes(), 1, dpi=300, max_pixels=MAX_PIXELS)
        )
        dpi = engine._set_pixels(api, image, image.info.get("dpi"))
        try:
            _, recognize = cpu_ms(api.Recognize)
            text, text_ms = cpu_ms(api.GetUTF8Text)
            tsv, tsv_ms = cpu_ms(lambda: api.GetTSVText(0))
            hocr, hocr_ms = cpu_ms(lambda: api.GetHOCRText(0))
            walk_out = functools.partial(_read_out, api, 1, image.width, image.height, dpi)
            page, walk = cpu_ms(walk_out)
        finally:
            api.Clear()
        ours, render_ms = cpu_ms(functools.partial(renderings, page))
        same += ours == (text, tsv, hocr)
        for i, ms in enumerate((recognize, text_ms, tsv_ms, hocr_ms, walk, render_ms)):
            totals[i] += ms
    return len(paths), [total / max(len(paths), 1) for total in totals], same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        default=[DEFAULT_DATA.parent / name for name in ("books", "receipts", "unlv")],
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N pages of each")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    from ocr_server.engine import TesseractEngine

    engine = TesseractEngine(page_timeout_s=120, max_pixels=MAX_PIXELS)
    print("$ python " + " ".join(sys.argv))
    print(f"mean CPU ms a page; {' | '.join(COLUMNS)}; text, TSV and hOCR equal to Tesseract's")
    print(f"{'folder':<12} | {'pages':>5} | " + " | ".join(f"{c:>11}" for c in COLUMNS) + " | same")
    try:
        for folder in args.folders:
            n, means, same = measure(folder, args.limit, engine)
            cells = " | ".join(f"{ms:11.1f}" for ms in means)
            print(f"{folder.name:<12} | {n:>5} | {cells} | {same}/{n}")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
