"""What a webhook URL may be, which addresses deliveries may reach, how they are signed, and
the settings of all three."""

from __future__ import annotations

import base64
import ipaddress
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from ocr_common.errors import BadRequest
from ocr_common.settings import SettingsError, hash_api_key, load_settings
from ocr_common.webhooks import (
    AddressPolicy,
    check_webhook_url,
    logged_url,
    parse_retry_schedule,
    parse_secrets,
    refusal_reason,
    shown_url,
    signature,
)

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
NOBODY = AddressPolicy()

# Every kind of address a delivery may never reach, with the reason given.
REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.7", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.1", "private"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("100.127.255.254", "shared (carrier-grade NAT)"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    # Not routable on the internet either.
    ("192.0.2.1", "not globally routable"),
    ("198.18.0.1", "not globally routable"),
    ("255.255.255.255", "not globally routable"),
    ("240.0.0.1", "not globally routable"),
    ("fec0::1", "not globally routable"),
    ("::127.0.0.1", "not globally routable"),
    ("2001:db8::1", "not globally routable"),
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "100.63.255.255", "172.32.0.1", "2606:4700::1111"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_every_kind_of_inward_address_is_refused(address: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(("address", "reason"), [r for r in REFUSED if ":" not in r[0]])
def test_the_ipv6_forms_that_reach_an_ipv4_address_are_refused_as_it_is(
    address: str, reason: str
) -> None:
    v4 = ipaddress.IPv4Address(address)
    forms = [
        f"::ffff:{address}",  # IPv4-mapped
        f"2002:{int(v4) >> 16:x}:{int(v4) & 0xFFFF:x}::1",  # 6to4
        f"64:ff9b::{address}",  # NAT64
    ]
    for form in forms:
        found = refusal_reason(ipaddress.ip_address(form))
        assert found is not None and found.startswith(reason), (form, found)


@pytest.mark.parametrize("address", [*ALLOWED, "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_the_allow_list_lets_hosts_and_networks_through() -> None:
    policy = AddressPolicy.parse("127.0.0.1, 10.0.0.0/8 hooks.internal. [fd00::/8]")
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("fd00::5")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.refusal(ipaddress.ip_address("192.168.0.1")) == "private"
    assert policy.host_allowed("Hooks.Internal") and not policy.host_allowed("other.internal")
    assert policy.literal_refusal("10.0.0.1") is None
    assert policy.literal_refusal("hooks.example") is None  # a name: checked when looked up
    assert policy.literal_refusal("[::1]") == "::1 is a loopback address"


@pytest.mark.parametrize("spec", ["not a host!", "10.0.0.0/33", "-bad-.example", "a..b"])
def test_a_bad_allow_list_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        AddressPolicy.parse(spec)


def test_a_url_is_kept_as_browsers_parse_it() -> None:
    assert check_webhook_url("HTTPS://Example.COM:443/a b?x=1", NOBODY) == (
        "https://example.com/a%20b?x=1"
    )
    assert check_webhook_url("http://bücher.example/", NOBODY) == "http://xn--bcher-kva.example/"
    # A name is taken as it is: where it points is checked when it is looked up.
    assert check_webhook_url("http://localhost:8080/hook", NOBODY) == "http://localhost:8080/hook"


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1/",
        "http://0x7f.1/",  # every spelling of an IPv4 address browsers read
        "http://2130706433/",
        "http://017700000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://100.64.0.1/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0:5001/",
        "http://0/",
        "http://[::]/",
    ],
)
def test_a_refused_ip_literal_is_a_400_with_a_stable_code(value: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_webhook_url(value, NOBODY)
    assert info.value.code == "webhook_address_refused"
    assert info.value.field == "webhook_url" and "OCR_WEBHOOK_ALLOW" in info.value.message
    assert check_webhook_url(value, AddressPolicy.parse("0.0.0.0/0 ::/0"))


@pytest.mark.parametrize(
    "value",
    [
        "ftp://example.com/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "example.com/hook",
        "http://",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "http://[::1/",
        # Parsed as URLs, but no delivery could reach them (a security walkthrough: all 202).
        "http://.../",
        "http://a..b/",
        "http://-a.example/",
        "http://a.-b.example/",
        "http://8.8.8.8:0/",
        "https://example.com../h",
        "https://example.com:0/hook",
        "https://" + "a" * 2040 + ".com",
        42,
        ["http://example.com"],
        {"url": "http://example.com"},
        True,
    ],
)
def test_anything_but_an_http_url_of_2048_characters_is_a_400(value: object) -> None:
    with pytest.raises(BadRequest) as info:
        check_webhook_url(value, NOBODY)
    assert (info.value.code, info.value.field) == ("invalid_option", "webhook_url")


def test_2048_characters_are_taken() -> None:
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert check_webhook_url(url, NOBODY) == url
    with pytest.raises(BadRequest):
        check_webhook_url(url + "a", NOBODY)
    # Percent-encoding counts: the stored URL is what must fit.
    with pytest.raises(BadRequest, match="once encoded"):
        check_webhook_url(url[:-10] + "é" * 10, NOBODY)


def test_credentials_are_hidden_where_the_url_is_shown_and_never_logged() -> None:
    url = "https://user:pa55@hooks.example:8443/path?token=t0k"
    assert shown_url(url) == "https://user:***@hooks.example:8443/path?token=t0k"
    assert logged_url(url) == "https://hooks.example:8443"
    assert shown_url("https://hooks.example/x") == "https://hooks.example/x"


def test_the_signature_is_the_one_standard_webhooks_verifies() -> None:
    body = json.dumps({"type": "job.succeeded"}).encode()
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(parse_secrets(SECRET), "msg_1", timestamp, body),
    }
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.succeeded"}
    expected = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(timestamp, UTC), body.decode())
    assert headers["webhook-signature"] == expected


def test_several_secrets_sign_each_delivery_once_each() -> None:
    other = "whsec_" + base64.b64encode(b"another secret of thirty-two b!!").decode()
    keys = parse_secrets(f"{SECRET}, {other}")
    header = signature(keys, "msg_1", 1_700_000_000, b"{}")
    assert header.split(" ") == [
        signature(keys[:1], "msg_1", 1_700_000_000, b"{}"),
        signature(keys[1:], "msg_1", 1_700_000_000, b"{}"),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "0123456789abcdef0123456789abcdef",  # no whsec_ prefix
        "whsec_not*base64",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
        " , ",
    ],
)
def test_a_bad_secret_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_secrets(spec)


def test_the_retry_schedule_is_seconds_between_attempts() -> None:
    assert parse_retry_schedule("5, 300,1800.5") == (5.0, 300.0, 1800.5)
    assert parse_retry_schedule("") == ()
    default = load_settings().webhook_retry_delays_s
    assert default == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert 24 * 3600 < sum(default) < 30 * 3600  # about a day, as Standard Webhooks retries
    for bad in ("5s", "-1", "nan", "inf", "1e9", ",".join(["1"] * 51)):
        with pytest.raises(ValueError):
            parse_retry_schedule(bad)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OCR_WEBHOOK_SECRET", "whsec_c2hvcnQ="),
        ("OCR_WEBHOOK_RETRY_SCHEDULE", "5,soon"),
        ("OCR_WEBHOOK_ALLOW", "not a host!"),
        ("OCR_WEBHOOK_CONCURRENCY", "0"),
        ("OCR_WEBHOOK_DEFAULTS", '{"alice": "ftp://example.com/"}'),
        ("OCR_WEBHOOK_DEFAULTS", '{"alice": "http://169.254.169.254/"}'),
        ("OCR_WEBHOOK_DEFAULTS", '{"nobody": "https://example.com/"}'),
        ("OCR_WEBHOOK_DEFAULTS", "alice=https://example.com/"),
        ("OCR_WEBHOOK_DEFAULTS", '["https://example.com/"]'),
    ],
)
def test_bad_webhook_settings_stop_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv("OCR_API_KEYS", f"alice={hash_api_key('alice-key')}")
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_webhook_secrets_and_default_urls_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCR_WEBHOOK_SECRET", "whsec_c2hvcnQ=")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "c2hvcnQ" not in str(info.value)
    settings = load_settings(
        webhook_secret=SECRET,
        api_keys=f"alice={hash_api_key('alice-key')}",
        webhook_defaults={"alice": "https://user:pw@hooks.example/"},
    )
    assert SECRET not in repr(settings) and settings.webhook_keys == parse_secrets(SECRET)


def test_an_empty_secret_is_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose passes ${OCR_WEBHOOK_SECRET:-}: unset there, no webhooks, and the service starts.
    monkeypatch.setenv("OCR_WEBHOOK_SECRET", "")
    assert load_settings().webhook_keys == ()
