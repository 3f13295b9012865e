"""Headers on every response, a last-resort error handler, and logs that hold no personal data or secrets
(docs/security.md)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import gunicorn.http.wsgi
import pytest
from werkzeug.test import TestResponse

from broker.config import Settings
from broker.domain.clock import FixedClock
from broker.logs import JsonFormatter, configure_logging
from broker.services import persons
from broker.wsgi import SERVER_PRODUCT, hide_server_banner
from schemas.records.examples import EXAMPLES
from tests.support import Env, make_env, new_hetu

# Public, identical for everyone, no personal data: the only responses a cache may keep.
CACHEABLE = (
    "/.well-known/oauth-authorization-server",
    "/.well-known/jwks.json",
    "/api/v1/fhir/metadata",
    "/portal/static/portal.css",
)
STACK_MARKERS = ("Traceback", 'File "', ".py", "RuntimeError")


def assert_protective_headers(response: TestResponse, *, cacheable: bool = False) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers.get("X-Request-Id")
    assert "Server" not in headers
    if not cacheable:
        assert headers["Cache-Control"] == "no-store", response.request.path


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The JSON formatter's own output, for every logger, at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog at DEBUG on the root and on every named logger (caplog restores their levels afterwards)."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def test_every_kind_of_response_carries_the_protective_headers(env: Env) -> None:
    person_id = env.person()
    responses = [
        env.client.get("/healthz"),
        env.client.get("/api/v1/openapi.json"),
        env.client.get("/api/v1/docs"),
        env.get("kisalli", f"/consents?person_id={person_id}"),
        env.client.get("/api/v1/inbox"),  # 401 problem
        env.client.get("/no/such/path"),  # 404 problem
        env.client.delete("/api/v1/persons/resolve"),  # 405 problem
        env.post("kisalli", "/persons/resolve", {"hetu": "not-a-code"}),  # 400 problem
        env.client.post("/oauth/token", data={"grant_type": "client_credentials"}),  # OAuth error
        env.client.get("/portal/"),  # a redirect to the login
        env.client.get("/dpo/"),  # a redirect to the login
    ]
    for response in responses:
        assert_protective_headers(response)
        assert "Strict-Transport-Security" not in response.headers  # an http issuer: no HSTS
    assert any(r.status_code in (302, 303) for r in responses)


def test_public_metadata_and_static_assets_may_be_cached_but_keep_the_other_headers(env: Env) -> None:
    for path in CACHEABLE:
        response = env.client.get(path)
        response.close()  # a static file's response holds the file open
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] != "no-store", path
        assert_protective_headers(response, cacheable=True)


def test_hsts_is_sent_on_every_response_when_the_issuer_is_https(settings: Settings, clock: FixedClock) -> None:
    secure = make_env(dataclasses.replace(settings, issuer="https://broker.test"), clock)
    try:
        for response in (secure.client.get("/healthz"), secure.client.get("/nowhere"), secure.client.get("/portal/")):
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    finally:
        secure.broker.db.dispose()


def test_an_unhandled_error_is_a_500_problem_with_the_request_id_and_no_trace(
    env: Env, monkeypatch: pytest.MonkeyPatch, everything_logged: pytest.LogCaptureFixture, json_log: io.StringIO
) -> None:
    hetu = new_hetu()

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError(f"could not resolve {hetu}")

    monkeypatch.setattr(persons, "resolve_person", broken)
    response = env.post("kisalli", "/persons/resolve", {"hetu": hetu}, headers={"X-Request-Id": "trace-unhandled-1"})
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "internal_error" and problem["request_id"] == "trace-unhandled-1"
    body = response.get_data(as_text=True)
    assert hetu not in body and "could not resolve" not in body
    assert not any(marker in body for marker in STACK_MARKERS)
    assert_protective_headers(response)

    [record] = [r for r in everything_logged.records if r.getMessage() == "unhandled error"]
    assert record.levelno == logging.ERROR and record.__dict__["request_id"] == "trace-unhandled-1"
    [line] = [json.loads(x) for x in json_log.getvalue().splitlines() if '"unhandled error"' in x]
    assert line["request_id"] == "trace-unhandled-1" and line["error"] == "RuntimeError" and line["stack"]
    assert hetu not in everything_logged.text and hetu not in json_log.getvalue()


def test_no_identity_code_record_content_token_or_private_key_reaches_a_log_or_an_error(
    env: Env, monkeypatch: pytest.MonkeyPatch, everything_logged: pytest.LogCaptureFixture, json_log: io.StringIO
) -> None:
    hetu = new_hetu()
    content_canary = "CANARY-content-7f3a9c"
    private_key = env.partner_key("kisalli").as_dict(private=True)
    assertion = env.assertion("kisalli")

    token_response = env.token_response("kisalli", assertion)
    assert token_response.status_code == 200
    token = token_response.get_json()["access_token"]
    # A private key sent where a key must never be (a key-bearing assertion header) is refused, not echoed.
    refused = env.token_response("kisalli", env.assertion("kisalli", header={"jwk": private_key}))
    assert refused.status_code in (400, 401)

    def auth(path: str) -> dict[str, str]:  # the token and a fresh DPoP proof for one POST
        return env.token_headers(token, "POST", path)

    resolved = env.client.post("/api/v1/persons/resolve", json={"hetu": hetu}, headers=auth("/api/v1/persons/resolve"))
    assert resolved.status_code == 200
    person_id = resolved.get_json()["person_id"]
    env.serve(person_id, "kisalli", "varha-health")
    consent = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person_id,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "Pekka Salo",
        },
    )
    assert consent.status_code == 201, consent.get_json()
    content = dict(EXAMPLES["work_assessment"], client_view=content_canary)
    deposited = env.client.post(
        "/api/v1/records",
        json={"person_id": person_id, "category": "work_assessment", "content": content},
        headers=auth("/api/v1/records"),
    )
    assert deposited.status_code == 201, deposited.get_json()
    disclosed = env.post(
        "varha-health",
        "/disclosures",
        {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"},
    )
    assert disclosed.status_code == 200 and content_canary in disclosed.get_data(as_text=True)

    errors = [
        env.client.post(  # invalid code
            "/api/v1/persons/resolve", json={"hetu": hetu + "X"}, headers=auth("/api/v1/persons/resolve")
        ),
        env.client.post(
            "/api/v1/persons/resolve",
            json={"hetu": hetu, "extra": content_canary},
            headers=auth("/api/v1/persons/resolve"),
        ),
        env.client.get("/api/v1/inbox", headers={"Authorization": f"DPoP {token}x"}),  # unknown token
    ]
    monkeypatch.setattr(persons, "resolve_person", lambda *a, **k: (_ for _ in ()).throw(ValueError(hetu)))
    errors.append(
        env.client.post("/api/v1/persons/resolve", json={"hetu": hetu}, headers=auth("/api/v1/persons/resolve"))
    )
    assert [r.status_code for r in errors][-1] == 500
    for response in [refused, *errors]:
        assert response.status_code >= 400
        body = response.get_data(as_text=True)
        for canary in (hetu, token, private_key["d"]):
            assert canary not in body
        assert not any(marker in body for marker in STACK_MARKERS)

    canaries = {"identity code": hetu, "record content": content_canary, "access token": token}
    canaries |= {"client assertion": assertion, "private key": private_key["d"]}
    lines = everything_logged.text.splitlines() + json_log.getvalue().splitlines()
    lines += [repr(r.__dict__) for r in everything_logged.records]
    assert json_log.getvalue(), "the JSON formatter saw no record at all"
    for name, canary in canaries.items():
        leaked = [line for line in lines if canary in line]
        assert not leaked, f"the {name} appears in the log: {leaked[0][:200]}"


def test_a_json_log_line_is_one_object_that_a_message_cannot_split() -> None:
    stream = io.StringIO()
    handler = configure_logging(logging.DEBUG, stream)
    try:
        log = logging.getLogger("broker.test")
        log.warning(
            'forged\n{"level": "CRITICAL", "message": "admin logged in"}\r\x1b[2J', extra={"person_id": "per_1"}
        )
        try:
            raise ValueError("secret input 010101A900X")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) >= {"time", "level", "logger", "message", "request_id"}
    assert first["level"] == "WARNING" and first["logger"] == "broker.test" and first["person_id"] == "per_1"
    assert first["message"].startswith("forged\n")
    assert first["request_id"] is None and first["time"].endswith("+00:00")
    assert second["error"] == "ValueError" and second["stack"]
    assert "010101A900X" not in stream.getvalue()


def test_a_log_line_written_during_a_request_carries_its_request_id(env: Env, json_log: io.StringIO) -> None:
    @env.app.get("/_log_probe")
    def probe() -> str:
        logging.getLogger("broker.probe").warning("probe")
        return "ok"

    env.client.get("/_log_probe", headers={"X-Request-Id": "trace-probe-0001"})
    [line] = [json.loads(x) for x in json_log.getvalue().splitlines() if '"probe"' in x]
    assert line["request_id"] == "trace-probe-0001"


def test_gunicorn_sends_no_banner_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gunicorn.http.wsgi, "SERVER", gunicorn.http.wsgi.SERVER)  # restored after the test
    hide_server_banner()
    request = SimpleNamespace(method="GET", version=(1, 1), should_close=lambda: False)
    response = gunicorn.http.wsgi.Response(request, None, SimpleNamespace())
    response.status, response.status_code = "200 OK", 200
    [server] = [h for h in response.default_headers() if h.lower().startswith("server:")]
    assert server == f"Server: {SERVER_PRODUCT}\r\n"
    assert "gunicorn" not in "".join(response.default_headers()).lower()
