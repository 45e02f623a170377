"""A document's OCR result: its pages put together, and the text, hOCR and TSV made from it.

The engine gives one page at a time (``TesseractEngine.recognize_page``); the result stored for
a job, and answered by the API, is ``{"text": ..., "pages": [...]}`` with each page's hOCR and
TSV kept beside its lines so that ``?format=hocr|tsv`` answers Tesseract's own output.
"""

from __future__ import annotations

from html import escape
from typing import Any

# Between the texts of two pages, as the tesseract command line writes them.
PAGE_SEPARATOR = "\f"
TSV_HEADER = "\t".join(
    [
        "level",
        "page_num",
        "block_num",
        "par_num",
        "line_num",
        "word_num",
        "left",
        "top",
        "width",
        "height",
        "conf",
        "text",
    ]
)
# Keys of a page that only the hOCR and TSV renderings need.
RAW_KEYS = ("hocr", "tsv")


def combine_pages(pages: list[dict[str, Any]]) -> dict[str, Any]:
    """The document result from its pages' results, in page order."""
    ordered = sorted(pages, key=lambda page: int(page["page"]))
    return {
        "text": PAGE_SEPARATOR.join(str(page["text"]) for page in ordered),
        "pages": ordered,
    }


def public_result(result: dict[str, Any]) -> dict[str, Any]:
    """The result as the JSON format shows it: without the raw hOCR and TSV of each page."""
    return {
        "text": result["text"],
        "pages": [
            {key: value for key, value in page.items() if key not in RAW_KEYS}
            for page in result["pages"]
        ],
    }


def to_tsv(result: dict[str, Any]) -> str:
    """Tesseract's TSV of every page, under one header line."""
    return TSV_HEADER + "\n" + "".join(str(page.get("tsv", "")) for page in result["pages"])


def to_hocr(result: dict[str, Any], tesseract_version: str = "tesseract") -> str:
    """One XHTML hOCR document holding Tesseract's hOCR of every page."""
    body = "".join(str(page.get("hocr", "")) for page in result["pages"])
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
