"""Operational endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from ocr_common.db import check_schema
from ocr_common.errors import Unavailable
from ocr_common.metrics import CONTENT_TYPE, exposition, queue_registry
from ocr_common.settings import SettingsError

from . import schemas
from .openapi import Body, Operation
from .services import current_services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@Operation(
    summary="Liveness",
    responses={200: Body("the process is up", {"application/json": schemas.Status})},
)
def healthz() -> Response:
    """The process is up (says nothing of the database)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@Operation(
    summary="Readiness",
    responses={
        200: Body("the database answers, schema current", {"application/json": schemas.Status}),
        503: schemas.compat_error(
            "not ready", "database_unavailable", "the database is unavailable; retry shortly"
        ),
    },
)
def readyz() -> Response:
    """Ready to take jobs: the database answers and its schema is current."""
    with current_services().sessions() as session:
        # One connection: reaching it proves the database answers (or is a 503 from the
        # error handler), and the schema's revision is read on it.
        try:
            check_schema(session.connection())
        except SettingsError as exc:
            raise Unavailable(str(exc), code="schema_not_current") from None
    return jsonify({"status": "ready"})


@bp.get("/metrics")
@Operation(
    summary="Metrics",
    responses={
        200: Body(
            "Prometheus text format",
            {"text/plain": {"type": "string", "examples": ['ocr_jobs{status="queued"} 3.0\n']}},
        )
    },
)
def metrics() -> Response:
    """Requests by route and status, latency histograms, and jobs by status (from the
    database; ``ocr_database_up 0`` while it does not answer)."""
    # This process's counts, or under gunicorn every worker's (see telemetry's docstring).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = exposition([registry, queue_registry(current_services().sessions)])
    return Response(body, content_type=CONTENT_TYPE)
