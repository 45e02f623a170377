"""Bad input on the wire, each with the answer it must get, and unusual images that must be read
(test/e2e/test_bad_input.py asserts them, ``bench/reliability.py`` counts the 4xx)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from select import select as readable
from typing import Any
from urllib.parse import urlsplit

import requests
from PIL import Image

from ocr_testkit.hostile_images import blank_png
from ocr_testkit.pages import HELLO, HELLO_PNG, b64, encode, render_lines

UNKNOWN_ID = "0b7f4c36-2d1c-4f59-9a43-6f3a1c1e0c55"


@dataclass(frozen=True)
class BadInput:
    """One malformed request and the answer it must get (most are a POST /image)."""

    name: str
    status: int
    code: str
    body: bytes | None = None
    path: str = "/image"
    method: str = "POST"
    params: dict[str, str] = field(default_factory=dict)


def lookup(name: str, body: bytes | None = None, **params: str) -> BadInput:
    """A GET /image of an id that names no task (in ``body`` or in the query)."""
    return BadInput(name, 404, "task_not_found", body, method="GET", params=params)


def image_body(data: bytes) -> bytes:
    return json.dumps({"image_data": base64.b64encode(data).decode()}).encode()


def json_body(value: Any) -> bytes:
    return json.dumps(value).encode()


def bomb_png(side: int = 20_000) -> bytes:
    """A real 1-bit PNG of side x side pixels (400 megapixels) that compresses to ~60 KB."""
    return blank_png(side, side, bit_depth=1, colour_type=0)


def zip_file() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("page.png", HELLO_PNG)
    return out.getvalue()


def one_pixel_png() -> bytes:
    return encode(Image.new("L", (1, 1), 255))


def bad_inputs() -> list[BadInput]:
    """Every malformed request of the issue, with the status and code it must get."""
    jpeg = render_lines(HELLO, fmt="JPEG")
    html = b"<!DOCTYPE html><html><body>page.png</body></html>"
    return [
        BadInput("empty body (/image)", 400, "empty_body", b""),
        BadInput("empty body (/image-sync)", 400, "empty_body", b"", "/image-sync"),
        BadInput("whitespace body", 400, "empty_body", b" \r\n "),
        BadInput("no id at all (GET /image)", 400, "missing_field", method="GET"),
        BadInput("invalid JSON", 400, "invalid_json", b'{"image_data": '),
        BadInput("invalid UTF-8", 400, "invalid_json", b"\xff\xfe{}"),
        BadInput("JSON nested too deep", 400, "invalid_json", b"[" * 100_000),
        BadInput("JSON list", 400, "invalid_json", b"[]"),
        BadInput("JSON string", 400, "invalid_json", b'"abc"'),
        BadInput("JSON number", 400, "invalid_json", b"42", "/image-sync"),
        BadInput("JSON null", 400, "invalid_json", b"null"),
        BadInput("missing image_data", 400, "missing_field", b'{"image": "x"}'),
        BadInput("empty object", 400, "missing_field", b"{}", "/image-sync"),
        BadInput("image_data a number", 400, "invalid_field", b'{"image_data": 1}'),
        BadInput("image_data null", 400, "invalid_field", b'{"image_data": null}'),
        BadInput("image_data object", 400, "invalid_field", b'{"image_data": {}}'),
        BadInput("image_data bool", 400, "invalid_field", b'{"image_data": true}', "/image-sync"),
        BadInput("image_data []", 400, "invalid_field", b'{"image_data": []}'),
        BadInput("image_data [1]", 400, "invalid_field", b'{"image_data": [1]}'),
        BadInput("invalid base64", 400, "invalid_base64", json_body({"image_data": "@@@@"})),
        BadInput("base64 one char", 400, "invalid_base64", json_body({"image_data": "a"})),
        BadInput(
            "base64 non-ASCII", 400, "invalid_base64", json_body({"image_data": "iVBOR\u00e9"})
        ),
        BadInput("base64 of random bytes", 400, "invalid_image", image_body(os.urandom(4096))),
        BadInput(
            "truncated PNG", 400, "invalid_image", image_body(HELLO_PNG[: len(HELLO_PNG) // 2])
        ),
        BadInput(
            "truncated JPEG",
            400,
            "invalid_image",
            image_body(jpeg[: len(jpeg) // 2]),
            "/image-sync",
        ),
        BadInput("PNG signature only", 400, "invalid_image", image_body(HELLO_PNG[:8])),
        BadInput("text file", 400, "invalid_image", image_body(b"Hello OCR world\n" * 20)),
        BadInput("zip file", 400, "invalid_image", image_body(zip_file())),
        BadInput(
            "HTML named .png",
            400,
            "invalid_image",
            json_body({"image_data": "data:image/png;base64," + b64(html)}),
        ),
        BadInput(
            "PDF file",
            400,
            "invalid_image",
            image_body(b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"),
        ),
        BadInput("1x1 image", 400, "image_too_small", image_body(one_pixel_png())),
        BadInput("0-byte file", 400, "empty_image", json_body({"image_data": ""})),
        BadInput(
            "0-byte file (data URL)",
            400,
            "empty_image",
            json_body({"image_data": "data:image/png;base64,"}),
            "/image-sync",
        ),
        BadInput("decompression bomb (400 Mpx)", 413, "too_many_pixels", image_body(bomb_png())),
        BadInput(
            "one bad image in a list",
            400,
            "invalid_image",
            json_body({"image_data": [b64(HELLO_PNG), b64(b"not an image")]}),
        ),
        lookup("id not a UUID", task_id="123"),
        lookup("id with SQL", task_id="' OR '1'='1' -- "),
        lookup("id with SQL (body)", json_body({"task_id": f"{UNKNOWN_ID}'; DROP TABLE jobs; --"})),
        lookup("id with a path", task_id="../../etc/passwd"),
        lookup("id with NUL", id=f"{UNKNOWN_ID}\x00"),
        lookup("id a number", json_body({"task_id": 12})),
        lookup("id long (body)", json_body({"task_id": "a" * 5000})),
        BadInput(
            "id a list", 400, "invalid_task_id", json_body({"task_id": [UNKNOWN_ID]}), method="GET"
        ),
        lookup("unknown id", task_id=UNKNOWN_ID),
        BadInput(
            "path traversal route", 404, "not_found", None, "/image/..%2F..%2Fetc%2Fpasswd", "GET"
        ),
        BadInput("id in the path", 404, "not_found", None, f"/image/{UNKNOWN_ID}", "GET"),
        BadInput("unknown route", 404, "not_found", None, "/nope", "GET"),
        BadInput("wrong method (DELETE /image)", 405, "method_not_allowed", method="DELETE"),
        BadInput(
            "wrong method (PUT /image-sync)", 405, "method_not_allowed", None, "/image-sync", "PUT"
        ),
        BadInput(
            "wrong method (GET /image-sync)", 405, "method_not_allowed", None, "/image-sync", "GET"
        ),
        BadInput("wrong method (POST /allimages)", 405, "method_not_allowed", b"{}", "/allimages"),
    ]


@dataclass
class Outcome:
    status: int | None
    code: str | None
    json_ok: bool
    elapsed_s: float
    detail: str = ""


def send(api_url: str, case: BadInput, timeout_s: float = 30) -> Outcome:
    """Send one bad request as a plain client would; what came back."""
    started = time.monotonic()
    try:
        response = requests.request(
            case.method,
            api_url + case.path,
            data=case.body,
            params=case.params,
            timeout=timeout_s,
        )
    except requests.RequestException as exc:
        return Outcome(None, None, False, time.monotonic() - started, type(exc).__name__)
    elapsed_s = time.monotonic() - started
    try:
        body = response.json()
        code = body["error"]["code"]
        message = body["error"]["message"]
        json_ok = isinstance(code, str) and isinstance(message, str) and bool(message)
    except (ValueError, KeyError, TypeError):
        return Outcome(response.status_code, None, False, elapsed_s, response.text[:200])
    json_ok = json_ok and response.headers.get("Content-Type", "").startswith("application/json")
    return Outcome(response.status_code, code, json_ok, elapsed_s, message)


def healthy(api_url: str) -> bool:
    try:
        return requests.get(api_url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def send_raw(
    api_url: str, head: bytes, chunks: Iterator[bytes], timeout_s: float = 10
) -> tuple[int, dict[str, Any], int]:
    """Send a request head, then body chunks until the server answers; returns (status, JSON
    body, body bytes sent before the answer came)."""
    parts = urlsplit(api_url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if readable([sock], [], [], 0)[0]:
                break  # the answer is here: read no further
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        reply = b""
        deadline = time.monotonic() + timeout_s
        while b"\r\n\r\n" not in reply or not _complete(reply):
            if time.monotonic() > deadline:
                break
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            reply += data
    head_text, _, body = reply.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ", 2)[1]) if head_text else 0
    if b"transfer-encoding: chunked" in head_text.lower():
        body = _dechunk(body)
    return status, json.loads(body) if body else {}, sent


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return body.endswith(b"0\r\n\r\n")


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2 :]
    return out


def limit_bytes() -> int:
    """The API's request limit with the default OCR_MAX_UPLOAD_BYTES (10 MiB)."""
    return 10 * 1024 * 1024 * 4 // 3 + 64 * 1024


def over_limit_with_length(api_url: str) -> tuple[int, dict[str, Any], int]:
    """Content-Length says 1 GB; the API must refuse at once, before reading the body."""
    host = urlsplit(api_url).netloc.encode()
    head = (
        b"POST /image HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\nConnection: close\r\n\r\n"
    )
    chunks = (b'{"image_data": "' + b"A" * 65520 if n == 0 else b"A" * 65536 for n in range(15_000))
    return send_raw(api_url, head, chunks)


def over_limit_chunked(api_url: str) -> tuple[int, dict[str, Any], int]:
    """A chunked body with no length: the API reads up to its limit, no further."""
    host = urlsplit(api_url).netloc.encode()
    head = (
        b"POST /image-sync HTTP/1.1\r\nHost: " + host + b"\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    piece = b"A" * 65536
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(1000))  # 64 MB at most
    return send_raw(api_url, head, chunks)


def sixteen_bit_png() -> bytes:
    grey = Image.open(io.BytesIO(HELLO_PNG)).convert("I").point(lambda v: v * 257)
    return encode(grey.convert("I;16"))


def animated_gif() -> bytes:
    first = Image.open(io.BytesIO(HELLO_PNG)).convert("P")
    second = Image.open(io.BytesIO(render_lines(["Second frame only"]))).convert("P")
    return encode(first, "GIF", save_all=True, append_images=[second], duration=500, loop=0)


GOOD_IMAGES: dict[str, Callable[[], bytes]] = {
    "16-bit PNG": sixteen_bit_png,
    "CMYK JPEG": lambda: render_lines(HELLO, fmt="JPEG", mode="CMYK"),
    "CMYK TIFF": lambda: render_lines(HELLO, fmt="TIFF", mode="CMYK"),
    "animated GIF": animated_gif,
}


def read_good_image(api_url: str, data: bytes) -> tuple[int, Any]:
    response = requests.post(api_url + "/image-sync", json={"image_data": b64(data)}, timeout=60)
    return response.status_code, response.json()
