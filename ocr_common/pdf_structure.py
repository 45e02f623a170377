"""What a PDF page would cost to draw, read from its objects without drawing it (pypdf).

A page's content can invoke form XObjects, whose content can invoke others: a 2 KB file whose
forms each draw the one below them ten times, eight levels deep, asks for 10**8 drawings, and
pdfium expands them all in memory before it renders anything. Loading the page with pypdfium2
to count them would cost just that; pypdf reads the objects and their (bounded) decoded
content instead, so the API can refuse such a page before storing it. The engines' memory
ceiling and render deadline still hold for what this estimate cannot see.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any

from .errors import PayloadTooLarge

# Form XObjects one page may draw, nested ones expanded. pdfium keeps about 1.6 KB per drawn
# object (measured: 10**5 nested drawings took 186 MB), so a million is about what an engine's
# default 1536 MB ceiling holds; no ordinary page comes near it.
MAX_FORM_DRAWS = 1_000_000
# The estimate stops (and lets the page through, to the engines' limits) past these, which
# bound what it costs the API: about 1 ms of pypdf per XObject read.
MAX_XOBJECTS_READ = 500
MAX_CONTENT_BYTES_READ = 16 * 1024 * 1024
# pypdf reads the header of every object when it opens a file: a file with more is not counted.
MAX_OBJECTS = 5_000
# "/Name Do": an XObject drawn. A match inside a string only makes the estimate larger.
_DRAW = re.compile(rb"/([^\s/\[\]()<>{}%]+)\s*Do\b")


class _Budget(Exception):
    """Reading the document for the estimate would cost too much: give it up."""


class _Reader:
    """Counts form drawings page by page, each XObject's count worked out once."""

    def __init__(self) -> None:
        # An XObject's key -> the form drawings one drawing of it makes, nested ones included
        # (0 for an image).
        self.costs: dict[object, int] = {}
        self.bytes_read = 0

    def content(self, stream: Any) -> bytes:
        data = bytes(stream.get_data())
        self.bytes_read += len(data)
        if self.bytes_read > MAX_CONTENT_BYTES_READ:
            raise _Budget
        return data

    def draws(self, content: bytes, resources: Any, open_forms: frozenset[object]) -> int:
        """Form drawings made by ``content`` (with ``resources``), nested ones included."""
        xobjects = _get(resources, "/XObject")
        if not xobjects:
            return 0
        total = 0
        # Counted in one pass (in C), then each name looked up once.
        named = Counter(match.group(1) for match in _DRAW.finditer(content))
        for name, times in named.items():
            total += times * self.cost(
                xobjects, "/" + name.decode("latin-1"), resources, open_forms
            )
            if total > MAX_FORM_DRAWS:
                break
        return total

    def cost(self, xobjects: Any, name: str, resources: Any, open_forms: frozenset[object]) -> int:
        """The form drawings one drawing of XObject ``name`` makes (itself included)."""
        if name not in xobjects:
            return 0
        reference = xobjects.raw_get(name)
        key = (reference.idnum, reference.generation) if hasattr(reference, "idnum") else name
        if key in open_forms:
            # A form drawing itself, which pdfium stops at once.
            return 0
        if key not in self.costs:
            if len(self.costs) >= MAX_XOBJECTS_READ:
                raise _Budget
            form = xobjects[name].get_object()
            if _get(form, "/Subtype") != "/Form":
                self.costs[key] = 0
            else:
                # Without resources of its own, a form uses those of what draws it.
                inner = _get(form, "/Resources") or resources
                self.costs[key] = 1 + self.draws(self.content(form), inner, open_forms | {key})
        return self.costs[key]


def _get(dictionary: Any, key: str) -> Any:
    try:
        value = dictionary.get(key)
    except AttributeError:
        return None
    return value.get_object() if value is not None else None


def check_drawings(data: bytes, pages: tuple[int, ...]) -> None:
    """Refuse a PDF with a page that draws more than MAX_FORM_DRAWS form XObjects, nested ones
    expanded (a 413 ``document_too_complex``); a PDF pypdf cannot read, or that would take
    too much reading to tell, is let through."""
    if b"/Form" not in data and b"/ObjStm" not in data:
        # No form XObject (nor compressed objects that could hide one): a scan, typically.
        return
    if data.count(b"obj") > 2 * MAX_OBJECTS:  # "obj" and "endobj" around each object
        return
    found = _most_drawn_page(data, pages)
    if found is not None and found[1] > MAX_FORM_DRAWS:
        raise PayloadTooLarge(
            f"page {found[0]} draws more than {MAX_FORM_DRAWS:,} form XObjects once the ones "
            "nested in each other are counted out: more than an OCR engine can hold in memory; "
            "flatten the PDF (print it to PDF, or scan it) and send that",
            code="document_too_complex",
        )


def _most_drawn_page(data: bytes, pages: tuple[int, ...]) -> tuple[int, int] | None:
    """The page (of ``pages``) drawing the most forms, and how many; None if unknown."""
    import pypdf

    reader = _Reader()
    most: tuple[int, int] | None = None
    try:
        pdf = pypdf.PdfReader(io.BytesIO(data))
        for number in pages:
            page = pdf.pages[number - 1]
            contents = page.get_contents()
            if contents is None:
                continue
            draws = reader.draws(reader.content(contents), _get(page, "/Resources"), frozenset())
            if most is None or draws > most[1]:
                most = (number, draws)
            if draws > MAX_FORM_DRAWS:
                break
    except Exception:  # noqa: BLE001 - malformed for pypdf (pdfium read it) or over budget
        return None
    return most
