"""Every error the API server answers, turned into JSON in this one place: the original API's
``{"error": {"code", "message"}}``, or the v1 API's problem+json (RFC 9457), same code."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from flask import Flask, Response, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from ocr_common.db import is_connection_error, is_packet_too_large
from ocr_common.errors import OcrError, PayloadTooLarge, RateLimited, Unavailable

log = logging.getLogger(__name__)
DATABASE_RETRY_AFTER_S = 5


PROBLEM_JSON = "application/problem+json"
# Paths whose errors are problem documents; everything else is the original API's shape.
PROBLEM_PATHS = ("/v1/", "/openapi.json", "/docs")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # 499 (CallerGone): nginx's name, which HTTPStatus lacks
        return "Client Closed Request"


def error_response(exc: OcrError) -> Response:
    if request.path == "/v1" or request.path.startswith(PROBLEM_PATHS):
        problem: dict[str, object] = {
            "type": "about:blank",
            "title": _phrase(exc.status),
            "status": exc.status,
            "detail": exc.message,
            "code": exc.code,
            "instance": request.path,
        }
        if exc.field is not None:
            problem["field"] = exc.field
        response = Response(json.dumps(problem), status=exc.status, mimetype=PROBLEM_JSON)
    else:
        response = jsonify({"error": exc.to_dict()})
        response.status_code = exc.status
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def register_error_handlers(app: Flask, max_request_bytes: int, max_upload_bytes: int) -> None:
    app.register_error_handler(OcrError, error_response)

    @app.errorhandler(RequestEntityTooLarge)
    def on_too_large(_exc: RequestEntityTooLarge) -> Response:
        return error_response(
            PayloadTooLarge(
                f"the request body is larger than {max_request_bytes} bytes: a document may have "
                f"{max_upload_bytes} bytes (OCR_MAX_UPLOAD_BYTES), sent as it is or in base64",
                code="request_too_large",
            )
        )

    @app.errorhandler(RateLimitExceeded)
    def on_rate_limited(exc: RateLimitExceeded) -> Response:
        return error_response(
            RateLimited(
                f"too many requests: the limit is {exc.description}; retry after the time in "
                "Retry-After"
            )
        )

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        code = (exc.name or "http_error").lower().replace(" ", "_")
        error = OcrError(_routing_message(exc) or exc.description or code, code=code)
        error.status = exc.code or 500
        response = error_response(error)
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(SQLAlchemyError)
    def on_database_error(exc: SQLAlchemyError) -> Response:
        if is_packet_too_large(exc):
            # Retrying cannot help: the same statement is as large the next time.
            return error_response(
                PayloadTooLarge(
                    "the result of this document is larger than the database takes in one "
                    "statement (max_allowed_packet); read fewer pages at a time (pages=), or "
                    "ask the operator to raise max_allowed_packet",
                    code="too_large_for_database",
                )
            )
        if is_connection_error(exc):
            log.warning("database unavailable: %s", exc)
            # A read stores nothing anyway: saying so would only puzzle.
            stored = {"GET": "", "HEAD": "", "DELETE": " nothing was deleted,"}.get(
                request.method, " nothing was stored,"
            )
            return error_response(
                Unavailable(
                    f"the database is unavailable;{stored} retry shortly",
                    code="database_unavailable",
                    retry_after_s=DATABASE_RETRY_AFTER_S,
                )
            )
        log.exception("database error")
        return error_response(OcrError("unexpected database error; it has been logged"))

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(OcrError("unexpected server error; it has been logged"))


def _routing_message(exc: HTTPException) -> str | None:
    """What a request no route takes is told (Werkzeug's own words name neither the path nor
    the methods); None for any other error."""
    path = request.path[:200]
    if isinstance(exc, NotFound) and exc.description == NotFound.description:
        return f"there is no {path}: the API's routes are listed at /docs and /openapi.json"
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        methods = sorted(set(exc.valid_methods) - {"HEAD", "OPTIONS"})
        return f"{path} takes {' or '.join(methods)}, not {request.method}"
    return None
