"""A fake OCR server for API tests: answers v1 documents with a made-up rich result."""

from __future__ import annotations

from typing import Any

from ocr_common.errors import EngineError, OcrError, Unavailable
from ocr_common.options import OcrOptions

UNREADABLE = b"unreadable"


def fake_page(number: int) -> dict[str, Any]:
    word = {"text": f"page{number}", "confidence": 95.5, "bbox": _box(10, 20, 80, 30)}
    return {
        "page": number,
        "width": 200,
        "height": 100,
        "dpi": 300,
        "rotation": 0,
        "text": f"page{number}\n",
        "confidence": 95.5,
        "lines": [
            {
                "text": f"page{number}",
                "confidence": 95.5,
                "bbox": _box(10, 20, 80, 30),
                "words": [word],
            }
        ],
        "hocr": f"<div class='ocr_page' id='page_{number}'>"
        f"<span class='ocrx_word'>page{number}</span></div>\n",
        "tsv": f"5\t{number}\t1\t1\t1\t1\t10\t20\t80\t30\t95.5\tpage{number}\n",
    }


def _box(left: int, top: int, width: int, height: int) -> dict[str, int]:
    return {"left": left, "top": top, "width": width, "height": height}


class FakeOcr:
    """Reads every page as "page<N>"; can be told to be down."""

    def __init__(self) -> None:
        self.notified = 0
        self.down = False
        self.documents: list[tuple[bytes, OcrOptions]] = []

    def recognize_many(self, images: list[bytes]) -> list[str | OcrError]:
        return ["text\n" for _ in images]

    def recognize_document(
        self, document: bytes, options: OcrOptions, pages: int
    ) -> dict[str, Any]:
        if self.down:
            raise Unavailable("the OCR server is down", code="ocr_unavailable")
        if UNREADABLE in document:
            raise EngineError("Tesseract could not read page 1")
        self.documents.append((document, options))
        numbers = options.pages or tuple(range(1, pages + 1))
        result_pages = [fake_page(n) for n in numbers]
        return {
            "format": "PNG",
            "page_count": pages,
            "text": "\f".join(p["text"] for p in result_pages),
            "pages": result_pages,
        }

    def notify(self) -> None:
        self.notified += 1

    def languages(self) -> tuple[str, ...]:
        return ("eng",)
