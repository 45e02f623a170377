"""The result of a page: one typed model from the engine to the API, and its stored form.

A page holds blocks, a block paragraphs, a paragraph lines, a line words, each with its box (in
pixels of the upright page) and Tesseract's confidence, and what the renderers need: block
kinds, languages, baselines and heights, fonts, the turn applied, warnings. The engine builds
it (``ocr_server/engine.py``), the OCR server's wire and the job store carry it packed
(``PackedPage``: tuples, not objects, a word's box from its line's corner), and every format is
rendered from it when asked (``ocr_common/render``). Its JSON (``model_dump``) is the page as
the v1 API answers it, whose OpenAPI schema this model is: the page's lines and words, with the
rest (blocks, fonts, baselines) left to hOCR, TSV and the other renderings.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_serializer,
    model_validator,
)

# Between the texts of two pages, as the tesseract command line writes them.
PAGE_SEPARATOR = "\f"
# Tesseract's PolyBlockType numbers (tesserocr.PT) of the blocks hOCR draws as an empty box
# without their words (images, rules), and of those whose lines have a class of their own.
DRAWN_KINDS = frozenset((9, 10, 11, 12, 13))
TEXT_KIND = 1  # PT_FLOWING_TEXT


def _example(value: Any) -> ConfigDict:
    return ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [value]})


BOX_EXAMPLE = {"left": 34, "top": 29, "width": 89, "height": 31}
WORD_EXAMPLE = {"text": "Hello", "confidence": 95.98, "bbox": BOX_EXAMPLE}
LINE_EXAMPLE = {
    "text": "Hello OCR",
    "confidence": 96.4,
    "bbox": {"left": 34, "top": 29, "width": 181, "height": 31},
    "words": [
        WORD_EXAMPLE,
        {
            "text": "OCR",
            "confidence": 96.81,
            "bbox": {"left": 135, "top": 30, "width": 80, "height": 30},
        },
    ],
}
PAGE_EXAMPLE = {
    "page": 1,
    "width": 300,
    "height": 110,
    "dpi": None,
    "rotation": 0,
    "rotation_confidence": None,
    "warnings": [],
    "text": "Hello OCR\n",
    "confidence": 96.4,
    "lines": [LINE_EXAMPLE],
}


class BoundingBox(BaseModel):
    """A rectangle in pixels of the (upright) page, from its top-left corner."""

    model_config = _example(BOX_EXAMPLE)

    left: int = Field(ge=0)
    top: int = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    def scaled(self, factor: float) -> BoundingBox:
        """This box on the page ``factor`` times smaller (corners rounded)."""
        left, top = round(self.left / factor), round(self.top / factor)
        return BoundingBox(
            left=left,
            top=top,
            width=round(self.right / factor) - left,
            height=round(self.bottom / factor) - top,
        )


class Word(BaseModel):
    model_config = _example(WORD_EXAMPLE)

    text: str
    # Tesseract's, to the six decimals its TSV writes (the JSON answer rounds it to two).
    confidence: float = Field(ge=0, le=100, description="Tesseract's confidence, 0-100")
    bbox: BoundingBox
    bold: bool = Field(default=False, exclude=True)
    italic: bool = Field(default=False, exclude=True)
    # Its recognition language where it is not its paragraph's (hOCR's lang attribute).
    lang: str | None = Field(default=None, exclude=True)

    @field_serializer("confidence")
    def _rounded(self, confidence: float) -> float:
        return round(confidence, 2)


class Line(BaseModel):
    model_config = _example(LINE_EXAMPLE)

    confidence: float = Field(ge=0, le=100)
    bbox: BoundingBox
    words: list[Word]
    # hOCR's: the baseline (slope, offset from the box's bottom left) of a line not level, or
    # how far (degrees counter-clockwise) Tesseract found the line turned; the heights of its
    # row (x_size, x_descenders, x_ascenders).
    baseline: tuple[float, float] | None = Field(default=None, exclude=True)
    textangle: int | None = Field(default=None, exclude=True)
    heights: tuple[float, float, float] = Field(default=(0.0, 0.0, 0.0), exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words).strip()

    def scaled(self, factor: float) -> Line:
        """This line on the page ``factor`` times smaller."""
        return self.model_copy(
            update={
                "bbox": self.bbox.scaled(factor),
                "words": [
                    word.model_copy(update={"bbox": word.bbox.scaled(factor)})
                    for word in self.words
                ],
                "baseline": None
                if self.baseline is None
                else (self.baseline[0], round(self.baseline[1] / factor)),
                "heights": tuple(float(f"{h / factor:.8g}") for h in self.heights),
            }
        )


class Paragraph(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bbox: BoundingBox
    lang: str | None  # the recognition language of its first word
    lines: list[Line]


class Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: int  # Tesseract's PolyBlockType (tesserocr.PT)
    bbox: BoundingBox  # of a block without words, that of where its line would be
    paragraphs: list[Paragraph]

    @property
    def drawn(self) -> bool:
        """An image or a rule: hOCR draws its box, the text leaves its words out."""
        return self.kind in DRAWN_KINDS


class TesseractOutput(BaseModel):
    """Text, hOCR and TSV as Tesseract wrote them, for a page the model cannot render: one
    with right-to-left text (Tesseract reorders it as it writes), or one stored before the
    model (issue 21) in the old shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    hocr: str
    tsv: str


class Page(BaseModel):
    model_config = _example(PAGE_EXAMPLE)

    page: int = Field(ge=1, description="the page number in the document, from 1")
    width: int = Field(ge=1, description="pixels, after rendering and rotation")
    height: int = Field(ge=1)
    dpi: int | None = Field(description="the resolution the page was read at, when known")
    rotation: Literal[0, 90, 180, 270] = Field(
        default=0,
        description="how far clockwise the page as sent was turned from upright (detected "
        "with preprocess=auto, and undone before reading: boxes are on the upright page)",
    )
    rotation_confidence: Literal["high", "low"] | None = Field(
        default=None,
        description="preprocess=auto: high when reading confirmed which way up the page is, "
        "low when no turn read clearly better and the page was read as sent (see warnings); "
        "null without auto",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what a reader of this page should know, e.g. a low confidence orientation",
    )
    blocks: list[Block] = Field(default_factory=list, exclude=True)
    tesseract: TesseractOutput | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _from_shown(cls, data: Any) -> Any:
        """A page as its JSON shows it, with ``lines`` (the API's answer, a page stored before
        the model) is taken too."""
        if isinstance(data, dict) and "lines" in data and "blocks" not in data:
            return _shown_page_fields(data)
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        """The text as Tesseract's GetUTF8Text writes it: a line a line, an empty line after
        each paragraph, without images and rules; the last newline left off where the page ends
        in a line of text."""
        return self.tesseract.text if self.tesseract is not None else _text(self.blocks)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def confidence(self) -> float | None:
        """The mean word confidence (of the words as the JSON shows them)."""
        shown = [round(word.confidence, 2) for line in self.lines for word in line.words]
        return round(sum(shown) / len(shown), 2) if shown else None

    @computed_field(description="the lines with text, in reading order")  # type: ignore[prop-decorator]
    @property
    def lines(self) -> list[Line]:
        return [
            line.model_copy(update={"words": words})
            for block in self.blocks
            for paragraph in block.paragraphs
            for line in paragraph.lines
            if (words := [word for word in line.words if word.text.strip()])
        ]

    def scaled(self, factor: float, width: int, height: int, dpi: int | None) -> Page:
        """This page read ``factor`` times larger, on the page of ``width`` x ``height``."""

        def block(b: Block) -> Block:
            return b.model_copy(
                update={
                    "bbox": b.bbox.scaled(factor),
                    "paragraphs": [
                        p.model_copy(
                            update={
                                "bbox": p.bbox.scaled(factor),
                                "lines": [line.scaled(factor) for line in p.lines],
                            }
                        )
                        for p in b.paragraphs
                    ],
                }
            )

        return self.model_copy(
            update={
                "width": width,
                "height": height,
                "dpi": dpi if self.dpi else None,
                "blocks": [block(b) for b in self.blocks],
            }
        )


def document_text(pages: Sequence[Page | PackedPage]) -> str:
    """The text of a document: its pages' in order, each ended by a form feed but the last."""
    return PAGE_SEPARATOR.join(p.text if isinstance(p, Page) else packed_text(p) for p in pages)


def _text(blocks: Sequence[Block] | Sequence[PackedBlock]) -> str:
    out = [
        "".join(" ".join(word.text for word in line.words) + "\n" for line in paragraph.lines)
        + "\n"
        for block in blocks
        if block.kind not in DRAWN_KINDS
        for paragraph in block.paragraphs
    ]
    text = "".join(out)
    ends_in_text = bool(blocks) and blocks[-1].kind not in DRAWN_KINDS
    return text[:-1] if ends_in_text and blocks[-1].paragraphs else text


# -- packed: the form the engine builds, the pipe, the wire and the job store carry -----------
#
# Tuples, not models: the engine's walk of Tesseract's words builds them (a pydantic object a
# word cost more than the walk's calls to Tesseract), they pickle several times faster, and
# their JSON is arrays: a word's box from its line's corner. The page is a JSON object with a
# version. Stored, the pages' list is compressed (zlib): a 300 dpi book page's is about 5 KB.

PACKED_VERSION = 2


class PackedWord(NamedTuple):
    text: str
    left: int  # from its line's left
    top: int  # from its line's top
    width: int
    height: int
    confidence: float
    flags: int = 0  # 1 bold, 2 italic (stored before: left off when 0)
    lang: str | None = None


class PackedLine(NamedTuple):
    left: int
    top: int
    width: int
    height: int
    confidence: float
    baseline: tuple[float, float] | None
    textangle: int | None
    heights: tuple[float, float, float]
    words: list[PackedWord]


class PackedParagraph(NamedTuple):
    lang: str | None
    left: int
    top: int
    width: int
    height: int
    lines: list[PackedLine]


class PackedBlock(NamedTuple):
    kind: int
    left: int
    top: int
    width: int
    height: int
    paragraphs: list[PackedParagraph]


class PackedPage(TypedDict):
    v: int  # PACKED_VERSION
    page: int
    size: tuple[int, int]
    dpi: int | None
    blocks: list[PackedBlock]
    turn: NotRequired[tuple[Literal[0, 90, 180, 270], Literal["high", "low"] | None, list[str]]]
    tesseract: NotRequired[tuple[str, str, str]]  # text, hOCR, TSV


def pack_page(page: Page) -> PackedPage:
    packed = PackedPage(
        v=PACKED_VERSION,
        page=page.page,
        size=(page.width, page.height),
        dpi=page.dpi,
        blocks=[
            PackedBlock(
                block.kind,
                *_box(block.bbox),
                [
                    PackedParagraph(p.lang, *_box(p.bbox), list(map(_pack_line, p.lines)))
                    for p in block.paragraphs
                ],
            )
            for block in page.blocks
        ],
    )
    if page.rotation or page.rotation_confidence or page.warnings:
        packed["turn"] = (page.rotation, page.rotation_confidence, page.warnings)
    if page.tesseract is not None:
        packed["tesseract"] = (page.tesseract.text, page.tesseract.hocr, page.tesseract.tsv)
    return packed


def unpack_page(packed: PackedPage) -> Page:
    """The page ``pack_page`` packed, or its JSON."""
    rotation, rotation_confidence, warnings = packed.get("turn") or (0, None, [])
    tesseract = packed.get("tesseract")
    return Page(
        page=packed["page"],
        width=packed["size"][0],
        height=packed["size"][1],
        dpi=packed["dpi"],
        rotation=rotation,
        rotation_confidence=rotation_confidence,
        warnings=warnings,
        blocks=[
            Block(
                kind=kind,
                bbox=_unbox(left, top, width, height),
                paragraphs=[
                    Paragraph(lang=p[0], bbox=_unbox(*p[1:5]), lines=list(map(_unpack_line, p[5])))
                    for p in paragraphs
                ],
            )
            for kind, left, top, width, height, paragraphs in packed["blocks"]
        ],
        tesseract=None
        if tesseract is None
        else TesseractOutput(text=tesseract[0], hocr=tesseract[1], tsv=tesseract[2]),
    )


def packed_text(packed: PackedPage) -> str:
    """``Page.text`` of the page as the engine packed it (its tuples, not their JSON)."""
    return packed["tesseract"][0] if "tesseract" in packed else _text(packed["blocks"])


def page_from_json(data: Any) -> Page:
    """A page from its packed form's JSON, or from the JSON of a page in the old shape."""
    return unpack_page(data) if data.get("v") == PACKED_VERSION else Page.model_validate(data)


def _box(box: BoundingBox) -> tuple[int, int, int, int]:
    return box.left, box.top, box.width, box.height


def _pack_line(line: Line) -> PackedLine:
    left, top = line.bbox.left, line.bbox.top
    return PackedLine(
        *_box(line.bbox),
        line.confidence,
        line.baseline,
        line.textangle,
        line.heights,
        [
            PackedWord(
                w.text,
                w.bbox.left - left,
                w.bbox.top - top,
                w.bbox.width,
                w.bbox.height,
                round(w.confidence, 6),
                w.bold | w.italic << 1,
                w.lang,
            )
            for w in line.words
        ],
    )


def _unbox(left: int, top: int, width: int, height: int) -> BoundingBox:
    return BoundingBox(left=left, top=top, width=width, height=height)


def _unpack_line(packed: PackedLine) -> Line:
    left, top, width, height, confidence, baseline, textangle, heights, words = packed
    return Line(
        bbox=_unbox(left, top, width, height),
        confidence=confidence,
        baseline=None if baseline is None else (baseline[0], baseline[1]),
        textangle=textangle,
        heights=(heights[0], heights[1], heights[2]),
        words=[
            Word(
                text=w.text,
                bbox=_unbox(left + w.left, top + w.top, w.width, w.height),
                confidence=w.confidence,
                bold=bool(w.flags & 1),
                italic=bool(w.flags & 2),
                lang=w.lang,
            )
            # A word's JSON is a list, and one stored before had no flags nor lang.
            for w in (PackedWord(*word) for word in words)
        ],
    )


def store_pages(pages: Sequence[PackedPage]) -> bytes:
    """What the job store keeps of a document's pages (packed as the engine built them)."""
    packed = json.dumps(pages, ensure_ascii=False, separators=(",", ":"))
    return zlib.compress(packed.encode(), 6)


def stored_pages(data: bytes) -> list[Page]:
    """The pages ``store_pages`` kept."""
    return [page_from_json(page) for page in json.loads(zlib.decompress(data))]


# -- the old shape: results stored before issue 21 ---------------------------------------------


def legacy_pages(result: str) -> list[Page]:
    """The pages of a result stored before the model (the ``result`` column's JSON
    ``{"text", "pages"}``): they read the same in every format as they did."""
    return [Page.model_validate(page) for page in json.loads(result).get("pages") or []]


def _shown_page_fields(page: dict[str, Any]) -> dict[str, Any]:
    """The fields of a page given as its JSON shows it (the API's answer; or a page stored
    before the model, which kept Tesseract's ``hocr`` and ``tsv`` beside it): its lines make
    one block, and its text (hOCR, TSV) is kept as it was written."""
    lines = [
        Line(
            confidence=line["confidence"],
            bbox=BoundingBox(**line["bbox"]),
            words=[
                Word(text=w["text"], confidence=w["confidence"], bbox=BoundingBox(**w["bbox"]))
                for w in line["words"]
            ],
        )
        for line in page["lines"]
    ]
    whole = BoundingBox(left=0, top=0, width=page["width"], height=page["height"])
    paragraph = Paragraph(bbox=whole, lang=None, lines=lines)
    return {
        "page": page["page"],
        "width": page["width"],
        "height": page["height"],
        "dpi": page.get("dpi"),
        "rotation": page.get("rotation") or 0,
        "rotation_confidence": page.get("rotation_confidence"),
        "warnings": page.get("warnings") or [],
        "blocks": [Block(kind=TEXT_KIND, bbox=whole, paragraphs=[paragraph])] if lines else [],
        "tesseract": TesseractOutput(
            text=page.get("text", ""), hocr=page.get("hocr", ""), tsv=page.get("tsv", "")
        ),
    }
