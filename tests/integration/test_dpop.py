"""DPoP (RFC 9449): tokens bound to the partner's proof key, and every way a proof can be wrong.

Each negative case is sent both to the token endpoint (RFC 9449 §5: 400, `invalid_dpop_proof`) and to a protected
resource (§7.1: 401, `WWW-Authenticate: DPoP error="invalid_dpop_proof"` with the accepted `algs`), and must be
refused there with the words that name what was wrong. The cases follow the checklist of §4.3 and the negative
tests of Authlib's JOSE suite and Keycloak's DPoP tests (typ, alg none/HMAC, private key in `jwk`, signature,
htm/htu, iat window, missing claims, jti replay, ath, key binding, bearer downgrade, nonces)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey
from sqlalchemy import func, select

from broker.adapters.orm import AccessTokenRow, DisclosureRow, DpopProofJtiRow
from broker.config import Settings
from broker.domain.errors import ConfigurationError
from broker.oauth.dpop import DpopNonces, normalise_url
from broker.oauth.tokens import dpop_nonces
from broker.services import Broker
from tests.integration.conftest_oauth import (
    BACKENDS,
    ISSUER,
    NOW,
    OMIT,
    RACE_BACKENDS,
    TOKEN_URL,
    OAuthTestBed,
    Partner,
    open_test_bed,
    signed_by_hand,
    unsigned,
)
from tests.integration.test_api_disclosures import consent_to_health, deposit
from tests.support import DpopSigner, Env, access_token_hash

RESOURCE = "/protected/consents"
RESOURCE_URL = ISSUER + RESOURCE
ALGS = 'algs="EdDSA Ed25519 ES256"'


@pytest.fixture(params=BACKENDS)
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OAuthTestBed]:
    with open_test_bed(request.param, tmp_path) as test_bed:
        yield test_bed


@pytest.fixture
def partner(bed: OAuthTestBed) -> Partner:
    return bed.add_partner("kisalli")


@pytest.fixture
def sqlite_bed(tmp_path: Path) -> Iterator[OAuthTestBed]:
    """For the proof checks that are pure (dpop.py runs them before the database is touched): one backend is
    enough, and PostgreSQL's fresh schema per test would cost more than the checks. Everything that uses the
    database — single use, races, binding, purging — runs on both."""
    with open_test_bed("sqlite", tmp_path) as test_bed:
        yield test_bed


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(
    bed: OAuthTestBed,
    method: str,
    url: str,
    token: str | None,
    *,
    header: dict[str, Any] | None = None,
    key: OKPKey | None = None,
    **claims: Any,
) -> str:
    """A proof signed by hand (Ed25519) with any header and claims; a member set to OMIT is left out."""
    head = {"typ": "dpop+jwt", "alg": "Ed25519", "jwk": bed.dpop.public_jwk} | (header or {})
    body: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(bed.clock.now().timestamp()),
    }
    if token is not None:
        body["ath"] = access_token_hash(token)
    body |= claims
    assert isinstance(bed.dpop.key, OKPKey)
    return signed_by_hand(
        {k: v for k, v in head.items() if v is not OMIT},
        {k: v for k, v in body.items() if v is not OMIT},
        key or bed.dpop.key,
    )


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def flipped(proof: str) -> str:
    header, payload, signature = proof.split(".")
    return f"{header}.{payload}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}{signature[11:]}"


def assert_token_error(response: Any, status: int, error: str, *words: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"] == error, body
    for word in words:
        assert word in body["error_description"], body
    assert response.headers["Cache-Control"] == "no-store"


def assert_resource_error(response: Any, status: int, code: str, *words: str) -> None:
    """An RFC 9457 problem with the RFC 9449 §7.1 challenge naming the error and the accepted algorithms."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["code"] == code and body["status"] == status
    for word in words:
        assert word in body["detail"], body
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'DPoP error="{code}"') and ALGS in challenge, challenge


def stored(bed: OAuthTestBed, row: type) -> int:
    with bed.broker.uow(write=False) as uow:
        return uow.session.scalar(select(func.count()).select_from(row)) or 0


# --- the good path ---


def test_a_token_is_bound_to_the_rfc7638_thumbprint_of_the_proof_key(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"  # RFC 9449 §5
    # RFC 7638 §3: SHA-256 over the required members, in lexicographic order, without white space.
    jwk = bed.dpop.public_jwk
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
    with bed.broker.uow(write=False) as uow:
        row = uow.session.scalars(select(AccessTokenRow)).one()
        assert row.jkt == b64(hashlib.sha256(canonical.encode()).digest()) == bed.dpop.thumbprint
    token = response.get_json()["access_token"]
    assert bed.get(RESOURCE, token).status_code == 200
    assert bed.get(RESOURCE, token).status_code == 200  # a fresh proof each time
    assert stored(bed, DpopProofJtiRow) == 3  # the token request's proof and the two resource requests'


def test_an_es256_proof_key_works_as_well(bed: OAuthTestBed, partner: Partner) -> None:
    bed.dpop = DpopSigner(ECKey.generate_key("P-256"), now=lambda: bed.clock.now().timestamp())
    token = bed.token(partner)
    assert bed.get(RESOURCE, token).status_code == 200


def test_a_proof_signed_under_the_name_eddsa_is_accepted(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, dpop=forge(bed, "POST", TOKEN_URL, None, header={"alg": "EdDSA"}))
    response = bed.get(RESOURCE, token, dpop=forge(bed, "GET", RESOURCE_URL, token, header={"alg": "EdDSA"}))
    assert response.status_code == 200


def test_htu_is_compared_without_query_and_fragment_after_normalisation(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, dpop=forge(bed, "POST", "HTTPS://Broker.Example:443/oauth/token?x=1#f", None))
    for htu in (RESOURCE_URL + "?person_id=1", "https://broker.example/protected/%63onsents", RESOURCE_URL + "#top"):
        assert bed.get(RESOURCE, token, dpop=forge(bed, "GET", htu, token)).status_code == 200, htu


def test_the_iat_window_edges_are_accepted(bed: OAuthTestBed, partner: Partner) -> None:
    now = int(NOW.timestamp())
    token = bed.token(partner, dpop=forge(bed, "POST", TOKEN_URL, None, iat=now - 60))
    assert bed.get(RESOURCE, token, dpop=forge(bed, "GET", RESOURCE_URL, token, iat=now + 10)).status_code == 200


# --- refused proofs, at the token endpoint and at a resource ---

# Each builds the DPoP header value(s) for a request (method, url) with an access token (None at the token endpoint).
Build = Callable[[OAuthTestBed, str, str, str | None], str | list[str]]


def _now(bed: OAuthTestBed) -> int:
    return int(bed.clock.now().timestamp())


def _private_jwk(bed: OAuthTestBed) -> dict[str, Any]:
    return bed.dpop.key.as_dict(private=True)


def _other_key_in_jwk(bed: OAuthTestBed, method: str, url: str, token: str | None) -> str:
    # Signed with the partner's key, but naming another public key: the signature cannot verify.
    stranger = DpopSigner().public_jwk
    return forge(bed, method, url, token, header={"jwk": stranger})


REFUSED: dict[str, tuple[Build, str]] = {
    "typ JWT": (lambda bed, m, u, t: forge(bed, m, u, t, header={"typ": "JWT"}), "'typ'"),
    "typ missing": (lambda bed, m, u, t: forge(bed, m, u, t, header={"typ": OMIT}), "'typ'"),
    "typ of an access token": (lambda bed, m, u, t: forge(bed, m, u, t, header={"typ": "at+jwt"}), "'typ'"),
    "alg none": (
        lambda bed, m, u, t: unsigned(
            {"typ": "dpop+jwt", "alg": "none", "jwk": bed.dpop.public_jwk},
            {"jti": "n", "htm": m, "htu": u, "iat": _now(bed)},
        ),
        "'none'",
    ),
    "alg HS256 keyed with the public key": (
        lambda bed, m, u, t: hmac_signed(
            {"typ": "dpop+jwt", "alg": "HS256", "jwk": bed.dpop.public_jwk},
            {"jti": "h", "htm": m, "htu": u, "iat": _now(bed)},
            bed.dpop.public_jwk["x"].encode(),
        ),
        "'HS256'",
    ),
    "alg RS256": (lambda bed, m, u, t: forge(bed, m, u, t, header={"alg": "RS256"}), "'RS256'"),
    "private key in jwk": (
        lambda bed, m, u, t: forge(bed, m, u, t, header={"jwk": _private_jwk(bed)}),
        "private member 'd'",
    ),
    "symmetric key in jwk": (
        lambda bed, m, u, t: forge(bed, m, u, t, header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        "private member 'k'",
    ),
    "no jwk": (lambda bed, m, u, t: forge(bed, m, u, t, header={"jwk": OMIT}), "'jwk'"),
    "jwk not fitting alg": (lambda bed, m, u, t: forge(bed, m, u, t, header={"alg": "ES256"}), "EC key on P-256"),
    "key by reference": (
        lambda bed, m, u, t: forge(bed, m, u, t, header={"jku": "https://attacker.example/jwks"}),
        "'jku'",
    ),
    "crit": (lambda bed, m, u, t: forge(bed, m, u, t, header={"crit": ["exp"], "exp": 1}), "'crit'"),
    "bad signature": (lambda bed, m, u, t: flipped(forge(bed, m, u, t)), "signature"),
    "signed by another key than jwk": (_other_key_in_jwk, "signature"),
    "wrong htm": (lambda bed, m, u, t: forge(bed, m, u, t, htm="PUT"), "'htm'"),
    "htm in lower case": (lambda bed, m, u, t: forge(bed, m, u, t, htm=m.lower()), "'htm'"),
    "htu of another path": (
        lambda bed, m, u, t: forge(bed, m, u, t, htu=ISSUER + "/protected/audit"),
        "'htu'",
    ),
    "htu of another host": (
        lambda bed, m, u, t: forge(bed, m, u, t, htu=u.replace("broker.example", "broker.example.evil")),
        "'htu'",
    ),
    "htu with another scheme": (lambda bed, m, u, t: forge(bed, m, u, t, htu=u.replace("https", "http")), "'htu'"),
    "htu relative": (lambda bed, m, u, t: forge(bed, m, u, t, htu=u.removeprefix(ISSUER)), "'htu'"),
    "iat too old": (lambda bed, m, u, t: forge(bed, m, u, t, iat=_now(bed) - 61), "60 seconds old"),
    "iat in the future": (lambda bed, m, u, t: forge(bed, m, u, t, iat=_now(bed) + 11), "future"),
    "iat not a number": (lambda bed, m, u, t: forge(bed, m, u, t, iat="now"), "NumericDate"),
    "no jti": (lambda bed, m, u, t: forge(bed, m, u, t, jti=OMIT), "'jti'"),
    "empty jti": (lambda bed, m, u, t: forge(bed, m, u, t, jti=""), "'jti'"),
    "jti too long": (lambda bed, m, u, t: forge(bed, m, u, t, jti="j" * 201), "200"),
    "no htm": (lambda bed, m, u, t: forge(bed, m, u, t, htm=OMIT), "'htm'"),
    "no htu": (lambda bed, m, u, t: forge(bed, m, u, t, htu=OMIT), "'htu'"),
    "no iat": (lambda bed, m, u, t: forge(bed, m, u, t, iat=OMIT), "'iat'"),
    "two DPoP headers": (lambda bed, m, u, t: [forge(bed, m, u, t), forge(bed, m, u, t, jti="2")], "more than one"),
    "two proofs in one folded header": (
        lambda bed, m, u, t: f"{forge(bed, m, u, t)}, {forge(bed, m, u, t, jti='2')}",
        "more than one",
    ),
    "oversized header": (lambda bed, m, u, t: forge(bed, m, u, t, padding="x" * 4000), "4096"),
    "not a JWS": (lambda bed, m, u, t: "not-a-jwt", "JWS"),
    "payload not an object": (
        lambda bed, m, u, t: signed_by_hand(
            {"typ": "dpop+jwt", "alg": "Ed25519", "jwk": bed.dpop.public_jwk}, [1, 2], bed.dpop.key
        ),
        "JSON object",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_proof_is_refused_at_the_token_endpoint(sqlite_bed: OAuthTestBed, case: str) -> None:
    bed, partner = sqlite_bed, sqlite_bed.add_partner("kisalli")
    build, words = REFUSED[case]
    response = bed.token_request(bed.assertion(partner), dpop=build(bed, "POST", TOKEN_URL, None))
    assert_token_error(response, 400, "invalid_dpop_proof", words)
    assert stored(bed, AccessTokenRow) == 0


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_proof_is_refused_at_a_resource(sqlite_bed: OAuthTestBed, case: str) -> None:
    bed, partner = sqlite_bed, sqlite_bed.add_partner("kisalli")
    token = bed.token(partner)
    build, words = REFUSED[case]
    response = bed.get(RESOURCE, token, dpop=build(bed, "GET", RESOURCE_URL, token))
    assert_resource_error(response, 401, "invalid_dpop_proof", words)
    assert stored(bed, DpopProofJtiRow) == 1  # only the token request's proof was used


def test_a_token_request_without_a_proof_is_refused_when_dpop_is_required(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner), dpop="")
    assert_token_error(response, 400, "invalid_dpop_proof", "DPoP proof", "'DPoP' header")
    assert stored(bed, AccessTokenRow) == 0


def test_a_proof_made_for_a_resource_does_not_get_a_token(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    proof = bed.dpop.proof("GET", RESOURCE_URL, token)
    assert_token_error(bed.token_request(bed.assertion(partner), dpop=proof), 400, "invalid_dpop_proof", "'htm'")


# --- resource requests only ---


def test_a_resource_request_without_a_proof_is_refused(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    response = bed.get(RESOURCE, token, dpop="")
    assert_resource_error(response, 401, "invalid_dpop_proof", "DPoP proof is required")


def test_a_proof_without_ath_or_with_another_tokens_hash_is_refused(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    other = bed.token(partner)
    missing = bed.get(RESOURCE, token, dpop=forge(bed, "GET", RESOURCE_URL, token, ath=OMIT))
    assert_resource_error(missing, 401, "invalid_dpop_proof", "'ath'")
    wrong = bed.get(RESOURCE, token, dpop=bed.dpop.proof("GET", RESOURCE_URL, other))
    assert_resource_error(wrong, 401, "invalid_dpop_proof", "'ath'", "not the hash of this access token")


def test_a_proof_signed_with_another_key_than_the_tokens_is_refused(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    thief = DpopSigner(now=lambda: bed.clock.now().timestamp())  # holds the stolen token, not the key
    response = bed.get(RESOURCE, token, dpop=thief.proof("GET", RESOURCE_URL, token))
    assert_resource_error(response, 401, "invalid_dpop_proof", "another key")


def test_a_replayed_proof_is_refused(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    proof = bed.dpop.proof("GET", RESOURCE_URL, token)
    assert bed.get(RESOURCE, token, dpop=proof).status_code == 200
    bed.clock.advance(seconds=30)
    replayed = bed.get(RESOURCE, token, dpop=proof)
    assert_resource_error(replayed, 401, "invalid_dpop_proof", "already been used")


def test_a_replayed_token_request_proof_is_refused_and_consumes_nothing(bed: OAuthTestBed, partner: Partner) -> None:
    proof = bed.dpop.proof("POST", TOKEN_URL)
    assert bed.token_request(bed.assertion(partner), dpop=proof).status_code == 200
    assertion = bed.assertion(partner)
    response = bed.token_request(assertion, dpop=proof)
    assert_token_error(response, 400, "invalid_dpop_proof", "already been used")
    # The refused request changed nothing: its assertion can still be used, with a fresh proof.
    assert bed.token_request(assertion).status_code == 200
    assert stored(bed, AccessTokenRow) == 2


def test_the_same_jti_under_another_key_is_not_a_replay(bed: OAuthTestBed, partner: Partner) -> None:
    # Used proof ids are kept per key thumbprint: a jti is unique only for its signer (RFC 9449 §11.1).
    first = bed.token(partner, dpop=bed.dpop.proof("POST", TOKEN_URL, jti="same"))
    bed.dpop = DpopSigner(now=lambda: bed.clock.now().timestamp())
    second = bed.token(partner, dpop=bed.dpop.proof("POST", TOKEN_URL, jti="same"))
    assert first != second


def test_a_bound_token_sent_as_a_bearer_token_is_refused(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    response = bed.get(RESOURCE, authorization=f"Bearer {token}", dpop=bed.dpop.proof("GET", RESOURCE_URL, token))
    assert_resource_error(response, 401, "invalid_token", "only DPoP-bound")
    no_proof = bed.get(RESOURCE, authorization=f"Bearer {token}")
    assert_resource_error(no_proof, 401, "invalid_token", "only DPoP-bound")


def test_a_proof_is_used_only_once_the_token_and_scope_have_passed(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, scope="records")
    proof = bed.dpop.proof("GET", RESOURCE_URL, token)
    assert bed.get(RESOURCE, token, dpop=proof).status_code == 403
    assert stored(bed, DpopProofJtiRow) == 1  # the token request's only


def test_an_expired_proof_id_is_purged_and_its_proof_is_still_refused(bed: OAuthTestBed, partner: Partner) -> None:
    from broker.oauth import purge_expired

    token = bed.token(partner)
    proof = bed.dpop.proof("GET", RESOURCE_URL, token)
    assert bed.get(RESOURCE, token, dpop=proof).status_code == 200
    bed.clock.advance(seconds=61)
    purge_expired(bed.broker)
    assert stored(bed, DpopProofJtiRow) == 0
    assert_resource_error(bed.get(RESOURCE, token, dpop=proof), 401, "invalid_dpop_proof", "60 seconds old")


@pytest.mark.parametrize("backend", RACE_BACKENDS)
def test_one_proof_sent_eight_times_at_once_passes_exactly_once(backend: str, tmp_path: Path) -> None:
    requests = 8
    with open_test_bed(backend, tmp_path) as bed:
        partner = bed.add_partner("kisalli")
        token = bed.token(partner)
        for trial in range(3):
            proof = bed.dpop.proof("GET", RESOURCE_URL, token)
            start = threading.Barrier(requests)

            def send(proof: str = proof, start: threading.Barrier = start) -> tuple[int, str]:
                client = bed.app.test_client()
                start.wait()  # all requests leave together
                response = client.get(RESOURCE, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
                return response.status_code, response.get_json(force=True).get("code", "")

            with ThreadPoolExecutor(max_workers=requests) as pool:
                outcomes = Counter(future.result() for future in [pool.submit(send) for _ in range(requests)])
            assert outcomes == Counter({(200, ""): 1, (401, "invalid_dpop_proof"): requests - 1}), f"trial {trial}"
        assert stored(bed, DpopProofJtiRow) == 1 + 3


# --- DPoP not required ---


def test_without_required_dpop_a_token_issued_without_a_proof_works_only_as_bearer(tmp_path: Path) -> None:
    with open_test_bed("sqlite", tmp_path, require_dpop=False) as bed:
        partner = bed.add_partner("kisalli")
        plain = bed.token_request(bed.assertion(partner), dpop="")
        assert plain.status_code == 200 and plain.get_json()["token_type"] == "Bearer"
        token = plain.get_json()["access_token"]
        assert bed.get(RESOURCE, authorization=f"Bearer {token}").status_code == 200
        as_dpop = bed.get(RESOURCE, token)  # with a valid proof, but the token is bound to no key
        assert_resource_error(as_dpop, 401, "invalid_token", "issued without DPoP")
        # A partner that sends a proof still gets a bound token, and it is still refused as a bearer token.
        bound = bed.token(partner)
        assert bed.get(RESOURCE, bound).status_code == 200
        assert_resource_error(bed.get(RESOURCE, authorization=f"Bearer {bound}"), 401, "invalid_token", "bound")
        # An invalid proof is refused rather than ignored.
        bad = bed.token_request(bed.assertion(partner), dpop=forge(bed, "POST", TOKEN_URL, None, htm="GET"))
        assert_token_error(bad, 400, "invalid_dpop_proof", "'htm'")


# --- server nonces (RFC 9449 §8, §9) ---


@pytest.fixture
def nonce_bed(tmp_path: Path) -> Iterator[OAuthTestBed]:
    with open_test_bed("sqlite", tmp_path, dpop_nonces=True, dpop_nonce_step=120) as test_bed:
        yield test_bed


def test_with_nonces_on_a_token_request_must_carry_the_servers_nonce(nonce_bed: OAuthTestBed) -> None:
    bed = nonce_bed
    partner = bed.add_partner("kisalli")
    assertion = bed.assertion(partner)
    first = bed.token_request(assertion)
    assert_token_error(first, 400, "use_dpop_nonce", "nonce")
    nonce = first.headers["DPoP-Nonce"]
    # The refused request used nothing up: the same assertion gets a token once the proof carries the nonce.
    retried = bed.token_request(assertion, dpop=bed.dpop.proof("POST", TOKEN_URL, nonce=nonce))
    assert retried.status_code == 200, retried.get_json()
    assert retried.headers["DPoP-Nonce"] == nonce  # and the current nonce comes with every answer


def test_with_nonces_on_a_resource_request_must_carry_the_servers_nonce(nonce_bed: OAuthTestBed) -> None:
    bed = nonce_bed
    partner = bed.add_partner("kisalli")
    nonce = bed.token_request(bed.assertion(partner)).headers["DPoP-Nonce"]
    token = bed.token(partner, dpop=bed.dpop.proof("POST", TOKEN_URL, nonce=nonce))
    refused = bed.get(RESOURCE, token)
    assert_resource_error(refused, 401, "use_dpop_nonce", "nonce")
    assert refused.headers["DPoP-Nonce"] == nonce
    answered = bed.get(RESOURCE, token, dpop=bed.dpop.proof("GET", RESOURCE_URL, token, nonce=nonce))
    assert answered.status_code == 200 and answered.headers["DPoP-Nonce"] == nonce


def test_a_wrong_or_expired_nonce_is_refused_with_a_fresh_one(nonce_bed: OAuthTestBed) -> None:
    bed = nonce_bed
    partner = bed.add_partner("kisalli")
    bed.clock.advance(seconds=-(int(NOW.timestamp()) % 120))  # the start of a nonce step
    nonce = bed.token_request(bed.assertion(partner)).headers["DPoP-Nonce"]
    token = bed.token(partner, dpop=bed.dpop.proof("POST", TOKEN_URL, nonce=nonce))

    def ask(nonce: str) -> Any:
        return bed.get(RESOURCE, token, dpop=bed.dpop.proof("GET", RESOURCE_URL, token, nonce=nonce))

    assert_resource_error(ask("made-up"), 401, "use_dpop_nonce", "unknown or has expired")
    bed.clock.advance(seconds=239)  # the end of the next step: still good
    assert ask(nonce).status_code == 200
    bed.clock.advance(seconds=1)
    stale = ask(nonce)
    assert_resource_error(stale, 401, "use_dpop_nonce", "unknown or has expired")
    assert stale.headers["DPoP-Nonce"] != nonce
    assert ask(stale.headers["DPoP-Nonce"]).status_code == 200


def test_every_process_issues_the_same_nonces_from_the_shared_key_store(nonce_bed: OAuthTestBed) -> None:
    one = nonce_bed.broker
    other = Broker(settings=one.settings, db=one.db, keys=one.keys, policy=one.policy, clock=one.clock)
    assert dpop_nonces(other) is not None and dpop_nonces(one) is not None
    assert dpop_nonces(other).current(NOW) == dpop_nonces(one).current(NOW)  # type: ignore[union-attr]
    stranger = DpopNonces(b"another key", 120)
    assert stranger.current(NOW) != dpop_nonces(one).current(NOW)  # type: ignore[union-attr]
    assert not stranger.is_valid(dpop_nonces(one).current(NOW), NOW)  # type: ignore[union-attr]


def test_without_nonces_no_nonce_is_asked_for_or_sent(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner))
    assert response.status_code == 200 and "DPoP-Nonce" not in response.headers
    assert "DPoP-Nonce" not in bed.get(RESOURCE, response.get_json()["access_token"]).headers


# --- the real application, through tests/support.py's Env ---


def test_the_api_takes_dpop_bound_tokens_and_refuses_them_without_a_proof(env: Env) -> None:
    token = env.token("kisalli")
    assert env._token_types[token] == "DPoP"
    assert env.get("kisalli", "/inbox").status_code == 200
    missing = env.get("kisalli", "/inbox", proof=False)
    assert missing.status_code == 401 and missing.get_json()["code"] == "invalid_dpop_proof"
    assert missing.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
    headers = env.auth_headers("kisalli", "GET", "/api/v1/inbox?limit=5")
    assert env.client.get("/api/v1/inbox?limit=5", headers=headers).status_code == 200
    replayed = env.client.get("/api/v1/inbox?limit=5", headers=headers)
    assert replayed.status_code == 401 and replayed.get_json()["code"] == "invalid_dpop_proof"
    as_bearer = env.client.get("/api/v1/inbox", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401 and as_bearer.get_json()["code"] == "invalid_token"


def test_the_api_checks_htu_against_the_issuer_not_the_host_header(env: Env) -> None:
    # The test client's host is "localhost"; proofs name the public URL, the issuer's http://broker.test.
    token = env.token("kisalli")
    local = env.signer("kisalli").proof("GET", "http://localhost/api/v1/inbox", token)
    response = env.client.get("/api/v1/inbox", headers={"Authorization": f"DPoP {token}", "DPoP": local})
    assert response.status_code == 401 and "http://broker.test/api/v1/inbox" in response.get_json()["detail"]


def test_a_path_with_an_escaped_reserved_character_is_checked_as_the_client_sent_it(env: Env) -> None:
    # "%28" and "(" are different URIs (RFC 3986 §2.2): the proof must name the one the client sent, not the
    # routed path written back. The consent does not exist: what matters is getting past the proof to the 404.
    token = env.token("kisalli")
    signer = env.signer("kisalli")
    path = "/api/v1/consents/%28x/receipt"
    sent = signer.proof("GET", "http://broker.test" + path, token)
    response = env.client.get(path, headers={"Authorization": f"DPoP {token}", "DPoP": sent})
    assert response.status_code == 404, response.get_json()
    decoded = signer.proof("GET", "http://broker.test/api/v1/consents/(x/receipt", token)
    response = env.client.get(path, headers={"Authorization": f"DPoP {token}", "DPoP": decoded})
    assert response.status_code == 401 and response.get_json()["code"] == "invalid_dpop_proof"


def _ready_for_disclosure(env: Env) -> str:
    """Mikko's case (F7): a person served by both, his consent to the health centre and a work assessment."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_to_health(env, person_id)
    deposit(env, "kisalli", person_id, "work_assessment")
    env.token("varha-health")
    return person_id


def _count(env: Env, row: type) -> int:
    with env.broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(row)) or 0)


# That a disclosure uses its proof in its own transaction — one durable commit per disclosure, counted at the
# driver — is tested in test_disclosure_commits.py.


def test_a_replayed_disclosure_proof_is_refused_and_discloses_nothing(env: Env) -> None:
    person_id = _ready_for_disclosure(env)
    headers = env.auth_headers("varha-health", "POST", "/api/v1/disclosures")
    body = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    assert env.client.post("/api/v1/disclosures", json=body, headers=headers).status_code == 200
    replayed = env.client.post("/api/v1/disclosures", json=body, headers=headers)
    assert replayed.status_code == 401 and replayed.get_json()["code"] == "invalid_dpop_proof"
    assert "records" not in replayed.get_json()
    assert _count(env, DisclosureRow) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"person_id": "per_unknown", "category": "work_assessment", "purpose": "work_capacity_assessment"}, 404),
        ({"category": "work_assessment"}, 400),
        (None, 403),  # no consent: a refusal that is audited (a committed write of its own)
    ],
)
def test_a_refused_request_still_uses_its_proof(env: Env, body: dict[str, str] | None, status: int) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    sent = body or {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    headers = env.auth_headers("varha-health", "POST", "/api/v1/disclosures")
    first = env.client.post("/api/v1/disclosures", json=sent, headers=headers)
    assert first.status_code == status, first.get_json()
    replayed = env.client.post("/api/v1/disclosures", json=sent, headers=headers)
    assert replayed.status_code == 401 and replayed.get_json()["code"] == "invalid_dpop_proof"


def test_one_disclosure_proof_sent_eight_times_at_once_discloses_once(env: Env) -> None:
    requests = 8
    person_id = _ready_for_disclosure(env)
    body = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    for trial in range(2):
        headers = env.auth_headers("varha-health", "POST", "/api/v1/disclosures")
        start = threading.Barrier(requests)

        def send(headers: dict[str, str] = headers, start: threading.Barrier = start) -> tuple[int, str]:
            client = env.app.test_client()
            start.wait()
            response = client.post("/api/v1/disclosures", json=body, headers=headers)
            return response.status_code, response.get_json(force=True).get("code", "")

        with ThreadPoolExecutor(max_workers=requests) as pool:
            outcomes = Counter(future.result() for future in [pool.submit(send) for _ in range(requests)])
        assert outcomes == Counter({(200, ""): 1, (401, "invalid_dpop_proof"): requests - 1}), f"trial {trial}"
    assert _count(env, DisclosureRow) == 2


# --- settings and the pure parts ---


def test_dpop_is_required_by_default_in_every_mode_and_can_be_turned_off() -> None:
    base = {"BROKER_ISSUER": "https://broker.example", "BROKER_DATABASE_URL": "sqlite://"}
    for mode in ("production", "demo", "test"):
        settings = Settings.from_env({**base, "BROKER_MODE": mode})
        assert settings.require_dpop and not settings.dpop_nonces and settings.dpop_max_age == 60
    turned = Settings.from_env({**base, "BROKER_REQUIRE_DPOP": "off", "BROKER_DPOP_NONCES": "on"})
    assert not turned.require_dpop and turned.dpop_nonces
    assert Settings.from_env({**base, "BROKER_DPOP_MAX_AGE": "30"}).dpop_max_age == 30
    for name, value in (("BROKER_REQUIRE_DPOP", "no"), ("BROKER_DPOP_NONCES", "1"), ("BROKER_DPOP_MAX_AGE", "1")):
        with pytest.raises(ConfigurationError, match=name):
            Settings.from_env({**base, name: value})


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://broker.example/a/b", "https://broker.example/a/b"),
        ("HTTPS://BROKER.example:443/a?q=1#f", "https://broker.example/a"),
        ("http://broker.example:80", "http://broker.example/"),
        ("https://broker.example:8443/%7euser/%2fx", "https://broker.example:8443/~user/%2Fx"),
        ("https://[::1]:8000/x", "https://[::1]:8000/x"),
        ("ftp://broker.example/x", None),
        ("/relative", None),
        ("https://user:pw@broker.example/x", None),
        ("https://broker.example:99999/x", None),
    ],
)
def test_urls_are_normalised_by_rfc3986(url: str, normal: str | None) -> None:
    assert normalise_url(url) == normal


def test_a_nonce_lives_one_to_two_steps() -> None:
    nonces = DpopNonces(b"k" * 32, 60)
    start = NOW.replace(second=0)
    nonce = nonces.current(start)
    assert nonces.is_valid(nonce, start + timedelta(seconds=119))
    assert not nonces.is_valid(nonce, start + timedelta(seconds=120))
    assert not nonces.is_valid(nonce, start - timedelta(seconds=1))
    assert not nonces.is_valid("é", start)
