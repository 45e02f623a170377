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
from ocr_common.observability import RequestIdFilter, request_id_scope
from ocr_common.options import OcrOptions
from ocr_common.settings import load_settings
from ocr_testkit.pages import HELLO_PNG

# What an OCR server stand-in answers every POST with, a body of None: the request's headers,
# echoed (as some servers' error pages do).
OURS = json.dumps({"error": {"code": "refused", "message": "no"}}).encode()
ECHO = None


@pytest.fixture
def refusing_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """An OCR server stand-in that answers every POST with the (status, body) given as param."""
    status, answer = request.param if isinstance(request.param, tuple) else (request.param, OURS)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = str(self.headers).encode() if answer is ECHO else answer
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
    client = OcrServerClient(load_settings(server_url=url, internal_token=TOKEN))
    request = OcrRequest(HELLO_PNG, OcrOptions(), 1)
    with pytest.raises(Unavailable) as info, request_id_scope("req-7"):
        client.recognize([request], deadline=time.monotonic() + 10)
    return info.value


TOKEN = "internal-token-5e1f"


@pytest.mark.parametrize(
    ("refusing_server", "setting"),
    [
        (401, "OCR_INTERNAL_TOKEN"),
        (421, "OCR_ALLOWED_HOSTS"),
        # OCR_SERVER_URL leading elsewhere: a wrong path, the API itself, a web server, one
        # that echoes the request's headers (the internal token among them) in its error.
        (404, "OCR_SERVER_URL"),
        (405, "OCR_SERVER_URL"),
        ((200, b"<html>a web server</html>"), "OCR_SERVER_URL"),
        ((403, ECHO), "OCR_SERVER_URL"),
        ((501, ECHO), "OCR_SERVER_URL"),
        ((400, b"not the OCR server's error"), "OCR_SERVER_URL"),
    ],
    indirect=["refusing_server"],
)
def test_settings_that_disagree_are_a_503_for_the_client_and_an_error_for_the_operator(
    refusing_server: str, setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: a 500 internal_error (or the other server's page), logged only as an access line.
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        error = read(refusing_server)
    assert (error.status, error.code) == (503, "ocr_unavailable")
    assert "settings disagree" in error.message
    for secret in ("127.0.0.1", TOKEN, "Passw0rd", "svc:"):
        assert secret not in error.message
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert setting in record.getMessage()
    # The call runs on a thread of its own, under the request's id.
    assert record.request_id == "req-7"  # type: ignore[attr-defined]
    assert "Passw0rd" not in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("refusing_server", [(502, b"<html>Bad Gateway</html>")], indirect=True)
def test_a_proxy_saying_the_ocr_server_is_down_is_a_503_to_retry(refusing_server: str) -> None:
    error = read(refusing_server)
    assert (error.status, error.code) == (503, "ocr_unavailable")
    assert "not answering" in error.message and "Bad Gateway" not in error.message


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
