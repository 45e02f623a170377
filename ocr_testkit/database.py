"""Test databases: scratch ones of their own, emptied between tests (the schema stays), the
statements sent and their plans, and the query the deployment's autoscaler runs."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, delete, event, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store, server_store
from ocr_common.blobs import JobFiles, StoredDocument
from ocr_common.models import (
    ClaimedJob,
    Job,
    JobImageRow,
    JobOutcome,
    JobRow,
    OcrServerRow,
    WebhookDeliveryRow,
)
from ocr_common.result import Page, pack_page

SCALED_OBJECT = Path(__file__).resolve().parents[1] / "deploy/k8s/base/ocr-scaledobject.yaml"


@contextlib.contextmanager
def scratch_database(base_url: str, prefix: str) -> Iterator[str]:
    """A new empty database, ``<prefix>_<random>``, on the MySQL/MariaDB server of ``base_url``
    (for SQLite, a file in the temporary folder); dropped on the way out."""
    url = make_url(base_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    if url.get_backend_name() == "sqlite":
        path = Path(tempfile.gettempdir()) / f"{name}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            path.unlink(missing_ok=True)
        return
    server = create_engine(url.set(database=""), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def queue_document(
    sessions: sessionmaker[Session], files: JobFiles, image: bytes, **job: Any
) -> Job:
    """A queued job of ``image``, as the API queues one: the document stored, then the job
    committed (``job``: create_job's other arguments; 3 attempts unless said)."""
    document = files.store_document(image)
    with sessions.begin() as session:
        return job_store.create_job(session, document=document, **{"max_attempts": 3, **job})


def filed_document(data: bytes) -> StoredDocument:
    """A document as the blob store files it, for tests that never read its bytes."""
    job_id = str(uuid.uuid4())
    digest = hashlib.sha256(data).hexdigest()
    return StoredDocument(job_id, JobFiles.document_key(job_id), len(data), digest)


def empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(WebhookDeliveryRow))
        conn.execute(delete(JobImageRow))
        conn.execute(delete(JobRow))
        conn.execute(delete(OcrServerRow))


def seen_ocr_server(
    sessions: sessionmaker[Session],
    server_id: str = "ocr-1",
    *,
    languages: tuple[str, ...] = ("eng",),
    seconds_ago: float = 0.0,
) -> None:
    """The row of an OCR server last seen ``seconds_ago``, as a running one writes it."""
    with sessions.begin() as session:
        server_store.record_alive(
            session,
            server_id=server_id,
            host="test-host",
            engines=2,
            languages=languages,
            started_at=job_store.utcnow(),
        )
        when = job_store.utcnow() - timedelta(seconds=seconds_ago)
        session.execute(
            update(OcrServerRow).where(OcrServerRow.id == server_id).values(last_seen_at=when)
        )


@contextlib.contextmanager
def statements_sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Each SQL statement sent on ``engine`` inside the block, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", catch)


def explain(conn: Connection, statement: str, parameters: Any = None) -> list[dict[str, str]]:
    """MySQL's plan of ``statement``: a row for each table it reads."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("EXPLAIN " + statement, parameters)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, map(str, row), strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def keda_query() -> str:
    """The query KEDA's MySQL trigger runs to scale the OCR servers, as the manifest has it."""
    [trigger] = yaml.safe_load(SCALED_OBJECT.read_text())["spec"]["triggers"]
    return str(trigger["metadata"]["query"])


# -- the job store one job at a time, as tests and benches drive it -----------------------------


def claim_next(session: Session, *, worker_id: str, lease_s: float) -> ClaimedJob | None:
    """Take the oldest queued job for ``worker_id`` (``claim_batch`` of one)."""
    claimed = job_store.claim_batch(session, worker_id=worker_id, lease_s=lease_s, limit=1)
    return claimed[0] if claimed else None


def finish(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    text: str,
    keep_image: bool = False,
    pages: list[Page] | None = None,
) -> bool:
    """Write a result if ``worker_id`` still holds the job (``finish_batch`` of one)."""
    packed = None if pages is None else list(map(pack_page, pages))
    outcome = JobOutcome(job_id, text=text, pages=packed)
    return bool(
        job_store.finish_batch(
            session, worker_id=worker_id, outcomes=[outcome], keep_images=keep_image
        )
    )


def fail(
    session: Session, *, job_id: str, worker_id: str, error_code: str, error_message: str
) -> bool:
    """Fail the job for good, if ``worker_id`` still holds it (``finish_batch`` of one)."""
    outcome = JobOutcome(job_id, error_code=error_code, error_message=error_message)
    return bool(job_store.finish_batch(session, worker_id=worker_id, outcomes=[outcome]))
