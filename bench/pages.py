"""How long one 10-page PDF takes with 1 engine and with N: its pages are read in parallel.

    .venv/bin/python bench/pages.py [--engines N] [--pages 10]

Prints a table: engines, seconds for the whole document, seconds per page, speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

from PIL import Image, ImageDraw, ImageFont

from ocr_common.options import OcrOptions
from ocr_common.settings import available_cores
from ocr_server.pool import EnginePool, PageTask

LINES = [
    "The quick brown fox jumps over the lazy dog, page {n}.",
    "Pack my box with five dozen liquor jugs; how vexingly quick daft zebras jump.",
    "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly.",
]


def render_pdf(pages: int) -> bytes:
    """A PDF of ``pages`` A4-like pages of text at 100 dpi (read at 200 dpi)."""
    font = ImageFont.load_default(size=22)
    images = []
    for n in range(1, pages + 1):
        image = Image.new("RGB", (827, 1169), "white")
        draw = ImageDraw.Draw(image)
        for row in range(30):
            draw.text((60, 60 + row * 34), LINES[row % 3].format(n=n), fill="black", font=font)
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=100)
    return out.getvalue()


async def read(pool: EnginePool, task: PageTask, pages: tuple[int, ...]) -> float:
    started = time.perf_counter()
    await pool.recognize_pages(task, pages, urgent=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=available_cores())
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args()
    task = PageTask(render_pdf(args.pages), 0, OcrOptions(dpi=200), 200)
    pages = tuple(range(1, args.pages + 1))
    print(f"{args.pages}-page PDF rendered at 200 dpi")
    print(f"{'engines':>8} {'seconds':>8} {'s/page':>8} {'speed-up':>9}")
    baseline = None
    for engines in sorted({1, args.engines}):
        pool = EnginePool.start(engines, page_timeout_s=120, max_pixels=50_000_000)
        try:
            asyncio.run(read(pool, task, pages[:engines]))  # warm up every engine
            seconds = asyncio.run(read(pool, task, pages))
        finally:
            pool.close()
        baseline = baseline or seconds
        print(
            f"{engines:>8} {seconds:>8.2f} {seconds / args.pages:>8.2f} {baseline / seconds:>8.2f}x"
        )


if __name__ == "__main__":
    main()
