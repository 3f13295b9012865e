"""The partner client over real HTTP (broker/client/client.py): a stand-in for the broker on 127.0.0.1 that answers
from a script — it fails, then succeeds — and records every request, whose assertions and DPoP proofs are then
checked with the broker's own verification functions (broker/oauth/assertion.py, broker/oauth/dpop.py).

Time is injected: the client's clock is pinned, and its `sleep` records the waits instead of waiting."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import OKPKey

from broker.adapters.keystore import KeyStore
from broker.adapters.signing import sign_jws
from broker.client import (
    BrokerClient,
    BrokerError,
    ConflictError,
    ConnectionFailedError,
    InvalidEventError,
    InvalidRequestError,
    NoLegalBasisError,
    ProtocolError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    UnauthorizedError,
)
from broker.client.events import UnknownKeyError
from broker.oauth import dpop as server_dpop
from broker.oauth.assertion import read_assertion, verify_assertion
from broker.oauth.metadata import server_metadata
from broker.services.events import SET_TYP, security_event_token

NOW = 1_900_000_000.0
DROP = object()  # a reply that closes the connection without an answer
METADATA = "/.well-known/oauth-authorization-server"
DISCLOSURE = {"disclosure_id": "dis_1", "basis": {"kind": "consent", "consent_id": "con_1"}, "records": []}


@dataclass
class Seen:
    method: str
    target: str  # the request target as sent: path and query
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def form(self) -> dict[str, str]:
        return {name: values[0] for name, values in parse_qs(self.body.decode()).items()}


def problem(status: int, code: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": code, "status": status, "code": code, "detail": f"{code}!"} | extra


class FakeBroker:
    """Serves the metadata (the broker's own `server_metadata`), tokens, the JWK Set, and API answers from a script
    per (method, path); anything unscripted is answered 200."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.base_url
        self.seen: list[Seen] = []
        self.scripts: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self.token_type = "DPoP"
        self.jwks: dict[str, Any] = {"keys": []}
        self.tokens: list[str] = []
        self._lock = threading.Lock()

    def script(self, method: str, path: str, *replies: Any) -> None:
        self.scripts[(method, path)].extend(replies)

    def requests(self, method: str, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == method and seen.path == path]

    def answer(self, seen: Seen) -> Any:
        with self._lock:
            self.seen.append(seen)
            script = self.scripts.get((seen.method, seen.path))
            if script:
                return script.pop(0)
            if seen.path == METADATA:
                return 200, {}, server_metadata(self.issuer)
            if seen.path == "/.well-known/jwks.json":
                return 200, {}, self.jwks
            if seen.path == "/oauth/token":
                token = f"cbat_{len(self.tokens):043d}"
                self.tokens.append(token)
                return 200, {}, {"access_token": token, "token_type": self.token_type, "expires_in": 300, "scope": "x"}
            return 200, {}, {"ok": True}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake.answer(Seen(self.command, self.path, headers, body))  # type: ignore[attr-defined]
        if reply is DROP:
            self.close_connection = True
            return
        status, extra, payload = reply
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        is_problem = isinstance(payload, dict) and "code" in payload
        self.send_header("Content-Type", "application/problem+json" if is_problem else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_DELETE = do_GET

    def log_message(self, *_: Any) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def serving() -> Iterator[FakeBroker]:
    """A FakeBroker answering on its own thread until the block ends."""
    broker = FakeBroker()
    thread = threading.Thread(target=broker.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        broker.server.shutdown()
        broker.server.server_close()
        thread.join()


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    with serving() as broker:
        yield broker


@pytest.fixture
def partner_key() -> dict[str, Any]:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "kisalli-1", "alg": "Ed25519", "use": "sig"})
    return dict(key.as_dict(private=True))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(fake: FakeBroker, partner_key: dict[str, Any], clock: Clock, sleeps: list[float]) -> Iterator[BrokerClient]:
    with BrokerClient(
        fake.base_url,
        "kisalli",
        partner_key,
        acting=("staff-17", "individual_coach"),
        organisation="kisalli",
        retries=RetryPolicy(retries=3, backoff=0.5, max_backoff=8.0),
        clock=clock,
        sleep=sleeps.append,
    ) as made:
        yield made


def verified_proof(seen: Seen, issuer: str, *, token: str | None = None) -> server_dpop.DpopProof:
    """The request's proof as the broker checks it: against the issuer and the path as sent."""
    return server_dpop.verify_proof(
        [seen.headers["dpop"]],
        method=seen.method,
        url=issuer + seen.target.split("?", 1)[0],
        now=datetime.fromtimestamp(NOW, UTC),
        max_age=60,
        skew=10,
        access_token=token,
    )


def bearer(seen: Seen) -> str:
    scheme, _, token = seen.headers["authorization"].partition(" ")
    assert scheme == "DPoP"
    return token


def claims_of(token: str) -> dict[str, Any]:
    return read_assertion(token).claims


def payload_of(proof: str) -> dict[str, Any]:
    segment = proof.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return claims


# --- retries ---


def test_a_write_is_retried_with_the_same_idempotency_key_and_a_new_proof_each_time(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script(
        "POST",
        "/api/v1/disclosures",
        DROP,
        (503, {"Retry-After": "2"}, problem(503, "database_unavailable")),
        (500, {}, problem(500, "internal_error")),
        (200, {}, DISCLOSURE),
    )
    assert client.disclose("per_1", "work_assessment", "work_capacity_assessment") == DISCLOSURE

    attempts = fake.requests("POST", "/api/v1/disclosures")
    assert len(attempts) == 4
    keys = {seen.headers["idempotency-key"] for seen in attempts}
    assert len(keys) == 1 and next(iter(keys)).startswith('"') and len(next(iter(keys))) == 38  # a quoted UUID
    assert {seen.body for seen in attempts} == {
        b'{"person_id":"per_1","category":"work_assessment","purpose":"work_capacity_assessment"}'
    }
    proofs = [verified_proof(seen, fake.issuer, token=bearer(seen)) for seen in attempts]
    assert len({proof.jti for proof in proofs}) == 4  # a proof is good for one request
    assert {proof.jkt for proof in proofs} == {client.dpop_thumbprint}
    # Full jitter up to 0.5 s; Retry-After 2 plus up to 0.5 s; full jitter up to 0.5 * 2**2 s.
    assert len(sleeps) == 3
    assert 0 <= sleeps[0] <= 0.5 and 2 <= sleeps[1] <= 2.5 and 0 <= sleeps[2] <= 2.0


def test_retries_are_bounded_and_the_last_answer_is_raised(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script("POST", "/api/v1/records", *[(503, {}, problem(503, "audit_unavailable"))] * 5)
    with pytest.raises(ServerError) as caught:
        client.deposit_record("per_1", "work_assessment", {"a": 1})
    assert caught.value.code == "audit_unavailable" and caught.value.status == 503
    assert len(fake.requests("POST", "/api/v1/records")) == 4 and len(sleeps) == 3


def test_a_lost_connection_is_retried_and_when_it_stays_lost_named(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script("POST", "/api/v1/notices", *[DROP] * 4)
    with pytest.raises(ConnectionFailedError) as caught:
        client.send_notice("per_1", "interruption_notice", "varha-social-work", {"reason": "x"})
    assert caught.value.status is None and caught.value.code == "connection_failed"
    assert len(fake.requests("POST", "/api/v1/notices")) == 4 and len(sleeps) == 3


def test_a_broker_that_is_not_there_is_a_connection_failure(partner_key: dict[str, Any], sleeps: list[float]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()  # the port is free: nothing listens there
    client = BrokerClient(
        f"http://127.0.0.1:{port}", "kisalli", partner_key, acting=("s", "r"), retries=1, sleep=sleeps.append
    )
    with pytest.raises(ConnectionFailedError):
        client.inbox()
    assert len(sleeps) == 1


def test_too_many_requests_waits_as_long_as_the_broker_says(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script("GET", "/api/v1/inbox", (429, {"Retry-After": "7"}, problem(429, "too_many_requests")))
    assert client.inbox() == {"ok": True}
    assert len(sleeps) == 1 and 7 <= sleeps[0] <= 7.5


def test_a_retry_after_beyond_the_policys_limit_is_raised_not_waited_for(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script("GET", "/api/v1/inbox", (429, {"Retry-After": "3600"}, problem(429, "too_many_requests")))
    with pytest.raises(RateLimitedError) as caught:
        client.inbox()
    assert caught.value.retry_after == 3600 and sleeps == []


def test_a_key_still_in_use_is_retried_but_another_conflict_is_not(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script(
        "POST",
        "/api/v1/consents/con_1/withdraw",
        (409, {}, problem(409, "idempotency_key_in_use", field="Idempotency-Key")),
        (200, {}, {"consent_id": "con_1", "status": "withdrawn"}),
    )
    assert client.withdraw_consent("con_1")["status"] == "withdrawn"
    assert len(sleeps) == 1
    fake.script("POST", "/api/v1/consents/con_2/withdraw", (409, {}, problem(409, "consent_not_active")))
    with pytest.raises(ConflictError) as caught:
        client.withdraw_consent("con_2", reason="asked in person")
    assert caught.value.code == "consent_not_active" and len(sleeps) == 1
    [refused] = fake.requests("POST", "/api/v1/consents/con_2/withdraw")
    assert json.loads(refused.body) == {"reason": "asked in person"}


def test_a_refusal_is_not_retried_and_becomes_its_exception(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script("POST", "/api/v1/decisions", (400, {}, problem(400, "unknown_purpose", field="purpose")))
    with pytest.raises(InvalidRequestError) as invalid:
        client.decide("per_1", "work_assessment", "fishing")
    assert invalid.value.field == "purpose" and invalid.value.code == "unknown_purpose"
    decision = {"effect": "deny", "reasons": [{"rule": "F7", "applies": False}]}
    fake.script(
        "POST",
        "/api/v1/disclosures",
        (403, {}, problem(403, "no_legal_basis", disclosure_id="dis_9", decision=decision)),
    )
    with pytest.raises(NoLegalBasisError) as refused:
        client.disclose("per_1", "work_assessment", "work_capacity_assessment")
    assert refused.value.decision == decision and refused.value.disclosure_id == "dis_9"
    assert sleeps == [] and len(fake.requests("POST", "/api/v1/disclosures")) == 1


def test_a_read_is_retried_too_and_carries_no_idempotency_key(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script("GET", "/api/v1/consents", (502, {}, b"<html>bad gateway</html>"), (200, {}, [{"consent_id": "c"}]))
    assert client.list_consents("per_1") == [{"consent_id": "c"}]
    attempts = fake.requests("GET", "/api/v1/consents")
    assert [seen.target for seen in attempts] == ["/api/v1/consents?person_id=per_1"] * 2
    assert all("idempotency-key" not in seen.headers for seen in attempts)
    assert len({verified_proof(seen, fake.issuer, token=bearer(seen)).jti for seen in attempts}) == 2
    assert len(sleeps) == 1


def test_each_call_has_its_own_key_unless_one_is_given(fake: FakeBroker, client: BrokerClient) -> None:
    client.ack("ntc_1")
    client.ack("ntc_2")
    client.ack("ntc_3", idempotency_key="ack-ntc_3-2030-03-17")
    keys = [seen.headers["idempotency-key"] for seen in fake.seen if seen.path.startswith("/api/v1/inbox/")]
    assert len(set(keys[:2])) == 2 and keys[2] == '"ack-ntc_3-2030-03-17"'
    with pytest.raises(ValueError, match="Idempotency-Key"):
        client.ack("ntc_4", idempotency_key="")
    with pytest.raises(ValueError, match="Idempotency-Key"):
        client.ack("ntc_4", idempotency_key="ä")
    with pytest.raises(ValueError, match="takes no Idempotency-Key"):
        client.request("GET", "/api/v1/inbox", idempotency_key="k")


def test_the_response_says_whether_it_was_replayed(fake: FakeBroker, client: BrokerClient) -> None:
    fake.script("POST", "/api/v1/disclosures", (200, {"Idempotency-Replayed": "true"}, DISCLOSURE))
    response = client.request("POST", "/api/v1/disclosures", json={"person_id": "p"}, idempotency_key="k-1")
    assert response.replayed and response.body == DISCLOSURE and response.idempotency_key == "k-1"
    assert not client.request("POST", "/api/v1/decisions", json={}).replayed


# --- tokens, DPoP and nonces ---


def test_the_token_request_authenticates_with_a_fresh_assertion_and_proves_the_dpop_key(
    fake: FakeBroker, client: BrokerClient, partner_key: dict[str, Any]
) -> None:
    client.inbox()
    [request] = fake.requests("POST", "/oauth/token")
    form = request.form
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    public = {name: value for name, value in partner_key.items() if name != "d"}
    verified = verify_assertion(
        read_assertion(form["client_assertion"]),
        client_id="kisalli",
        registered_alg="Ed25519",
        jwks={"keys": [public]},
        issuer=fake.issuer,
        now=datetime.fromtimestamp(NOW, UTC),
        max_lifetime=60,
        skew=10,
    )
    assert (verified.actor_id, verified.actor_role) == ("staff-17", "individual_coach")
    token_proof = verified_proof(request, fake.issuer)
    assert "ath" not in payload_of(request.headers["dpop"])
    [call] = fake.requests("GET", "/api/v1/inbox")
    assert bearer(call) == fake.tokens[0]
    assert verified_proof(call, fake.issuer, token=fake.tokens[0]).jkt == token_proof.jkt == client.dpop_thumbprint


def test_the_token_is_kept_and_renewed_before_it_runs_out(fake: FakeBroker, client: BrokerClient, clock: Clock) -> None:
    client.inbox()
    clock.now += 269
    client.inbox()
    assert len(fake.tokens) == 1
    clock.now += 1  # 30 s before the 300 s are over
    client.inbox()
    assert len(fake.tokens) == 2
    assert [bearer(seen) for seen in fake.requests("GET", "/api/v1/inbox")] == [fake.tokens[0]] * 2 + [fake.tokens[1]]
    assert len({claims_of(seen.form["client_assertion"])["jti"] for seen in fake.requests("POST", "/oauth/token")}) == 2


def test_an_invalid_token_answer_renews_the_token_once(fake: FakeBroker, client: BrokerClient) -> None:
    challenge = {"WWW-Authenticate": 'DPoP error="invalid_token", error_description="revoked", algs="Ed25519"'}
    fake.script("GET", "/api/v1/inbox", (401, challenge, problem(401, "invalid_token")))
    assert client.inbox() == {"ok": True}
    assert [bearer(seen) for seen in fake.requests("GET", "/api/v1/inbox")] == fake.tokens
    assert len(fake.tokens) == 2

    fake.script("GET", "/api/v1/webhooks", *[(401, challenge, problem(401, "invalid_token"))] * 2)
    with pytest.raises(UnauthorizedError) as caught:
        client.list_webhooks()
    assert caught.value.code == "invalid_token"
    assert len(fake.requests("GET", "/api/v1/webhooks")) == 2 and len(fake.tokens) == 3


def test_the_resource_servers_nonce_is_used_once_asked_for(
    fake: FakeBroker, client: BrokerClient, sleeps: list[float]
) -> None:
    fake.script(
        "POST",
        "/api/v1/persons/per_1/relationships",
        (
            401,
            {"DPoP-Nonce": "rs-1", "WWW-Authenticate": 'DPoP error="use_dpop_nonce"'},
            problem(401, "use_dpop_nonce"),
        ),
        (200, {"DPoP-Nonce": "rs-2"}, {"relationship_id": "rel_1"}),
    )
    assert client.start_relationship("per_1") == {"relationship_id": "rel_1"}
    client.inbox()
    first, second = fake.requests("POST", "/api/v1/persons/per_1/relationships")
    assert "nonce" not in payload_of(first.headers["dpop"])
    assert payload_of(second.headers["dpop"])["nonce"] == "rs-1"
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    [later] = fake.requests("GET", "/api/v1/inbox")
    assert payload_of(later.headers["dpop"])["nonce"] == "rs-2"  # the latest one sent
    [token_request] = fake.requests("POST", "/oauth/token")
    assert "nonce" not in payload_of(token_request.headers["dpop"])
    assert sleeps == []


def test_a_broker_that_keeps_refusing_the_nonce_is_not_asked_for_ever(fake: FakeBroker, client: BrokerClient) -> None:
    refusal = (401, {"DPoP-Nonce": "rs-x"}, problem(401, "use_dpop_nonce"))
    fake.script("GET", "/api/v1/inbox", *[refusal] * 5)
    with pytest.raises(UnauthorizedError) as caught:
        client.inbox()
    assert caught.value.code == "use_dpop_nonce" and len(fake.requests("GET", "/api/v1/inbox")) == 3


def test_the_acting_professional_is_required(fake: FakeBroker, partner_key: dict[str, Any]) -> None:
    for acting in (("staff-17",), ("staff-17", ""), "staff-17", ("staff-17", None)):
        with pytest.raises(ValueError, match="acting must be"):
            BrokerClient(fake.base_url, "kisalli", partner_key, acting=acting)  # type: ignore[arg-type]


def test_the_token_endpoints_nonce_is_used_once_asked_for(fake: FakeBroker, client: BrokerClient) -> None:
    fake.script(
        "POST",
        "/oauth/token",
        (400, {"DPoP-Nonce": "as-1"}, {"error": "use_dpop_nonce", "error_description": "send the nonce"}),
    )
    client.inbox()
    first, second = fake.requests("POST", "/oauth/token")
    assert "nonce" not in payload_of(first.headers["dpop"])
    assert payload_of(second.headers["dpop"])["nonce"] == "as-1"
    # A new assertion too: the first one's jti may have been used.
    assert claims_of(first.form["client_assertion"])["jti"] != claims_of(second.form["client_assertion"])["jti"]
    [call] = fake.requests("GET", "/api/v1/inbox")
    assert "nonce" not in payload_of(call.headers["dpop"])  # the resource server asked for none


def test_a_token_that_is_not_dpop_bound_is_refused(fake: FakeBroker, client: BrokerClient) -> None:
    fake.token_type = "Bearer"
    with pytest.raises(ProtocolError, match="not a DPoP-bound one"):
        client.inbox()
    assert fake.requests("GET", "/api/v1/inbox") == []


def test_a_token_endpoint_refusal_is_raised_with_its_oauth_code(fake: FakeBroker, client: BrokerClient) -> None:
    fake.script("POST", "/oauth/token", (401, {}, {"error": "invalid_client", "error_description": "wrong key"}))
    with pytest.raises(UnauthorizedError) as caught:
        client.inbox()
    assert (caught.value.code, caught.value.detail) == ("invalid_client", "wrong key")


def test_metadata_for_another_issuer_is_refused(fake: FakeBroker, partner_key: dict[str, Any]) -> None:
    client = BrokerClient(fake.base_url, "kisalli", partner_key, acting=("s", "r"), issuer="https://broker.example")
    with pytest.raises(ProtocolError, match="not the expected"):
        client.inbox()
    assert [seen.path for seen in fake.seen] == [METADATA]


def test_a_broker_reached_by_an_internal_address_is_named_by_its_issuer_in_proofs(
    fake: FakeBroker, partner_key: dict[str, Any], clock: Clock
) -> None:
    # Behind a proxy: the partner reaches 127.0.0.1, the broker's public name is its issuer.
    fake.issuer = "https://broker.example/consent"
    with BrokerClient(fake.base_url, "kisalli", partner_key, acting=("s", "r"), clock=clock) as client:
        client.consent_receipt("con_1")
    [token_request] = fake.requests("POST", "/oauth/token")  # the metadata's token endpoint, reached via base_url
    verified_proof(token_request, fake.issuer)
    assert claims_of(token_request.form["client_assertion"])["aud"] == fake.issuer
    [call] = fake.requests("GET", "/api/v1/consents/con_1/receipt")
    assert payload_of(call.headers["dpop"])["htu"] == fake.issuer + "/api/v1/consents/con_1/receipt"
    verified_proof(call, fake.issuer, token=bearer(call))


def test_ids_are_one_path_segment_each_and_the_proof_names_the_path_as_sent(
    fake: FakeBroker, client: BrokerClient
) -> None:
    client.withdraw_consent("con a/b?c")
    [seen] = [seen for seen in fake.seen if seen.method == "POST" and seen.path.startswith("/api/v1/consents/")]
    assert seen.target == "/api/v1/consents/con%20a%2Fb%3Fc/withdraw"
    verified_proof(seen, fake.issuer, token=bearer(seen))


def test_a_redirect_is_not_followed(fake: FakeBroker, client: BrokerClient) -> None:
    fake.script("GET", "/api/v1/inbox", (302, {"Location": "http://127.0.0.2:1/steal"}, b""))
    with pytest.raises(BrokerError) as caught:
        client.inbox()
    assert caught.value.status == 302


def test_only_a_path_under_the_base_url_is_accepted(fake: FakeBroker, client: BrokerClient) -> None:
    for path in ("https://elsewhere.example/api/v1/inbox", "//elsewhere.example/x", "api/v1/inbox", "/a#b"):
        with pytest.raises(ValueError, match="path under the base URL"):
            client.get(path)
    assert fake.seen == []


# --- the typed operations ---


def test_the_typed_operations_send_what_the_api_expects(fake: FakeBroker, client: BrokerClient) -> None:
    fake.script("POST", "/api/v1/persons/resolve", (200, {}, {"person_id": "per_1"}))
    assert client.resolve_person("010203A999X") == "per_1"
    client.record_consent(
        "per_1",
        recipients=["varha-health"],
        categories=["work_assessment"],
        purposes=["work_capacity_assessment"],
        method="in_person",
        witness="Pekka Salo",
        valid_until=datetime(2031, 1, 1, tzinfo=UTC),
    )
    client.request_consent("per_1", recipients=["kisalli"], categories=["c"], purposes=["p"], reason="why")
    client.inbox(include_acknowledged=True, limit=5)
    client.attest("con_1", "retained", statute="1301/2014 4 §")
    client.fhir_consents("per_1")
    bodies = {seen.path: seen for seen in fake.seen if seen.path.startswith("/api/v1/")}
    assert json.loads(bodies["/api/v1/persons/resolve"].body) == {"hetu": "010203A999X"}
    assert json.loads(bodies["/api/v1/consents"].body) == {
        "person_id": "per_1",
        "recipients": ["varha-health"],
        "categories": ["work_assessment"],
        "purposes": ["work_capacity_assessment"],
        "method": "in_person",
        "witness": "Pekka Salo",
        "valid_until": "2031-01-01T00:00:00+00:00",
    }
    assert json.loads(bodies["/api/v1/consent-requests"].body) == {
        "person_id": "per_1",
        "recipients": ["kisalli"],
        "categories": ["c"],
        "purposes": ["p"],
        "reason": "why",
    }
    assert bodies["/api/v1/inbox"].target == "/api/v1/inbox?include_acknowledged=true&limit=5"
    assert json.loads(bodies["/api/v1/consents/con_1/attestation"].body) == {
        "outcome": "retained",
        "statute": "1301/2014 4 §",
    }
    fhir = bodies["/api/v1/fhir/Consent"]
    assert fhir.target == "/api/v1/fhir/Consent?patient=per_1" and fhir.headers["accept"] == "application/fhir+json"
    assert bodies["/api/v1/consents"].headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match="UTC offset"):
        client.record_consent(
            "per_1",
            recipients=["x"],
            categories=["c"],
            purposes=["p"],
            method="paper",
            valid_until=datetime(2031, 1, 1),
        )


# --- events ---


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "keys", create=True)


def event_token(store: KeyStore, issuer: str, event_id: str, organisation: str = "kisalli") -> str:
    claims = security_event_token(
        issuer,
        event_id=event_id,
        event_type="notice.delivered",
        organisation_id=organisation,
        data={"notice_id": "ntc_1", "person_id": "per_1", "kind": "interruption_notice", "sender": "kisalli"},
        occurred_at=datetime.fromtimestamp(NOW, UTC),
        issued_at=datetime.fromtimestamp(NOW, UTC),
    )
    return sign_jws(claims, store, typ=SET_TYP)


def test_events_are_verified_with_the_brokers_published_keys_fetched_once(
    fake: FakeBroker, client: BrokerClient, store: KeyStore, clock: Clock, tmp_path: Path
) -> None:
    fake.jwks = store.public_jwks()
    event = client.verify_event(event_token(store, fake.issuer, "evt_1"))
    assert (event.id, event.type, event.organisation, event.person_id) == (
        "evt_1",
        "notice.delivered",
        "kisalli",
        "per_1",
    )
    client.verify_event(event_token(store, fake.issuer, "evt_2").encode())
    assert len(fake.requests("GET", "/.well-known/jwks.json")) == 1

    store.add_signing_key()
    fake.jwks = store.public_jwks()
    clock.now += 120
    assert client.verify_event(event_token(store, fake.issuer, "evt_3")).id == "evt_3"
    assert len(fake.requests("GET", "/.well-known/jwks.json")) == 2
    with pytest.raises(UnknownKeyError):
        client.verify_event(event_token(KeyStore.open(tmp_path / "other", create=True), fake.issuer, "x"))


def test_an_event_for_another_organisation_is_refused(fake: FakeBroker, client: BrokerClient, store: KeyStore) -> None:
    fake.jwks = store.public_jwks()
    with pytest.raises(InvalidEventError) as caught:
        client.verify_event(event_token(store, fake.issuer, "evt_1", organisation="kela"))
    assert caught.value.code == "invalid_audience"
    assert len(fake.requests("GET", "/.well-known/jwks.json")) == 1
    # A JWK Set given by the caller is used as it is: nothing is fetched, not even on an unknown key.
    with pytest.raises(InvalidEventError) as unknown:
        client.verify_event(event_token(store, fake.issuer, "evt_1"), jwks={"keys": []})
    assert unknown.value.code == "invalid_key"
    assert len(fake.requests("GET", "/.well-known/jwks.json")) == 1
