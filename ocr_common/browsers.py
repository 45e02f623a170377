"""What a web browser may ask of a service it can reach: both services check every request,
as a page on any site can make a visitor's browser call a service on the visitor's network.

- **DNS rebinding** (the page's name made to resolve to the service): the request names the
  attacker's host in ``Host``; a service answers only to the names it is reached by
  (OCR_ALLOWED_HOSTS), ``localhost`` and IP addresses (never a rebinding).
- **Cross-site requests** (CSRF): a "simple" request (plain text, a form, no body type) from
  another site carries its ``Origin`` and is refused unless that is the service's own; other
  types are preflighted, which this service never allows.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from .errors import Forbidden, MisdirectedRequest
from .settings import Settings

# Answered by any service on this machine: browsers resolve it to loopback themselves.
LOOPBACK_NAMES = frozenset({"localhost"})
# Content types a browser sends across sites without a preflight (the Fetch standard's
# CORS-safelisted ones); "" is no Content-Type at all.
SIMPLE_CONTENT_TYPES = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
DEFAULT_PORTS = {"http": 80, "https": 443}
# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then maybe a port.
_HOST = re.compile(r"(?P<name>\[[0-9a-fA-F:.]+\]|[^\s:/@\[\]?#]+)(?::(?P<port>\d{1,5}))?")
# The most of a client's value quoted back in a message.
SHOWN_CHARS = 100


class BrowserGuard:
    """The Host names a service answers to, and the check of a request's Host and Origin."""

    def __init__(self, allowed_names: frozenset[str]):
        self._any = "*" in allowed_names
        self._names = LOOPBACK_NAMES | {name for name in allowed_names if name != "*"}

    @classmethod
    def from_settings(cls, settings: Settings) -> BrowserGuard:
        return cls(settings.allowed_host_names)

    def allows_host(self, host: str) -> bool:
        """Whether a request with this ``Host`` header is for this service."""
        parsed = _parse_host(host)
        if parsed is None:
            return False
        name = parsed[0]
        if self._any or _is_ip_address(name) or name in self._names:
            return True
        return any(
            name == domain[1:] or name.endswith(domain)
            for domain in self._names
            if domain.startswith(".")
        )

    def check(self, *, host: str | None, origin: str | None, content_type: str | None) -> None:
        """Refuse a request a browser was led to send: MisdirectedRequest (421) for a Host not
        allowed, Forbidden (403) for a simple request from another origin."""
        # No Host: HTTP/1.0, which no browser speaks.
        if host is not None and not self.allows_host(host):
            raise MisdirectedRequest(
                f"this service does not answer to the host {host[:SHOWN_CHARS]!r} (the "
                "request's Host header), which could be a web page reaching it through DNS "
                "rebinding. If that name is this service's, add it to OCR_ALLOWED_HOSTS "
                "(comma-separated names, .example.com for a domain, * for any)"
            )
        essence = (content_type or "").split(";", 1)[0].strip().lower()
        if origin is None or essence not in SIMPLE_CONTENT_TYPES:
            return
        if host is not None and _same_origin(origin, host):
            return
        raise Forbidden(
            f"a page of another site ({origin[:SHOWN_CHARS]}) may not send this request "
            "(its Origin is not this service's own); nothing was done. A program that is not "
            "a browser sends no Origin header; a proxy in front must pass the Host header on",
            code="cross_origin_request",
        )


def _parse_host(host: str) -> tuple[str, int | None] | None:
    """(lower-case name without brackets or final dot, port) of a Host header; None if it is
    not one."""
    found = _HOST.fullmatch(host.strip())
    if found is None:
        return None
    port = int(found["port"]) if found["port"] else None
    if port is not None and port > 65535:
        return None
    return found["name"].strip("[]").lower().rstrip("."), port


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` (``scheme://name[:port]``) is the origin whose pages ``host`` (the
    request's Host header) serves; a missing port is the scheme's default on both."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    default = DEFAULT_PORTS.get(parts.scheme)
    served = _parse_host(host)
    if default is None or parts.hostname is None or served is None or parts.path:
        return False
    name, port = served
    return (parts.hostname.rstrip("."), origin_port or default) == (name, port or default)
