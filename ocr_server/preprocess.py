"""The steps of ``preprocess=auto``, each kept because ``bench/accuracy.py`` shows it pays.

1. Greyscale, after the EXIF orientation is applied.
2. Orientation, verified by reading: a page Tesseract reads confidently as sent is upright (or
   sideways in the one direction Tesseract turns by itself); only a page that reads poorly is
   asked of the orientation model, and a turn it proposes is taken only when a sample of the page
   reads clearly better turned than as sent. Otherwise the page is left as sent and the result
   says the decision had low confidence.
3. Small text enlarged: Tesseract reads best near a 20-pixel x-height; receipts photographed at
   150 dpi have 11-15 pixels. A grey or colour page with small text is also read enlarged (and,
   with the automatic page segmentation, as one block of lines), and the reading Tesseract is
   most confident of is kept. The x-height is estimated from the ink of the page's rows.

Tried and left out, because the benchmark showed no gain on receipts: Tesseract's Sauvola and
adaptive Otsu binarisation, contrast stretching, unsharp masking, the darkest colour channel as
grey, a median filter. Bitonal pages are neither binarised nor enlarged.

These functions decide; they never call Tesseract. The engine (``ocr_server/engine.py``,
``TesseractEngine._read_auto``) makes every reading they ask for, under the page's deadline.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from PIL import Image, ImageOps

from ocr_common.result import Page

# How far clockwise a page was turned -> the transpose that makes it upright again.
UPRIGHT = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}
# Mean word confidence at or above which the page as read is taken as the right way up.
# Measured: upright book pages read at 92-95, upright receipts at 67-87; upside-down and
# sideways text is read as garbage at 26-52.
CONFIDENT_READ = 80.0
# A turn is taken only when a sample reads at least this much better (mean word confidence,
# 0-100) turned than as sent: the right way up reads 30 or more points better than any other.
TURN_MARGIN = 15.0
# Below this mean word confidence a page the orientation model calls upright is not trusted:
# the other turns are read too.
POOR_READ = 60.0
# Tesseract's orientation confidence below which its answer is not taken as a candidate.
OSD_MIN_CONFIDENCE = 2.0
# The sample read in each candidate orientation: the densest window of at most this many pixels.
SAMPLE_PX = 1_000_000
# x-height (pixels) below which text is enlarged, and the x-height it is enlarged to.
SMALL_X_HEIGHT_PX = 16.0
TARGET_X_HEIGHT_PX = 28.0
MAX_UPSCALE = 2.0
MAX_UPSCALED_PX = 16_000_000
# Page segmentation modes (tesserocr.PSM): with the automatic default, an enlarged page of small
# text is also read as one block of lines, as a receipt is laid out, and the reading Tesseract is
# more confident of is kept (measured on the receipts: F1 71.9 without it, 72.4 with it).
PSM_AUTO = 3
PSM_SINGLE_BLOCK = 6
# Columns the x-height estimate looks at separately: narrow enough to fall within one column
# of text, wide enough that a row of text has ink in it.
ESTIMATE_STRIP_PX = 48


@dataclass(frozen=True)
class Orientation:
    """What the orientation check decided, and how sure it is."""

    rotation: int  # how far clockwise the page as sent was turned from upright
    confident: bool
    warning: str | None = None


# -- greyscale and enlarging ---------------------------------------------------------------------


def greyscale(image: Image.Image) -> Image.Image:
    """The page upright as its EXIF says, in 8-bit grey; the resolution it said is kept."""
    dpi = image.info.get("dpi")
    grey = (ImageOps.exif_transpose(image) or image).convert("L")
    if dpi:
        grey.info["dpi"] = dpi
    return grey


def x_height_px(image: Image.Image) -> float | None:
    """An estimate of the x-height of the page's text, in pixels; None where it finds no text.

    In each narrow column of the page, a run of rows darker than the background is the dense
    middle band of a line of text (the x-height, or the cap height of capitals): the median run
    over the page is the estimate. On a page scanned sideways the runs are whole lines long.
    """
    columns = max(1, image.width // ESTIMATE_STRIP_PX)
    # Each row of each column averaged in C (Pillow's box filter); the rest is one pass in Python.
    means = image.resize((columns, image.height), Image.Resampling.BOX).tobytes()
    runs: list[int] = []
    for column in range(columns):
        values = means[column::columns]
        ordered = sorted(values)
        background = ordered[int(len(ordered) * 0.9)]
        darkest = ordered[int(len(ordered) * 0.02)]
        if background - darkest < 24:  # no text in this column
            continue
        threshold = background - (background - darkest) * 0.2
        run = 0
        for value in values:
            if value < threshold:
                run += 1
                continue
            if run >= 3:
                runs.append(run)
            run = 0
    return float(statistics.median(runs)) if runs else None


def upscale_factor(image: Image.Image) -> float:
    """How much to enlarge the page so that Tesseract reads its text best (1.0: leave it).

    A bitonal page is left alone: enlarged, it only has bigger pixels (measured on 300 dpi book
    scans with small print: slower and no better). Grey text enlarged before Tesseract
    binarises it keeps the strokes its grey edges describe.
    """
    if image.getcolors(2) is not None:
        return 1.0
    x_height = x_height_px(image)
    if x_height is None or x_height >= SMALL_X_HEIGHT_PX:
        return 1.0
    # Bounded so that the enlarged page costs Tesseract no more memory than a large scan.
    largest = math.sqrt(MAX_UPSCALED_PX / (image.width * image.height))
    return max(1.0, min(MAX_UPSCALE, TARGET_X_HEIGHT_PX / x_height, largest))


def enlarge(image: Image.Image, factor: float) -> Image.Image:
    """The page ``factor`` times larger (Lanczos), with its resolution scaled to match."""
    size = (round(image.width * factor), round(image.height * factor))
    enlarged = image.resize(size, Image.Resampling.LANCZOS)
    dpi = image.info.get("dpi")
    if dpi:
        enlarged.info["dpi"] = (dpi[0] * factor, dpi[1] * factor)
    return enlarged


# -- orientation ---------------------------------------------------------------------------------


def densest_window(image: Image.Image, max_pixels: int = SAMPLE_PX) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of at most ``max_pixels``, with the page's proportions,
    holding the most ink: where a sample of the text is read."""
    if image.width * image.height <= max_pixels:
        return (0, 0, image.width, image.height)
    scale = math.sqrt(max_pixels / (image.width * image.height))
    width, height = int(image.width * scale), int(image.height * scale)
    cell = 32
    cols, rows = max(1, image.width // cell), max(1, image.height // cell)
    ink = [255 - v for v in image.resize((cols, rows), Image.Resampling.BOX).tobytes()]
    # Summed-area table over the grid of cells.
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for r in range(rows):
        acc = 0
        for c in range(cols):
            acc += ink[r * cols + c]
            table[r + 1][c + 1] = table[r][c + 1] + acc
    win_cols = max(1, min(cols, width * cols // image.width))
    win_rows = max(1, min(rows, height * rows // image.height))
    best, best_at = -1, (0, 0)
    for r in range(rows - win_rows + 1):
        for c in range(cols - win_cols + 1):
            total = (
                table[r + win_rows][c + win_cols]
                - table[r][c + win_cols]
                - table[r + win_rows][c]
                + table[r][c]
            )
            if total > best:
                best, best_at = total, (r, c)
    top = best_at[0] * image.height // rows
    left = best_at[1] * image.width // cols
    return (left, top, min(image.width, left + width), min(image.height, top + height))


def mean_word_confidence(page: Page, box: tuple[int, int, int, int]) -> float:
    """Mean confidence of the words read wholly inside ``box`` (0 where there are none)."""
    left, top, right, bottom = box
    confidences = [
        word.confidence
        for line in page.lines
        for word in line.words
        if word.bbox.left >= left
        and word.bbox.top >= top
        and word.bbox.right <= right
        and word.bbox.bottom <= bottom
    ]
    return sum(confidences) / len(confidences) if confidences else 0.0


def lines_run_down(page: Page) -> bool:
    """Whether most lines read are taller than wide: Tesseract found the text sideways (it turns
    a page whose lines run top to bottom by itself, and reports boxes on the page as sent)."""
    boxes = [line.bbox for line in page.lines if len(line.words) > 1]
    down = sum(1 for box in boxes if box.height > box.width)
    return bool(boxes) and down * 2 > len(boxes)


def orientation_as_read(read: Page) -> Orientation | None:
    """Which way up a page is, when Tesseract read it confidently as sent: upright, or turned
    clockwise with its lines running down, which Tesseract turned back by itself (the other
    turns read as garbage). None: ask the orientation model and read samples."""
    everything = (0, 0, read.width, read.height)
    if mean_word_confidence(read, everything) >= CONFIDENT_READ:
        return Orientation(90 if lines_run_down(read) else 0, confident=True)
    return None


def turns_to_try(read: Page, osd_says: tuple[int, float] | None) -> list[int]:
    """The turns (clockwise degrees the page was turned) whose undoing a sample is read in,
    given the reading as sent and the orientation model's answer (degrees, confidence); none
    when the page is taken as upright without trying."""
    proposed = osd_says[0] if osd_says and osd_says[1] >= OSD_MIN_CONFIDENCE else None
    if proposed is not None and proposed in UPRIGHT:
        return [proposed]
    if mean_word_confidence(read, (0, 0, read.width, read.height)) >= POOR_READ:
        # Read fairly (turned text reads worse than this) and the model proposes no turn.
        return []
    return list(UPRIGHT)  # neither reading nor the model can tell: read every turn


def choose_turn(
    read: Page, sample_box: tuple[int, int, int, int], scores: dict[int, float]
) -> Orientation:
    """The turn to undo, given the reading as sent and the mean word confidence a sample (at
    ``sample_box``) reads with in each turn tried."""
    as_sent = mean_word_confidence(read, (0, 0, read.width, read.height))
    sample_as_sent = mean_word_confidence(read, sample_box)
    if not scores:
        return Orientation(0, confident=True)
    best = max(scores, key=lambda rotation: scores[rotation])
    if scores[best] >= sample_as_sent + TURN_MARGIN:
        return Orientation(best, confident=True)
    if scores[best] <= sample_as_sent - TURN_MARGIN or as_sent >= POOR_READ:
        return Orientation(0, confident=True)
    return Orientation(
        0,
        confident=False,
        warning=(
            f"could not tell which way up the page is: turned {best} degrees it reads no better "
            f"than as sent (mean word confidence {scores[best]:.0f} against "
            f"{sample_as_sent:.0f}); it was read as sent"
        ),
    )


def turned_further(orientation: Orientation, read: Page) -> Orientation | None:
    """The page read with ``orientation`` undone still has its lines running down: Tesseract
    turned the last 90 degrees itself, and its boxes are not on the upright page. The whole
    turn (to undo and read again), or None when the reading is upright."""
    if not lines_run_down(read):
        return None
    return Orientation(
        (orientation.rotation + 90) % 360, orientation.confident, orientation.warning
    )


# -- enlarged readings ---------------------------------------------------------------------------


def enlarged_modes(asked: int) -> tuple[int, ...]:
    """The page segmentation modes an enlarged page is read in: the one asked, and with the
    automatic one, also as one block of lines."""
    return (asked, PSM_SINGLE_BLOCK) if asked == PSM_AUTO else (asked,)


def more_confident(reading: Page, than: Page) -> bool:
    return (reading.confidence or 0) > (than.confidence or 0)
