"""The OCR server's internal HTTP API (aiohttp): never exposed publicly."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.browsers import BrowserGuard
from ocr_common.documents import check_sync_pages
from ocr_common.errors import (
    BadRequest,
    NotFound,
    OcrError,
    PayloadTooLarge,
    SyncTimeout,
    Unauthorized,
    Unavailable,
)
from ocr_common.metrics import CONTENT_TYPE
from ocr_common.observability import REQUEST_ID_HEADER, log_access, request_id_from, set_request_id
from ocr_common.options import check_submission
from ocr_common.settings import Settings
from ocr_common.wire import (
    HEALTHZ_PATH,
    INTERNAL_TOKEN_HEADER,
    METRICS_PATH,
    NOTIFY_PATH,
    OCR_PATH,
    READYZ_PATH,
    STATUS_PATH,
    TIME_LEFT_HEADER,
    UNGUARDED_PATHS,
    Reading,
    error_body,
    error_headers,
)

from . import metrics as server_metrics
from .dispatcher import Dispatcher
from .engine import PageTask
from .pool import EnginePool

log = logging.getLogger(__name__)
access_log = logging.getLogger("ocr_server.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE_NAME = "ocr-server"
NOT_THE_API = (
    "no such path: this is the OCR server's internal API, not the OCR service's API; send "
    "requests to the API server (port 5000 by default, OCR_API_BIND)"
)

SETTINGS_KEY = web.AppKey("settings", Settings)
POOL_KEY = web.AppKey("pool", EnginePool)
DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
SESSIONS_KEY = web.AppKey("sessions", sessionmaker)
BROWSERS_KEY = web.AppKey("browsers", BrowserGuard)


def error_response(exc: OcrError, status: int | None = None) -> web.Response:
    return web.json_response(
        error_body(exc), status=status or exc.status, headers=error_headers(exc)
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OcrError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        settings = request.app[SETTINGS_KEY]
        return error_response(
            PayloadTooLarge(
                f"the image is larger than {settings.max_upload_bytes} bytes (OCR_MAX_UPLOAD_BYTES)"
            )
        )
    except web.HTTPNotFound:
        # Most likely a client of the public API sent to this port by mistake: say so.
        return error_response(NotFound(NOT_THE_API, code="not_found"))
    except web.HTTPException as exc:
        return error_response(OcrError(exc.reason, code="http_error"), status=exc.status)


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The caller's request id on every log line (a task's own) and on the answer; metrics."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    set_request_id(request_id)
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    seconds = time.perf_counter() - started
    server_metrics.REQUESTS.record(request.method, route, response.status, seconds)
    response.headers[REQUEST_ID_HEADER] = request_id
    log_access(access_log, request.method, request.path, response.status, seconds)
    return response


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what a web page made a browser send (a rebound Host, a cross-site request), then
    a request without the internal token (when one is set)."""
    request.app[BROWSERS_KEY].check(
        host=request.headers.get(hdrs.HOST),
        origin=request.headers.get(hdrs.ORIGIN),
        content_type=request.headers.get(hdrs.CONTENT_TYPE),
    )
    token = request.app[SETTINGS_KEY].internal_token_value
    if token and request.path not in UNGUARDED_PATHS:
        # Compared as the bytes sent, in constant time: a header need not be UTF-8.
        wanted = INTERNAL_TOKEN_HEADER.lower().encode()
        sent = next((value for name, value in request.raw_headers if name.lower() == wanted), b"")
        if not hmac.compare_digest(sent, token.encode()):
            raise Unauthorized(f"missing or wrong {INTERNAL_TOKEN_HEADER}")
    return await handler(request)


async def ocr(request: web.Request) -> web.Response:
    """Synchronous OCR of a document: the ``wire.Reading`` of its pages, read in parallel, and
    stopped when the time its caller waits (TIME_LEFT_HEADER) has passed or it hangs up."""
    settings = request.app[SETTINGS_KEY]
    deadline = asyncio.get_running_loop().time() + _time_left_s(request, settings)
    pool = request.app[POOL_KEY]
    # Callers beyond a short wait list get 503 at once rather than a slow timeout.
    if not pool.try_acquire_urgent(max_waiting=2 * pool.size):
        raise Unavailable(
            "every OCR engine is busy and the wait list is full; retry shortly",
            code="ocr_busy",
            retry_after_s=2,
        )
    data, values = _read_document(await request.read())
    options, document = await asyncio.to_thread(
        check_submission, data, values, settings, lambda: pool.languages
    )
    check_sync_pages(len(document.pages), settings.sync_max_pages)
    task = PageTask(data, 0, options, settings.default_dpi)
    try:
        async with asyncio.timeout_at(deadline):
            pages = await pool.recognize_pages(task, document.pages, urgent=True)
    except TimeoutError:
        raise SyncTimeout(
            "the document was not read in the time a synchronous read may take "
            f"(OCR_SYNC_TIMEOUT_S = {settings.sync_timeout_s:g} s, waiting for a free engine "
            "included) and was stopped: queue it with POST /v1/jobs (or POST /image) and poll"
        ) from None
    return web.json_response(Reading.to_wire(document.format, document.page_count, pages))


def _time_left_s(request: web.Request, settings: Settings) -> float:
    """How long the caller will wait: what it says, within OCR_SYNC_TIMEOUT_S."""
    given = request.headers.get(TIME_LEFT_HEADER)
    try:
        seconds = float(given) if given is not None else settings.sync_timeout_s
    except ValueError:
        seconds = settings.sync_timeout_s
    return min(max(seconds, 0.0), settings.sync_timeout_s) if math.isfinite(seconds) else 0.0


def _read_document(body: bytes) -> tuple[bytes, dict[str, Any]]:
    """The document and options of ``{"document": "<base64>", "options": {...}}``: options in
    the body, as a long ``char_whitelist`` would overflow a request line."""
    try:
        payload = json.loads(body)
        data = base64.b64decode(payload["document"], validate=True)
        values = payload.get("options") or {}
    except (ValueError, KeyError, TypeError) as exc:  # binascii.Error is a ValueError
        raise BadRequest(
            f'expected {{"document": "<base64>", "options": {{...}}}}: {exc}',
            code="invalid_json",
        ) from None
    if not isinstance(values, dict):
        raise BadRequest('"options" must be an object', code="invalid_json")
    return data, values


async def notify(request: web.Request) -> web.Response:
    request.app[DISPATCHER_KEY].notify()
    return web.json_response({"ok": True}, status=202)


async def healthz(_request: web.Request) -> web.Response:
    # "service" tells ocr-client, pointed here by mistake, that this is not the public API.
    return web.json_response({"status": "ok", "service": SERVICE_NAME})


async def readyz(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS_KEY]

    def ping() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    try:
        await asyncio.to_thread(ping)
    except Exception as exc:  # noqa: BLE001 - not ready is an answer, not an error
        raise Unavailable(
            f"database unreachable: {type(exc).__name__}", code="database_unavailable"
        ) from None
    return web.json_response({"status": "ready", "engines": request.app[POOL_KEY].size})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: requests, engine use and restarts, pages, jobs, queue depth."""
    pool, dispatcher = request.app[POOL_KEY], request.app[DISPATCHER_KEY]
    gauges: dict[str, server_metrics.Gauge] = {
        "ocr_engines": ("Engine processes in the pool", lambda: pool.size),
        "ocr_engines_busy": ("Engine processes reading a page now", lambda: pool.busy),
        "ocr_sync_waiting": (
            "Synchronous requests waiting for an engine",
            lambda: pool.waiting(True),
        ),
        "ocr_jobs_running": ("Jobs this server holds a lease on", lambda: dispatcher.running_jobs),
    }
    body = await asyncio.to_thread(
        server_metrics.render, gauges, dispatcher.counters, request.app[SESSIONS_KEY]
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def status(request: web.Request) -> web.Response:
    engines = [
        {"pid": getattr(engine, "pid", None), "restarts": getattr(engine, "restarts", 0)}
        for engine in request.app[POOL_KEY].engines
    ]
    body = {"engines": engines, "dispatcher": request.app[DISPATCHER_KEY].describe()}
    return web.Response(text=json.dumps(body, default=str), content_type="application/json")


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    pool: EnginePool,
    dispatcher: Dispatcher,
) -> web.Application:
    """The internal API; the caller starts and stops the dispatcher."""
    app = web.Application(
        middlewares=[telemetry_middleware, errors_middleware, guard_middleware],
        # An upload that passed the API's limit must pass here too, base64 in JSON included.
        client_max_size=max(settings.max_request_bytes, 1024) + 1024,
    )
    app[SETTINGS_KEY] = settings
    app[POOL_KEY] = pool
    app[DISPATCHER_KEY] = dispatcher
    app[SESSIONS_KEY] = session_factory
    app[BROWSERS_KEY] = BrowserGuard.from_settings(settings)
    app.router.add_post(OCR_PATH, ocr)
    app.router.add_post(NOTIFY_PATH, notify)
    app.router.add_get(HEALTHZ_PATH, healthz)
    app.router.add_get(READYZ_PATH, readyz)
    app.router.add_get(METRICS_PATH, metrics)
    app.router.add_get(STATUS_PATH, status)
    return app
