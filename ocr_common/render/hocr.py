"""Tesseract's hOCR (``tesseract ... hocr``, GetHOCRText), byte for byte, from the pages."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ocr_common.result import BoundingBox, Line, Page, Word

MEDIA_TYPE = "application/xhtml+xml"
# The characters Tesseract escapes (HOcrEscape); the class of a drawn block (tesserocr.PT:
# images, rules); the blocks whose lines have a class of their own (heading, pull-out, caption).
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})
_DRAWN_CLASS = dict.fromkeys((9, 10, 11), "ocr_photo") | dict.fromkeys((12, 13), "ocr_separator")
_LINE_CLASS = {2: "ocr_header", 3: "ocr_textfloat", 8: "ocr_caption"}
# The resolution Tesseract reads at, and says, when it is given none in this range.
_MIN_CREDIBLE_DPI, _MAX_CREDIBLE_DPI = 70, 2400


def render_hocr(pages: Sequence[Page], tesseract_version: str = "tesseract") -> str:
    """One XHTML hOCR document of every page."""
    body = "".join(page_hocr(page) for page in pages)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        " <head>\n"
        "  <title></title>\n"
        '  <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>\n'
        f'  <meta name="ocr-system" content="{escape(tesseract_version)}"/>\n'
        '  <meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_par ocr_line '
        'ocrx_word ocrp_wconf"/>\n'
        " </head>\n"
        " <body>\n"
        f"{body}"
        " </body>\n"
        "</html>\n"
    )


def page_hocr(page: Page) -> str:
    """A page's ``ocr_page`` element, as Tesseract writes it for page ``page.page - 1``."""
    if page.tesseract is not None:
        return page.tesseract.hocr
    n, dpi = page.page, page.dpi
    res = dpi if dpi and _MIN_CREDIBLE_DPI <= dpi <= _MAX_CREDIBLE_DPI else _MIN_CREDIBLE_DPI
    out = [
        f"  <div class='ocr_page' id='page_{n}' title='image \"unknown\"; bbox 0 0 {page.width} "
        f"{page.height}; ppageno {n - 1}; scan_res {res} {res}'>\n"
    ]
    ids = [0, 0, 0, 0]  # blocks, paragraphs, lines, words so far
    for block in page.blocks:
        if block.drawn:
            ids[0] += 1
            box = block.paragraphs[0].lines[0].bbox if block.paragraphs else block.bbox
            out.append(
                f"   <div class='{_DRAWN_CLASS[block.kind]}' id='block_{n}_{ids[0]}' "
                f'title="{_bbox(box)}"></div>\n'
            )
            continue
        if not block.paragraphs:
            continue
        ids[0] += 1
        out.append(
            f"   <div class='ocr_carea' id='block_{n}_{ids[0]}' title=\"{_bbox(block.bbox)}\">"
        )
        line_class = _LINE_CLASS.get(block.kind, "ocr_line")
        for paragraph in block.paragraphs:
            ids[1] += 1
            lang = f" lang='{paragraph.lang}'" if paragraph.lang else ""
            out.append(
                f"\n    <p class='ocr_par' id='par_{n}_{ids[1]}'{lang} "
                f'title="{_bbox(paragraph.bbox)}">'
            )
            for line in paragraph.lines:
                ids[2] += 1
                out.append(
                    f"\n     <span class='{line_class}' id='line_{n}_{ids[2]}' "
                    f'title="{_bbox(line.bbox)}{_line_title(line)}">'
                )
                for word in line.words:
                    ids[3] += 1
                    out.append(_word(word, f"word_{n}_{ids[3]}"))
                out.append("\n     </span>")
            out.append("\n    </p>\n")
        out.append("   </div>\n")
    out.append("  </div>\n")
    return "".join(out)


def _bbox(box: BoundingBox) -> str:
    return f"bbox {box.left} {box.top} {box.right} {box.bottom}"


def _line_title(line: Line) -> str:
    """What hOCR says of a line after its box: its baseline (or how it is turned) and heights."""
    title = ""
    if line.textangle is not None:
        title = f"; textangle {line.textangle}"
    elif line.baseline is not None:
        title = f"; baseline {line.baseline[0]:.8g} {line.baseline[1]:.8g}"
    size, descenders, ascenders = line.heights
    return f"{title}; x_size {size:.8g}; x_descenders {descenders:.8g}; x_ascenders {ascenders:.8g}"


def _word(word: Word, ident: str) -> str:
    body = word.text.translate(_ESCAPES)
    if word.italic:
        body = f"<em>{body}</em>"
    if word.bold:
        body = f"<strong>{body}</strong>"
    lang = f" lang='{word.lang}'" if word.lang else ""
    return (
        f"\n      <span class='ocrx_word' id='{ident}' title='{_bbox(word.bbox)}; "
        f"x_wconf {int(word.confidence)}'{lang}>{body}</span>"
    )
