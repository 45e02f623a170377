"""The API server: the public HTTP surface. It validates, stores jobs, and never runs OCR."""

from __future__ import annotations

from flask import Flask, Response

from ocr_common.db import make_engine, make_session_factory
from ocr_common.settings import Settings, load_settings

from .access import install_access_control
from .errors import register_error_handlers
from .headers import install_response_headers, options_response
from .ocr_client import OcrBackend, OcrServerClient
from .services import Services


class ApiFlask(Flask):
    def make_default_options_response(self) -> Response:
        return options_response(super().make_default_options_response())


def create_app(
    settings: Settings | None = None,
    *,
    ocr: OcrBackend | None = None,
    services: Services | None = None,
) -> Flask:
    """Build the API server; nothing connects anywhere until the first request."""
    if services is None:
        settings = settings or load_settings()
        sessions = make_session_factory(make_engine(settings.database_url))
        services = Services(
            settings=settings, sessions=sessions, ocr=ocr or OcrServerClient(settings)
        )
    settings = services.settings
    app = ApiFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # /allimages lists tasks oldest first: keep the order we build.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ocr_services"] = services
    # First: its hooks see every request, those that access control refuses too. Imported
    # here, not above: see telemetry's docstring.
    from .telemetry import install_telemetry

    install_telemetry(app)
    register_error_handlers(app, settings.max_request_bytes)
    install_response_headers(app)
    install_access_control(app, settings)

    from . import compat, openapi, ops, v1, web

    app.register_blueprint(compat.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(web.bp)
    return app
