"""``ocr-api`` says at start when it listens beyond loopback with API keys off: anyone who
reaches the port can read every job. Its own process and log, on a SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocr_common.settings import hash_api_key
from ocr_testkit.stack import Service, free_port

pytestmark = [pytest.mark.e2e]

WARNING = "API keys are off (OCR_API_KEYS is unset) and the API listens on"


def api_log(sqlite_url: str, log_dir: Path, bind_host: str, **settings: str) -> str:
    """The log of an ``ocr-api`` bound to ``bind_host`` once it answers, then stopped."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCR_")}
    env.update(
        OCR_DATABASE_URL=sqlite_url,
        OCR_API_BIND=f"{bind_host}:{port}",
        OCR_API_PROCESSES="1",
        PYTHONUNBUFFERED="1",
        **settings,
    )
    api = Service("ocr-api", env, log_dir)
    api.start()
    try:
        api.wait_healthy(f"http://127.0.0.1:{port}")
    finally:
        api.stop()
    return api.log_text()


def test_no_keys_beyond_loopback_is_a_warning_at_start(sqlite_url: str, tmp_path: Path) -> None:
    log = api_log(sqlite_url, tmp_path, "0.0.0.0")
    [line] = [line for line in log.splitlines() if WARNING in line]
    assert " WARNING " in line and "0.0.0.0:" in line and "OCR_API_KEYS" in line, line


@pytest.mark.parametrize(
    ("bind_host", "settings"),
    [
        ("127.0.0.1", {}),
        ("0.0.0.0", {"OCR_API_KEYS": f"tester={hash_api_key('a key')}"}),
    ],
    ids=["loopback", "keys-on"],
)
def test_no_warning_on_loopback_or_with_keys(
    sqlite_url: str, tmp_path: Path, bind_host: str, settings: dict[str, str]
) -> None:
    log = api_log(sqlite_url, tmp_path, bind_host, **settings)
    assert "Listening at" in log or "Booting worker" in log, log
    assert WARNING not in log
