"""Secrets never reach the logs: the internal token, API keys (plain or hashed), the DB password."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy.engine import make_url

from ocr_common.settings import hash_api_key
from ocr_testkit.pages import HELLO_PNG, b64
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

TOKEN = "internal-token-7f3a9c1e5b"
KEY = "api-key-4d2e8b6a0c"
STACK_SETTINGS = {
    "OCR_INTERNAL_TOKEN": TOKEN,
    "OCR_API_KEYS": f"tester={hash_api_key(KEY)}",
    "OCR_LOG_LEVEL": "DEBUG",
}


def test_the_ocr_servers_probes_need_no_token(stack: Stack) -> None:
    # A kubelet's probes cannot carry the token (deploy/k8s probes /readyz and /healthz).
    for path in ("/healthz", "/readyz"):
        answer = requests.get(f"{stack.server_url}{path}", timeout=30)
        assert answer.status_code == 200, (path, answer.text)
    assert requests.get(f"{stack.server_url}/status", timeout=30).status_code == 401


@pytest.mark.parametrize(
    "token", [b"\xff\xfe", TOKEN.encode() + b"\xff", b"\xc3\xa9" + TOKEN.encode()[2:], b""]
)
def test_a_token_that_is_not_utf8_or_not_the_token_is_a_401(stack: Stack, token: bytes) -> None:
    port = urlsplit(stack.server_url).port
    request = (
        b"GET /status HTTP/1.1\r\nHost: localhost\r\nX-Internal-Token: "
        + token
        + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    good = requests.get(
        f"{stack.server_url}/status", headers={"X-Internal-Token": TOKEN}, timeout=10
    )
    assert good.status_code == 200


def test_with_keys_the_apis_metrics_need_a_key(stack: Stack) -> None:
    assert requests.get(stack.url("/metrics"), timeout=10).status_code == 401
    wrong = requests.get(stack.url("/metrics"), headers={"X-API-Key": "guess"}, timeout=10)
    assert wrong.status_code == 401
    scraped = requests.get(
        stack.url("/metrics"), headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert scraped.status_code == 200 and "ocr_api_requests_total" in scraped.text


def test_no_secret_appears_in_any_log(stack: Stack, mysql_url: str) -> None:
    api = stack.api_url
    body = json.dumps({"image_data": b64(HELLO_PNG)})
    auth = {"Authorization": f"Bearer {KEY}"}
    assert requests.post(f"{api}/image-sync", data=body, headers=auth, timeout=60).ok
    task = requests.post(f"{api}/image", data=body, headers=auth, timeout=30).json()["task_id"]
    wrong = requests.post(f"{api}/image", data=body, headers={"X-API-Key": "guess"}, timeout=30)
    assert wrong.status_code == 401
    # The API learns the installed languages from the OCR server, through the token.
    unknown = requests.post(
        f"{api}/v1/ocr?lang=xyz",
        data=HELLO_PNG,
        headers=auth | {"Content-Type": "image/png"},
        timeout=60,
    )
    assert unknown.status_code == 400 and "eng" in unknown.json()["detail"], unknown.text
    # The OCR server refuses a caller without the token; the API, which has it, gets through.
    assert requests.post(f"{stack.server_url}/ocr", data=HELLO_PNG, timeout=30).status_code == 401
    assert requests.get(f"{api}/image?task_id={task}", headers=auth, timeout=30).ok
    stack.stop()
    logs = stack.logs()
    assert logs.strip(), "the services wrote no logs at all"
    password = make_url(mysql_url).password
    for secret in (TOKEN, KEY, hash_api_key(KEY)[7:], "guess"):
        assert secret not in logs, f"{secret!r} leaked into the logs"
    if password and len(password) >= 6:
        assert f":{password}@" not in logs
