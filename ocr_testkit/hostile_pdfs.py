"""Hostile PDFs built byte by byte: form-XObject bombs in every spelling PDF allows, and
malformed page trees.

A bomb's forms each draw the one below them some number of times: pdfium expands them all in
memory when it loads the page. ``Spelling`` writes the same file other ways a PDF reader must
read alike (escaped names, comments between tokens, indirect or compressed objects), so that a
check that reads the bytes differently from pdfium can be caught out.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# An object's body, or a stream: (its dictionary's entries, its content).
PdfObject = bytes | tuple[bytes, bytes]
_NAME = re.compile(rb"/([A-Za-z0-9]+)")


@dataclass(frozen=True)
class Spelling:
    """How a PDF writes what it holds; every way here reads the same to pdfium."""

    # Every name #-escaped, keys and values, in dictionaries and content (/X -> /#58).
    escape_names: bool = False
    # A comment (holding "obj" and "Do") wherever the file's tokens are separated by a space.
    comments: bool = False
    # Resource dictionaries as objects of their own (5 0 R) rather than written in place.
    indirect_resources: bool = False
    # Every object but the streams in a compressed object stream, with a cross-reference stream.
    object_stream: bool = False
    # Content streams compressed (FlateDecode).
    flate: bool = False
    # Bytes after the end of the file, where readers look for nothing.
    trailing: bytes = b""
    # (old, new) replacements in every dictionary and content, before the rest.
    replace: tuple[tuple[bytes, bytes], ...] = ()

    def tokens(self, text: bytes) -> bytes:
        """``text`` (a dictionary's entries or a content stream) in this spelling."""
        for old, new in self.replace:
            text = text.replace(old, new)
        if self.escape_names:
            text = _NAME.sub(lambda m: b"/" + b"".join(b"#%02X" % c for c in m.group(1)), text)
        if self.comments:
            text = text.replace(b" ", b" %obj Do\n")
        return text


PLAIN = Spelling()


# How the page draws the top form: with Do, or through another resource that draws it.
VIA = ("Do", "annotation", "pattern", "smask", "type3")


def nested_forms(
    per_level: Sequence[int],
    *,
    page_draws: int = 1,
    leaf_draws: int = 0,
    spelling: Spelling = PLAIN,
    content_prefix: bytes = b"",
    via: str = "Do",
) -> bytes:
    """A one-page PDF of nested form XObjects: a leaf form (a small square); above it, form k
    draws form k-1 ``per_level[k-1]`` times; the page draws the top form ``page_draws`` times
    (``via`` says how) and the leaf ``leaf_draws`` times, after ``content_prefix``.

    With Do, pdfium draws ``page_draws * top + leaf_draws`` forms, where a form's count is one
    (itself) plus what it draws: ``top = 1 + n1 * (1 + n2 * (...))``. Through an annotation's
    appearance or a soft mask, the top form is drawn as with Do; a tiling pattern or a Type 3
    glyph is a form of its own that draws the top form once.
    """
    levels = len(per_level)
    top = 4 + levels  # objects: catalog, pages, page, leaf (4), then one per level
    writer = _Writer(spelling, first_free=top + 1)
    drawn = b"/X %d 0 R" % top
    draws, entries, extra = [b"/X Do"] * page_draws, b"", b""
    if via == "annotation":
        annotation = b"<< /Type /Annot /Subtype /Square /Rect [0 0 9 9] /AP << /N %d 0 R >> >>"
        draws, entries = [], b" /Annots [%s]" % b" ".join([annotation % top] * page_draws)
    elif via == "pattern":
        pattern = b"/Type /Pattern /PatternType 1 /PaintType 1 /TilingType 1 /BBox [0 0 9 9] "
        pattern += b"/XStep 9 /YStep 9 /Resources " + writer.resources(drawn)
        extra = b" /Pattern << /P %d 0 R >>" % writer.reserve((pattern, b"/X Do"))
        draws = [b"/Pattern cs /P scn 0 0 9 9 re f"] * page_draws
    elif via == "smask":
        extra = b" /ExtGState << /G << /SMask << /S /Luminosity /G %d 0 R >> >> >>" % top
        draws = [b"/G gs 0 0 9 9 re f"] * page_draws
    elif via == "type3":
        glyph = writer.reserve((b"", b"1000 0 0 0 1000 1000 d1 /X Do"))
        font = b"/Type /Font /Subtype /Type3 /FontBBox [0 0 1000 1000] /FontMatrix "
        font += (
            b"[0.001 0 0 0.001 0 0] /CharProcs << /a %d 0 R >> /Encoding << /Differences " % glyph
        )
        font += b"[97 /a] >> /FirstChar 97 /LastChar 97 /Widths [1000] /Resources "
        extra = b" /Font << /F << %s >> >>" % (font + writer.resources(drawn))
        draws = [b"BT /F 12 Tf (a) Tj ET"] * page_draws
    page_content = content_prefix + b" ".join(draws + [b"/L Do"] * leaf_draws)
    page_resources = writer.resources(drawn + b" /L 4 0 R", extra)
    objects: list[PdfObject] = [
        b"/Type /Catalog /Pages 2 0 R",
        b"/Type /Pages /Kids [3 0 R] /Count 1",
        b"/Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R /Resources %s%s"
        % (writer.reserve((b"", page_content)), page_resources, entries),
        (b"/Type /XObject /Subtype /Form /BBox [0 0 612 792]", b"0 0 1 1 re f"),
    ]
    for level in range(1, levels + 1):
        form = b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources "
        form += writer.resources(b"/X %d 0 R" % (3 + level))
        objects.append((form, b" ".join([b"/X Do"] * per_level[level - 1])))
    return writer.file(objects)


def nested_forms_pdf(levels: int = 8, copies: int = 10, **how: Any) -> bytes:
    """The 2 KB "PDF bomb": forms that each draw the one below them ``copies`` times, ``levels``
    deep; copies**levels squares, which pdfium expands in memory (8 levels of 10 would take it
    160 GB and half an hour). ``how``: ``nested_forms``' spelling and via."""
    return nested_forms([copies] * levels, **how)


class _Writer:
    """Numbers objects in order (the given ones first, then those made on the way) and writes
    the file in its spelling."""

    def __init__(self, spelling: Spelling, first_free: int):
        self.spelling = spelling
        self._next = first_free
        self.extra: list[PdfObject] = []

    def reserve(self, obj: PdfObject) -> int:
        """A number for an object made on the way (written after the given ones)."""
        self.extra.append(obj)
        self._next += 1
        return self._next - 1

    def resources(self, xobjects: bytes, extra: bytes = b"") -> bytes:
        """A /Resources value naming these XObjects (and ``extra`` entries), in place or as
        objects of their own."""
        if not self.spelling.indirect_resources:
            return b"<< /XObject << %s >>%s >>" % (xobjects, extra)
        inner = self.reserve(xobjects)
        return b"%d 0 R" % self.reserve(b"/XObject %d 0 R%s" % (inner, extra))

    def file(self, objects: list[PdfObject]) -> bytes:
        every = [self._spell(obj) for obj in [*objects, *self.extra]]
        if self.spelling.object_stream:
            return pdf_file_with_object_stream(every) + self.spelling.trailing
        return pdf_file([_body(obj) for obj in every]) + self.spelling.trailing

    def _spell(self, obj: PdfObject) -> PdfObject:
        s = self.spelling
        if isinstance(obj, bytes):
            return s.tokens(obj)
        entries, content = obj
        content = s.tokens(content)
        if s.flate:
            content = zlib.compress(content)
            entries += b" /Filter /FlateDecode"
        return s.tokens(entries), content


def _body(obj: PdfObject) -> bytes:
    if isinstance(obj, bytes):
        return b"<< %s >>" % obj
    return pdf_stream(*obj)


def pdf_stream(entries: bytes, content: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (entries, len(content), content)


def pdf_file(objects: list[bytes]) -> bytes:
    """Objects 1, 2, ... (the first the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def pdf_file_with_object_stream(objects: list[PdfObject]) -> bytes:
    """Objects 1, 2, ... (the first the catalog's entries): the streams written plainly, every
    other one compressed in one object stream, found through a cross-reference stream (PDF 1.5).
    """
    count = len(objects)
    holder, xref_number = count + 1, count + 2
    packed = [(n, obj) for n, obj in enumerate(objects, start=1) if isinstance(obj, bytes)]
    heads, bodies, offset = [], b"", 0
    for number, entries in packed:
        heads.append(b"%d %d" % (number, offset))
        body = b"<< %s >>\n" % entries
        bodies += body
        offset += len(body)
    head = b" ".join(heads) + b"\n"
    packed_data = zlib.compress(head + bodies)
    out = bytearray(b"%PDF-1.5\n")
    where: dict[int, tuple[int, int, int]] = {}
    for index, (number, _) in enumerate(packed):
        where[number] = (2, holder, index)
    for number, obj in enumerate(objects, start=1):
        if isinstance(obj, tuple):
            where[number] = (1, len(out), 0)
            out += b"%d 0 obj\n%s\nendobj\n" % (number, pdf_stream(*obj))
    where[holder] = (1, len(out), 0)
    holder_entries = b"/Type /ObjStm /N %d /First %d /Filter /FlateDecode" % (
        len(packed),
        len(head),
    )
    out += b"%d 0 obj\n%s\nendobj\n" % (holder, pdf_stream(holder_entries, packed_data))
    where[xref_number] = (1, len(out), 0)
    rows = b"\x00\x00\x00\x00\x00\xff\xff" + b"".join(
        bytes([kind]) + first.to_bytes(4, "big") + second.to_bytes(2, "big")
        for kind, first, second in (where[n] for n in range(1, xref_number + 1))
    )
    xref_entries = b"/Type /XRef /Size %d /W [1 4 2] /Root 1 0 R" % (xref_number + 1)
    start = len(out)
    out += b"%d 0 obj\n%s\nendobj\n" % (xref_number, pdf_stream(xref_entries, rows))
    out += b"startxref\n%d\n%%%%EOF\n" % start
    return bytes(out)


# -- malformed page trees -------------------------------------------------------------------

_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"


def page_tree(root: bytes, *others: bytes) -> bytes:
    """A PDF whose page tree's root (object 2) is ``root`` and whose objects 3, 4, ... are
    ``others`` (pages, Pages nodes, anything)."""
    return pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>", root, *others])


def broken_page_trees() -> dict[str, bytes]:
    """Page trees in which no reader finds the page, each named for what is wrong with it."""
    deep = 3000
    chain = [b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (n + 1) for n in range(3, 3 + deep)]
    one_kid = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
    return {
        "a Pages node that lists itself in its Kids": page_tree(
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>", _PAGE
        ),
        "a loop through two Pages nodes": page_tree(
            one_kid, b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"
        ),
        f"{deep} nested Pages nodes": page_tree(one_kid, *chain, _PAGE),
        "Kids that point to a number": page_tree(one_kid, b"7"),
        "Kids that point to a string": page_tree(one_kid, b"(a page)"),
        "Kids that point to nothing": page_tree(b"<< /Type /Pages /Kids [9 0 R] /Count 1 >>"),
        "Kids that is not an array": page_tree(b"<< /Type /Pages /Kids 3 0 R /Count 1 >>", _PAGE),
        "no Kids": page_tree(b"<< /Type /Pages /Count 1 >>"),
    }


def miscounted_page_trees() -> dict[str, bytes]:
    """Page trees whose /Count is wrong or missing: readers find the pages there are (and
    none of those the Count promises beyond them)."""
    return {
        f"a Count of {count_name}": page_tree(
            b"<< /Type /Pages /Kids [3 0 R] /Count %s >>" % count, _PAGE
        )
        for count_name, count in (
            ("5 for 1 page", b"5"),
            ("0 for 1 page", b"0"),
            ("a billion", b"1000000000"),
            ("-1", b"-1"),
            ("a name", b"/Many"),
        )
    } | {
        "no Count": page_tree(b"<< /Type /Pages /Kids [3 0 R] >>", _PAGE),
        "a Count of 1 for 3 pages": page_tree(
            b"<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 1 >>", _PAGE, _PAGE, _PAGE
        ),
    }


def slow_pages_pdf(pages: int = 1, fills: int = 2000) -> bytes:
    """A PDF of about 600 bytes whose every page fills itself ``fills`` times: pdfium takes
    4 to 10 ms a fill at 300 dpi, by machine (2000: 9 to 20 s a page), in little memory, and
    draws no form: nothing refuses it before an engine renders it."""
    content = zlib.compress(b"0 0 612 792 re f " * fills)
    kids = b" ".join(b"%d 0 R" % (4 + n) for n in range(pages))
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            pdf_stream(b"/Filter /FlateDecode", content),
            *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>"] * pages,
        ]
    )
