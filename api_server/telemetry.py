"""The API's request id, access log and metrics, hooked into every request.

Imported by the app factory, not at package import: ``ocr-api`` first points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (prometheus_client decides its storage when
first imported), so that a scrape of any gunicorn worker reports the sum of all.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from ocr_common.metrics import RequestMetrics
from ocr_common.observability import REQUEST_ID_HEADER, log_access, request_id_from, set_request_id

log = logging.getLogger("api_server.access")

REQUESTS = RequestMetrics("ocr_api", "the API")


def install_telemetry(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.started = time.perf_counter()
        set_request_id(g.request_id)

    @app.after_request
    def finish(response: Response) -> Response:
        started = g.get("started")
        if started is None:  # answered before the hooks ran (e.g. a routing error)
            return response
        seconds = time.perf_counter() - started
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.record(request.method, route, response.status_code, seconds)
        response.headers[REQUEST_ID_HEADER] = g.request_id
        log_access(log, request.method, request.path, response.status_code, seconds)
        return response

    @app.teardown_request
    def forget(_exc: BaseException | None) -> None:
        set_request_id(None)
