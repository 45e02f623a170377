"""Reading what clients send: lenient JSON bodies, lenient base64, strict document checks,
all before anything is stored, so a bad upload never becomes a job."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import io
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request
from PIL import Image
from werkzeug.exceptions import RequestEntityTooLarge

from ocr_common import job_store
from ocr_common.documents import Document, check_image, is_pdf
from ocr_common.errors import (
    BadRequest,
    InvalidImage,
    OcrError,
    PayloadTooLarge,
    UnsupportedMediaType,
    json_kind,
)
from ocr_common.options import OPTION_FIELDS, ORIGINAL_API_OPTIONS, OcrOptions, check_submission

from . import fleet
from .services import current_services

_DATA_URL = re.compile(r"^\s*data:[^,]{0,200}?;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")
# The keys a list of images may come in (original API); with both, the first wins.
IMAGE_KEYS = ("image_data", "image_data_list")
# Raw v1 bodies read as a document besides image/*; the format is found from the bytes.
RAW_MEDIA_TYPES = ("application/pdf", "application/octet-stream")
# The v1 endpoint that reads the file as it is, for each upload endpoint of the original API.
V1_EQUIVALENT = {"/image-sync": "/v1/ocr", "/image": "/v1/jobs"}
# A v1 JSON body, as messages show it.
DOCUMENT_EXAMPLE = '{"document": "<base64>"}'


def read_body() -> bytes:
    """The request body, refusing one over the limit even when it comes without a length
    (Werkzeug only cuts a chunked body at the limit: a too-large upload would look malformed)."""
    body = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is None and limit is not None and len(body) >= limit:
        raise RequestEntityTooLarge()
    return body


def parse_json_object(body: bytes, example: str = '{"image_data": "<base64>"}') -> dict[str, Any]:
    """The body as a JSON object, whatever Content-Type the client sent (or none); an empty
    one is told to send ``example``, the endpoint's own body."""
    if not body.strip():
        raise BadRequest(
            f"the request body is empty: send a JSON object such as {example}", code="empty_body"
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
            f"the request body must be a JSON object, not {json_kind(value)}",
            code="invalid_json",
        )
    return value


def request_json() -> dict[str, Any]:
    """The original API's upload body as a JSON object, read once per request: the rate limit
    counts its images before the view reads them."""
    cached = g.get("request_json")
    if cached is None:
        try:
            cached = _upload_json(read_body())
        except Exception as exc:  # noqa: BLE001 - kept to be raised again by the view
            cached = exc
        g.request_json = cached
    if isinstance(cached, Exception):
        raise cached
    return cached


def _upload_json(body: bytes) -> dict[str, Any]:
    """``parse_json_object``; a document sent as it is (415) or as a form field (400) is told
    what this endpoint reads, and which v1 endpoint reads the file as it is."""
    try:
        return parse_json_object(body)
    except BadRequest as exc:
        path = request.path.rstrip("/")
        sent = _sent_instead(body)
        if sent is None or path not in V1_EQUIVALENT:
            raise
        message = (
            f'{path} reads a JSON body, {{"image_data": "<base64>"}}, not {sent}: send the '
            f"file as it is to {V1_EQUIVALENT[path]} (a multipart file= part, or the raw "
            "bytes), or its base64 in that JSON body here"
        )
        if sent == FORM_FIELD:
            raise BadRequest(message, code=exc.code) from None
        raise UnsupportedMediaType(message) from None


FORM_FIELD = "a form field (image_data=...)"


def _sent_instead(body: bytes) -> str | None:
    """What a body that is not JSON is: a document sent as it is, or a form field; else None."""
    if request.mimetype == "multipart/form-data":
        return "a multipart upload"
    if any(key in IMAGE_KEYS for key in urllib.parse.parse_qs(body[:64].decode("latin-1"))):
        return FORM_FIELD
    if is_pdf(body):
        return "a PDF"
    # Pillow reads the header only: which image format, no pixels.
    with contextlib.suppress(Exception), Image.open(io.BytesIO(body)) as image:
        return f"a raw {image.format} image"
    return None


def decode_base64(value: object, *, field: str, max_bytes: int) -> bytes:
    """Decode one base64 image, leniently (data: URL prefix, white space, url-safe, no padding)."""
    if not isinstance(value, str):
        raise BadRequest(
            f'"{field}" must be a base64 string, not {json_kind(value)}', code="invalid_field"
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
        raise PayloadTooLarge(
            f"the image is larger than {max_bytes} bytes (OCR_MAX_UPLOAD_BYTES)",
            code="image_too_large",
        )
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f'"{field}" is not valid base64', code="invalid_base64") from None


@dataclass(frozen=True)
class Submission:
    """A checked document and the options to read it with (the original API's: the defaults)."""

    data: bytes
    options: OcrOptions
    document: Document

    @functools.cached_property
    def image_digest(self) -> str:
        return job_store.image_digest(self.data)

    @functools.cached_property
    def digest(self) -> str:
        """Same document and same options: the same request, however it was sent."""
        return hashlib.sha256(
            self.image_digest.encode() + self.options.to_json().encode()
        ).hexdigest()


# -- the original API: base64 images in a JSON body -------------------------------------------


def images_in_body(body: dict[str, Any]) -> tuple[object, bool] | None:
    """The images of an upload body and whether they came as a list; None without any."""
    for key in IMAGE_KEYS:
        if key in body:
            value = body[key]
            if key == "image_data_list" and not isinstance(value, list):
                value = [value]
            return value, isinstance(value, list)
    return None


def read_uploads() -> tuple[list[Submission], bool]:
    """The images of an upload body, checked, and whether the client sent a list."""
    limits = current_services().settings
    found = images_in_body(request_json())
    if found is None:
        raise BadRequest(
            'the JSON body has no "image_data": send {"image_data": "<base64>"}',
            code="missing_field",
        )
    value, many = found
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadRequest(
            '"image_data" is an empty array: send at least one image', code="invalid_field"
        )
    if len(items) > limits.max_images_per_request:
        raise PayloadTooLarge(
            f"{len(items)} images in one request; at most {limits.max_images_per_request} "
            "(OCR_MAX_BATCH, and never more than the rate limit allows at once): send them "
            "in several requests",
            code="batch_too_large",
        )
    uploads = []
    for index, item in enumerate(items):
        field = f"image_data[{index}]" if many else "image_data"
        try:
            data = decode_base64(item, field=field, max_bytes=limits.max_upload_bytes)
            document = check_image(
                data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels
            )
        except OcrError as exc:
            if many and not exc.message.startswith(field):
                exc.message = f"{field}: {exc.message}"
            raise
        uploads.append(Submission(data, ORIGINAL_API_OPTIONS, document))
    return uploads, many


def read_task_id() -> tuple[str, bool]:
    """The task id as the client sent it, and whether it came in the query string."""
    value: object = request.args.get("task_id") or request.args.get("id")
    in_query = value is not None
    if value is None:
        body = read_body()
        if not body.strip():
            raise BadRequest(
                'say which task: send {"task_id": "<id>"} as the body, or ?task_id=<id>',
                code="missing_field",
            )
        data = parse_json_object(body)
        value = data.get("task_id", data.get("id"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = json.dumps(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRequest('the JSON body has no "task_id"', code="missing_field")
    if not isinstance(value, str):
        raise BadRequest(
            f'"task_id" must be a string, not {json_kind(value)}', code="invalid_task_id"
        )
    return value.strip(), in_query


# -- v1: a document as multipart, raw body or JSON, and its options ----------------------------


def _values(*sources: Mapping[str, Any], extra: tuple[str, ...]) -> dict[str, Any]:
    """Options from every source (later ones win); an unknown name is a 400, not ignored."""
    values = {key: value for source in sources for key, value in source.items()}
    unknown = [key for key in values if key not in OPTION_FIELDS and key not in extra]
    if unknown:
        # str(): a multipart part without a name arrives with the key None.
        name = str(unknown[0])[:40]
        raise BadRequest(
            f'"{name}" is not an option; the options are ' + ", ".join((*OPTION_FIELDS, *extra)),
            code="unknown_option",
            field=name,
        )
    return values


def _read_document_and_values(extra: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
    max_bytes = current_services().settings.max_upload_bytes
    mimetype = request.mimetype
    query = request.args.to_dict()
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest(
                'the multipart body has no "file" part: send the document as file=@page.pdf',
                code="missing_field",
                field="file",
            )
        data = upload.read(max_bytes + 1)
        form = request.form.to_dict()
        return data, _values(query, form, extra=extra)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        body = parse_json_object(read_body(), example=DOCUMENT_EXAMPLE)
        if "document" not in body:
            raise BadRequest(
                f'the JSON body has no "document": send {DOCUMENT_EXAMPLE}',
                code="missing_field",
                field="document",
            )
        data = decode_base64(body.pop("document"), field="document", max_bytes=max_bytes)
        return data, _values(query, body, extra=extra)
    if mimetype.startswith("image/") or mimetype in RAW_MEDIA_TYPES:
        return read_body(), _values(query, extra=extra)
    raise UnsupportedMediaType(
        f"a body of type {mimetype or '(none)'!r} is not read here: send multipart/form-data "
        "with a file part, the raw document as image/* or application/pdf, or "
        f"application/json with {DOCUMENT_EXAMPLE}"
    )


def read_submission(extra: tuple[str, ...] = ()) -> tuple[Submission, dict[str, Any]]:
    """The document and options of a v1 POST, checked; and the other ``extra`` values sent."""
    svc = current_services()
    data, values = _read_document_and_values(extra)
    options, document = check_submission(data, values, svc.settings, fleet.languages)
    return Submission(data, options, document), {k: values[k] for k in extra if k in values}
