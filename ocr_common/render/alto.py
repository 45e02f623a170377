"""ALTO XML of a document's pages: the bytes Tesseract's own ALTO renderer (TessAltoRenderer,
altorenderer.cpp in Tesseract 5) writes for the same pages, made from the page model.

Each page is a ``Page`` of a ``PrintSpace`` holding, per block, a ``ComposedBlock`` of
``TextBlock`` (a paragraph), ``TextLine`` and ``String`` elements (with ``SP`` between the words
of a line), each with its box in pixels; an image block is an ``Illustration``, a rule a
``GraphicalElement``, when Tesseract found words in them (empty ones it leaves out). IDs count
from 0 on each page, and carry the page's number from the second page of a document on.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..result import BoundingBox, Page

MEDIA_TYPE = "application/xml"
NAMESPACE = "http://www.loc.gov/standards/alto/ns-v3#"
# Tesseract's PolyBlockType numbers (tesserocr.PT): images, and horizontal and vertical rules.
_ILLUSTRATIONS = frozenset((9, 10, 11))
_RULES = frozenset((12, 13))
# Tesseract's HOcrEscape, which its ALTO renderer uses too.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


def render_alto(pages: Sequence[Page], tesseract_version: str = "", file_name: str = "") -> str:
    """One ALTO document of every page, as ``tesseract ... alto`` writes it."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alto xmlns="{NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{NAMESPACE} http://www.loc.gov/alto/v3/alto-3-0.xsd">\n'
        "\t<Description>\n"
        "\t\t<MeasurementUnit>pixel</MeasurementUnit>\n"
        "\t\t<sourceImageInformation>\n"
        f"\t\t\t<fileName>{file_name.translate(_ESCAPES)}</fileName>\n"
        "\t\t</sourceImageInformation>\n"
        '\t\t<OCRProcessing ID="OCR_0">\n'
        "\t\t\t<ocrProcessingStep>\n"
        "\t\t\t\t<processingSoftware>\n"
        "\t\t\t\t\t<softwareName>Tesseract</softwareName>\n"
        f"\t\t\t\t\t<softwareVersion>{tesseract_version.translate(_ESCAPES)}</softwareVersion>\n"
        "\t\t\t\t</processingSoftware>\n"
        "\t\t\t</ocrProcessingStep>\n"
        "\t\t</OCRProcessing>\n"
        "\t</Description>\n"
        "\t<Layout>\n"
    )
    body = "".join(page_alto(page, page.page - 1) for page in pages)
    return head + body + "\t</Layout>\n</alto>\n"


def _box(box: BoundingBox) -> str:
    return f' HPOS="{box.left}" VPOS="{box.top}" WIDTH="{box.width}" HEIGHT="{box.height}"'


def page_alto(page: Page, number: int) -> str:
    """The ``Page`` element of one page, as Tesseract's GetAltoText(``number``) writes it."""

    def ident(prefix: str, count: int) -> str:
        return f"{prefix}_{count}" if number == 0 else f"{prefix}_{number}_{count}"

    out = [
        f'\t\t<Page WIDTH="{page.width}" HEIGHT="{page.height}" PHYSICAL_IMG_NR="{number}" '
        f'ID="page_{number}">\n'
        f'\t\t\t<PrintSpace HPOS="0" VPOS="0" WIDTH="{page.width}" HEIGHT="{page.height}">\n'
    ]
    blocks = texts = lines = strings = 0
    for block in page.blocks:
        if not any(line.words for paragraph in block.paragraphs for line in paragraph.lines):
            continue  # Tesseract's walk is word by word: a block without one is not seen
        if block.kind in _ILLUSTRATIONS or block.kind in _RULES:
            tag, end = (
                ("Illustration", "</Illustration>")
                if block.kind in _ILLUSTRATIONS
                else ("GraphicalElement", "</GraphicalElement >")
            )
            out.append(f'\t\t\t\t<{tag} ID="{ident("cblock", blocks)}"{_box(block.bbox)}>{end}\n')
            blocks += 1
            continue
        out.append(f'\t\t\t\t<ComposedBlock ID="{ident("cblock", blocks)}"{_box(block.bbox)}>\n')
        for paragraph in block.paragraphs:
            if not any(line.words for line in paragraph.lines):
                continue
            out.append(
                f'\t\t\t\t\t<TextBlock ID="{ident("block", texts)}"{_box(paragraph.bbox)}>\n'
            )
            for line in paragraph.lines:
                if not line.words:
                    continue
                out.append(f'\t\t\t\t\t\t<TextLine ID="{ident("line", lines)}"{_box(line.bbox)}>\n')
                for index, word in enumerate(line.words):
                    box = word.bbox
                    out.append(
                        f'\t\t\t\t\t\t\t<String ID="{ident("string", strings)}"{_box(box)} '
                        f'WC="{int(word.confidence) / 100:.2f}" '
                        f'CONTENT="{word.text.translate(_ESCAPES)}"/>'
                    )
                    strings += 1
                    if index + 1 < len(line.words):
                        after = line.words[index + 1].bbox.left - box.right
                        out.append(f'<SP WIDTH="{after}" VPOS="{box.top}" HPOS="{box.right}"/>\n')
                out.append("\n\t\t\t\t\t\t</TextLine>\n")
                lines += 1
            out.append("\t\t\t\t\t</TextBlock>\n")
            texts += 1
        out.append("\t\t\t\t</ComposedBlock>\n")
        blocks += 1
    out.append("\t\t\t</PrintSpace>\n\t\t</Page>\n")
    return "".join(out)
