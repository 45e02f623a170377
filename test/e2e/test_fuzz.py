"""Generated requests to every endpoint of the running API: none may get a 5xx or a non-JSON
answer. Hypothesis draws method, path, query string, headers and body (derandomized, so a run
is repeatable); the requests go over the wire to the real services (ocr-api under gunicorn,
ocr-server, MySQL), as in the other end-to-end tests.

The OpenAPI (schemathesis) half comes with the v1 contract.
"""

from __future__ import annotations

import pytest
import requests

from ocr_testkit.fuzz import EXAMPLES, run_fuzz
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]


def test_generated_requests_never_get_a_5xx_or_a_non_json_answer(stack: Stack) -> None:
    tally = run_fuzz(stack.api_url)
    assert tally.cases >= EXAMPLES
    assert tally.server_errors == []
    assert tally.not_json == []
    assert requests.get(stack.url("/healthz"), timeout=5).status_code == 200
