"""Operational endpoints: liveness, readiness."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from ocr_common.db import check_schema
from ocr_common.errors import Unavailable

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up (says nothing of the database)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
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
