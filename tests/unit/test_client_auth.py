"""The partner client's client assertions and DPoP proofs (broker/client/auth.py): their exact headers and claims, and
that the broker's own checks (broker/oauth/assertion.py, broker/oauth/dpop.py — pure functions) accept them."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey

from broker.client.auth import (
    ASSERTION_LIFETIME,
    access_token_hash,
    client_assertion,
    dpop_proof,
    load_signing_key,
    new_dpop_key,
    normalise_url,
)
from broker.oauth import dpop as server_dpop
from broker.oauth.assertion import read_assertion, verify_assertion
from broker.oauth.errors import DpopProofError, InvalidClientError

ISSUER = "https://broker.example"
NOW = 1_900_000_000.0
TOKEN = "cbat_" + "A" * 43


def decode(segment: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return decode(header), decode(payload)


def partner_jwk(**members: Any) -> dict[str, Any]:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "kisalli-1", "alg": "Ed25519", "use": "sig"})
    return dict(key.as_dict(private=True)) | members


def verified_assertion(token: str, jwk: dict[str, Any], *, registered_alg: str = "Ed25519", now: float = NOW) -> Any:
    public = {name: value for name, value in jwk.items() if name != "d"}
    return verify_assertion(
        read_assertion(token),
        client_id="kisalli",
        registered_alg=registered_alg,
        jwks={"keys": [public]},
        issuer=ISSUER,
        now=datetime.fromtimestamp(now, UTC),
        max_lifetime=60,
        skew=10,
    )


def test_an_assertion_names_the_client_the_issuer_and_the_acting_professional() -> None:
    jwk = partner_jwk()
    token = client_assertion(
        load_signing_key(jwk), client_id="kisalli", issuer=ISSUER, actor=("staff-17", "individual_coach"), now=NOW
    )
    header, claims = parts(token)
    assert header == {"alg": "Ed25519", "kid": "kisalli-1", "typ": "client-authentication+jwt"}
    jti = claims.pop("jti")
    assert claims == {
        "iss": "kisalli",
        "sub": "kisalli",
        "aud": ISSUER,
        "iat": int(NOW),
        "exp": int(NOW) + ASSERTION_LIFETIME,
        "act": {"sub": "staff-17", "role": "individual_coach"},
    }
    assert len(jti) >= 32 and ASSERTION_LIFETIME <= 60
    verified = verified_assertion(token, jwk)
    assert (verified.client_id, verified.jti, verified.actor_id, verified.actor_role) == (
        "kisalli",
        jti,
        "staff-17",
        "individual_coach",
    )


def test_every_assertion_has_its_own_jti() -> None:
    key = load_signing_key(partner_jwk())
    made = {
        parts(client_assertion(key, client_id="kisalli", issuer=ISSUER, actor=("s", "r"), now=NOW))[1]["jti"]
        for _ in range(20)
    }
    assert len(made) == 20


def test_an_assertion_stays_within_the_brokers_lifetime_cap_for_a_clock_ten_seconds_fast() -> None:
    # The broker accepts an `iat` up to 10 s ahead and refuses an `exp` more than 60 s ahead of its own clock.
    jwk = partner_jwk()
    token = client_assertion(load_signing_key(jwk), client_id="kisalli", issuer=ISSUER, actor=("s", "r"), now=NOW + 10)
    assert verified_assertion(token, jwk, now=NOW).client_id == "kisalli"


def test_an_ed25519_key_registered_as_eddsa_signs_under_the_fully_specified_name() -> None:
    jwk = partner_jwk(alg="EdDSA")
    key = load_signing_key(jwk)
    token = client_assertion(key, client_id="kisalli", issuer=ISSUER, actor=("s", "r"), now=NOW)
    assert key.alg == "Ed25519" and parts(token)[0]["alg"] == "Ed25519"
    assert verified_assertion(token, jwk, registered_alg="EdDSA").client_id == "kisalli"


def test_a_p256_partner_key_signs_es256_assertions() -> None:
    jwk = dict(ECKey.generate_key("P-256").as_dict(private=True))
    token = client_assertion(load_signing_key(jwk), client_id="kisalli", issuer=ISSUER, actor=("s", "r"), now=NOW)
    assert parts(token)[0] == {"alg": "ES256", "typ": "client-authentication+jwt"}
    assert verified_assertion(token, jwk, registered_alg="ES256").client_id == "kisalli"


def test_an_assertion_signed_with_another_key_is_refused_by_the_broker() -> None:
    token = client_assertion(
        load_signing_key(partner_jwk()), client_id="kisalli", issuer=ISSUER, actor=("s", "r"), now=NOW
    )
    with pytest.raises(InvalidClientError, match="signature"):
        verified_assertion(token, partner_jwk())


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}, "public key"),
        ({"kty": "OKP", "crv": "X25519", "x": "a", "d": "b"}, "OKP/X25519"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "oct/None"),
        ({"kty": "RSA", "n": "x", "e": "AQAB", "d": "y"}, "RSA/None"),
        (["not", "an", "object"], "must be a private JWK"),
    ],
)
def test_a_key_the_broker_would_refuse_is_refused_when_loaded(jwk: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_signing_key(jwk)


def test_a_key_marked_for_another_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="marked for algorithm 'ES256'"):
        load_signing_key(partner_jwk(alg="ES256"))


def test_a_key_file_is_read_and_a_missing_or_broken_one_named(tmp_path: Path) -> None:
    path = tmp_path / "kisalli.jwk"
    path.write_text(json.dumps(partner_jwk()))
    assert load_signing_key(path).kid == "kisalli-1"
    assert load_signing_key(str(path)).alg == "Ed25519"
    with pytest.raises(ValueError, match="cannot read the key file"):
        load_signing_key(tmp_path / "missing.jwk")
    (tmp_path / "broken.jwk").write_text("{not json")
    with pytest.raises(ValueError, match="does not hold a JSON Web Key"):
        load_signing_key(tmp_path / "broken.jwk")


def test_a_resource_proof_carries_method_url_time_and_the_tokens_hash() -> None:
    key = new_dpop_key()
    proof = dpop_proof(key, method="POST", url=ISSUER + "/api/v1/disclosures", now=NOW, access_token=TOKEN)
    header, claims = parts(proof)
    assert header == {"typ": "dpop+jwt", "alg": "Ed25519", "jwk": key.public_jwk}
    assert set(header["jwk"]) == {"kty", "crv", "x"}  # the public key only: no "d"
    assert claims["htm"] == "POST" and claims["htu"] == ISSUER + "/api/v1/disclosures" and claims["iat"] == int(NOW)
    expected_ath = base64.urlsafe_b64encode(hashlib.sha256(TOKEN.encode()).digest()).rstrip(b"=").decode()
    assert claims["ath"] == expected_ath == access_token_hash(TOKEN)
    assert "nonce" not in claims and len(claims["jti"]) >= 32
    verified = server_dpop.verify_proof(
        [proof],
        method="POST",
        url=ISSUER + "/api/v1/disclosures",
        now=datetime.fromtimestamp(NOW, UTC),
        max_age=60,
        skew=10,
        access_token=TOKEN,
    )
    assert verified.jkt == key.thumbprint and verified.jti == claims["jti"]


def test_a_token_request_proof_has_no_ath_and_a_nonce_when_given() -> None:
    key = new_dpop_key()
    _, claims = parts(dpop_proof(key, method="POST", url=ISSUER + "/oauth/token", now=NOW, nonce="n-1"))
    assert "ath" not in claims and claims["nonce"] == "n-1"


def test_a_proof_for_another_token_or_url_is_refused_by_the_broker() -> None:
    key = new_dpop_key()
    proof = dpop_proof(key, method="GET", url=ISSUER + "/api/v1/inbox", now=NOW, access_token=TOKEN)
    when = datetime.fromtimestamp(NOW, UTC)
    with pytest.raises(DpopProofError, match="'ath'"):
        server_dpop.verify_proof(
            [proof],
            method="GET",
            url=ISSUER + "/api/v1/inbox",
            now=when,
            max_age=60,
            skew=10,
            access_token="cbat_" + "B" * 43,
        )
    with pytest.raises(DpopProofError, match="'htu'"):
        server_dpop.verify_proof(
            [proof], method="GET", url=ISSUER + "/api/v1/consents", now=when, max_age=60, skew=10, access_token=TOKEN
        )


def test_an_es256_dpop_key_makes_proofs_the_broker_accepts() -> None:
    key = load_signing_key(dict(ECKey.generate_key("P-256").as_dict(private=True)))
    proof = dpop_proof(key, method="GET", url=ISSUER + "/api/v1/inbox", now=NOW, access_token=TOKEN)
    header, _ = parts(proof)
    assert header["alg"] == "ES256" and set(header["jwk"]) == {"kty", "crv", "x", "y"}
    verified = server_dpop.verify_proof(
        [proof],
        method="GET",
        url=ISSUER + "/api/v1/inbox",
        now=datetime.fromtimestamp(NOW, UTC),
        max_age=60,
        skew=10,
        access_token=TOKEN,
    )
    assert verified.jkt == key.thumbprint


URLS = [
    "https://broker.example/api/v1/inbox",
    "HTTPS://Broker.Example:443/api/v1/inbox?include_acknowledged=true#top",
    "http://127.0.0.1:8000/api/v1/consents/con_1/receipt",
    "http://127.0.0.1:80",
    "https://broker.example/api/v1/consents/con%5fa%2Fb%7e/withdraw",
    "https://[::1]:8443/api/v1/inbox",
    "https://broker.example/prefix/api/v1/persons/per%20x/relationships",
    "ftp://broker.example/x",
    "https://user:pass@broker.example/x",
    "https://broker.example:99999/x",
    "/api/v1/inbox",
]


@pytest.mark.parametrize("url", URLS)
def test_htu_is_normalised_exactly_as_the_broker_normalises_it(url: str) -> None:
    assert normalise_url(url) == server_dpop.normalise_url(url)


def test_htu_leaves_out_query_and_fragment_and_the_default_port() -> None:
    assert normalise_url("HTTPS://Broker.Example:443/api/v1/inbox?x=1#y") == "https://broker.example/api/v1/inbox"
    assert normalise_url("https://broker.example/a/con%5f%2f") == "https://broker.example/a/con_%2F"
    with pytest.raises(ValueError, match="not an absolute http"):
        dpop_proof(new_dpop_key(), method="GET", url="/api/v1/inbox", now=NOW)
