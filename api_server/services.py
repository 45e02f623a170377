"""What the API server's views depend on, built once by the app factory and passed in."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.blobs import JobFiles
from ocr_common.settings import Settings

from .ocr_client import OcrBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    ocr: OcrBackend
    files: JobFiles  # where documents are stored (OCR_BLOB_URL)


def current_services() -> Services:
    """The services of the app handling the current request (set by create_app)."""
    services: Services = current_app.extensions["ocr_services"]
    return services


def warm_up(services: Services) -> None:
    """Ready a new server process as it starts: the OCR server's client (its TLS set-up alone is
    tens of milliseconds) and a database connection for each place in the pool, one a thread.
    Cold, the first requests of a fresh process each paid for these (8 concurrent uploads
    answered in 250 ms instead of 40). Nothing here is needed: what fails is left to the
    requests, as without it."""
    try:
        services.ocr.warm_up()
        engine = services.sessions.kw["bind"]
        with contextlib.ExitStack() as held:
            for _ in range(engine.pool.size()):
                held.enter_context(engine.connect())
    except Exception as exc:  # noqa: BLE001 - a database still starting: the requests wait
        log.info("warm-up left undone (%s: %s)", type(exc).__name__, exc)
