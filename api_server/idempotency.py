"""``Idempotency-Key``: a retried ``POST /v1/jobs`` returns the job the first one made (the
same key with another document or options is a 409)."""

from __future__ import annotations

import hashlib

from flask import request

from ocr_common import job_store
from ocr_common.errors import BadRequest, Conflict
from ocr_common.models import Job

from .access import current_owner
from .services import current_services

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255


def requested_key() -> str | None:
    """The request's key as stored, per owner; a malformed key is a 400."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
            code="invalid_idempotency_key",
            field=IDEMPOTENCY_HEADER,
        )
    owner = current_owner()
    return (
        key if owner is None else "owner:" + hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()
    )


def earlier_job(key: str | None, digest: str) -> Job | None:
    """The job an earlier request with this key made; a 409 if it was another request."""
    if key is None:
        return None
    with current_services().sessions() as session:
        job = job_store.find_by_idempotency_key(session, key)
    if job is not None and job.request_sha256 != digest:
        raise Conflict(
            f"the {IDEMPOTENCY_HEADER} was already used for a different request (job "
            f"{job.id}); use a new key for a new document or options",
            code="idempotency_key_reused",
            field=IDEMPOTENCY_HEADER,
        )
    return job
