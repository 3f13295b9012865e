"""Abuse limits (broker/http/limits.py, docs/security.md "Abuse limits"), on SQLite and PostgreSQL: request rates per
partner and per client address (429 with Retry-After, RFC 9457 problems, RateLimit fields), counts shared through
Redis and kept in memory when Redis fails, sizes refused before anything is parsed (413, 414, 431), and the
enumeration rule of the DPO's anomaly queue (broker/services/anomalies.py).

The Redis tests use BROKER_TEST_REDIS_URL, or Redis on 127.0.0.1:6379 when that is unset; they are skipped when no
Redis answers and the variable is unset, and fail when it is set (CI sets it).
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from gunicorn.config import Config
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.http.parser import RequestParser
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from broker.adapters.orm import AuditEntryRow
from broker.app import create_app
from broker.config import Settings
from broker.domain.clock import FixedClock
from broker.domain.errors import ConfigurationError
from broker.http.errors import PROBLEM
from broker.http.limits import STORAGE_RETRY_SECONDS, Counters, quotas
from broker.services import anomalies as rules
from broker.services import dpo
from broker.services.anomalies import HELSINKI, LogFacts
from broker.wsgi import REQUEST_LIMITS
from schemas.records.examples import EXAMPLES
from tests.integration.test_portal import log_in
from tests.support import Env, make_env

REDIS_URL = os.environ.get("BROKER_TEST_REDIS_URL")
INBOX = "/api/v1/inbox"
HEALTH_ASK = {"category": "work_assessment", "purpose": "work_capacity_assessment"}


@pytest.fixture
def clock() -> FixedClock:
    # The DPO's login checks the identity provider's ID token against the real time (tests/integration/test_dpo.py).
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def limited(settings: Settings, clock: FixedClock) -> Iterator[Callable[..., Env]]:
    """Make the test's broker with other settings (limits, sizes)."""
    made: list[Env] = []

    def make(**changes: Any) -> Env:
        environment = make_env(replace(settings, **changes), clock)
        made.append(environment)
        return environment

    yield make
    for environment in made:
        environment.broker.db.dispose()


@pytest.fixture
def redis_url() -> str:
    url = REDIS_URL or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except redis.RedisError:
        if REDIS_URL:
            pytest.fail(f"BROKER_TEST_REDIS_URL is set, but no Redis answers there ({url.split('@')[-1]})")
        pytest.skip("no Redis at 127.0.0.1:6379; set BROKER_TEST_REDIS_URL to run (and require) these tests")
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, its keys deleted afterwards: runs on both backends and in parallel CI jobs
    must not see each other's counts."""
    prefix = f"broker-test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def inbox(env: Env, org: str) -> TestResponse:
    return env.get(org, "/inbox")


def assert_problem(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    body: dict[str, Any] = response.get_json(force=True)
    assert body["status"] == status and body["code"] == code and body["title"] and body["detail"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


def assert_throttled(response: TestResponse, window: int) -> dict[str, Any]:
    """429, a problem document, and `Retry-After` in delay-seconds (RFC 9110 §10.2.3) within the window."""
    body = assert_problem(response, 429, "too_many_requests")
    retry = response.headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= window, retry
    assert f"retry after {retry} seconds" in body["detail"]
    assert re.fullmatch(r'"[a-z-]+";r=0;t=\d+', response.headers["RateLimit"])
    return body


def remaining(response: TestResponse) -> int:
    found = re.fullmatch(r'"[a-z0-9-]+";r=(\d+);t=(\d+)', response.headers["RateLimit"])
    assert found, response.headers.get("RateLimit")
    return int(found.group(1))


def audit_count(env: Env) -> int:
    with env.broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0)


# --- Rates per partner ---------------------------------------------------------------------------------------------


def test_a_partner_over_its_limit_is_refused_429_before_anything_is_done(limited: Callable[..., Env]) -> None:
    env = limited(rate_limit_api="5/hour")
    person = env.person("varha-health")  # one request of varha-health's, not kisalli's
    answers = [inbox(env, "kisalli") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"partner";q=5;w=3600'}
    assert [remaining(a) for a in answers] == [4, 3, 2, 1, 0]

    logged = audit_count(env)
    refused = env.post("kisalli", "/disclosures", {"person_id": person, **HEALTH_ASK})
    body = assert_throttled(refused, 3600)
    assert "partner 'kisalli'" in body["detail"] and "5 requests in 1 hour" in body["detail"]
    assert audit_count(env) == logged  # refused before the token was checked and the request decided (or logged)

    # The limit is the partner's: another partner is not affected.
    other = inbox(env, "varha-health")
    assert other.status_code == 200 and remaining(other) == 3


def test_a_fresh_token_does_not_reset_the_partners_count(limited: Callable[..., Env]) -> None:
    """A token's first request is let through (the partner is known only once the token has been checked) but
    counted, so the partner stays over its limit: a new token buys at most one request per process."""
    env = limited(rate_limit_api="3/hour")
    assert [inbox(env, "kisalli").status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(inbox(env, "kisalli"), 3600)
    env._tokens.clear()  # the next request gets a new access token
    first = inbox(env, "kisalli")
    assert first.status_code == 200 and remaining(first) == 0
    assert_throttled(inbox(env, "kisalli"), 3600)


def test_requests_without_a_valid_token_are_limited_per_address(limited: Callable[..., Env]) -> None:
    env = limited(rate_limit_unauthenticated="3/hour")
    env.client.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert inbox(env, "kisalli").status_code == 200  # kisalli's token is now known to be kisalli's
    bogus = {"Authorization": "Bearer cbat_" + "A" * 43}
    assert [env.client.get(INBOX, headers=bogus).status_code for _ in range(3)] == [401, 401, 401]
    body = assert_throttled(env.client.get(INBOX, headers=bogus), 3600)
    assert "this address" in body["detail"] and "192.0.2.7" not in body["detail"]
    assert_throttled(env.client.get(INBOX), 3600)  # no token at all: the same address
    # A partner whose token is known is counted as the partner, not as the address.
    assert inbox(env, "kisalli").status_code == 200
    # Another address is not affected.
    env.client.environ_base["REMOTE_ADDR"] = "192.0.2.8"
    assert env.client.get(INBOX, headers=bogus).status_code == 401


# --- Rates per address before authentication -----------------------------------------------------------------------


def test_the_token_and_revocation_endpoints_are_limited_per_address(limited: Callable[..., Env]) -> None:
    env = limited(rate_limit_oauth="3/hour")
    env.client.environ_base["REMOTE_ADDR"] = "192.0.2.1"
    assert env.token_response("kisalli").status_code == 200
    assert env.token_response("kisalli", assertion="not.a.jwt").status_code in (400, 401)  # failures count too
    issued = env.token_response("kisalli")
    assert issued.status_code == 200 and remaining(issued) == 0
    assert_throttled(env.token_response("kisalli"), 3600)
    revoke = env.client.post("/oauth/revoke", data={"token": issued.get_json()["access_token"]})
    assert_throttled(revoke, 3600)  # the same group: both take a client assertion
    env.client.environ_base["REMOTE_ADDR"] = "192.0.2.2"
    assert env.token_response("kisalli").status_code == 200


def test_behind_a_trusted_proxy_the_address_comes_from_x_forwarded_for(limited: Callable[..., Env]) -> None:
    env = limited(rate_limit_oauth="2/hour", trusted_proxies=1)
    env.client.environ_base["REMOTE_ADDR"] = "10.0.0.1"  # the proxy

    def token_from(chain: str) -> int:
        env.client.environ_base["HTTP_X_FORWARDED_FOR"] = chain
        return env.token_response("kisalli").status_code

    assert [token_from("198.51.100.1"), token_from("198.51.100.1")] == [200, 200]
    assert token_from("198.51.100.1") == 429
    assert token_from("198.51.100.2") == 200  # another client behind the same proxy
    # What the client wrote itself, left of what the proxy appended, is not believed.
    assert token_from("203.0.113.9, 198.51.100.1") == 429


def test_the_portal_login_is_limited_per_address_with_a_page_of_its_own(limited: Callable[..., Env]) -> None:
    env = limited(rate_limit_login="2/hour")
    assert [env.client.get("/portal/login").status_code for _ in range(2)] == [302, 302]
    refused = env.client.get("/portal/login", headers={"Accept-Language": "en"})
    assert refused.status_code == 429 and refused.mimetype == "text/html"
    assert "Too many attempts" in refused.get_data(as_text=True)
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600


# --- Where the counts live ------------------------------------------------------------------------------------------


def test_redis_shares_the_counts_between_two_app_instances(
    limited: Callable[..., Env], redis_url: str, redis_prefix: str
) -> None:
    """Two instances of the app — two gunicorn workers, or two machines — count one partner together."""
    env = limited(rate_limit_api="5/hour", redis_url=redis_url, rate_limit_prefix=redis_prefix)
    second = create_app(env.broker.settings, broker=env.broker)
    second.testing = True
    other = second.test_client()

    def via_second() -> TestResponse:
        return other.get(INBOX, headers=env.auth_headers("kisalli", "GET", INBOX))

    assert [inbox(env, "kisalli").status_code for _ in range(3)] == [200] * 3
    answers = [via_second() for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200] and remaining(answers[-1]) == 0
    assert_throttled(via_second(), 3600)
    assert_throttled(inbox(env, "kisalli"), 3600)
    keys = set(redis.Redis.from_url(redis_url).scan_iter(f"{redis_prefix}*"))
    assert f"{redis_prefix}:LIMITER/partner/kisalli/5/1/hour".encode() in keys


def test_when_redis_is_down_the_limits_fall_back_to_memory_with_one_warning(
    limited: Callable[..., Env], caplog: pytest.LogCaptureFixture
) -> None:
    """Fail open (docs/security.md, "Abuse limits"): requests go on, each process counts alone, and the operator is
    told once."""
    env = limited(rate_limit_api="3/hour", redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="broker.http.limits"):
        assert [inbox(env, "kisalli").status_code for _ in range(3)] == [200] * 3
        assert_throttled(inbox(env, "kisalli"), 3600)
    warnings = [r.getMessage() for r in caplog.records if r.name == "broker.http.limits"]
    assert warnings.count("rate-limit storage unreachable: counting in this process's memory until it is back") == 1


def test_counting_returns_to_redis_once_it_answers_again(redis_url: str, redis_prefix: str) -> None:
    now = [0.0]
    counters = Counters(redis_url, prefix=redis_prefix, monotonic=lambda: now[0])
    group = quotas("partner", "10/hour")
    assert counters.hit(group, "partner", "p")[0].remaining == 9 and counters.shared
    counters._fail()  # what a Redis call that raised does
    assert counters.hit(group, "partner", "p")[0].remaining == 9  # counted in memory, alone
    now[0] += STORAGE_RETRY_SECONDS - 1
    assert not counters.shared and counters.hit(group, "partner", "p")[0].remaining == 8
    now[0] += 1  # time to ask Redis again: it answers, and has the count it had
    assert counters.hit(group, "partner", "p")[0].remaining == 8 and counters.shared


def test_limits_can_be_turned_off(limited: Callable[..., Env]) -> None:
    env = limited(rate_limit_api=None, rate_limit_unauthenticated=None, rate_limit_oauth=None, rate_limit_login=None)
    assert env.app.extensions["limits"].counters is None
    answer = inbox(env, "kisalli")
    assert answer.status_code == 200 and "RateLimit" not in answer.headers


def test_the_limits_are_read_from_the_environment(tmp_path: Any) -> None:
    base = {"BROKER_MODE": "test", "BROKER_INSTANCE_PATH": str(tmp_path)}
    default = Settings.from_env(base)
    assert (default.rate_limit_api, default.rate_limit_oauth, default.redis_url) == ("600/minute", "60/minute", None)
    chosen = Settings.from_env(
        base
        | {
            "BROKER_RATE_LIMIT_API": "20/second; 600/minute",
            "BROKER_RATE_LIMIT_LOGIN": "off",
            "BROKER_REDIS_URL": "redis://:secret@redis.internal:6379/2",
            "BROKER_TRUSTED_PROXIES": "1",
        }
    )
    assert chosen.rate_limit_api == "20/second; 600/minute" and chosen.rate_limit_login is None
    assert chosen.trusted_proxies == 1 and "secret" not in repr(chosen)
    assert [q.name for q in quotas("partner", chosen.rate_limit_api)] == ["partner-1s", "partner-60s"]
    off = Settings.from_env(base | {"BROKER_RATE_LIMITS": "off"})
    assert {off.rate_limit_api, off.rate_limit_unauthenticated, off.rate_limit_oauth, off.rate_limit_login} == {None}
    for wrong in (
        {"BROKER_RATE_LIMIT_API": "lots"},
        {"BROKER_RATE_LIMITS": "maybe"},
        {"BROKER_REDIS_URL": "http://redis:6379"},
        {"BROKER_TRUSTED_PROXIES": "two"},
    ):
        with pytest.raises(ConfigurationError):
            Settings.from_env(base | wrong)


# --- Sizes, before parsing ------------------------------------------------------------------------------------------


def test_an_oversized_body_is_refused_413_before_authentication_or_parsing(limited: Callable[..., Env]) -> None:
    env = limited(max_body_bytes=1024)
    # Not JSON, and no token: parsed, it would be 400; authenticated first, 401.
    body = assert_problem(
        env.client.post("/api/v1/records", data=b"{" + b"x" * 2000, content_type="application/json"),
        413,
        "payload_too_large",
    )
    assert body["detail"] == "the request body exceeds 1024 bytes"
    # A body without a Content-Length (chunked) is cut off while it is read.
    chunked = env.call(
        "kisalli",
        "POST",
        "/api/v1/records",
        input_stream=io.BytesIO(b'{"content": "' + b"x" * 2000 + b'"}'),
        content_type="application/json",
        environ_base={"wsgi.input_terminated": True},
    )
    assert_problem(chunked, 413, "payload_too_large")


def test_the_token_endpoint_takes_a_small_form_only(env: Env) -> None:
    """One client assertion (at most 8 KiB, refused before decoding by broker/oauth/assertion.py) and a few short
    parameters: 16 KiB, however large `max_body_bytes` is."""
    form = {"grant_type": "client_credentials", "client_assertion": "x" * 17000}
    body = assert_problem(env.client.post("/oauth/token", data=form), 413, "payload_too_large")
    assert body["detail"] == "the request body exceeds 16384 bytes"
    streamed = env.client.post(
        "/oauth/token",
        input_stream=io.BytesIO(b"client_assertion=" + b"x" * 17000),
        content_type="application/x-www-form-urlencoded",
        environ_base={"wsgi.input_terminated": True},
    )
    assert_problem(streamed, 413, "payload_too_large")
    # Within the cap, an oversized assertion is the OAuth error it always was.
    refused = env.token_response("kisalli", assertion="x" * 9000)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("headers", "names"),
    [
        ({"X-Big": "y" * 8200}, "X-Big header field is longer than 8190 bytes"),
        ({"Authorization": "Bearer " + "a" * 1100}, "Authorization header field is longer than 1024 bytes"),
        ({f"X-Field-{i}": "y" for i in range(101)}, "more than 100 header fields"),
        ({f"X-Part-{i}": "y" * 6000 for i in range(3)}, "longer than 16384 bytes together"),
    ],
    ids=["one-field", "authorization", "too-many-fields", "all-together"],
)
def test_oversized_header_fields_are_refused_431(env: Env, headers: dict[str, str], names: str) -> None:
    body = assert_problem(env.client.get(INBOX, headers=headers), 431, "header_fields_too_large")
    assert names in body["detail"]


def test_an_overlong_request_line_is_refused_414(env: Env) -> None:
    assert_problem(env.client.get(INBOX + "?q=" + "a" * 4100), 414, "uri_too_long")
    assert env.client.get(INBOX + "?q=" + "a" * 3900).status_code == 401  # under the cap: on to authentication


def test_gunicorn_refuses_the_same_sizes_before_the_application(env: Env) -> None:
    config = Config()
    for name, value in REQUEST_LIMITS.items():
        config.set(name, value)

    def parse(raw: bytes) -> Any:
        return next(iter(RequestParser(config, iter([raw]), ("127.0.0.1", 1))))

    assert parse(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n").path == "/healthz"
    fields = b"".join(b"X-Field-%d: y\r\n" % i for i in range(101))
    with pytest.raises(LimitRequestHeaders):  # gunicorn answers 431
        parse(b"GET / HTTP/1.1\r\nHost: broker\r\n" + fields + b"\r\n")
    with pytest.raises(LimitRequestHeaders):
        parse(b"GET / HTTP/1.1\r\nHost: broker\r\nX-Big: " + b"y" * 8200 + b"\r\n\r\n")
    with pytest.raises(LimitRequestLine):  # 414
        parse(b"GET /" + b"a" * 4100 + b" HTTP/1.1\r\nHost: broker\r\n\r\n")


# --- The enumeration rule -------------------------------------------------------------------------------------------


def refusal(
    entry_id: int, at: datetime, person: str, *, org: str = "varha-health", event: str = "disclosure:deny"
) -> LogFacts:
    return LogFacts(
        entry_id=entry_id,
        logged_at=at,
        event=event,
        organisation=org,
        actor_id=f"probe-{entry_id}",  # a new "professional" each time
        person_id=person,
        effect="deny",
    )


START = datetime(2026, 3, 2, 10, 0, tzinfo=HELSINKI)


def test_the_enumeration_rule_counts_distinct_persons_refused_to_one_organisation_within_ten_minutes() -> None:
    thirty = [refusal(i, START + timedelta(seconds=10 * i), f"per_{i}") for i in range(30)]
    [finding] = rules.enumeration(thirty)
    assert (finding.rule, finding.entry_id, finding.organisation, finding.person_id) == (
        "enumeration",
        19,
        "varha-health",
        "per_19",
    )
    assert finding.detail == {"persons": 20, "refusals": 20, "since": "2026-03-02 10:00"}
    # Forty persons are two items: the count starts again after each.
    forty = [refusal(i, START + timedelta(seconds=10 * i), f"per_{i}") for i in range(40)]
    assert [f.entry_id for f in rules.enumeration(forty)] == [19, 39]
    # One person asked about thirty times is one person.
    assert rules.enumeration([refusal(i, START + timedelta(seconds=i), "per_x") for i in range(30)]) == []
    # Thirty persons over six hours never make twenty within ten minutes.
    slow = [refusal(i, START + timedelta(minutes=12 * i), f"per_{i}") for i in range(30)]
    assert rules.enumeration(slow) == []
    # Two organisations, fifteen each, are counted apart.
    mixed = [
        refusal(i, START + timedelta(seconds=i), f"per_{i}", org="varha-health" if i % 2 else "kisalli")
        for i in range(30)
    ]
    assert rules.enumeration(mixed) == []
    # Dry runs count when refused, not when they would have been permitted.
    dry = [refusal(i, START + timedelta(seconds=i), f"per_{i}", event="decision:query") for i in range(20)]
    assert len(rules.enumeration(dry)) == 1
    permitted = [replace(entry, effect="permit") for entry in dry]
    assert rules.enumeration(permitted) == []


def test_a_partner_probing_thirty_unrelated_persons_raises_exactly_one_enumeration_item(env: Env) -> None:
    now = env.clock.now()
    env.clock.at = now - timedelta(minutes=10)  # the probe lies in the past of the DPO's login below
    strangers = [env.person() for _ in range(30)]  # resolved by Kisälli; the health centre has no basis for them
    for i, person in enumerate(strangers):
        path = "/disclosures" if i % 2 else "/decisions"
        answer = env.post("varha-health", path, {"person_id": person, **HEALTH_ASK})
        assert answer.status_code == (403 if i % 2 else 200), answer.get_data(as_text=True)
        env.clock.advance(seconds=5)
    env.clock.at = now
    found = [f for f in dpo.find_anomalies(env.broker) if f.rule == rules.ENUMERATION]
    assert [(f.organisation, f.detail["persons"]) for f in found] == [("varha-health", 20)]
    assert found[0].person_id == strangers[19]

    workspace = log_in(env, "dpo").client
    page = workspace.get("/dpo/anomalies", headers={"Accept-Language": "en"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Many persons without a basis" in text
    assert "20 persons refused in 20 requests since" in text
    assert f'href="/dpo/anomalies/{found[0].entry_id}/enumeration"' in text


def test_a_busy_partner_with_a_basis_and_a_few_refusals_raises_none(env: Env) -> None:
    clients = [env.person() for _ in range(25)]
    for person in clients:
        env.serve(person, "kisalli", "varha-social-work")
        record = {"person_id": person, "category": "attendance_report", "content": EXAMPLES["attendance_report"]}
        deposit = env.post("kisalli", "/records", record)
        assert deposit.status_code == 201, deposit.get_data(as_text=True)
    ask = {"category": "attendance_report", "purpose": "follow_up"}
    for _ in range(2):
        for person in clients:
            answer = env.post("varha-social-work", "/disclosures", {"person_id": person, **ask})
            assert answer.status_code == 200, answer.get_data(as_text=True)
            env.clock.advance(seconds=2)
    for person in [env.person() for _ in range(5)]:  # a few persons it does not serve (yet)
        assert env.post("varha-social-work", "/disclosures", {"person_id": person, **ask}).status_code == 403
    assert [f for f in dpo.find_anomalies(env.broker) if f.rule == rules.ENUMERATION] == []
