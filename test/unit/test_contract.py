"""The OpenAPI document is the contract: schemathesis sends what it allows (and what it does not)
to every operation, and every answer must match the document, never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from fake_ocr import api_client
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from pytest import fixture
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi import checks as openapi_checks

from ocr_common.db import make_engine, make_session_factory
from ocr_testkit.database import seen_ocr_server

# Per operation and mode; enough to find the shapes a handler gets wrong, quick enough to run
# with every test run.
EXAMPLES = 30
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@fixture
def contract_app(sqlite_url: str) -> Flask:
    sessions = make_session_factory(make_engine(sqlite_url))
    # An OCR server alive throughout (else /readyz is a 503, which the checks count as a bug).
    seen_ocr_server(sessions)
    client = api_client(
        sessions,
        database_url=sqlite_url,
        max_upload_bytes=1_000_000,
        max_pages=5,
        stale_workers_s=24 * 3600,
    )
    return client.application


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_openapi_document(
    contract_app: Flask, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", contract_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            call()
        except Unsatisfiable:
            # Nothing to get wrong in a request to it (GET /healthz): no negative case exists.
            assert mode == GenerationMode.NEGATIVE, operation.label
