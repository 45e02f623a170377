"""What the API server's views depend on, built once by the app factory and passed in."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ocr_common.settings import Settings

from .ocr_client import OcrBackend


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    ocr: OcrBackend
