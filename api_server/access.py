"""Who is calling: optional API keys (stored hashed) and per-caller rate limits."""

from __future__ import annotations

import hashlib
import math
import time

from flask import Flask, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from ocr_common import job_store
from ocr_common.browsers import BrowserGuard
from ocr_common.errors import NotFound, OcrError, RateLimited, Unauthorized
from ocr_common.settings import Settings

from .services import current_services
from .uploads import images_in_body, request_json

# Blueprints whose routes need a key when keys are configured (ops endpoints do not, but for
# /metrics when it is served on the API's own address).
PROTECTED_BLUEPRINTS = frozenset({"compat", "v1"})
METRICS_ENDPOINT = "ops.metrics"


# How soon a caller at the per-key queue cap should look again: a few pages' work.
QUEUE_FULL_RETRY_AFTER_S = 10


def presented_key() -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-API-Key", "").strip() or None


def current_owner() -> str | None:
    """The owner the current request's jobs are filed under (None without API keys)."""
    return g.get("owner")


def install_access_control(app: Flask, settings: Settings) -> Limiter | None:
    """Refuse what a browser was led to send, keep /metrics to its own address when it has
    one, check keys before every protected request, then apply the rate limit per caller."""
    owners = settings.api_key_owners
    guard_keys = AuthFailureLimit(settings) if owners and settings.auth_failure_limit else None
    browsers = BrowserGuard.from_settings(settings)
    metrics_port = (
        str(int(settings.metrics_bind.rpartition(":")[2])) if settings.metrics_bind else None
    )

    @app.before_request
    def refuse_browser_tricks() -> None:
        browsers.check(
            host=request.headers.get("Host"),
            origin=request.headers.get("Origin"),
            content_type=request.headers.get("Content-Type"),
        )

    @app.before_request
    def metrics_on_their_bind() -> None:
        if metrics_port is None:
            return
        # Told apart by the port the connection came to (gunicorn listens on both binds).
        on_metrics_bind = request.environ.get("SERVER_PORT") == metrics_port
        if on_metrics_bind and request.endpoint != METRICS_ENDPOINT:
            raise NotFound("this address serves only /metrics (OCR_METRICS_BIND)")
        if not on_metrics_bind and request.endpoint == METRICS_ENDPOINT:
            raise NotFound("/metrics is served on another address (OCR_METRICS_BIND)")

    def needs_key() -> bool:
        if request.endpoint == METRICS_ENDPOINT:
            return metrics_port is None
        return request.blueprint in PROTECTED_BLUEPRINTS

    @app.before_request
    def authenticate() -> None:
        g.owner = None
        if not owners or not needs_key():
            return
        key = presented_key()
        if key is None:
            raise Unauthorized(
                "this service needs an API key: send Authorization: Bearer <key> "
                "or X-API-Key: <key>",
                code="missing_api_key",
            )
        if guard_keys is not None:
            guard_keys.check()
        owner = owners.get(hashlib.sha256(key.encode()).hexdigest())
        if owner is None:
            if guard_keys is not None:
                guard_keys.count_failure()
            raise Unauthorized("the API key is not valid", code="invalid_api_key")
        g.owner = owner

    if not settings.rate_limit:
        return None

    def caller() -> str:
        owner = current_owner()
        return f"key:{owner}" if owner else f"addr:{get_remote_address()}"

    # Registered after `authenticate`, so the limiter sees the owner it set.
    return Limiter(
        caller,
        app=app,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=lambda: request.blueprint not in PROTECTED_BLUEPRINTS,
        # The limit counts images: a list of ten costs ten.
        default_limits_cost=images_in_request,
        storage_uri=settings.rate_limit_storage,
        headers_enabled=True,
        # A broken limit store must not take the API down with it.
        swallow_errors=True,
    )


def images_in_request() -> int:
    """What a request costs under the rate limit: the images of an original-API upload, else 1."""
    if request.blueprint != "compat" or request.method != "POST":
        return 1
    try:
        found = images_in_body(request_json())
    except OcrError:
        return 1
    if found is None or not isinstance(found[0], list):
        return 1
    limit = current_services().settings.max_images_per_request
    return max(1, min(len(found[0]), limit))


class AuthFailureLimit:
    """Requests with a wrong API key, counted per client address (OCR_AUTH_FAILURE_LIMIT): over
    the limit, the address is refused before its key is looked at, until the window ends."""

    def __init__(self, settings: Settings):
        assert settings.auth_failure_limit
        self._limits = parse_many(settings.auth_failure_limit)
        self._counter = FixedWindowRateLimiter(storage_from_string(settings.rate_limit_storage))

    def check(self) -> None:
        address = get_remote_address()
        for limit in self._limits:
            if not self._counter.test(limit, "auth-failures", address):
                reset_at = self._counter.get_window_stats(limit, "auth-failures", address)[0]
                raise RateLimited(
                    f"too many requests with a wrong API key from {address} (the limit is "
                    f"{limit}); retry after the time in Retry-After with the right key",
                    code="too_many_auth_failures",
                    retry_after_s=max(1, math.ceil(reset_at - time.time())),
                )

    def count_failure(self) -> None:
        address = get_remote_address()
        for limit in self._limits:
            self._counter.hit(limit, "auth-failures", address)


def check_queue_room(new_jobs: int) -> None:
    """Refuse (429) new jobs that would take the caller's queued jobs past the per-key cap."""
    svc = current_services()
    cap = svc.settings.max_queued_per_key
    if cap == 0:
        return
    with svc.sessions() as session:
        queued = job_store.count_queued(session, owner=current_owner(), up_to=cap)
    if queued + new_jobs > cap:
        raise RateLimited(
            f"{queued} jobs of this key are queued already and {new_jobs} more would pass "
            f"the limit of {cap} (OCR_MAX_QUEUED_PER_KEY); retry when some have run",
            code="queue_full",
            retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
        )
