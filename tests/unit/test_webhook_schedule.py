"""The pure parts of webhook delivery (broker/services/webhooks.py): the retry schedule — full-jitter exponential
backoff, Retry-After, giving up — and the rules for the URLs and addresses the broker sends to."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta

import pytest

from broker.config import Settings
from broker.domain.errors import ConfigurationError
from broker.services.webhooks import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    GIVE_UP_AFTER,
    MAX_ATTEMPTS,
    InvalidWebhookUrlError,
    UnknownEventTypeError,
    address_allowed,
    backoff,
    check_event_types,
    check_url,
    next_step,
    parse_retry_after,
    shown_url,
)

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def test_the_backoff_ceiling_doubles_from_thirty_seconds_to_six_hours() -> None:
    ceilings = [backoff(n, draw=lambda: 1.0) for n in range(1, MAX_ATTEMPTS + 1)]
    assert ceilings[:5] == [timedelta(seconds=s) for s in (30, 60, 120, 240, 480)]
    assert ceilings[9] == timedelta(seconds=30 * 2**9)  # 4 h 16 min
    assert ceilings[10:] == [BACKOFF_CAP] * (MAX_ATTEMPTS - 10)
    assert backoff(1000, draw=lambda: 1.0) == BACKOFF_CAP  # no overflow however many


def test_the_attempt_count_does_not_give_up_long_before_the_three_days() -> None:
    # The mean wait of full jitter is half the ceiling: the attempts allowed cover about 2½ days on average, so that
    # an endpoint down over a long weekend gets its events once it is back.
    mean_schedule = sum((backoff(n, draw=lambda: 0.5) for n in range(1, MAX_ATTEMPTS)), timedelta(0))
    assert timedelta(days=2) < mean_schedule < GIVE_UP_AFTER


def test_full_jitter_draws_anywhere_from_zero_to_the_ceiling() -> None:
    assert backoff(3, draw=lambda: 0.0) == timedelta(0)
    assert backoff(3, draw=lambda: 0.5) == BACKOFF_BASE * 2
    drawn = {backoff(4) for _ in range(200)}
    assert len(drawn) > 100  # random
    assert all(timedelta(0) <= d <= BACKOFF_BASE * 8 for d in drawn)


def test_retry_after_is_a_floor_bounded_by_the_cap() -> None:
    assert backoff(1, retry_after=timedelta(minutes=10), draw=lambda: 1.0) == timedelta(minutes=10)
    assert backoff(11, retry_after=timedelta(minutes=10), draw=lambda: 1.0) == BACKOFF_CAP  # the backoff is longer
    assert backoff(1, retry_after=timedelta(days=30), draw=lambda: 0.0) == BACKOFF_CAP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("99999999", BACKOFF_CAP),
        ("Thu, 15 Jan 2026 09:05:00 GMT", timedelta(minutes=5)),
        ("Thu, 15 Jan 2026 08:55:00 GMT", None),  # past
        ("Thu, 15 Jan 2026 09:05:00", None),  # no zone: not an HTTP-date
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_delay_seconds_or_an_http_date(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_the_next_attempt_follows_the_backoff_until_the_attempts_or_the_days_run_out() -> None:
    assert next_step(attempts=1, now=NOW, event_created=NOW, draw=lambda: 1.0) == NOW + BACKOFF_BASE
    assert next_step(attempts=MAX_ATTEMPTS - 1, now=NOW, event_created=NOW, draw=lambda: 1.0) == NOW + BACKOFF_CAP
    assert next_step(attempts=MAX_ATTEMPTS, now=NOW, event_created=NOW) is None
    created = NOW - GIVE_UP_AFTER
    assert next_step(attempts=2, now=NOW, event_created=created) is None  # three days: given up
    # Near the end, the last try is made at the give-up time itself.
    almost = NOW - GIVE_UP_AFTER + timedelta(minutes=1)
    assert next_step(attempts=9, now=NOW, event_created=almost, draw=lambda: 1.0) == NOW + timedelta(minutes=1)
    naive = (NOW - timedelta(hours=1)).replace(tzinfo=None)  # SQLite hands times back naive
    assert next_step(attempts=1, now=NOW, event_created=naive, draw=lambda: 0.0) == NOW


@pytest.mark.parametrize(
    ("address", "allowed", "with_loopback"),
    [
        ("93.184.215.14", True, True),
        ("2a00:1450:4010:c0e::66", True, True),
        ("127.0.0.1", False, True),
        ("127.8.9.10", False, True),
        ("::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("10.0.0.1", False, False),
        ("172.16.5.4", False, False),
        ("192.168.1.1", False, False),
        ("169.254.169.254", False, False),  # cloud metadata
        ("100.64.0.1", False, False),
        ("0.0.0.0", False, False),
        ("::", False, False),
        ("fe80::1", False, False),
        ("fc00::1", False, False),
        ("224.0.0.1", False, False),
        ("::ffff:10.0.0.1", False, False),
    ],
)
def test_only_public_addresses_and_loopback_when_allowed(address: str, allowed: bool, with_loopback: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert address_allowed(ip, allow_loopback=False) is allowed
    assert address_allowed(ip, allow_loopback=True) is with_loopback


def test_the_operators_partner_networks_are_allowed_and_nothing_else_private() -> None:
    networks = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd12:3456::/32"))
    for inside in ("10.20.3.4", "::ffff:10.20.0.1", "fd12:3456::7"):
        assert address_allowed(ipaddress.ip_address(inside), allow_loopback=False, networks=networks)
    for outside in ("10.21.0.1", "192.168.1.1", "169.254.169.254", "fd12:3457::1"):
        assert not address_allowed(ipaddress.ip_address(outside), allow_loopback=False, networks=networks)
    assert not address_allowed(ipaddress.ip_address("127.0.0.1"), allow_loopback=False, networks=networks)
    assert check_url("https://10.20.3.4/events", allow_loopback=False, networks=networks) == "https://10.20.3.4/events"
    with pytest.raises(InvalidWebhookUrlError, match="BROKER_WEBHOOK_NETWORKS"):
        check_url("https://10.30.0.1/events", allow_loopback=False, networks=networks)


def test_partner_networks_are_read_from_the_environment_and_checked() -> None:
    settings = Settings.from_env({"BROKER_MODE": "test", "BROKER_WEBHOOK_NETWORKS": " 10.20.0.0/16, fd12:3456::/32 "})
    assert settings.webhook_networks == (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("fd12:3456::/32"),
    )
    assert Settings.from_env({"BROKER_MODE": "test"}).webhook_networks == ()
    for bad, reason in (("10.20.0.1/16", "host bits"), ("intranet", "CIDR"), ("127.0.0.0/8", "loopback")):
        with pytest.raises(ConfigurationError, match=reason):
            Settings.from_env({"BROKER_MODE": "test", "BROKER_WEBHOOK_NETWORKS": bad})


@pytest.mark.parametrize(
    "url",
    [
        "https://partner.example/events",
        "https://partner.example:8443/broker/events?receiver=kela",
        "https://93.184.215.14/events",
        "HTTPS://Partner.Example/events",
    ],
)
def test_https_urls_to_public_hosts_are_accepted(url: str) -> None:
    assert check_url(url, allow_loopback=False) == url


@pytest.mark.parametrize(
    ("url", "demo_or_test", "accepted"),
    [
        ("http://127.0.0.1:8080/events", True, True),
        ("http://localhost:8080/events", True, True),
        ("http://[::1]:8080/events", True, True),
        ("https://127.0.0.1/events", True, True),
        ("http://127.0.0.1:8080/events", False, False),
        ("http://localhost:8080/events", False, False),
        ("https://localhost/events", False, False),
        ("https://[::1]/events", False, False),
        ("http://partner.example/events", True, False),  # plain http only to loopback
        ("http://10.0.0.1/events", True, False),
        ("https://10.0.0.1/events", True, False),
    ],
)
def test_plain_http_and_loopback_only_in_demo_and_test_mode(url: str, demo_or_test: bool, accepted: bool) -> None:
    if accepted:
        assert check_url(url, allow_loopback=demo_or_test) == url
        return
    with pytest.raises(InvalidWebhookUrlError) as refused:
        check_url(url, allow_loopback=demo_or_test)
    assert refused.value.field == "url" and refused.value.code == "invalid_webhook_url"


def test_an_overlong_url_is_refused() -> None:
    with pytest.raises(InvalidWebhookUrlError, match="at most 2000"):
        check_url("https://partner.example/" + "a" * 2000, allow_loopback=False)


def test_event_types_are_deduplicated_and_unknown_ones_named() -> None:
    assert check_event_types(["consent.withdrawn", "consent.granted", "consent.withdrawn"]) == [
        "consent.granted",
        "consent.withdrawn",
    ]
    with pytest.raises(UnknownEventTypeError, match=re.escape("'consent.changed'")):
        check_event_types(["consent.granted", "consent.changed"])
    with pytest.raises(UnknownEventTypeError):
        check_event_types([])


def test_a_url_is_shown_without_its_query() -> None:
    assert shown_url("https://p.example/e?token=s3cret") == "https://p.example/e?…"
    assert shown_url("https://p.example:8443/e") == "https://p.example:8443/e"


def test_event_retention_is_read_from_the_environment_and_checked() -> None:
    assert Settings.from_env({"BROKER_MODE": "test"}).event_retention_days == 90
    assert Settings.from_env({"BROKER_MODE": "test", "BROKER_EVENT_RETENTION_DAYS": "30"}).event_retention_days == 30
    for bad in ("3", "thirty", "-10", "1.5"):
        with pytest.raises(ConfigurationError, match="BROKER_EVENT_RETENTION_DAYS"):
            Settings.from_env({"BROKER_MODE": "test", "BROKER_EVENT_RETENTION_DAYS": bad})
