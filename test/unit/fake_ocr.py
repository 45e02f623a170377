"""A fake OCR server for API tests: answers every document with a made-up rich result."""

from __future__ import annotations

import tempfile
from concurrent.futures import Future
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api_server import create_app
from api_server.ocr_client import OcrRequest
from api_server.services import Services
from ocr_common.blobs import FileStore, JobFiles
from ocr_common.errors import BadRequest, EngineError, OcrError, Unavailable
from ocr_common.options import OcrOptions
from ocr_common.settings import load_settings
from ocr_common.wire import Reading
from ocr_testkit.pages import page_reading

UNREADABLE = b"unreadable"
REFUSED = b"refused"


def fake_result(numbers: tuple[int, ...], text: str | None = None) -> Reading:
    """What the OCR server answers for these pages (``text``: every page reads so)."""
    return Reading("PNG", len(numbers), [page_reading(n, text) for n in numbers])


class FakeOcr:
    """Reads every page as "page<N>", or a one-page image as ``texts`` says for its bytes; fails
    on a document holding UNREADABLE, refuses one holding REFUSED; can be told to be down."""

    def __init__(self, texts: dict[bytes, str] | None = None) -> None:
        self.notified = 0
        self.down = False
        self.texts = texts or {}
        self.documents: list[tuple[bytes, OcrOptions]] = []  # every document it was asked to read

    def recognize(
        self, requests: list[OcrRequest], *, deadline: float, gone: Future[None] | None = None
    ) -> list[Reading | OcrError]:
        if self.down:
            raise Unavailable("the OCR server is down", code="ocr_unavailable")
        return [self._read(request) for request in requests]

    def _read(self, request: OcrRequest) -> Reading | OcrError:
        self.documents.append((request.document, request.options))
        if UNREADABLE in request.document:
            return EngineError("Tesseract could not read page 1")
        if REFUSED in request.document:
            return BadRequest("the OCR server refuses this document", code="invalid_image")
        if request.document in self.texts:
            return fake_result((1,), self.texts[request.document])
        return fake_result(request.options.pages or tuple(range(1, request.pages + 1)))

    def notify(self) -> None:
        self.notified += 1

    def warm_up(self) -> None:
        self.warmed = True


def api_client(
    sessions: sessionmaker[Session],
    ocr: FakeOcr | None = None,
    files: JobFiles | None = None,
    **settings: object,
) -> FlaskClient:
    """A test client of the API on ``sessions``, ``ocr`` (a new FakeOcr by default) its OCR
    server, ``files`` its blob store (a temporary folder that lives as long as the client by
    default), ``settings`` the values that differ from the defaults."""
    folder = None
    if files is None:
        folder = tempfile.TemporaryDirectory(prefix="ocr-test-blobs-")
        files = JobFiles(FileStore(Path(folder.name)))
    services = Services(
        settings=load_settings(**settings), sessions=sessions, ocr=ocr or FakeOcr(), files=files
    )
    client = create_app(services=services).test_client()
    client.blob_folder = folder  # type: ignore[attr-defined]
    return client
