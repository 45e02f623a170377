"""Operational endpoints: liveness, readiness."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from ocr_common.db import check_schema
from ocr_common.errors import Unavailable

from . import schemas
from .openapi import Body, operation

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@operation(
    summary="Liveness",
    tag="operations",
    responses={200: Body("the process is up", {"application/json": schemas.Status})},
)
def healthz() -> Response:
    """The process is up (says nothing of the database)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@operation(
    summary="Readiness",
    tag="operations",
    responses={
        200: Body("the database answers, schema current", {"application/json": schemas.Status}),
        503: Body("not ready", {"application/json": schemas.CompatError}),
    },
)
def readyz() -> Response:
    """Ready to take jobs: the database answers and its schema is current."""
    sessions = current_app.extensions["ocr_services"].sessions
    with sessions() as session:
        session.execute(text("SELECT 1"))
        engine = session.get_bind()
    try:
        check_schema(engine)
    except Exception as exc:  # noqa: BLE001 - not ready is an answer
        raise Unavailable(str(exc), code="schema_not_current") from None
    return jsonify({"status": "ready"})
