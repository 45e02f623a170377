"""The page-result model: what the job store keeps of it, and results stored before it, which
read the same in every format."""

from __future__ import annotations

import json
from pathlib import Path

from fake_ocr import api_client
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.models import JobApi, JobRow
from ocr_common.options import OcrOptions
from ocr_common.result import (
    Block,
    BoundingBox,
    Line,
    Page,
    Paragraph,
    TesseractOutput,
    Word,
    pack_page,
    packed_text,
    store_pages,
    stored_pages,
    unpack_page,
)

# A result as main (b9fffa4) stored it, and what the API answered for it in each format.
BEFORE = json.loads((Path(__file__).parent / "result_before_issue_21.json").read_text())


def box(left: int, top: int, width: int = 40, height: int = 20) -> BoundingBox:
    return BoundingBox(left=left, top=top, width=width, height=height)


def a_page() -> Page:
    """A page using every field the renderers read."""
    words = [
        Word(text="Hello", confidence=95.980865, bbox=box(34, 29), bold=True),
        Word(text="Welt", confidence=61.5, bbox=box(90, 30), italic=True, lang="deu"),
    ]
    level = Line(
        confidence=78.74,
        bbox=box(34, 29, 96, 21),
        words=words,
        baseline=(0.006, -1.0),
        heights=(35.377777, 5.3777776, 8.0),
    )
    turned = Line(confidence=90.0, bbox=box(200, 10, 20, 90), words=[], textangle=90)
    text = Block(
        kind=1,
        bbox=box(34, 10, 186, 90),
        paragraphs=[Paragraph(bbox=box(34, 10, 186, 90), lang="eng", lines=[level, turned])],
    )
    photo = Block(kind=9, bbox=box(0, 200, 100, 100), paragraphs=[])
    return Page(
        page=2,
        width=300,
        height=400,
        dpi=300,
        rotation=90,
        rotation_confidence="low",
        warnings=["could not tell which way up the page is"],
        blocks=[text, photo],
    )


def test_a_page_comes_back_from_its_stored_form_whole() -> None:
    page = a_page()
    assert unpack_page(json.loads(json.dumps(pack_page(page)))) == page
    right_to_left = page.model_copy(
        update={"tesseract": TesseractOutput(text="a", hocr="b", tsv="c")}
    )
    assert stored_pages(store_pages([pack_page(page), pack_page(right_to_left)])) == [
        page,
        right_to_left,
    ]
    # The OCR server takes a page's text from its packed form, as the model gives it.
    for whole in (page, right_to_left, page.model_copy(update={"blocks": []})):
        assert packed_text(pack_page(whole)) == whole.text


def test_a_page_stored_with_words_without_their_empty_slots_reads_the_same() -> None:
    # Before the engine built the packed form, a word's flags and language were left off
    # where they were 0 and None.
    page = a_page().model_copy(update={"rotation": 0, "rotation_confidence": None, "warnings": []})
    stored = json.loads(json.dumps(pack_page(page)))
    trimmed = 0
    for block in stored["blocks"]:
        for paragraph in block[5]:
            for line in paragraph[5]:
                for word in line[8]:
                    while len(word) > 6 and word[-1] in (0, None):
                        word.pop()
                        trimmed += 1
    assert trimmed and "turn" not in stored
    assert unpack_page(stored) == page


def test_the_json_of_a_page_is_its_lines_and_words() -> None:
    shown = a_page().model_dump(mode="json")
    # A line a line (the turned one has no words), an empty line after the paragraph; the page
    # ends in a photo, so its last newline stays.
    assert shown["text"] == "Hello Welt\n\n\n" and shown["confidence"] == 78.74
    # Lines without words are not shown; confidences are rounded to two decimals.
    assert [line["text"] for line in shown["lines"]] == ["Hello Welt"]
    assert shown["lines"][0]["words"][0] == {
        "text": "Hello",
        "confidence": 95.98,
        "bbox": {"left": 34, "top": 29, "width": 40, "height": 20},
    }
    assert "blocks" not in shown and "tesseract" not in shown


def test_a_result_stored_in_the_old_shape_reads_the_same_in_every_format(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        job = job_store.record_finished(
            session,
            image=b"a document",
            started_at=job_store.utcnow(),
            text=BEFORE["text"],
            api=JobApi.V1,
            options=OcrOptions(),
            pages_total=2,
        )
        # What a job finished before migration 0011 holds: the old JSON, no page_results.
        session.execute(
            update(JobRow).where(JobRow.id == job.id).values(result=BEFORE["stored"], pages_done=2)
        )
    client = api_client(sessions)
    url = f"/v1/jobs/{job.id}"
    assert client.get(url).get_json()["pages"] == BEFORE["json_pages"]
    assert client.get(f"{url}?format=text").get_data(as_text=True) == BEFORE["text"]
    assert client.get(f"{url}?format=hocr").get_data(as_text=True) == BEFORE["hocr"]
    assert client.get(f"{url}?format=tsv").get_data(as_text=True) == BEFORE["tsv"]
