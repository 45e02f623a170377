"""format=pdf on the v1 API: a read made now and a queued job give the searchable PDF of their
document, kept with the job; without the document, a 409 that says how to get one."""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from typing import Any

import pikepdf
import pypdfium2
import pytest
from fake_ocr import FakeOcr, api_client, fake_result
from flask.testing import FlaskClient
from PIL import Image, ImageDraw, ImageOps
from sqlalchemy.orm import Session, sessionmaker

from api_server import rendering
from ocr_common.render.page_image import MAX_SIDE_PX, page_preview
from ocr_common.wire import Reading
from ocr_testkit.database import claim_next, finish
from ocr_testkit.pages import HELLO_PNG, encode, render_document

PDF = render_document([["One"], ["Two"], ["Three"]], "PDF")


@pytest.fixture
def client(sessions: sessionmaker[Session]) -> FlaskClient:
    return api_client(sessions, FakeOcr())


def words_of(pdf: bytes) -> list[list[str]]:
    """Each page's words, as pdfium extracts them."""
    document = pypdfium2.PdfDocument(pdf)
    try:
        return [page.get_textpage().get_text_range().split() for page in document]
    finally:
        document.close()


def is_pdf_answer(response: Any) -> bytes:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/pdf"
    data: bytes = response.get_data()
    assert data.startswith(b"%PDF-")
    return data


def test_a_read_made_now_is_a_pdf_now_and_later(client: FlaskClient) -> None:
    now = is_pdf_answer(client.post("/v1/ocr?format=pdf", data=HELLO_PNG, content_type="image/png"))
    assert words_of(now) == [["page1"]]
    [job] = client.get("/v1/jobs").get_json()["jobs"]
    # The document was kept with the job: the same PDF later, by format= or by Accept.
    later = is_pdf_answer(client.get(f"/v1/jobs/{job['id']}?format=pdf"))
    assert words_of(later) == [["page1"]]
    accepted = client.get(f"/v1/jobs/{job['id']}", headers={"Accept": "application/pdf"})
    assert words_of(is_pdf_answer(accepted)) == [["page1"]]
    # A browser's Accept (anything, HTML first) still gets JSON.
    browser = client.get(
        f"/v1/jobs/{job['id']}", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert browser.mimetype == "application/json"
    # Deleted with its job.
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}?format=pdf").status_code == 404


def test_a_queued_pdf_gives_its_pages_read_with_their_words(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    job_id = client.post("/v1/jobs?pages=2-3", data=PDF, content_type="application/pdf").get_json()[
        "id"
    ]
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="w", lease_s=30)
        assert claimed is not None
    result = fake_result(claimed.pages)
    with sessions.begin() as session:
        finish(
            session, job_id=job_id, worker_id="w", text=result.text, pages=result.pages,
            keep_image=True,
        )  # fmt: skip
    pdf = is_pdf_answer(client.get(f"/v1/jobs/{job_id}?format=pdf"))
    assert words_of(pdf) == [["page2"], ["page3"]]
    with pikepdf.open(io.BytesIO(pdf)) as document:
        assert len(document.pages) == 2


def test_without_the_document_format_pdf_is_a_409_that_says_how(
    sessions: sessionmaker[Session],
) -> None:
    client = api_client(sessions, FakeOcr(), keep_images=False)
    # Asked for at once, the PDF is made from the document sent.
    assert words_of(
        is_pdf_answer(client.post("/v1/ocr?format=pdf", data=HELLO_PNG, content_type="image/png"))
    ) == [["page1"]]
    [job] = client.get("/v1/jobs").get_json()["jobs"]
    answer = client.get(f"/v1/jobs/{job['id']}?format=pdf")
    assert answer.status_code == 409
    problem = answer.get_json()
    assert problem["code"] == "format_unavailable"
    assert "POST /v1/ocr?format=pdf" in problem["detail"]
    assert "OCR_KEEP_IMAGES" in problem["detail"]
    # Other formats are there still.
    assert client.get(f"/v1/jobs/{job['id']}?format=text").status_code == 200


def test_format_alto_is_alto_xml(client: FlaskClient) -> None:
    client.post("/v1/ocr?pages=1-2", data=PDF, content_type="application/pdf")
    [job] = client.get("/v1/jobs").get_json()["jobs"]
    answer = client.get(f"/v1/jobs/{job['id']}?format=alto")
    assert answer.status_code == 200 and answer.mimetype == "application/xml"
    root = ET.fromstring(answer.get_data())
    alto = "{http://www.loc.gov/standards/alto/ns-v3#}"
    assert root.tag == f"{alto}alto"
    assert [s.get("CONTENT") for s in root.iter(f"{alto}String")] == ["page1", "page2"]
    assert [p.get("ID") for p in root.iter(f"{alto}Page")] == ["page_0", "page_1"]


def test_a_job_not_finished_has_no_pdf_yet(client: FlaskClient) -> None:
    job_id = client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png").get_json()["id"]
    answer = client.get(f"/v1/jobs/{job_id}?format=pdf")
    assert answer.status_code == 409 and answer.get_json()["code"] == "result_not_ready"
    assert client.get(f"/v1/jobs/{job_id}?format=docx").get_json()["code"] == "invalid_option"


def test_the_openapi_document_lists_the_pdf(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    get = spec["paths"]["/v1/jobs/{job_id}"]["get"]
    assert "application/pdf" in get["responses"]["200"]["content"]
    [fmt] = [p for p in get["parameters"] if p["name"] == "format"]
    assert "pdf" in fmt["schema"]["enum"]
    post = spec["paths"]["/v1/ocr"]["post"]
    assert "application/pdf" in post["responses"]["200"]["content"]


def test_a_page_read_has_a_preview_at_most_2000_px_upright(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    big = Image.new("L", (3000, 1200), 255)
    ImageDraw.Draw(big).rectangle((0, 0, 99, 99), fill=0)  # ink at the top left as sent
    data = encode(big, "PNG")
    job_id = client.post("/v1/jobs", data=data, content_type="image/png").get_json()["id"]
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="w", lease_s=30)
        assert claimed is not None
    result = fake_result((1,))
    turned = result.pages[0].model_copy(update={"width": 1200, "height": 3000, "rotation": 90})
    result = Reading(result.format, result.page_count, [turned])
    with sessions.begin() as session:
        finish(
            session, job_id=job_id, worker_id="w", text=result.text, pages=result.pages,
            keep_image=True,
        )  # fmt: skip
    answer = client.get(f"/v1/jobs/{job_id}/pages/1/image")
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    preview = Image.open(io.BytesIO(answer.get_data()))
    # Turned upright as it was read (90 clockwise as sent: turned back), 2000 px long.
    assert preview.size == (800, 2000)
    # The as-sent top left was the upright page's bottom left.
    assert preview.convert("L").getpixel((10, 1990)) < 128
    assert preview.convert("L").getpixel((10, 10)) > 128
    problem = client.get(f"/v1/jobs/{job_id}/pages/2/image").get_json()
    assert problem["code"] == "page_not_found"


def test_a_pdf_page_preview_and_its_absence(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, FakeOcr())
    client.post("/v1/ocr?pages=2", data=PDF, content_type="application/pdf")
    [job] = client.get("/v1/jobs").get_json()["jobs"]
    answer = client.get(f"/v1/jobs/{job['id']}/pages/2/image")
    assert answer.status_code == 200 and answer.mimetype in ("image/png", "image/webp")
    assert max(Image.open(io.BytesIO(answer.get_data())).size) <= 2000
    without = api_client(sessions, FakeOcr(), keep_images=False)
    without.post("/v1/ocr", data=HELLO_PNG, content_type="image/png")
    newest = without.get("/v1/jobs?limit=1").get_json()["jobs"][0]
    problem = without.get(f"/v1/jobs/{newest['id']}/pages/1/image").get_json()
    assert problem["code"] == "format_unavailable"
    queued = without.post("/v1/jobs", data=HELLO_PNG, content_type="image/png").get_json()["id"]
    assert without.get(f"/v1/jobs/{queued}/pages/1/image").get_json()["code"] == "result_not_ready"


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("fmt", "mode", "size"),
    [("JPEG", "L", (3000, 1200)), ("PNG", "RGB", (1500, 600)), ("TIFF", "1", (2400, 1000))],
)
def test_a_preview_is_upright_by_the_exif_orientation_as_pillow_turns_it(
    orientation: int, fmt: str, mode: str, size: tuple[int, int]
) -> None:
    # Shrunk first, then turned (the pixels held full size once at most): the same picture as
    # Pillow's exif_transpose of the whole page, then shrunk.
    page = Image.new(mode, size, 255)
    ImageDraw.Draw(page).rectangle((0, 0, size[0] // 10, size[1] // 10), fill=0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    page.save(out, fmt, exif=exif.tobytes())
    data, _media_type = page_preview(out.getvalue(), 1, 0)
    preview = Image.open(io.BytesIO(data)).convert("L")
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(out.getvalue()))).convert("L")
    expected.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
    assert preview.size == expected.size
    # The ink is in the same corner.
    corners = [
        (5, 5),
        (preview.width - 5, 5),
        (5, preview.height - 5),
        (preview.width - 5, preview.height - 5),
    ]
    assert [preview.getpixel(c) < 128 for c in corners] == [
        expected.getpixel(c) < 128 for c in corners
    ]


def test_a_render_waits_for_its_turn_then_is_told_to_retry(
    client: FlaskClient, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Previews and searchable PDFs decode pages in the API process: a few at once, not as many
    # as ask (16 previews of one large page at once took 9.7 GB in two API processes).
    client.post("/v1/ocr", data=HELLO_PNG, content_type="image/png")
    job_id = client.get("/v1/jobs?limit=1").get_json()["jobs"][0]["id"]
    monkeypatch.setattr(rendering, "RENDER_WAIT_S", 0.2)
    with contextlib.ExitStack() as held:
        for _ in range(rendering.RENDERS_AT_ONCE):
            held.enter_context(rendering.render_turn())
        for path in (f"/v1/jobs/{job_id}/pages/1/image", f"/v1/jobs/{job_id}?format=pdf"):
            answer = client.get(path)
            assert answer.status_code == 503, path
            assert answer.get_json()["code"] == "renderer_busy"
            assert answer.headers["Retry-After"] == "2"
    # Each render gives the pages' freed memory back (glibc keeps it otherwise: an API
    # process held 1.5-2.1 GB after 16 previews of one large page).
    trims: list[None] = []
    monkeypatch.setattr(rendering, "release_memory", lambda: trims.append(None))
    for path in (f"/v1/jobs/{job_id}/pages/1/image", f"/v1/jobs/{job_id}?format=pdf"):
        assert client.get(path).status_code == 200, path
    assert len(trims) == 2
