"""Generated requests to every endpoint of a running API (test/e2e/test_fuzz.py and
bench/reliability.py): Hypothesis draws method, path, query string, headers and body,
derandomized, so that a run is repeatable."""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocr_testkit.pages import HELLO_PNG

EXAMPLES = 300
PATHS = [
    "/image-sync",
    "/image",
    "/allimages",
    "/healthz",
    "/readyz",
    "/v1/ocr",
    "/v1/jobs",
    "/v1/jobs/0b6f3c4e-6a4b-4e8e-9a57-1f0c2d3e4f50",
    "/v1/jobs/not-a-job",
    "/openapi.json",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json;",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain",
    "image/png",
    "application/octet-stream",
    "*/*",
    "garbage",
]
SMALL_B64 = base64.b64encode(HELLO_PNG[:200]).decode()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
image_values = st.one_of(
    json_values,
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n"),
    st.binary(max_size=300).map(lambda raw: base64.b64encode(raw).decode()),
    st.sampled_from(
        [SMALL_B64, "data:image/png;base64," + SMALL_B64, "data:,", "data:image/png;base64,==="]
    ),
    st.lists(st.text(max_size=20), max_size=3),
)
id_values = st.one_of(
    json_values,
    st.uuids().map(str),
    st.text(max_size=60),
    st.sampled_from(["' OR 1=1 --", "../../etc/passwd", "%00", "\x00", "🙂", " " * 10]),
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"image_data": image_values}).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({}, optional={"task_id": id_values, "id": id_values}).map(
        lambda d: json.dumps(d).encode()
    ),
    st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
query_keys = st.sampled_from(["task_id", "id", "image_data", "x", ""])
queries = st.dictionaries(query_keys, st.text(max_size=40), max_size=3)


@st.composite
def fuzz_requests(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(st.sampled_from(PATHS))
    path += draw(st.sampled_from(["", "", "/", "//", "/x", "/../image", "%2F"]))
    headers = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Accept"] = draw(st.sampled_from(["text/html", "*/*", "application/xml"]))
    return {
        "method": draw(st.sampled_from(METHODS)),
        "path": path,
        "params": draw(queries),
        "headers": headers,
        "data": draw(bodies),
    }


@dataclass
class FuzzTally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    not_json: list[str] = field(default_factory=list)


def check_one(api_url: str, request: dict[str, Any], tally: FuzzTally) -> None:
    """Send one generated request; record what was wrong with its answer."""
    tally.cases += 1
    response = requests.request(
        request["method"],
        api_url + request["path"],
        params=request["params"],
        headers=request["headers"],
        data=request["data"],
        timeout=30,
    )
    tally.statuses[response.status_code] += 1
    described = f"{request!r:.300} -> {response.status_code} {response.text[:200]!r}"
    if response.status_code >= 500:
        tally.server_errors.append(described)
    elif request["method"] not in ("HEAD", "OPTIONS"):  # answered with headers alone
        try:
            response.json()
        except ValueError:
            tally.not_json.append(described)


def run_fuzz(api_url: str, examples: int = EXAMPLES, *, raise_on_error: bool = True) -> FuzzTally:
    """Run the generated requests against ``api_url``; with ``raise_on_error`` Hypothesis
    shrinks and reports the first failing request."""
    tally = FuzzTally()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_requests())
    def fuzz(request: dict[str, Any]) -> None:
        errors_before = len(tally.server_errors) + len(tally.not_json)
        check_one(api_url, request, tally)
        if raise_on_error:
            assert len(tally.server_errors) + len(tally.not_json) == errors_before, (
                tally.server_errors + tally.not_json
            )[-1]

    fuzz()
    return tally
