"""preprocess=auto's pure steps: the x-height estimate, when text is enlarged, where a sample is
read, results put back in the page's own pixels, and the orientation decision (on small fakes of
Tesseract's reading and orientation model; real Tesseract is in test/integration)."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ocr_common.render.hocr import page_hocr
from ocr_common.render.tsv import page_tsv
from ocr_common.result import Block, BoundingBox, Line, Page, Paragraph, Word
from ocr_server import preprocess
from ocr_testkit.pages import ORIENTATION_LINES, render_page_image


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


# -- the orientation decision, on fakes ----------------------------------------------------------

MARK = (3, 3)  # a black dot near the upright page's top-left corner: the fakes see the turn by it


def marked_page() -> Image.Image:
    page = render_page_image(ORIENTATION_LINES, width=1300)
    page.putpixel(MARK, 0)
    return page


def turn_of(image: Image.Image) -> int:
    """How far clockwise ``image`` is turned from the marked upright page, by where the dot is."""
    right, bottom = image.width - 1 - MARK[0], image.height - 1 - MARK[1]
    corners = {
        0: (MARK[0], MARK[1]),
        90: (image.width - 1 - MARK[1], MARK[0]),
        180: (right, bottom),
        270: (MARK[1], image.height - 1 - MARK[0]),
    }
    return next(turn for turn, at in corners.items() if image.getpixel(at) == 0)


class FakeReader:
    """Tesseract reading: the mean word confidence it gives each turn of the page."""

    def __init__(self, confidence_by_turn: dict[int, float]) -> None:
        self.confidence_by_turn = confidence_by_turn
        self.reads: list[int] = []
        self._image: Image.Image | None = None

    def SetImageBytes(self, data: bytes, width: int, height: int, *_: Any) -> None:  # noqa: N802
        self._image = Image.frombytes("L", (width, height), data)

    def Recognize(self) -> bool:  # noqa: N802
        return True

    def AllWordConfidences(self) -> list[int]:  # noqa: N802
        assert self._image is not None
        turn = turn_of(self._image)
        self.reads.append(turn)
        return [round(self.confidence_by_turn[turn])] * 5

    def Clear(self) -> None:  # noqa: N802
        self._image = None


class FakeOsd:
    """Tesseract's orientation model: a fixed answer, or too little text (RuntimeError)."""

    def __init__(self, answer: tuple[int, float] | None) -> None:
        self.answer = answer
        self.asked = 0

    def SetImageBytes(self, *_: Any) -> None:  # noqa: N802
        pass

    def DetectOrientationScript(self) -> dict[str, Any]:  # noqa: N802
        self.asked += 1
        if self.answer is None:
            raise RuntimeError("Too few characters")
        return {"orient_deg": self.answer[0], "orient_conf": self.answer[1]}

    def Clear(self) -> None:  # noqa: N802
        pass


def read_as_sent(image: Image.Image, confidence: float) -> Page:
    """A first reading of the page as sent: one line of words over the page."""
    words = [
        {
            "text": "w",
            "confidence": confidence,
            "bbox": {"left": x, "top": 40, "width": 80, "height": 30},
        }
        for x in range(20, image.width - 100, 100)
    ]
    box = {"left": 20, "top": 40, "width": image.width - 40, "height": 30}
    line = {"text": "", "confidence": confidence, "bbox": box, "words": words}
    return Page.model_validate(
        {"page": 1, "width": image.width, "height": image.height, "dpi": None, "lines": [line]}
    )


def test_a_page_read_confidently_is_upright_without_asking_the_model() -> None:
    page, osd = marked_page(), FakeOsd((180, 9.0))
    reader = FakeReader({0: 93, 90: 35, 180: 35, 270: 35})
    found = preprocess.check_orientation(page, read_as_sent(page, 93), reader, osd)
    assert found == preprocess.Orientation(0, confident=True)
    assert osd.asked == 0 and reader.reads == []


def test_a_turn_the_model_proposes_is_not_taken_when_reading_does_not_confirm_it() -> None:
    # receipts/004.jpg in small: upright, read fairly, the model sure it is upside down.
    page, osd = marked_page(), FakeOsd((180, 5.1))
    reader = FakeReader({0: 68, 90: 40, 180: 36, 270: 40})
    found = preprocess.check_orientation(page, read_as_sent(page, 68), reader, osd)
    assert found == preprocess.Orientation(0, confident=True)
    assert reader.reads == [180]


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_a_turn_the_model_proposes_is_taken_when_the_page_reads_clearly_better(turn: int) -> None:
    turned = marked_page().rotate(-turn, expand=True)  # PIL turns counter-clockwise
    assert turn_of(turned) == turn
    # Each reading confidence is for the image the fake is shown: upright reads well.
    osd = FakeOsd((turn, 12.0))
    reader = FakeReader({0: 92, 90: 38, 180: 38, 270: 38})
    found = preprocess.check_orientation(turned, read_as_sent(turned, 38), reader, osd)
    assert found == preprocess.Orientation(turn, confident=True)


def test_where_the_model_says_nothing_every_turn_is_read() -> None:
    turned = marked_page().rotate(-180, expand=True)
    osd = FakeOsd(None)
    reader = FakeReader({0: 90, 90: 30, 180: 30, 270: 30})
    found = preprocess.check_orientation(turned, read_as_sent(turned, 30), reader, osd)
    assert found == preprocess.Orientation(180, confident=True)
    assert sorted(reader.reads) == [0, 90, 270]  # each candidate turn, undone on the sample


def test_an_undecidable_page_is_left_as_sent_and_says_so() -> None:
    page, osd = marked_page(), FakeOsd(None)
    reader = FakeReader({0: 40, 90: 45, 180: 42, 270: 38})
    found = preprocess.check_orientation(page, read_as_sent(page, 40), reader, osd)
    assert found.rotation == 0 and not found.confident
    assert found.warning is not None and "which way up" in found.warning
    assert "turned 270 degrees" in found.warning  # the best of the turns read


# -- the whole of auto, on a fake reading --------------------------------------------------------


class FakePsmApi:
    """The page segmentation mode of a tesserocr API, as read_auto sets and restores it."""

    def __init__(self, psm: int) -> None:
        self.psm = psm

    def GetPageSegMode(self) -> int:  # noqa: N802
        return self.psm

    def SetPageSegMode(self, psm: int) -> None:  # noqa: N802
        self.psm = psm


def fake_read(api: FakePsmApi, confidence: dict[tuple[int, int], float], log: list[Any]) -> Any:
    """A reading whose confidence depends on the image width and the mode it is read with."""

    def read(image: Image.Image) -> Page:
        log.append((image.width, api.psm))
        value = confidence[(image.width, api.psm)]
        box = {"left": 10, "top": 10, "width": 40, "height": 20}
        word = {"text": "w", "confidence": value, "bbox": box}
        shown = {
            "page": 1,
            "width": image.width,
            "height": image.height,
            "dpi": None,
            "confidence": value,
            "text": f"read {image.width} psm {api.psm}",
            "lines": [{"text": "w", "confidence": value, "bbox": box, "words": [word]}],
        }
        return Page.model_validate(shown)

    return read


def test_small_text_is_read_enlarged_each_way_and_the_most_confident_reading_kept() -> None:
    page = page_of_text(20)  # 900 px wide, enlarged twice: 1800
    api, log = FakePsmApi(3), []
    confidence = {(900, 3): 85.0, (1800, 3): 88.0, (1800, 6): 91.0}
    result = preprocess.read_auto(page, fake_read(api, confidence, log), api, FakeOsd(None))
    assert log == [(900, 3), (1800, 3), (1800, 6)]
    assert result.text == "read 1800 psm 6" and api.psm == 3
    # The kept reading is given in the page's own pixels.
    assert (result.width, result.lines[0].bbox.width) == (900, 20)
    assert (result.rotation, result.rotation_confidence, result.warnings) == (
        0,
        "high",
        [],
    )


def test_an_enlarged_reading_no_more_confident_is_dropped_and_an_asked_psm_is_kept() -> None:
    api, log = FakePsmApi(11), []
    confidence = {(900, 11): 85.0, (1800, 11): 84.0}
    result = preprocess.read_auto(
        page_of_text(20), fake_read(api, confidence, log), api, FakeOsd(None)
    )
    assert log == [(900, 11), (1800, 11)]
    assert result.text == "read 900 psm 11" and api.psm == 11
