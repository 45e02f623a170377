"""The original API, exactly as its clients use it: /image-sync, /image, /allimages.

Wire habits of real clients are accepted: JSON without (or with the wrong) Content-Type, on GET
too; trailing slashes; the id in the query string; data: URL prefixes and line breaks in base64;
a list of images.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ocr_common import job_store
from ocr_common.errors import BadRequest, JobFailed, NotFound, OcrError, Unavailable
from ocr_common.models import JobStatus

from .services import Services
from .uploads import decode_base64, parse_json_object, validate_image

bp = Blueprint("compat", __name__)


View = Callable[..., Response]


def route(path: str, **options: Any) -> Callable[[View], View]:
    """Register ``path`` with and without a trailing slash: no redirect, so bodies survive."""

    def decorator(view: View) -> View:
        bp.add_url_rule(path, view_func=view, **options)
        bp.add_url_rule(path + "/", view_func=view, endpoint=view.__name__ + "_slash", **options)
        return view

    return decorator


def services() -> Services:
    return current_app.extensions["ocr_services"]


def read_images() -> tuple[list[bytes], bool]:
    """The images of an upload body, and whether the client sent a list."""
    svc = services()
    body = parse_json_object(request.get_data(cache=False))
    if "image_data" not in body:
        raise BadRequest(
            'the JSON body has no "image_data": send {"image_data": "<base64>"}',
            code="missing_field",
        )
    value = body["image_data"]
    many = isinstance(value, list)
    items = value if many else [value]
    if not items:
        raise BadRequest('"image_data" is an empty list', code="invalid_field")
    limits = svc.settings
    images = []
    for index, item in enumerate(items):
        field = f"image_data[{index}]" if many else "image_data"
        data = decode_base64(item, field=field, max_bytes=limits.max_upload_bytes)
        try:
            validate_image(data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
        except OcrError as exc:
            if many:
                exc.message = f"{field}: {exc.message}"
            raise
        images.append(data)
    return images, many


@route("/image-sync", methods=["POST"])
def image_sync() -> Response:
    """OCR now: {"image_data": b64} -> {"text": text}; a list in gives a list out."""
    svc = services()
    images, many = read_images()
    started = job_store.utcnow()
    results = svc.ocr.recognize_many(images)
    for result in results:
        if isinstance(result, Unavailable):
            raise result
    record_sync_jobs(svc, images, results, started)
    for result in results:
        if isinstance(result, OcrError):
            raise result
    texts = [str(result) for result in results]
    return jsonify({"text": texts if many else texts[0]})


def record_sync_jobs(
    svc: Services, images: list[bytes], results: list[str | OcrError], started: datetime
) -> None:
    with svc.sessions.begin() as session:
        for image, result in zip(images, results, strict=True):
            if isinstance(result, OcrError):
                job_store.record_finished(
                    session,
                    image=image,
                    started_at=started,
                    text=None,
                    error_code=result.code,
                    error_message=result.message,
                )
            else:
                job_store.record_finished(session, image=image, started_at=started, text=result)


@route("/image", methods=["POST"])
def image_submit() -> Response:
    """Queue OCR: {"image_data": b64} -> {"task_id": id}; committed before we answer."""
    svc = services()
    images, many = read_images()
    with svc.sessions.begin() as session:
        ids = [
            job_store.create_job(session, image=image, max_attempts=svc.settings.max_attempts).id
            for image in images
        ]
    svc.ocr.notify()
    return jsonify({"task_id": ids if many else ids[0]})


@route("/image", methods=["GET"])
def image_result() -> Response:
    """{"task_id": id} -> {"task_id": text}, or {"task_id": null} while it is not done yet."""
    job_id = read_task_id()
    with services().sessions() as session:
        job = job_store.get_job(session, job_id)
    if job is None:
        raise NotFound(f"no task with id {job_id}", code="task_not_found")
    if job.status == JobStatus.SUCCEEDED:
        return jsonify({"task_id": job.text})
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        raise JobFailed(
            f"task {job_id} {job.status.value}: {job.error_message or 'no reason recorded'}",
            code=job.error_code or f"job_{job.status.value}",
        )
    return jsonify({"task_id": None})


def read_task_id() -> str:
    value: object = request.args.get("task_id") or request.args.get("id")
    if value is None:
        body = request.get_data(cache=False)
        if not body.strip():
            raise BadRequest(
                'say which task: send {"task_id": "<id>"} as the body, or ?task_id=<id>',
                code="missing_field",
            )
        data = parse_json_object(body)
        value = data.get("task_id", data.get("id"))
        if value is None:
            raise BadRequest('the JSON body has no "task_id"', code="missing_field")
    if not isinstance(value, str):
        raise BadRequest(
            f'"task_id" must be a string, not {type(value).__name__}', code="invalid_task_id"
        )
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise BadRequest(
            f"{value[:64]!r} is not a task id (task ids are UUIDs)", code="invalid_task_id"
        ) from None


@route("/allimages", methods=["GET"])
def all_images() -> Response:
    """Every task and its text so far (null while not done), oldest first."""
    with services().sessions() as session:
        jobs = job_store.list_jobs(session)
    return jsonify({job.id: job.text for job in jobs})
