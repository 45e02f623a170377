"""Metrics and logs of what clients send: label values from a bounded set, /metrics behind a
key or on its own address, log lines that a client's text cannot break or colour."""

from __future__ import annotations

import json
import logging
import random
import string
import sys

import pytest
from fake_ocr import api_client
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.metrics import KNOWN_METHODS, OTHER_METHOD, RequestMetrics
from ocr_common.observability import RequestIdFilter, formatter, log_access
from ocr_common.settings import SettingsError, hash_api_key, load_settings

KEY = "metrics-key-5b1d9e"
KEYS = f"ops={hash_api_key(KEY)}"


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    ]


def made_up_method(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase + "!#$%&'*+-.^_`|~", k=12))


def test_made_up_methods_and_paths_add_no_series(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions)
    rng = random.Random(20)

    def send(count: int) -> int:
        for n in range(count):
            answer = client.open(f"/{made_up_method(rng)}/{n}", method=made_up_method(rng))
            assert answer.status_code in (404, 405)
        return len(series(REGISTRY, "ocr_api_requests_total"))

    # The first thousand find every label value they can reach; thousands more add none.
    assert send(1000) == send(3000)
    labels = series(REGISTRY, "ocr_api_requests_total")
    assert {label["method"] for label in labels} <= KNOWN_METHODS | {OTHER_METHOD}
    rules = {rule.rule for rule in client.application.url_map.iter_rules()}
    assert {label["route"] for label in labels} <= rules | {"unmatched"}


def test_the_shared_request_metrics_map_unknown_methods_to_other() -> None:
    metrics = RequestMetrics("test_bounded", "a test")  # the OCR server's use it too
    registry = CollectorRegistry()
    registry.register(metrics.requests)
    for method in ("GET", "PROPFIND", "get", "X" * 1000, "MKCOL"):
        metrics.record(method, "/ocr", 405, 0.01)
    assert sorted(label["method"] for label in series(registry, "test_bounded_requests_total")) == [
        "GET",
        "other",
    ]


def test_with_keys_metrics_need_one(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, api_keys=KEYS)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert scraped.status_code == 200
    assert b"ocr_api_requests_total" in scraped.data
    assert client.get("/healthz").status_code == 200  # probes carry no key


def test_with_a_metrics_bind_metrics_are_served_there_alone(
    sessions: sessionmaker[Session],
) -> None:
    client = api_client(sessions, api_keys=KEYS, metrics_bind="127.0.0.1:9100")
    api, scrape = {"SERVER_PORT": "5000"}, {"SERVER_PORT": "9100"}
    key = {"X-API-Key": KEY}
    assert client.get("/metrics", headers=key, environ_overrides=api).status_code == 404
    answer = client.get("/metrics", environ_overrides=scrape)  # no key on its own address
    assert answer.status_code == 200 and b"ocr_api_requests_total" in answer.data
    for path in ("/allimages", "/v1/jobs", "/healthz", "/"):
        assert client.get(path, headers=key, environ_overrides=scrape).status_code == 404, path
    assert client.get("/v1/jobs", headers=key, environ_overrides=api).status_code == 200


@pytest.mark.parametrize("bind", ["127.0.0.1:5000", "0.0.0.0:5000", "metrics", "x:0"])
def test_the_metrics_bind_needs_a_port_of_its_own(bind: str) -> None:
    with pytest.raises(SettingsError, match="OCR_METRICS_BIND"):
        load_settings(metrics_bind=bind, api_bind="127.0.0.1:5000")


def record_for(message: str, *args: object) -> logging.LogRecord:
    record = logging.LogRecord("api_server.access", logging.INFO, __file__, 1, message, args, None)
    RequestIdFilter().filter(record)
    return record


@pytest.mark.parametrize(
    "path",
    [
        "/a\nINFO forged line",
        "/a\r\nINFO forged line",
        "/a\x1b[31mred\x1b[0m",
        "/a\u2028forged",
        "/a\u202edesrever",
        "/a\x00\x7f\x85",
        "/\udcff\udcfe",  # a path's bytes that are not UTF-8, as aiohttp decodes them
    ],
)
def test_a_clients_text_is_escaped_in_text_log_lines(path: str) -> None:
    line = formatter("text").format(record_for("%s %s %d", "GET", path, 404))
    assert line.isprintable(), repr(line)
    line.encode("utf-8")  # a surrogate would make the handler fail to write the line
    assert "forged" not in line or "\\" in line


def test_json_log_lines_stay_one_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.access")
    with caplog.at_level(logging.INFO, logger="test.access"):
        log_access(log, "GET", "/a\nforged\x1b[31m", 404, 0.001)
    line = formatter("json").format(caplog.records[0])
    assert "\n" not in line and "\x1b" not in line
    assert json.loads(line)["path"] == "/a\nforged\x1b[31m"


def test_a_traceback_keeps_its_lines_but_escapes_the_rest() -> None:
    try:
        raise ValueError("bad \x1b[2J value")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
        RequestIdFilter().filter(record)
    text = formatter("text").format(record)
    assert "Traceback" in text and "\n" in text and "\x1b" not in text
