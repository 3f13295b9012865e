"""`broker client …` (broker/client/cli.py): JSON on stdout, a refusal's code on stderr with exit 1, a usage error
with exit 2 — against the stand-in broker of test_client_http.py on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from broker.adapters.keystore import KeyStore
from broker.adapters.signing import sign_jws
from broker.cli import main
from broker.services.events import SET_TYP, security_event_token
from tests.unit.test_client_http import DISCLOSURE, FakeBroker, problem, serving


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    with serving() as broker:
        yield broker


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "kisalli-1", "alg": "Ed25519", "use": "sig"})
    path = tmp_path / "kisalli.jwk"
    path.write_text(json.dumps(key.as_dict(private=True)))
    return path


@pytest.fixture
def options(fake: FakeBroker, key_file: Path) -> Iterator[list[str]]:
    yield [
        "--base-url",
        fake.base_url,
        "--client-id",
        "kisalli",
        "--key",
        str(key_file),
        "--actor",
        "staff-17",
        "--role",
        "individual_coach",
        "--retries",
        "0",
    ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["client", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


def test_token_prints_the_token_response_and_the_dpop_thumbprint(
    capsys: pytest.CaptureFixture[str], fake: FakeBroker, options: list[str]
) -> None:
    code, out, _ = run(capsys, "token", *options)
    assert code == 0
    assert out["access_token"] == fake.tokens[0] and out["token_type"] == "DPoP" and len(out["dpop_jkt"]) == 43


def test_disclose_prints_the_disclosure_and_a_refusal_exits_1_with_its_code(
    capsys: pytest.CaptureFixture[str], fake: FakeBroker, options: list[str]
) -> None:
    fake.script(
        "POST",
        "/api/v1/disclosures",
        (200, {}, DISCLOSURE),
        (403, {}, problem(403, "no_legal_basis", decision={"effect": "deny"})),
    )
    args = ["disclose", *options, "--person", "per_1", "--category", "c", "--purpose", "p"]
    assert run(capsys, *args)[:2] == (0, DISCLOSURE)
    code, out, err = run(capsys, *args)
    assert (code, out) == (1, None)
    first, rest = err.split("\n", 1)
    assert first == "no_legal_basis: no_legal_basis!" and json.loads(rest)["decision"] == {"effect": "deny"}


def test_post_sends_json_from_an_argument_or_a_file_with_the_given_key(
    capsys: pytest.CaptureFixture[str], fake: FakeBroker, options: list[str], tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"person_id": "per_1", "category": "c", "purpose": "p"}')
    assert run(capsys, "post", *options, "/api/v1/decisions", f"@{body}", "--idempotency-key", "k-1")[0] == 0
    assert run(capsys, "post", *options, "/api/v1/decisions", '{"a": 1}')[0] == 0
    first, second = fake.requests("POST", "/api/v1/decisions")
    assert json.loads(first.body) == {"person_id": "per_1", "category": "c", "purpose": "p"}
    assert first.headers["idempotency-key"] == '"k-1"' and json.loads(second.body) == {"a": 1}


def test_get_prints_the_answer(capsys: pytest.CaptureFixture[str], fake: FakeBroker, options: list[str]) -> None:
    fake.script("GET", "/api/v1/inbox", (200, {}, [{"notice_id": "ntc_1"}]))
    assert run(capsys, "get", *options, "/api/v1/inbox?include_acknowledged=true")[:2] == (0, [{"notice_id": "ntc_1"}])
    [seen] = fake.requests("GET", "/api/v1/inbox")
    assert seen.target == "/api/v1/inbox?include_acknowledged=true"


def test_verify_event_prints_the_event_or_the_rfc_8935_error(
    capsys: pytest.CaptureFixture[str], options: list[str], tmp_path: Path
) -> None:
    store = KeyStore.open(tmp_path / "keys", create=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(store.public_jwks()))
    issuer = "https://broker.example"
    claims = security_event_token(
        issuer,
        event_id="evt_1",
        event_type="consent.granted",
        organisation_id="kisalli",
        data={"consent_id": "con_1", "person_id": "per_1"},
        occurred_at=datetime(2030, 3, 17, tzinfo=UTC),
        issued_at=datetime.now(UTC),
    )
    token = tmp_path / "event.jwt"
    token.write_text(sign_jws(claims, store, typ=SET_TYP))
    offline = [*options, "--issuer", issuer, "--jwks", str(jwks)]  # nothing is fetched: no request is made

    code, out, _ = run(capsys, "verify-event", *offline, "--organisation", "kisalli", str(token))
    assert code == 0
    assert out == {
        "id": "evt_1",
        "type": "consent.granted",
        "organisation": "kisalli",
        "person_id": "per_1",
        "occurred_at": "2030-03-17T00:00:00+00:00",
        "data": {"consent_id": "con_1", "person_id": "per_1"},
    }
    code, _, err = run(capsys, "verify-event", *offline, "--organisation", "kela", str(token))
    assert code == 1 and err.startswith("invalid_audience: ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "--base-url", "http://127.0.0.1:1"], "give --client-id, --key, --actor and --role"),
        (["token", "--demo-instance", "nowhere"], "--demo-instance needs --partner"),
        (["token", "--demo-instance", "nowhere", "--partner", "kisalli"], "no demo instance in nowhere"),
        (["token", "--actor", "staff-17"], "--actor and --role go together"),
    ],
)
def test_a_usage_error_exits_2_naming_what_is_missing(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, None) and message in err


def test_a_body_that_is_not_json_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fake: FakeBroker, options: list[str]
) -> None:
    code, _, err = run(capsys, "post", *options, "/api/v1/decisions", "{not json")
    assert code == 2 and "the body is not JSON" in err
    assert fake.requests("POST", "/api/v1/decisions") == []


def test_a_demo_partner_is_read_from_the_demo_instance(
    capsys: pytest.CaptureFixture[str], fake: FakeBroker, key_file: Path, tmp_path: Path
) -> None:
    partner = {
        "client_id": "kisalli",
        "organisation": "kisalli",
        "key_file": key_file.name,
        "actor": {"sub": "demo-kisalli-1", "role": "individual_coach"},
    }
    demo = {"base_url": fake.base_url, "issuer": fake.issuer, "partners": [partner], "persons": []}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    assert run(capsys, "get", "--demo-instance", str(tmp_path), "--partner", "kisalli", "/api/v1/inbox")[0] == 0
    code, _, err = run(capsys, "get", "--demo-instance", str(tmp_path), "--partner", "kela", "/api/v1/inbox")
    assert code == 2 and "no partner 'kela'" in err and "it lists kisalli" in err
