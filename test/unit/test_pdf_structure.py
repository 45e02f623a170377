"""The PDF bomb check counts what pdfium draws: in every spelling of the same file, for every
way a page draws a form, at sizes either side of its limits; a file it cannot read or count
within its bounds is refused, never let through."""

from __future__ import annotations

import zlib

import pypdfium2
import pypdfium2.raw as pdfium_c
import pytest

from ocr_common.documents import check_document
from ocr_common.errors import InvalidImage, OcrError, PayloadTooLarge
from ocr_common.pdf_structure import (
    MAX_DEPTH,
    MAX_FORM_DRAWS,
    MAX_LZW_BYTES,
    MAX_PARSED_BYTES,
    most_drawn_page,
)
from ocr_testkit.hostile_pdfs import (
    PLAIN,
    Spelling,
    broken_page_trees,
    nested_forms,
    nested_forms_pdf,
    pdf_file,
    pdf_stream,
)

SPELLINGS = {
    "plain": PLAIN,
    # The three 2 KB bombs that passed the check when it read the bytes with a pattern.
    "/Subtype /F#6frm": Spelling(replace=((b"/Subtype /Form", b"/Subtype /F#6frm"),)),
    "a comment between a name and Do": Spelling(replace=((b"/X Do", b"/X %c\nDo"),)),
    "10,001 obj in a trailing comment": Spelling(trailing=b"%" + b" obj" * 10_001 + b"\n"),
    # The same, in every position.
    "every name escaped": Spelling(escape_names=True),
    "a comment between every two tokens": Spelling(comments=True),
    "resources as objects of their own": Spelling(indirect_resources=True),
    "an object stream": Spelling(object_stream=True),
    "compressed content": Spelling(flate=True),
    "all at once": Spelling(
        escape_names=True,
        comments=True,
        indirect_resources=True,
        object_stream=True,
        flate=True,
        trailing=b"%" + b" obj" * 10_001,
    ),
}
# Content before the page's drawings that a reader must tokenize as PDF does (each read by
# pdfium as the test says): drawings inside strings, hex strings, inline image data and
# comments are none; junk and stray delimiters do not stop it.
CONTENT = [
    b"(Do /X Do \\) (nested (/X Do)) ) Tj ",
    b"<2F58 446F> Tj ",
    b"BI /W 5 /H 1 /BPC 8 /CS /G ID /X Do EI ",
    b"BI /W 5 /H 1 /BPC 8 /CS /G /F /AHx ID 2F5820446F> EI ",
    b"BI /W 2 /H 1 /BPC 8 /CS /G ID ab EI/X Do ",
    b"%c /X Do\n",
    b"] >> } ) /X Do ",
    b"1 2 /X Do ",
    b"[/X] Do ",
    b"/X\x00Do ",
    b"/X\x0cDo ",
    b"/XDo /X Do1 /X (a) Do /X /Y Do /L 3 Do /X<<>>Do ",
    b"/X Do/X Do ",
    b"( unterminated /X Do ",
]


def pdfium_forms(document: bytes) -> int:
    """The form objects pdfium expands on page 1 (nested ones included)."""
    pdf = pypdfium2.PdfDocument(document)
    try:
        page = pdf[0]
        found = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_FORM], max_depth=1000)
        count = sum(1 for _ in found)
        page.close()
    finally:
        pdf.close()
    return count


def counted(document: bytes) -> int:
    """The forms the check counts on page 1: the lowest limit the page is not over."""
    limit = 0
    while most_drawn_page(document, limit) is not None:
        limit += 1
    return limit


def lzw_spaces(size: int) -> bytes:
    """``size`` bytes of LZW data (9-bit codes, the table cleared every 100) of spaces."""
    codes: list[int] = []
    while 9 * (len(codes) + 2) <= 8 * size:
        codes += [256] if len(codes) % 101 == 0 else [32]
    codes.append(257)  # end of data
    bits = "".join(f"{code:09b}" for code in codes)
    bits += "0" * (8 * size - len(bits))
    return int(bits, 2).to_bytes(size, "big")


def check(document: bytes, pages: tuple[int, ...] | None = None) -> None:
    check_document(
        document,
        wanted_pages=pages,
        dpi=300,
        max_bytes=64 * 2**20,
        max_pixels=50_000_000,
        max_pages=10,
    )


def refused(document: bytes) -> OcrError:
    with pytest.raises((PayloadTooLarge, InvalidImage)) as info:
        check(document)
    return info.value


@pytest.mark.parametrize("spelling", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_the_count_is_pdfiums_in_every_spelling(spelling: Spelling) -> None:
    document = nested_forms([3, 3], page_draws=2, leaf_draws=1, spelling=spelling)
    assert pdfium_forms(document) == 2 * (1 + 3 * (1 + 3)) + 1 == 27
    assert most_drawn_page(document, limit=27) is None
    assert most_drawn_page(document, limit=26) == (1, 27)


@pytest.mark.parametrize("spelling", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_the_2_kb_bomb_is_refused_in_every_spelling(spelling: Spelling) -> None:
    error = refused(nested_forms_pdf(spelling=spelling))
    assert (error.status, error.code) == (413, "document_too_complex")
    assert "page 1 draws more than" in error.message


@pytest.mark.parametrize("content", CONTENT)
def test_content_is_tokenized_as_pdfium_reads_it(content: bytes) -> None:
    document = nested_forms([3], content_prefix=content)
    assert counted(document) == pdfium_forms(document)


@pytest.mark.parametrize(
    ("via", "draws"),
    [("Do", 27), ("annotation", 27), ("smask", 27), ("pattern", 29), ("type3", 15)],
)
def test_every_way_a_page_draws_a_form_is_counted(via: str, draws: int) -> None:
    # pdfium expands each of these as it does Do (measured: 10**5 forms through any of them
    # take it as long and as much memory); a pattern and a Type 3 glyph are forms themselves.
    assert counted(nested_forms([3, 3], page_draws=2, leaf_draws=1, via=via)) == draws
    error = refused(nested_forms_pdf(via=via))
    assert error.code == "document_too_complex"


@pytest.mark.parametrize("spelling", [PLAIN, SPELLINGS["all at once"]], ids=["plain", "all"])
def test_a_page_at_the_limit_is_accepted_and_one_more_form_is_refused(spelling: Spelling) -> None:
    per_page = MAX_FORM_DRAWS // 1000
    at_limit = nested_forms([999], page_draws=per_page, spelling=spelling)
    check(at_limit)
    # Strings full of "Do" put the quick bound over the limit: the tokens say it is not.
    check(nested_forms([999], page_draws=per_page, content_prefix=b"(Do Do Do) Tj "))
    over = nested_forms([999], page_draws=per_page, leaf_draws=1, spelling=spelling)
    error = refused(over)
    assert error.code == "document_too_complex" and f"{MAX_FORM_DRAWS:,}" in error.message


def test_a_bomb_on_a_page_not_asked_for_is_refused_too() -> None:
    # Which page is which is pdfium's to say: every page the check can find is counted.
    bomb = nested_forms_pdf()
    with pytest.raises(PayloadTooLarge):
        check(bomb, pages=(1,))


def test_forms_nested_past_the_depth_bound_are_refused() -> None:
    check(nested_forms([1] * (MAX_DEPTH - 1)))
    error = refused(nested_forms([1] * MAX_DEPTH))
    assert error.code == "document_too_complex" and "too complex to check" in error.message


def test_content_past_the_tokenizing_bound_is_refused() -> None:
    # Each "Do" in a string puts the quick bound up: tokenizing that much is past the bound.
    strings = b"(Do) Tj " * (MAX_PARSED_BYTES // 8 + 1)
    error = refused(nested_forms([1], content_prefix=strings, spelling=Spelling(flate=True)))
    assert error.code == "document_too_complex" and "too complex to check" in error.message


def page_with_content(filter_name: bytes, content: bytes) -> bytes:
    """A page whose content (so filtered) the check must read: it has a form to draw."""
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /XObject << /X 5 0 R >> >> >>",
            pdf_stream(b"/Filter /" + filter_name, content),
            pdf_stream(b"/Subtype /Form", b""),
        ]
    )


def test_a_content_stream_that_decodes_past_the_bound_is_refused() -> None:
    spaces = zlib.compress(b" " * (65 * 2**20))
    error = refused(page_with_content(b"FlateDecode", spaces))
    assert error.code == "document_too_complex" and "too complex to check" in error.message


@pytest.mark.parametrize(
    ("size", "is_refused"), [(MAX_LZW_BYTES, False), (MAX_LZW_BYTES + 1, True)]
)
def test_an_lzw_content_stream_is_read_only_when_small(size: int, is_refused: bool) -> None:
    # qpdf bounds no LZW decoding: the raw size bounds what it can grow to.
    document = page_with_content(b"LZWDecode", lzw_spaces(size))
    if is_refused:
        assert "LZW" in refused(document).message
    else:
        check(document)


def test_a_bomb_in_a_file_whose_end_is_damaged_is_refused() -> None:
    # No startxref: pdfium rebuilds the cross-references and draws the page, so must the check.
    damaged = nested_forms_pdf().replace(b"startxref", b"startxreX")
    assert len(pypdfium2.PdfDocument(damaged)) == 1
    assert refused(damaged).code == "document_too_complex"


def test_a_page_tree_the_check_cannot_walk_is_refused_even_where_pdfium_finds_the_page() -> None:
    # pdfium finds page 1 of a tree that loops; the check cannot tell the pages apart.
    looping = broken_page_trees()["a Pages node that lists itself in its Kids"]
    with pytest.raises(InvalidImage) as info:
        check(looping, pages=(1,))
    assert info.value.code == "invalid_pdf" and "Loop detected" in info.value.message
    assert "0x" not in info.value.message
