"""Reading what clients send: lenient JSON bodies, lenient base64, strict image checks.

Everything here runs before anything is stored, so a bad upload never becomes a job.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import Any

from flask import current_app, g, request
from PIL import Image
from werkzeug.exceptions import RequestEntityTooLarge

from ocr_common.documents import IMAGE_FORMATS, check_size
from ocr_common.errors import BadRequest, InvalidImage, PayloadTooLarge
from ocr_common.image_structure import check_structure

_DATA_URL = re.compile(r"^\s*data:[^,]{0,200}?;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")
# Pillow's own bomb check is a warning; we refuse by our own limit before decoding.
Image.MAX_IMAGE_PIXELS = None


def read_body() -> bytes:
    """The request body, refusing one over the limit even when it comes without a length.

    A Content-Length over MAX_CONTENT_LENGTH is refused by Werkzeug before anything is read; a
    chunked body is only cut at the limit, which would make a too-large upload look like a
    malformed one.
    """
    body = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is None and limit is not None and len(body) >= limit:
        raise RequestEntityTooLarge()
    return body


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, whatever Content-Type the client sent (or none)."""
    if not body.strip():
        raise BadRequest(
            'the request body is empty: send a JSON object such as {"image_data": "<base64>"}',
            code="empty_body",
        )
    try:
        # strict=False: real clients put raw line breaks inside the base64 string.
        value = json.loads(body, strict=False)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(value, dict):
        raise BadRequest(
            f"the request body must be a JSON object, not {type(value).__name__}",
            code="invalid_json",
        )
    return value


def request_json() -> dict[str, Any]:
    """The request body as a JSON object (``parse_json_object``), read and parsed once per
    request: the rate limit counts the images in it before the view reads them."""
    cached = g.get("request_json")
    if cached is None:
        try:
            cached = parse_json_object(read_body())
        except Exception as exc:  # noqa: BLE001 - kept to be raised again by the view
            cached = exc
        g.request_json = cached
    if isinstance(cached, Exception):
        raise cached
    return cached


def decode_base64(value: object, *, field: str, max_bytes: int) -> bytes:
    """Decode one base64 image: a data: URL prefix, line breaks, spaces and url-safe letters are
    all accepted; missing padding is restored."""
    if not isinstance(value, str):
        raise BadRequest(
            f'"{field}" must be a base64 string, not {type(value).__name__}', code="invalid_field"
        )
    text = _DATA_URL.sub("", value, count=1)
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest(
            f'"{field}" is not base64: it has non-ASCII characters', code="invalid_base64"
        ) from None
    raw = _WHITESPACE.sub(b"", raw).translate(bytes.maketrans(b"-_", b"+/"))
    if not raw:
        raise InvalidImage(f'"{field}" is an empty image (0 bytes)', code="empty_image")
    if len(raw) * 3 // 4 > max_bytes:
        raise _too_large(max_bytes)
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f'"{field}" is not valid base64', code="invalid_base64") from None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the image is larger than {max_bytes} bytes (OCR_MAX_UPLOAD_BYTES)", code="image_too_large"
    )


def validate_image(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[str, int, int]:
    """Check that ``data`` is a whole image we accept; returns (format, width, height).

    Nothing is decoded: the pixel limit comes from the header, and a truncated or corrupt file
    is found from its structure (``check_structure``), in bounded time and memory.
    """
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    if not data:
        raise InvalidImage("the image is empty (0 bytes)", code="empty_image")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for non-images
        raise InvalidImage(
            f"the data is not an image (it starts with {data[:8]!r}); send PNG, JPEG, TIFF, "
            "BMP, GIF or WebP bytes, base64-encoded"
        ) from None
    with image:
        fmt = image.format or "unknown"
        if fmt not in IMAGE_FORMATS:
            raise InvalidImage(
                f"{fmt} images are not supported; send PNG, JPEG, TIFF, BMP, GIF or WebP",
                code="unsupported_format",
            )
        width, height = image.size
        check_size(width, height, max_pixels, "the image", "scale it down")
        check_structure(image, data)
    return fmt, width, height
