"""What the API server's views depend on, built once by the app factory and passed in."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.blobs import JobFiles
from ocr_common.settings import Settings

from .ocr_client import OcrBackend


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
