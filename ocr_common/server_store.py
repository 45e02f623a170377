"""All SQL about the OCR servers' rows (each keeps its own fresh; the API reads them to tell a
stalled queue from a slow one). These functions never commit: the caller does."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from .job_store import rows_matched, utcnow
from .models import OcrServerRow

SERVERS = cast(Table, OcrServerRow.__table__)


@dataclass(frozen=True)
class OcrServer:
    """One OCR server process as its row last said."""

    id: str
    host: str
    engines: int
    languages: tuple[str, ...]
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> OcrServer:
        values = {field.name: getattr(row, field.name) for field in fields(cls)}
        return cls(**{**values, "languages": tuple(json.loads(row.languages))})


@dataclass(frozen=True)
class Fleet:
    """The OCR servers as the database sees them at ``now``."""

    alive: tuple[OcrServer, ...]  # seen within the staleness window, and not stopped
    last: OcrServer | None  # the one seen most recently, alive or not; None: none ever
    now: datetime

    def languages(self) -> tuple[str, ...] | None:
        """What a job may ask for: the languages every live OCR server reads (any may claim it),
        else those of the one seen last; None if none was ever seen."""
        if self.alive:
            common = set.intersection(*(set(server.languages) for server in self.alive))
            return tuple(sorted(common))
        return None if self.last is None else self.last.languages

    def stalled(self) -> str | None:
        """Why queued jobs are not being read (no OCR server alive), or None."""
        if self.alive:
            return None
        if self.last is None:
            return "no OCR server has been seen yet; jobs will wait until one starts"
        seconds = (self.now - self.last.last_seen_at).total_seconds()
        stopped = " (the last one stopped)" if self.last.stopped_at is not None else ""
        return f"no OCR server has been seen for {seconds:.0f} s{stopped}; jobs will wait"


def record_alive(
    session: Session,
    *,
    server_id: str,
    host: str,
    engines: int,
    languages: tuple[str, ...],
    started_at: datetime,
) -> None:
    """Say that ``server_id`` runs now, with its engines and the languages they read."""
    values = {
        "host": host,
        "engines": engines,
        "languages": json.dumps(sorted(languages)),
        "last_seen_at": utcnow(),
        "stopped_at": None,
    }
    # Only this server writes its row: no other writer can insert it between the two.
    if not rows_matched(session, update(SERVERS).where(SERVERS.c.id == server_id).values(values)):
        session.execute(insert(SERVERS).values(id=server_id, started_at=started_at, **values))


def record_stopped(session: Session, *, server_id: str) -> None:
    """Say that ``server_id`` stopped on purpose: it is not waited for until it is stale."""
    now = utcnow()
    session.execute(
        update(SERVERS).where(SERVERS.c.id == server_id).values(last_seen_at=now, stopped_at=now)
    )


def forget_before(session: Session, *, seen_before: datetime) -> int:
    """Delete the rows of servers not seen since ``seen_before``; how many went."""
    return rows_matched(session, delete(SERVERS).where(SERVERS.c.last_seen_at < seen_before))


def fleet(session: Session, *, stale_s: float) -> Fleet:
    """The OCR servers seen within ``stale_s`` seconds and not stopped, and the last one seen."""
    now = utcnow()
    alive = session.execute(
        select(SERVERS)
        .where(
            SERVERS.c.last_seen_at >= now - timedelta(seconds=stale_s),
            SERVERS.c.stopped_at.is_(None),
        )
        .order_by(SERVERS.c.last_seen_at.desc())
    ).all()
    if alive:
        servers = tuple(OcrServer.from_row(row) for row in alive)
        return Fleet(alive=servers, last=servers[0], now=now)
    last = session.execute(select(SERVERS).order_by(SERVERS.c.last_seen_at.desc()).limit(1)).first()
    return Fleet(alive=(), last=None if last is None else OcrServer.from_row(last), now=now)
