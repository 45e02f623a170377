"""Operational endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify, request
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from ocr_common.db import check_schema
from ocr_common.errors import BadRequest, Unavailable
from ocr_common.metrics import CONTENT_TYPE, exposition, queue_registry
from ocr_common.settings import SettingsError

from . import schemas
from .fleet import current_fleet
from .openapi import Body, Operation, Param
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


# What /readyz checks beyond the API's own database and schema, each of which
# ?exclude=<name> leaves out (Kubernetes' own /readyz?exclude=etcd convention).
OCR_SERVERS_CHECK = "ocr_servers"
EXCLUDABLE_CHECKS = (OCR_SERVERS_CHECK,)


@bp.get("/readyz")
@Operation(
    summary="Readiness",
    description="Ready to take and read jobs: the database answers, its schema is current, "
    "and an OCR server was seen within OCR_STALE_WORKERS_S. ?exclude=ocr_servers asks about "
    "the API alone (the Kubernetes readiness probe): jobs are still taken, and wait in the "
    "queue, while no OCR server runs.",
    params=(
        Param(
            "exclude",
            {"type": "string", "enum": list(EXCLUDABLE_CHECKS)},
            "a check to leave out",
        ),
    ),
    responses={
        200: Body("ready", {"application/json": schemas.Readiness}),
        400: schemas.compat_error(
            "an unknown check to exclude",
            "invalid_field",
            "no check named 'etcd' to exclude; the one there is: ocr_servers",
        ),
        503: schemas.compat_error(
            "not ready, and why: database_unavailable, schema_not_current, no_ocr_server",
            "no_ocr_server",
            "no OCR server has been seen for 42 s; jobs will wait",
        ),
    },
)
def readyz() -> Response:
    """Ready to take jobs (database up, schema current) and read them (an OCR server alive)."""
    excluded = set(request.args.getlist("exclude"))
    if unknown := sorted(excluded - set(EXCLUDABLE_CHECKS)):
        raise BadRequest(
            f"no check named {unknown[0][:40]!r} to exclude; the one there is: "
            + ", ".join(EXCLUDABLE_CHECKS),
            code="invalid_field",
        )
    with current_services().sessions() as session:
        # One connection: reaching it proves the database answers (or is a 503 from the
        # error handler), and the schema's revision is read on it.
        try:
            check_schema(session.connection())
        except SettingsError as exc:
            raise Unavailable(str(exc), code="schema_not_current") from None
    if OCR_SERVERS_CHECK in excluded:
        return jsonify({"status": "ready"})
    now = current_fleet()
    if (reason := now.stalled()) is not None:
        raise Unavailable(reason, code="no_ocr_server")
    return jsonify({"status": "ready", "ocr_servers_alive": len(now.alive)})


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
    """Requests and latency by route, and jobs by status from the database."""
    # This process's counts, or under gunicorn every worker's (see telemetry's docstring).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = exposition([registry, queue_registry(current_services().sessions)])
    return Response(body, content_type=CONTENT_TYPE)
