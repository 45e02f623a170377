"""What the API server's views depend on, built once by the app factory and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.settings import Settings

from .ocr_client import OcrBackend


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    ocr: OcrBackend
    # Languages a request may ask for: those installed with Tesseract (the OCR server's too).
    languages: tuple[str, ...] = field(default_factory=lambda: _installed_languages())


def _installed_languages() -> tuple[str, ...]:
    from ocr_server.engine import installed_languages

    return installed_languages()


def current_services() -> Services:
    """The services of the app handling the current request (set by create_app)."""
    services: Services = current_app.extensions["ocr_services"]
    return services
