"""preprocess=auto's pure steps: the x-height estimate, when text is enlarged, where a sample is
read, results put back in the page's own pixels, and the orientation decision (on small fakes of
Tesseract's reading and orientation model; real Tesseract is in test/integration)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ocr_common.render.hocr import page_hocr
from ocr_common.render.tsv import page_tsv
from ocr_common.result import Block, BoundingBox, Line, Page, Paragraph, Word
from ocr_server import preprocess


def page_of_text(
    font_px: int, *, lines: int = 8, size: tuple[int, int] = (900, 900)
) -> Image.Image:
    """A grey page of lowercase text (with anti-aliased edges) at ``font_px``."""
    font = ImageFont.load_default(size=font_px)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    for index in range(lines):
        draw.text(
            (20, 20 + index * font_px * 2), "the quick brown fox jumps over", fill=0, font=font
        )
    return image


@pytest.mark.parametrize("font_px", [16, 24, 40])
def test_the_x_height_estimate_follows_the_size_of_the_text(font_px: int) -> None:
    # Pillow's default font: an x-height of about half its size.
    estimate = preprocess.x_height_px(page_of_text(font_px))
    assert estimate is not None
    assert 0.4 * font_px <= estimate <= 0.75 * font_px


def test_a_blank_page_has_no_x_height() -> None:
    assert preprocess.x_height_px(Image.new("L", (500, 500), 255)) is None


def test_small_grey_text_is_enlarged_large_text_and_bitonal_pages_are_not() -> None:
    small = page_of_text(20)
    assert preprocess.upscale_factor(small) == preprocess.MAX_UPSCALE
    assert preprocess.upscale_factor(page_of_text(48)) == 1.0
    # The same small text, bitonal (a 300 dpi book scan is): bigger pixels would add nothing.
    assert preprocess.upscale_factor(small.point(lambda v: 0 if v < 128 else 255)) == 1.0


def test_enlarging_is_bounded_by_the_pixels_tesseract_is_given() -> None:
    wide = page_of_text(20, size=(3500, 3500))
    factor = preprocess.upscale_factor(wide)
    assert 1.0 < factor < preprocess.MAX_UPSCALE
    assert (wide.width * factor) * (wide.height * factor) <= preprocess.MAX_UPSCALED_PX * 1.001


def test_enlarge_scales_the_resolution_too() -> None:
    page = page_of_text(20)
    page.info["dpi"] = (150, 150)
    enlarged = preprocess.enlarge(page, 2.0)
    assert enlarged.size == (1800, 1800) and enlarged.info["dpi"] == (300, 300)


def test_the_sample_is_where_the_text_is() -> None:
    page = Image.new("L", (2000, 3000), 255)
    page.paste(page_of_text(30, lines=10, size=(900, 700)), (1000, 2200))
    ink = ImageOps.invert(page).getbbox()
    assert ink is not None
    left, top, right, bottom = preprocess.densest_window(page, max_pixels=1_000_000)
    assert (right - left) * (bottom - top) <= 1_000_000
    # The window holds (nearly) all of the text, not the blank top of the page.
    inside = (min(right, ink[2]) - max(left, ink[0])) * (min(bottom, ink[3]) - max(top, ink[1]))
    assert inside >= 0.9 * (ink[2] - ink[0]) * (ink[3] - ink[1])


def test_a_small_page_is_its_own_sample() -> None:
    assert preprocess.densest_window(Image.new("L", (400, 900), 255)) == (0, 0, 400, 900)


def test_an_enlarged_reading_is_put_back_in_the_page_pixels() -> None:
    box = BoundingBox(left=200, top=100, width=60, height=40)
    line = Line(
        confidence=90.0,
        bbox=box,
        words=[Word(text="hi", confidence=90.0, bbox=box)],
        baseline=(0.01, -8),
        heights=(40.0, 8.0, 10.0),
    )
    block = Block(kind=1, bbox=box, paragraphs=[Paragraph(bbox=box, lang="eng", lines=[line])])
    read = Page(page=1, width=1800, height=1000, dpi=300, blocks=[block])
    out = read.scaled(2.0, 900, 500, 150)
    half = BoundingBox(left=100, top=50, width=30, height=20)
    assert (out.width, out.height, out.dpi) == (900, 500, 150)
    assert out.lines[0].bbox == half and out.lines[0].words[0].bbox == half
    hocr = page_hocr(out)
    assert "bbox 100 50 130 70; baseline 0.01 -4; x_size 20; x_descenders 4; x_ascenders 5" in hocr
    assert "bbox 0 0 900 500; ppageno 0; scan_res 150 150" in hocr
    assert "5\t1\t1\t1\t1\t1\t100\t50\t30\t20\t90.000000\thi\n" in page_tsv(out)


# -- the orientation decision, on readings made up -------------------------------------------------

PAGE = (1300, 900)  # width, height of the page as sent
SAMPLE = (0, 0, *PAGE)  # a page this small is its own sample


def reading(confidence: float, *, down: bool = False) -> Page:
    """A reading of the page: one line of words across it (or, ``down``, lines running down
    it, as Tesseract reports text it turned itself), each word read at ``confidence``."""

    def box(left: int, top: int, width: int, height: int) -> dict[str, int]:
        return {"left": left, "top": top, "width": width, "height": height}

    if down:
        lines = [
            {
                "text": "w w",
                "confidence": confidence,
                "bbox": box(x, 20, 30, 200),
                "words": [
                    {"text": "w", "confidence": confidence, "bbox": box(x, 20 + 100 * n, 30, 80)}
                    for n in range(2)
                ],
            }
            for x in (40, 100, 160)
        ]
    else:
        words = [
            {"text": "w", "confidence": confidence, "bbox": box(x, 40, 80, 30)}
            for x in range(20, PAGE[0] - 100, 100)
        ]
        lines = [
            {"text": "", "confidence": confidence, "bbox": box(20, 40, 1260, 30), "words": words}
        ]
    return Page.model_validate(
        {"page": 1, "width": PAGE[0], "height": PAGE[1], "dpi": None, "lines": lines}
    )


def test_a_page_read_confidently_is_upright_without_asking_the_model() -> None:
    assert preprocess.orientation_as_read(reading(93)) == preprocess.Orientation(0, confident=True)
    # Read well with its lines running down: turned clockwise, Tesseract turned it back.
    turned = preprocess.orientation_as_read(reading(93, down=True))
    assert turned == preprocess.Orientation(90, confident=True)
    assert preprocess.orientation_as_read(reading(68)) is None  # ask the model


def test_a_turn_the_model_proposes_is_not_taken_when_reading_does_not_confirm_it() -> None:
    # receipts/004.jpg in small: upright, read fairly, the model sure it is upside down.
    read = reading(68)
    assert preprocess.turns_to_try(read, (180, 5.1)) == [180]
    assert preprocess.choose_turn(read, SAMPLE, {180: 36}) == preprocess.Orientation(0, True)


def test_an_unsure_model_is_not_asked_to_try_and_a_fair_reading_stays_as_sent() -> None:
    assert preprocess.turns_to_try(reading(68), (180, 1.0)) == []
    assert preprocess.choose_turn(reading(68), SAMPLE, {}) == preprocess.Orientation(0, True)


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_a_turn_the_model_proposes_is_taken_when_the_page_reads_clearly_better(turn: int) -> None:
    read = reading(38)
    assert preprocess.turns_to_try(read, (turn, 12.0)) == [turn]
    assert preprocess.choose_turn(read, SAMPLE, {turn: 92}) == preprocess.Orientation(turn, True)


def test_where_the_model_says_nothing_every_turn_is_read() -> None:
    read = reading(30)
    assert preprocess.turns_to_try(read, None) == [90, 180, 270]
    found = preprocess.choose_turn(read, SAMPLE, {90: 30, 180: 90, 270: 30})
    assert found == preprocess.Orientation(180, confident=True)


def test_an_undecidable_page_is_left_as_sent_and_says_so() -> None:
    found = preprocess.choose_turn(reading(40), SAMPLE, {90: 45, 180: 42, 270: 38})
    assert found.rotation == 0 and not found.confident
    assert found.warning is not None and "which way up" in found.warning
    assert "turned 90 degrees" in found.warning  # the best of the turns read


@pytest.mark.parametrize(("taken", "whole"), [(90, 180), (180, 270), (270, 0)])
def test_a_turn_tesseract_finished_itself_is_counted_in_the_turn_reported(
    taken: int, whole: int
) -> None:
    # Issue 21: a page turned 180 degrees, 90 undone, read well, its lines running down:
    # Tesseract turned the last 90 itself, so the boxes are not on the upright page.
    orientation = preprocess.Orientation(taken, confident=True)
    further = preprocess.turned_further(orientation, reading(95, down=True))
    assert further == preprocess.Orientation(whole, confident=True)
    assert preprocess.turned_further(orientation, reading(95)) is None


# -- enlarged readings -------------------------------------------------------------------------


def test_an_enlarged_page_is_read_as_asked_and_with_the_automatic_mode_as_one_block() -> None:
    assert preprocess.enlarged_modes(preprocess.PSM_AUTO) == (3, 6)
    assert preprocess.enlarged_modes(11) == (11,)
    assert preprocess.more_confident(reading(91), reading(85))
    assert not preprocess.more_confident(reading(84), reading(85))
