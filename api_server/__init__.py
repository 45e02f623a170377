"""The API server: the public HTTP surface. It validates, stores jobs, and never runs OCR."""

from __future__ import annotations

from flask import Flask, Response, jsonify

from ocr_common.blobs import JobFiles, open_store
from ocr_common.db import make_engine, make_session_factory
from ocr_common.settings import Settings, load_settings

from .access import install_access_control
from .errors import register_error_handlers
from .ocr_client import OcrServerClient
from .services import Services


class ApiFlask(Flask):
    def make_default_options_response(self) -> Response:
        """OPTIONS on a path: its methods, in the Allow header (the same list a 405 gives) and
        as JSON, like every other answer."""
        methods = sorted(super().make_default_options_response().allow)
        response = jsonify({"allow": methods})
        response.headers["Allow"] = ", ".join(methods)
        return response


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    """Build the API server; nothing connects anywhere until the first request."""
    if services is None:
        settings = settings or load_settings()
        # A connection kept for each thread: past the pool's size, SQLAlchemy closes what is
        # handed back, so busy threads would connect again and again (PyMySQL builds a TLS
        # context for each connection: 18 ms of CPU).
        engine = make_engine(settings.database_url, pool_size=settings.api_threads)
        sessions = make_session_factory(engine)
        services = Services(
            settings=settings,
            sessions=sessions,
            ocr=OcrServerClient(settings),
            files=JobFiles(open_store(settings.blob_url)),
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
    register_error_handlers(app, settings.max_request_bytes, settings.max_upload_bytes)

    @app.after_request
    def nosniff(response: Response) -> Response:
        # Browsers must take every answer as the type it says (JSON stays JSON, never HTML).
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    install_access_control(app, settings)

    from . import compat, openapi, ops, v1, web

    app.register_blueprint(compat.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(openapi.docs_blueprint())
    app.register_blueprint(web.bp)
    return app
