"""What a PDF page would cost pdfium to draw, read from its objects without drawing it.

A page's content can draw form XObjects, whose content can draw others: a 2 KB file whose
forms each draw the one below them ten times, eight levels deep, asks for 10**8 drawings, and
pdfium expands them all in memory when it loads the page. Loading it with pypdfium2 to count
them would cost just that; instead qpdf (through pikepdf) reads the objects as a PDF reader
does (names with #xx escapes, comments, strings, inline images, object streams, a damaged
cross-reference table rebuilt) and tokenizes the content streams: the API counts what pdfium
will parse, not what a pattern sees in the bytes.

Every content stream pdfium parses as a form is counted, each time it is drawn: form XObjects
(``Do``), tiling patterns (``scn``, ``SCN``), soft masks (``gs``), the glyph procedures of
Type 3 fonts (``Tf``, once a font in a stream) and annotations' appearances. A document the
check cannot read, or could read only past its bounds, is refused, never let through uncounted.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pikepdf

from .errors import InvalidImage, PayloadTooLarge

MIB = 1024 * 1024
# Forms one page may draw, nested ones expanded. pdfium keeps about 1.5 KB per form it expands
# (measured: half a million took it 765 MB and 2.6 s to render at 300 dpi; a million would not
# fit an engine's default 1536 MB ceiling beside Tesseract); no ordinary page comes near it.
MAX_FORM_DRAWS = 500_000
# What counting may cost the API; past any of these bounds the document is refused.
# Content streams decoded (each counted once, however often it is drawn).
MAX_STREAMS_READ = 100_000
# Decoded content in all (and in one stream: qpdf's own limits stop a Flate bomb there).
MAX_DECODED_BYTES = 64 * MIB
# Content tokenized in all (qpdf reads 6 to 25 MB a second).
MAX_PARSED_BYTES = 16 * MIB
# Forms drawn within forms.
MAX_DEPTH = 64
# qpdf has no decoding limit for LZW, which can grow 4096 times: only small ones are read.
MAX_LZW_BYTES = MAX_DECODED_BYTES // 4096

# The operators that draw a named resource: its category, and which operand names it.
_DRAWS = {
    "Do": ("/XObject", -1),
    "scn": ("/Pattern", -1),
    "SCN": ("/Pattern", -1),
    "gs": ("/ExtGState", -1),
    "Tf": ("/Font", -2),
}
_OPERATORS = " ".join(_DRAWS)
# The same operators as bytes, to bound a stream's drawings without tokenizing it (each drawing
# needs its operator's bytes; comments, strings and image data only add to the bound).
_OPERATOR_BYTES = {"/XObject": (b"Do",), "/Pattern": (b"scn", b"SCN"), "/ExtGState": (b"gs",)}

# qpdf's limits are process-wide (nothing else here reads PDFs with it): content parsing must
# never stop quietly after some errors (pdfium reads on), and no stream may decode past the
# budget.
pikepdf.settings.set_qpdf_limits(
    parser_max_errors=0,
    flate_max_memory=MAX_DECODED_BYTES,
    run_length_max_memory=MAX_DECODED_BYTES,
    png_max_memory=MAX_DECODED_BYTES,
    tiff_max_memory=MAX_DECODED_BYTES,
)


class _TooCostly(Exception):
    """Counting would cost more than the bounds allow."""


@dataclass(frozen=True)
class _Scope:
    """A content stream's resources, and a key naming them (a stream's count depends on them)."""

    resources: Any
    key: object


def check_drawings(data: bytes, limit: int = MAX_FORM_DRAWS) -> None:
    """Refuse a PDF with a page that draws more than ``limit`` forms, nested ones expanded (a
    413 ``document_too_complex``), whose objects cannot be read (a 400 ``invalid_pdf``), or that
    would cost more than the check's bounds to count (a 413 ``document_too_complex``).

    Every page is counted, not only those to read: which page is which is pdfium's to say, and
    in a malformed page tree qpdf's page 1 may be another than pdfium's.
    """
    found = most_drawn_page(data, limit)
    if found is not None:
        raise PayloadTooLarge(
            f"page {found[0]} draws more than {limit:,} form XObjects once the ones nested in "
            "each other are counted out: more than an OCR engine can hold in memory; flatten "
            "the PDF (print it to PDF, or scan it) and send that",
            code="document_too_complex",
        )


def most_drawn_page(data: bytes, limit: int = MAX_FORM_DRAWS) -> tuple[int, int] | None:
    """The first page (1-based) that draws more than ``limit`` forms and how many it draws
    (counted until past the limit); None if no page does."""
    try:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            quick, exact = _Counter(limit, exact=False), _Counter(limit, exact=True)
            for number, page in enumerate(pdf.pages, start=1):
                if quick.page(page.obj) > limit:
                    draws = exact.page(page.obj)
                    if draws > limit:
                        return number, draws
    except _TooCostly as exc:
        raise PayloadTooLarge(
            f"the PDF is too complex to check before reading it ({exc}); flatten it (print it "
            "to PDF, or scan it) and send that",
            code="document_too_complex",
        ) from None
    except (pikepdf.PdfError, RecursionError) as exc:
        # qpdf names the file it read: here, a Python object's address.
        reason = re.sub(r"<[^>]*> ?", "", str(exc))
        raise InvalidImage(
            f"the PDF's objects could not be read ({reason}); re-save it (print it to PDF) and "
            "send that",
            code="invalid_pdf",
        ) from None
    return None


class _Counter:
    """Counts the forms a page draws; each stream's count is worked out once.

    Unless ``exact``, a stream's count is bounded from its bytes: how many times the operators
    that draw appear in it, times the most any of its resources draws. That is quick, and close
    enough for nearly every document; a page over the limit by it is counted from the tokens.
    """

    def __init__(self, limit: int, exact: bool) -> None:
        self.limit = limit
        self.exact = exact
        # (stream, scope key) -> the forms one drawing of it makes, itself included.
        self.costs: dict[object, int] = {}
        # Whether the count under way left out a form being drawn already (a loop): such a
        # count holds only on the path it was reached by, and is not kept.
        self._cut = False
        self.streams_read = 0
        self.bytes_decoded = 0
        self.bytes_parsed = 0

    def page(self, page: Any) -> int:
        """The forms page dictionary ``page`` draws: its content's, then its annotations'."""
        scope = _Scope(page.get("/Resources"), ("page", page.objgen))
        total = self.content(lambda: self._page_content(page), scope, 0, frozenset())
        for annotation in _items(page.get("/Annots")):
            for appearance in _appearances(annotation):
                total += self.form(appearance, scope, 1, frozenset())
        return total

    def form(self, stream: Any, outer: _Scope, depth: int, open_streams: frozenset[Any]) -> int:
        """The forms one drawing of ``stream`` makes, itself included (0 if it is not a stream,
        or is being drawn already: pdfium does not draw a form within itself)."""
        if not isinstance(stream, pikepdf.Stream):
            return 0
        here = stream.objgen
        if here in open_streams:
            self._cut = True
            return 0
        if depth > MAX_DEPTH:
            raise _TooCostly(f"forms nested more than {MAX_DEPTH} deep")
        own = stream.get("/Resources")
        # Without resources of its own, a form uses those of what draws it.
        scope = _Scope(own, here) if isinstance(own, pikepdf.Dictionary) else outer
        key = (here, scope.key)
        if key in self.costs:
            return self.costs[key]
        cut_before, self._cut = self._cut, False
        cost = 1 + self.content(lambda: self._decode(stream), scope, depth, open_streams | {here})
        if not self._cut:
            self.costs[key] = cost
        self._cut = self._cut or cut_before
        return cost

    def content(
        self, read: Callable[[], bytes], scope: _Scope, depth: int, open_streams: frozenset[Any]
    ) -> int:
        """The forms drawn by a content stream (``read()`` decodes it) with ``scope``."""
        drawn = _drawables(scope)
        if not any(drawn.values()):
            return 0  # nothing it could draw: not even read
        data = read()

        def cost(category: str, name: str) -> int:
            target = drawn[category].get(name)
            if target is None:
                return 0
            if category == "/Font":
                # A Type 3 font's glyphs: pdfium parses each once, and keeps it.
                procs, font_scope = target
                return sum(self.form(proc, font_scope, depth + 1, open_streams) for proc in procs)
            return self.form(target, scope, depth + 1, open_streams)

        total = 0
        if not self.exact:
            total = sum(cost("/Font", name) for name in drawn["/Font"])
            for category, operators in _OPERATOR_BYTES.items():
                times = sum(data.count(operator) for operator in operators)
                if times and drawn[category]:
                    total += times * max(cost(category, name) for name in drawn[category])
            return min(total, self.limit + 1)
        fonts_seen: set[str] = set()
        for operands, operator in self._parse(data):
            category, which = _DRAWS[str(operator)]
            if len(operands) < -which or not isinstance(operands[which], pikepdf.Name):
                continue
            name = str(operands[which])
            if category == "/Font":
                if name in fonts_seen:
                    continue
                fonts_seen.add(name)
            total += cost(category, name)
            if total > self.limit:
                break  # over already: the rest cannot bring it back under
        return total

    def _page_content(self, page: Any) -> bytes:
        # A page's streams are one content: a token may start in one and end in the next.
        streams = [s for s in _items(page.get("/Contents")) if isinstance(s, pikepdf.Stream)]
        return b"\n".join(self._decode(stream) for stream in streams)

    def _decode(self, stream: pikepdf.Stream) -> bytes:
        self.streams_read += 1
        if self.streams_read > MAX_STREAMS_READ:
            raise _TooCostly(f"more than {MAX_STREAMS_READ:,} content streams to read")
        lzw = "/LZWDecode" in {str(name) for name in _items(stream.get("/Filter"))}
        if lzw and len(stream.read_raw_bytes()) > MAX_LZW_BYTES:
            raise _TooCostly(f"an LZW-compressed content stream of over {MAX_LZW_BYTES} bytes")
        try:
            data = bytes(stream.read_bytes())
        except pikepdf.DataDecodingError as exc:
            # qpdf says which of its limits stopped it only in the message ("PL_Flate memory
            # limit exceeded"); any other decoding error is a damaged stream.
            if "limit exceeded" in str(exc):
                raise _TooCostly(
                    f"a content stream that decodes to more than {MAX_DECODED_BYTES // MIB} MB"
                ) from None
            raise
        self.bytes_decoded += len(data)
        if self.bytes_decoded > MAX_DECODED_BYTES:
            raise _TooCostly(f"more than {MAX_DECODED_BYTES // MIB} MB of content")
        return data

    def _parse(self, data: bytes) -> list[Any]:
        self.bytes_parsed += len(data)
        if self.bytes_parsed > MAX_PARSED_BYTES:
            raise _TooCostly(f"more than {MAX_PARSED_BYTES // MIB} MB of content to tokenize")
        with pikepdf.new() as scratch:
            return list(pikepdf.parse_content_stream(pikepdf.Stream(scratch, data), _OPERATORS))


def _items(value: Any) -> list[Any]:
    """An array's items, or one object as a list of one (PDF allows either in many keys)."""
    if value is None:
        return []
    if isinstance(value, pikepdf.Array):
        return list(value)
    return [value]


def _appearances(annotation: Any) -> list[Any]:
    """An annotation's normal appearance streams: one, or one per state."""
    ap = annotation.get("/AP") if isinstance(annotation, pikepdf.Dictionary) else None
    normal = ap.get("/N") if isinstance(ap, pikepdf.Dictionary) else None
    if isinstance(normal, pikepdf.Dictionary) and not isinstance(normal, pikepdf.Stream):
        return [state for _, state in normal.items() if isinstance(state, pikepdf.Stream)]
    return [normal] if isinstance(normal, pikepdf.Stream) else []


def _drawables(scope: _Scope) -> dict[str, dict[str, Any]]:
    """By category, the named resources whose drawing parses a content stream: form XObjects,
    tiling patterns and soft masks' groups (the stream of each), and Type 3 fonts (their glyph
    procedures, and the scope those are drawn in)."""
    found: dict[str, dict[str, Any]] = {category: {} for category, _ in _DRAWS.values()}
    if not isinstance(scope.resources, pikepdf.Dictionary):
        return found
    for category, targets in found.items():
        entries = scope.resources.get(category)
        if isinstance(entries, pikepdf.Dictionary):
            for name, value in entries.items():
                target = _drawable(category, name, value, scope)
                if target is not None:
                    targets[name] = target
    return found


def _drawable(category: str, name: str, value: Any, scope: _Scope) -> Any:
    """What drawing resource ``name`` of ``category`` parses, or None if it parses nothing."""
    if category == "/XObject":
        is_form = isinstance(value, pikepdf.Stream) and value.get("/Subtype") == "/Form"
        return value if is_form else None
    if category == "/Pattern":
        tiling = isinstance(value, pikepdf.Stream) and value.get("/PatternType") == 1
        return value if tiling else None
    if category == "/ExtGState":
        mask = value.get("/SMask") if isinstance(value, pikepdf.Dictionary) else None
        group = mask.get("/G") if isinstance(mask, pikepdf.Dictionary) else None
        return group if isinstance(group, pikepdf.Stream) else None
    if not (isinstance(value, pikepdf.Dictionary) and value.get("/Subtype") == "/Type3"):
        return None
    procs = value.get("/CharProcs")
    streams = [proc for _, proc in procs.items()] if isinstance(procs, pikepdf.Dictionary) else []
    own = value.get("/Resources")
    # Glyphs without resources of their own use the font's, or those of what draws the text.
    font_scope = _Scope(own, (scope.key, name)) if isinstance(own, pikepdf.Dictionary) else scope
    return streams, font_scope
