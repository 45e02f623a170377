"""Upload parsing: lenient where real clients differ, strict about what is an image."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from api_server.uploads import decode_base64, parse_json_object
from ocr_common.documents import check_image
from ocr_common.errors import BadRequest, InvalidImage, PayloadTooLarge
from ocr_testkit.pages import HELLO_PNG, encode, render_lines

MIB = 1024 * 1024
B64 = base64.b64encode(HELLO_PNG).decode()


def check(data: bytes) -> str:
    return check_image(data, max_bytes=10 * MIB, max_pixels=50_000_000).format


@pytest.mark.parametrize(
    "text",
    [
        B64,
        "data:image/png;base64," + B64,
        "DATA:image/png;base64," + B64,
        "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76)),
        "\r\n".join(B64[i : i + 60] for i in range(0, len(B64), 60)) + "\n",
        "  " + B64 + "  ",
        B64.rstrip("="),
        base64.urlsafe_b64encode(HELLO_PNG).decode(),
    ],
    ids=[
        "plain",
        "data-url",
        "data-url-upper",
        "mime-lines",
        "crlf",
        "spaces",
        "no-pad",
        "urlsafe",
    ],
)
def test_base64_variants_decode_to_the_same_bytes(text: str) -> None:
    assert decode_base64(text, field="image_data", max_bytes=10 * MIB) == HELLO_PNG


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "empty_image"),
        ("not base64 at all!", "invalid_base64"),
        ("é" * 8, "invalid_base64"),
        (12, "invalid_field"),
        (None, "invalid_field"),
        ({"a": 1}, "invalid_field"),
    ],
)
def test_bad_base64_is_a_400_with_a_code(value: object, code: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_base64(value, field="image_data", max_bytes=MIB)
    assert info.value.status == 400
    assert info.value.code == code


def test_base64_over_the_limit_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_base64("A" * 4000, field="image_data", max_bytes=1000)


@pytest.mark.parametrize(
    "body",
    [b'{"image_data": "x"}', b'{"image_data": "a\nb"}', b'\xef\xbb\xbf{"a": 1}'[3:]],
)
def test_json_objects_parse_even_with_raw_line_breaks(body: bytes) -> None:
    assert isinstance(parse_json_object(body), dict)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"  \n", "empty_body"),
        (b"{oops", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'"text"', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_bad_json_is_a_400(body: bytes, code: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_json_object(body)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"hello, this is a text file\n", "invalid_image", "not an image"),
        (b"", "empty_image", "empty"),
        (encode(Image.open(io.BytesIO(HELLO_PNG)), "PDF"), "invalid_image", "POST /v1/jobs"),
        (encode(Image.new("L", (1, 1), 255)), "image_too_small", "too small"),
    ],
    ids=["text", "empty", "pdf", "1x1"],
)
def test_what_is_not_an_image_the_original_api_reads_is_a_400(
    data: bytes, code: str, says: str
) -> None:
    with pytest.raises(InvalidImage, match=says) as info:
        check(data)
    assert (info.value.status, info.value.code) == (400, code)


def test_pixel_bomb_is_refused_from_the_header() -> None:
    # 20000 x 20000 of one colour compresses to a few hundred KiB but would take 400 MB decoded.
    bomb = encode(Image.new("1", (20000, 20000), 1))
    with pytest.raises(PayloadTooLarge) as info:
        check_image(bomb, max_bytes=10 * MIB, max_pixels=50_000_000)
    assert info.value.code == "too_many_pixels"
    assert info.value.status == 413


def test_bytes_over_the_limit_are_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        check_image(render_lines(["x"]), max_bytes=100, max_pixels=10**9)
