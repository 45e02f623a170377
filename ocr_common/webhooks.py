"""Webhooks: what a job's ``webhook_url`` may be, which addresses a delivery may reach (the
API's check and the OCR server's sender apply the same rules), and the signature."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import HttpUrl, TypeAdapter, ValidationError

from .errors import BadRequest, json_kind

WEBHOOK_URL_FIELD = "webhook_url"
WEBHOOK_URL_MAX_CHARS = 2048
SECRET_PREFIX = "whsec_"
# Standard Webhooks: "secret keys SHOULD be between 24 bytes and 64 bytes".
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
# Seconds between attempts, as Standard Webhooks retries: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h after the first (immediate) attempt; about 27 hours in all.
DEFAULT_RETRY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"
MAX_RETRIES = 50
MAX_RETRY_DELAY_S = 7 * 24 * 3600.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_URL = TypeAdapter(HttpUrl)
_HOST_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}")
# Never a receiver: where a request from inside the service would land on the service's own
# network (its database, the OCR server's internal API, a cloud's metadata endpoint).
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("224.0.0.0/4", "multicast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fc00::/7", "unique-local"),
        ("ff00::/8", "multicast"),
    )
)
# NAT64's well-known prefix: the last 32 bits are the IPv4 address it reaches.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: IPv4-mapped, 6to4 or NAT64 (None: none)."""
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def refusal_reason(address: IPAddress) -> str | None:
    """Why a webhook may not be sent to ``address`` (None: it may), whatever the allow list."""
    if isinstance(address, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(address)):
        reason = refusal_reason(v4)
        return None if reason is None else f"{reason} ({v4} inside an IPv6 address)"
    for network, reason in _REFUSED:
        if address.version == network.version and address in network:
            return reason
    # The rest of what is not reachable on the internet: documentation and benchmarking
    # ranges, the broadcast address, IPv4-compatible IPv6, site-local, Teredo, ...
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    if not address.is_global or address.is_reserved or site_local:
        return "not globally routable"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names when it is an IP literal (IPv6 in brackets)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class AddressPolicy:
    """Where deliveries may go: anywhere on the internet, and what ``OCR_WEBHOOK_ALLOW`` lists."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, spec: str | None) -> AddressPolicy:
        """Comma- or space-separated host names, addresses and networks (``10.0.0.0/8``)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in re.split(r"[\s,]+", (spec or "").strip()):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{entry[:80]!r} is neither a host name, an IP address nor a network "
                    "such as 10.0.0.0/8"
                )
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def host_allowed(self, host: str) -> bool:
        """The host is listed by name: whatever it resolves to is allowed."""
        return host.lower().rstrip(".") in self.hosts

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused (None: allowed, by the rules or by the allow list)."""
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        for network in self.networks:
            if any(a.version == network.version and a in network for a in candidates):
                return None
        return refusal_reason(address)

    def literal_refusal(self, host: str) -> str | None:
        """Why a URL whose host is an IP literal may not be reached (None: it may, or the host
        is a name, whose addresses are checked when it is looked up)."""
        address = literal_address(host)
        if address is None or self.host_allowed(host):
            return None
        reason = self.refusal(address)
        return None if reason is None else f"{address} is a {reason} address"


def check_webhook_url(value: object, policy: AddressPolicy) -> str:
    """The URL as stored (normalised as browsers parse it: ``http://0x7f.1/`` is
    ``http://127.0.0.1/``); a 400 unless it is an http(s) URL deliveries may reach."""
    if not isinstance(value, str):
        raise _invalid(f"must be an http or https URL, not {json_kind(value)}")
    if len(value) > WEBHOOK_URL_MAX_CHARS:
        raise _invalid(f"has {len(value)} characters; at most {WEBHOOK_URL_MAX_CHARS}")
    try:
        url = str(_URL.validate_python(value))
    except ValidationError as exc:
        why = exc.errors()[0]["msg"].removeprefix("Input should be a valid URL, ")
        raise _invalid(f"is not an http or https URL ({why})") from None
    if len(url) > WEBHOOK_URL_MAX_CHARS:
        raise _invalid(f"has {len(url)} characters once encoded; at most {WEBHOOK_URL_MAX_CHARS}")
    parts = urlsplit(url)
    host = parts.hostname or ""
    # What URL parsers take but no delivery could reach: empty labels (http://a..b/), a label
    # that starts or ends with a hyphen, port 0.
    name = host[:-1] if host.endswith(".") else host  # one final dot: the root's, allowed
    if literal_address(host) is None and not _HOST_NAME.fullmatch(name):
        raise _invalid(f"names the host {host[:80]!r}, which is not a host name")
    if parts.port == 0:
        raise _invalid("names port 0, which no server listens on")
    refused = policy.literal_refusal(host)
    if refused is not None:
        raise BadRequest(
            f'"{WEBHOOK_URL_FIELD}": {refused}; webhooks are not sent to the service\'s own '
            "networks (the operator may allow it with OCR_WEBHOOK_ALLOW)",
            code="webhook_address_refused",
            field=WEBHOOK_URL_FIELD,
        )
    return url


def _invalid(message: str) -> BadRequest:
    return BadRequest(
        f'"{WEBHOOK_URL_FIELD}": {message}', code="invalid_option", field=WEBHOOK_URL_FIELD
    )


def shown_url(url: str) -> str:
    """The URL as the job shows it: a password in it is replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@" + parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def logged_url(url: str) -> str:
    """A URL as a log line may show it: scheme, host and port (a token may hide in the rest)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def parse_secrets(spec: str) -> tuple[bytes, ...]:
    """``whsec_<base64>`` secrets, separated by spaces or commas: the keys they hold."""
    keys = []
    for entry in re.split(r"[\s,]+", spec.strip()):
        if not entry:
            continue
        if not entry.startswith(SECRET_PREFIX):
            raise ValueError(f"each secret must start with {SECRET_PREFIX} (Standard Webhooks)")
        try:
            key = base64.b64decode(entry.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"the part after {SECRET_PREFIX} must be base64") from None
        if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
            raise ValueError(
                f"a secret must hold {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes (it holds "
                f'{len(key)}); make one with: python -c "import base64, os; '
                f"print('{SECRET_PREFIX}' + base64.b64encode(os.urandom(32)).decode())\""
            )
        keys.append(key)
    if not keys:
        raise ValueError("no secret given; unset the variable to send no webhooks")
    return tuple(keys)


def signature(keys: tuple[bytes, ...], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256>`` of
    ``{id}.{timestamp}.{body}`` under each key, space-separated (Standard Webhooks)."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in keys
    )


def parse_retry_schedule(spec: str) -> tuple[float, ...]:
    """Seconds to wait before each retry, comma-separated ("5,300,1800"); empty: no retry."""
    delays = []
    for part in filter(None, (part.strip() for part in spec.split(","))):
        try:
            delay = float(part)
        except ValueError:
            raise ValueError(f"{part[:20]!r} is not a number of seconds") from None
        if not math.isfinite(delay) or not 0 <= delay <= MAX_RETRY_DELAY_S:
            raise ValueError(f"{part[:20]!r} is outside 0..{MAX_RETRY_DELAY_S:.0f} seconds")
        delays.append(delay)
    if len(delays) > MAX_RETRIES:
        raise ValueError(f"{len(delays)} retries; at most {MAX_RETRIES}")
    return tuple(delays)
