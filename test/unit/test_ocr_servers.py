"""What the API says of the OCR servers, from their rows: /readyz, a queued job's place, the
languages a job may ask for (Flask's test client, a fake OCR server, a real database)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_ocr import api_client
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api_server.schemas import Job, Languages, Problem, Readiness
from ocr_testkit.database import claim_next, seen_ocr_server
from ocr_testkit.pages import HELLO_PNG

STALE_S = 30


@pytest.fixture
def client(sessions: sessionmaker[Session]) -> FlaskClient:
    return api_client(sessions, stale_workers_s=STALE_S)


def not_ready(client: FlaskClient, code: str = "no_ocr_server") -> str:
    response = client.get("/readyz")
    assert response.status_code == 503, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    error = response.get_json()["error"]
    assert error["code"] == code
    return str(error["message"])


def test_readyz_is_503_with_the_reason_while_no_ocr_server_is_alive(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    assert not_ready(client) == "no OCR server has been seen yet; jobs will wait until one starts"
    seen_ocr_server(sessions, seconds_ago=STALE_S + 12)
    message = not_ready(client)
    assert message.startswith("no OCR server has been seen for 4") and message.endswith(
        " s; jobs will wait"
    ), message
    seen_ocr_server(sessions, seconds_ago=1)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert Readiness.model_validate(ready.get_json()).ocr_servers_alive == 1


def test_readyz_without_the_ocr_servers_is_the_api_s_own_readiness(client: FlaskClient) -> None:
    # What Kubernetes probes: an API with no OCR server behind it still takes jobs.
    for query in ("?exclude=ocr_servers", "?exclude=ocr_servers&exclude=ocr_servers"):
        response = client.get("/readyz" + query)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"status": "ready"}
    for query in ("?exclude=database", "?exclude=", "?exclude=ocr_servers&exclude=x"):
        response = client.get("/readyz" + query)
        assert response.status_code == 400, query
        error = response.get_json()["error"]
        assert error["code"] == "invalid_field" and "ocr_servers" in error["message"]


def queued(client: FlaskClient) -> str:
    response = client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png")
    assert response.status_code == 202
    assert response.get_json()["queue"] is None
    return str(response.get_json()["id"])


def job(client: FlaskClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    Job.model_validate(body)
    return body


def test_a_queued_job_says_its_place_and_the_ocr_servers_alive(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    ids = [queued(client) for _ in range(3)]
    place = job(client, ids[2])["queue"]
    assert place == {
        "jobs_ahead": 2,
        "ocr_servers_alive": 0,
        "stalled": "no OCR server has been seen yet; jobs will wait until one starts",
    }
    seen_ocr_server(sessions, "a")
    seen_ocr_server(sessions, "b")
    assert job(client, ids[0])["queue"] == {
        "jobs_ahead": 0,
        "ocr_servers_alive": 2,
        "stalled": None,
    }
    # Once claimed, a job is no longer in the queue.
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="a", lease_s=30)
    assert claimed is not None and claimed.id == ids[0]
    assert job(client, ids[0])["queue"] is None
    assert job(client, ids[2])["queue"]["jobs_ahead"] == 1
    # The other formats of a queued job are still a 409.
    assert client.get(f"/v1/jobs/{ids[2]}?format=text").status_code == 409


def languages(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/v1/languages")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    Languages.model_validate(body)
    return body


def post_lang(client: FlaskClient, lang: str) -> Any:
    return client.post(f"/v1/jobs?lang={lang}", data=HELLO_PNG, content_type="image/png")


def test_languages_are_what_the_live_ocr_servers_read(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    assert languages(client) == {
        "languages": [],
        "default": "eng",
        "ocr_servers_alive": 0,
        "stalled": "no OCR server has been seen yet; jobs will wait until one starts",
    }
    # Before any OCR server has said, only the default can be asked for.
    unknown = post_lang(client, "deu")
    assert unknown.status_code == 503
    assert "no OCR server has been seen yet" in Problem.model_validate(unknown.get_json()).detail
    assert post_lang(client, "eng").status_code == 202

    seen_ocr_server(sessions, "a", languages=("deu", "eng", "fra"))
    seen_ocr_server(sessions, "b", languages=("deu", "eng"))
    assert languages(client) == {
        "languages": ["deu", "eng"],
        "default": "eng",
        "ocr_servers_alive": 2,
        "stalled": None,
    }
    assert post_lang(client, "deu+eng").status_code == 202
    refused = post_lang(client, "fra")
    assert refused.status_code == 400
    assert "installed: deu, eng" in refused.get_json()["detail"]
    # With none alive, what the last one seen read (jobs are still taken, to wait).
    seen_ocr_server(sessions, "a", languages=("deu", "eng", "fra"), seconds_ago=STALE_S + 1)
    seen_ocr_server(sessions, "b", languages=("deu", "eng"), seconds_ago=STALE_S + 2)
    assert languages(client)["languages"] == ["deu", "eng", "fra"]
    assert post_lang(client, "fra").status_code == 202


def deployed_api_probes() -> list[str]:
    """The paths Kubernetes and compose ask the API whether it is ready or healthy."""
    paths = []
    for document in yaml.safe_load_all((REPO / "deploy/k8s/base/api.yaml").read_text()):
        if document and document["kind"] == "Deployment":
            [spec] = document["spec"]["template"]["spec"]["containers"]
            paths += [spec[probe]["httpGet"]["path"] for probe in PROBES]
    api = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["api"]
    paths += re.findall(r"http://127\.0\.0\.1:5000(/[^'\"]*)", " ".join(api["healthcheck"]["test"]))
    return paths


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
REPO = Path(__file__).resolve().parents[2]


def test_the_deployed_probes_keep_the_api_in_service_with_no_ocr_server(
    client: FlaskClient,
) -> None:
    # The OCR servers scaled to zero (or all restarting): the API still takes jobs, which wait.
    paths = deployed_api_probes()
    assert len(paths) == len(PROBES) + 1 and "/readyz?exclude=ocr_servers" in paths, paths
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    assert client.get("/readyz").status_code == 503
