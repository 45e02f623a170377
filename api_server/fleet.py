"""The OCR servers as the API sees them: the rows each keeps fresh in the database while it
runs (``ocr_common.server_store``). The API has no models of its own to look at."""

from __future__ import annotations

from ocr_common import server_store
from ocr_common.errors import Unavailable
from ocr_common.server_store import Fleet

from .services import current_services


def current_fleet() -> Fleet:
    """The OCR servers alive now (seen within OCR_STALE_WORKERS_S), and the last one seen."""
    svc = current_services()
    with svc.sessions() as session:
        return server_store.fleet(session, stale_s=svc.settings.stale_workers_s)


def languages() -> tuple[str, ...]:
    """The languages a job may ask for; a 503 while no OCR server has ever said."""
    known = current_fleet().languages()
    if known is None:
        raise Unavailable(
            "no OCR server has been seen yet, so which languages its models read is not "
            "known; retry once one runs (eng is always installed)",
            code="ocr_unavailable",
        )
    return known
