"""The result of a page: one typed model from the engine to the API, and its stored form.

A page holds blocks, a block paragraphs, a paragraph lines, a line words, each with its box (in
pixels of the upright page) and Tesseract's confidence, and what the renderers need: block
kinds, languages, baselines and heights, fonts, the turn applied, warnings. The engine builds
it (``ocr_server/engine.py``), the OCR server's wire and the job store carry it packed
(``pack_page``: arrays, not objects, a word's box from its line's corner), and every format is
rendered from it when asked (``ocr_common/render``). Its JSON (``model_dump``) is the page as
the v1 API answers it, whose OpenAPI schema this model is: the page's lines and words, with the
rest (blocks, fonts, baselines) left to hOCR, TSV and the other renderings.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

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

    @classmethod
    def of(cls, corners: tuple[int, int, int, int]) -> BoundingBox:
        """The box of Tesseract's (left, top, right, bottom)."""
        left, top, right, bottom = corners
        return cls(left=left, top=top, width=right - left, height=bottom - top)

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
        if self.tesseract is not None:
            return self.tesseract.text
        out = [
            "".join(" ".join(word.text for word in line.words) + "\n" for line in paragraph.lines)
            + "\n"
            for block in self.blocks
            if not block.drawn
            for paragraph in block.paragraphs
        ]
        text = "".join(out)
        ends_in_text = bool(self.blocks) and not self.blocks[-1].drawn
        return text[:-1] if ends_in_text and self.blocks[-1].paragraphs else text

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
            for line in self.all_lines()
            if (words := [word for word in line.words if word.text.strip()])
        ]

    def all_lines(self) -> Iterator[Line]:
        for block in self.blocks:
            for paragraph in block.paragraphs:
                yield from paragraph.lines

    def words(self) -> Iterator[Word]:
        for line in self.all_lines():
            yield from line.words

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


def document_text(pages: Sequence[Page]) -> str:
    """The text of a document: its pages' in order, each ended by a form feed but the last."""
    return PAGE_SEPARATOR.join(page.text for page in pages)


# -- packed: the form the wire carries and the job store keeps ------------------------------------
#
# A page is a JSON object of its header and its blocks as arrays:
#   block     [kind, left, top, width, height, paragraphs]
#   paragraph [lang, left, top, width, height, lines]
#   line      [left, top, width, height, confidence, baseline, textangle, heights, words]
#   word      [text, left - line's left, top - line's top, width, height, confidence, (flags,
#              (lang))] with flags 1 bold, 2 italic.
# Stored, the pages' list is compressed (zlib): a 300 dpi book page's is about 5 KB.

PACKED_VERSION = 2
# A page packed: what ``unpack_page`` takes back (JSON types only).
PackedPage = dict[str, Any]


def pack_page(page: Page) -> PackedPage:
    packed: dict[str, Any] = {
        "v": PACKED_VERSION,
        "page": page.page,
        "size": [page.width, page.height],
        "dpi": page.dpi,
        "blocks": [_pack_block(block) for block in page.blocks],
    }
    if page.rotation or page.rotation_confidence or page.warnings:
        packed["turn"] = [page.rotation, page.rotation_confidence, page.warnings]
    if page.tesseract is not None:
        packed["tesseract"] = [page.tesseract.text, page.tesseract.hocr, page.tesseract.tsv]
    return packed


def unpack_page(packed: PackedPage) -> Page:
    if packed.get("v") != PACKED_VERSION:
        return Page.model_validate(packed)  # a page in the old shape
    turn: list[Any] = packed.get("turn") or [0, None, []]
    rotation, rotation_confidence, warnings = turn
    tesseract = packed.get("tesseract")
    return Page(
        page=packed["page"],
        width=packed["size"][0],
        height=packed["size"][1],
        dpi=packed["dpi"],
        rotation=rotation,
        rotation_confidence=rotation_confidence,
        warnings=warnings,
        blocks=[_unpack_block(block) for block in packed["blocks"]],
        tesseract=None
        if tesseract is None
        else TesseractOutput(text=tesseract[0], hocr=tesseract[1], tsv=tesseract[2]),
    )


def _box(box: BoundingBox) -> list[int]:
    return [box.left, box.top, box.width, box.height]


def _pack_block(block: Block) -> list[Any]:
    return [block.kind, *_box(block.bbox), [_pack_paragraph(p) for p in block.paragraphs]]


def _pack_paragraph(paragraph: Paragraph) -> list[Any]:
    return [paragraph.lang, *_box(paragraph.bbox), [_pack_line(line) for line in paragraph.lines]]


def _pack_line(line: Line) -> list[Any]:
    left, top = line.bbox.left, line.bbox.top
    return [
        *_box(line.bbox),
        line.confidence,
        None if line.baseline is None else list(line.baseline),
        line.textangle,
        list(line.heights),
        [_pack_word(word, left, top) for word in line.words],
    ]


def _pack_word(word: Word, left: int, top: int) -> list[Any]:
    box = word.bbox
    packed: list[Any] = [
        word.text,
        box.left - left,
        box.top - top,
        box.width,
        box.height,
        round(word.confidence, 6),
    ]
    flags = word.bold | word.italic << 1
    if flags or word.lang:
        packed.append(flags)
    if word.lang:
        packed.append(word.lang)
    return packed


def _unbox(values: Sequence[int]) -> BoundingBox:
    return BoundingBox(left=values[0], top=values[1], width=values[2], height=values[3])


def _unpack_block(packed: list[Any]) -> Block:
    return Block(
        kind=packed[0],
        bbox=_unbox(packed[1:5]),
        paragraphs=[
            Paragraph(lang=p[0], bbox=_unbox(p[1:5]), lines=[_unpack_line(line) for line in p[5]])
            for p in packed[5]
        ],
    )


def _unpack_line(packed: list[Any]) -> Line:
    left, top = packed[0], packed[1]
    words = []
    for w in packed[8]:
        flags = w[6] if len(w) > 6 else 0
        words.append(
            Word(
                text=w[0],
                bbox=BoundingBox(left=left + w[1], top=top + w[2], width=w[3], height=w[4]),
                confidence=w[5],
                bold=bool(flags & 1),
                italic=bool(flags & 2),
                lang=w[7] if len(w) > 7 else None,
            )
        )
    return Line(
        bbox=_unbox(packed[0:4]),
        confidence=packed[4],
        baseline=None if packed[5] is None else tuple(packed[5]),
        textangle=packed[6],
        heights=tuple(packed[7]),
        words=words,
    )


def store_pages(pages: Sequence[Page]) -> bytes:
    """What the job store keeps of a document's pages."""
    packed = json.dumps(
        [pack_page(page) for page in pages], ensure_ascii=False, separators=(",", ":")
    )
    return zlib.compress(packed.encode(), 6)


def stored_pages(data: bytes) -> list[Page]:
    """The pages ``store_pages`` kept."""
    return [unpack_page(page) for page in json.loads(zlib.decompress(data))]


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
