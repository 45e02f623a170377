"""The API's client of the OCR server: what a client is told, and what the operator is told,
when the OCR server cannot be used."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from api_server.ocr_client import OcrRequest, OcrServerClient
from ocr_common.errors import Unavailable
from ocr_common.options import OcrOptions
from ocr_common.settings import load_settings
from ocr_testkit.pages import HELLO_PNG


@pytest.fixture
def refusing_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """An OCR server stand-in that answers every POST with the status given as the param."""
    status = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"error": {"code": "refused", "message": "no"}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://svc:Passw0rd@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def read(url: str) -> Unavailable:
    client = OcrServerClient(load_settings(server_url=url))
    request = OcrRequest(HELLO_PNG, OcrOptions(), 1)
    with pytest.raises(Unavailable) as info:
        client.recognize([request], deadline=time.monotonic() + 10)
    return info.value


@pytest.mark.parametrize(
    ("refusing_server", "setting"),
    [(401, "OCR_INTERNAL_TOKEN"), (421, "OCR_ALLOWED_HOSTS")],
    indirect=["refusing_server"],
)
def test_settings_that_disagree_are_a_503_for_the_client_and_an_error_for_the_operator(
    refusing_server: str, setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: a 500 internal_error, logged only as an INFO access line.
    with caplog.at_level(logging.INFO):
        error = read(refusing_server)
    assert (error.status, error.code) == (503, "ocr_unavailable")
    assert "settings disagree" in error.message and "127.0.0.1" not in error.message
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert setting in record.getMessage()
    assert "Passw0rd" not in caplog.text


def test_an_ocr_server_not_answering_is_told_without_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with caplog.at_level(logging.INFO):
        error = read(f"http://svc:Passw0rd@127.0.0.1:{port}")
    assert (error.status, error.code) == (503, "ocr_unavailable")
    # The client learns it is down, not where the inside is, nor its credentials.
    assert "127.0.0.1" not in error.message and "Passw0rd" not in error.message
    assert f"127.0.0.1:{port}" in caplog.text and "Passw0rd" not in caplog.text
