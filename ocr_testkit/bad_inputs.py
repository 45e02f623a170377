"""Bad input on the wire, each with the answer it must get, and unusual images that must be read
(test/e2e/test_bad_input.py asserts them, ``bench/reliability.py`` counts the 4xx)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from select import select as readable
from typing import Any
from urllib.parse import urlsplit

import requests
from PIL import Image

from ocr_testkit.pages import HELLO, HELLO_PNG, b64, render_lines

UNKNOWN_ID = "0b7f4c36-2d1c-4f59-9a43-6f3a1c1e0c55"


@dataclass(frozen=True)
class BadInput:
    """One malformed request and the answer it must get."""

    name: str
    method: str
    path: str
    status: int
    code: str
    body: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def image_body(data: bytes) -> bytes:
    return json.dumps({"image_data": base64.b64encode(data).decode()}).encode()


def json_body(value: Any) -> bytes:
    return json.dumps(value).encode()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 20_000) -> bytes:
    """A real 1-bit PNG of side x side pixels (400 megapixels) that compresses to ~60 KB."""
    row = b"\x00" + b"\x00" * (side // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def zip_file() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("page.png", HELLO_PNG)
    return out.getvalue()


def one_pixel_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (1, 1), 255).save(out, "PNG")
    return out.getvalue()


def bad_inputs() -> list[BadInput]:
    """Every malformed request of the issue, with the status and code it must get."""
    jpeg = render_lines(HELLO, fmt="JPEG")
    post = "POST"
    cases = [
        BadInput("empty body (/image)", post, "/image", 400, "empty_body", b""),
        BadInput("empty body (/image-sync)", post, "/image-sync", 400, "empty_body", b""),
        BadInput("whitespace body", post, "/image", 400, "empty_body", b" \r\n "),
        BadInput("no id at all (GET /image)", "GET", "/image", 400, "missing_field"),
        BadInput("invalid JSON", post, "/image", 400, "invalid_json", b'{"image_data": '),
        BadInput("invalid UTF-8", post, "/image", 400, "invalid_json", b"\xff\xfe{}"),
        BadInput("JSON nested too deep", post, "/image", 400, "invalid_json", b"[" * 100_000),
        BadInput("JSON list", post, "/image", 400, "invalid_json", b"[]"),
        BadInput("JSON string", post, "/image", 400, "invalid_json", b'"abc"'),
        BadInput("JSON number", post, "/image-sync", 400, "invalid_json", b"42"),
        BadInput("JSON null", post, "/image", 400, "invalid_json", b"null"),
        BadInput("missing image_data", post, "/image", 400, "missing_field", b'{"image": "x"}'),
        BadInput("empty object", post, "/image-sync", 400, "missing_field", b"{}"),
        BadInput("image_data a number", post, "/image", 400, "invalid_field", b'{"image_data": 1}'),
        BadInput("image_data null", post, "/image", 400, "invalid_field", b'{"image_data": null}'),
        BadInput("image_data object", post, "/image", 400, "invalid_field", b'{"image_data": {}}'),
        BadInput(
            "image_data bool", post, "/image-sync", 400, "invalid_field", b'{"image_data": true}'
        ),
        BadInput("image_data []", post, "/image", 400, "invalid_field", b'{"image_data": []}'),
        BadInput("image_data [1]", post, "/image", 400, "invalid_field", b'{"image_data": [1]}'),
        BadInput(
            "invalid base64",
            post,
            "/image",
            400,
            "invalid_base64",
            json_body({"image_data": "@@@@"}),
        ),
        BadInput(
            "base64 one char", post, "/image", 400, "invalid_base64", json_body({"image_data": "a"})
        ),
        BadInput(
            "base64 non-ASCII",
            post,
            "/image",
            400,
            "invalid_base64",
            json_body({"image_data": "iVBOR\u00e9"}),
        ),
        BadInput(
            "base64 of random bytes",
            post,
            "/image",
            400,
            "invalid_image",
            image_body(os.urandom(4096)),
        ),
        BadInput(
            "truncated PNG",
            post,
            "/image",
            400,
            "invalid_image",
            image_body(HELLO_PNG[: len(HELLO_PNG) // 2]),
        ),
        BadInput(
            "truncated JPEG",
            post,
            "/image-sync",
            400,
            "invalid_image",
            image_body(jpeg[: len(jpeg) // 2]),
        ),
        BadInput(
            "PNG signature only", post, "/image", 400, "invalid_image", image_body(HELLO_PNG[:8])
        ),
        BadInput(
            "text file", post, "/image", 400, "invalid_image", image_body(b"Hello OCR world\n" * 20)
        ),
        BadInput("zip file", post, "/image", 400, "invalid_image", image_body(zip_file())),
        BadInput(
            "HTML named .png",
            post,
            "/image",
            400,
            "invalid_image",
            json_body(
                {
                    "image_data": "data:image/png;base64,"
                    + b64(b"<!DOCTYPE html><html><body>page.png</body></html>")
                }
            ),
        ),
        BadInput(
            "PDF file",
            post,
            "/image",
            400,
            "invalid_image",
            image_body(b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"),
        ),
        BadInput("1x1 image", post, "/image", 400, "image_too_small", image_body(one_pixel_png())),
        BadInput("0-byte file", post, "/image", 400, "empty_image", json_body({"image_data": ""})),
        BadInput(
            "0-byte file (data URL)",
            post,
            "/image-sync",
            400,
            "empty_image",
            json_body({"image_data": "data:image/png;base64,"}),
        ),
        BadInput(
            "decompression bomb (400 Mpx)",
            post,
            "/image",
            413,
            "too_many_pixels",
            image_body(bomb_png()),
        ),
        BadInput(
            "one bad image in a list",
            post,
            "/image",
            400,
            "invalid_image",
            json_body({"image_data": [b64(HELLO_PNG), b64(b"not an image")]}),
        ),
        BadInput(
            "id not a UUID", "GET", "/image", 404, "task_not_found", params={"task_id": "123"}
        ),
        BadInput(
            "id with SQL",
            "GET",
            "/image",
            404,
            "task_not_found",
            params={"task_id": "' OR '1'='1' -- "},
        ),
        BadInput(
            "id with SQL (body)",
            "GET",
            "/image",
            404,
            "task_not_found",
            json_body({"task_id": f"{UNKNOWN_ID}'; DROP TABLE jobs; --"}),
        ),
        BadInput(
            "id with a path",
            "GET",
            "/image",
            404,
            "task_not_found",
            params={"task_id": "../../etc/passwd"},
        ),
        BadInput(
            "id with NUL",
            "GET",
            "/image",
            404,
            "task_not_found",
            params={"id": f"{UNKNOWN_ID}\x00"},
        ),
        BadInput("id a number", "GET", "/image", 404, "task_not_found", json_body({"task_id": 12})),
        BadInput(
            "id long (body)",
            "GET",
            "/image",
            404,
            "task_not_found",
            json_body({"task_id": "a" * 5000}),
        ),
        BadInput(
            "id a list",
            "GET",
            "/image",
            400,
            "invalid_task_id",
            json_body({"task_id": [UNKNOWN_ID]}),
        ),
        BadInput(
            "unknown id", "GET", "/image", 404, "task_not_found", params={"task_id": UNKNOWN_ID}
        ),
        BadInput("path traversal route", "GET", "/image/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        BadInput("id in the path", "GET", f"/image/{UNKNOWN_ID}", 404, "not_found"),
        BadInput("unknown route", "GET", "/nope", 404, "not_found"),
        BadInput("wrong method (DELETE /image)", "DELETE", "/image", 405, "method_not_allowed"),
        BadInput("wrong method (GET /image-sync)", "GET", "/image-sync", 405, "method_not_allowed"),
        BadInput(
            "wrong method (POST /allimages)", post, "/allimages", 405, "method_not_allowed", b"{}"
        ),
    ]
    return cases


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
            headers=case.headers,
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
    out = io.BytesIO()
    grey.convert("I;16").save(out, "PNG")
    return out.getvalue()


def animated_gif() -> bytes:
    first = Image.open(io.BytesIO(HELLO_PNG)).convert("P")
    second = Image.open(io.BytesIO(render_lines(["Second frame only"]))).convert("P")
    out = io.BytesIO()
    first.save(out, "GIF", save_all=True, append_images=[second], duration=500, loop=0)
    return out.getvalue()


GOOD_IMAGES: dict[str, Callable[[], bytes]] = {
    "16-bit PNG": sixteen_bit_png,
    "CMYK JPEG": lambda: render_lines(HELLO, fmt="JPEG", mode="CMYK"),
    "CMYK TIFF": lambda: render_lines(HELLO, fmt="TIFF", mode="CMYK"),
    "animated GIF": animated_gif,
}


def read_good_image(api_url: str, data: bytes) -> tuple[int, Any]:
    response = requests.post(api_url + "/image-sync", json={"image_data": b64(data)}, timeout=60)
    return response.status_code, response.json()
