"""Who is calling: optional API keys (stored hashed) and per-caller rate limits."""

from __future__ import annotations

import hashlib

from flask import Flask, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from ocr_common.errors import Unauthorized
from ocr_common.settings import Settings

# Blueprints whose routes need a key when keys are configured (ops endpoints never do).
PROTECTED_BLUEPRINTS = frozenset({"compat", "v1"})


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
    """Check keys before every protected request, then apply the rate limit per caller."""
    owners = settings.api_key_owners

    @app.before_request
    def authenticate() -> None:
        g.owner = None
        if not owners or request.blueprint not in PROTECTED_BLUEPRINTS:
            return
        key = presented_key()
        if key is None:
            raise Unauthorized(
                "this service needs an API key: send Authorization: Bearer <key> "
                "or X-API-Key: <key>",
                code="missing_api_key",
            )
        owner = owners.get(hashlib.sha256(key.encode()).hexdigest())
        if owner is None:
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
        storage_uri=settings.rate_limit_storage,
        headers_enabled=True,
        # A broken limit store must not take the API down with it.
        swallow_errors=True,
    )
