"""The token endpoint: client credentials with private_key_jwt (RFC 6749 §4.4, RFC 7523 §2.2)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from authlib.oauth2.rfc7523 import private_key_jwt_sign
from joserfc.jwk import ECKey, OctKey, OKPKey
from sqlalchemy import func, select

from broker.adapters.orm import AccessTokenRow, AssertionJtiRow, DpopProofJtiRow
from broker.domain.clock import utc
from broker.domain.model import PARTNER_SCOPES
from broker.oauth import purge_expired
from broker.oauth.assertion import ASSERTION_TYPE
from tests.integration.conftest_oauth import (
    BACKENDS,
    ISSUER,
    NOW,
    OMIT,
    TOKEN_URL,
    OAuthTestBed,
    Partner,
    open_test_bed,
    sign,
    signed_by_hand,
    unsigned,
)


@pytest.fixture(params=BACKENDS)
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OAuthTestBed]:
    with open_test_bed(request.param, tmp_path) as test_bed:
        yield test_bed


@pytest.fixture
def partner(bed: OAuthTestBed) -> Partner:
    return bed.add_partner("kisalli")


def assert_error(response: Any, status: int, error: str, *words: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    for word in words:
        assert word in body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"


def stored_tokens(bed: OAuthTestBed) -> int:
    with bed.broker.uow(write=False) as uow:
        return uow.session.scalar(select(func.count()).select_from(AccessTokenRow)) or 0


# --- the good path ---


def test_a_valid_assertion_gets_a_token_that_authenticates_a_protected_route(
    bed: OAuthTestBed, partner: Partner
) -> None:
    response = bed.token_request(bed.assertion(partner))

    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh token
    assert body["token_type"] == "DPoP" and body["expires_in"] == 300  # RFC 9449 §5: bound to the proof's key
    assert body["scope"] == " ".join(PARTNER_SCOPES)
    token = body["access_token"]
    assert token.startswith("cbat_") and len(token) == len("cbat_") + 43

    protected = bed.get("/protected/consents", token)
    assert protected.status_code == 200, protected.get_json()
    assert protected.get_json() == {
        "partner_id": "kisalli",
        "organisation_id": "org-kisalli",
        "org_type": "employment_services",
        "actor_id": "staff-42",
        "actor_role": "individual_coach",
        "scopes": sorted(PARTNER_SCOPES),
    }


def test_only_the_hash_of_an_access_token_is_stored_with_the_actor_and_its_expiry(
    bed: OAuthTestBed, partner: Partner
) -> None:
    token = bed.token(partner, scope="consents records")
    with bed.broker.uow(write=False) as uow:
        row = uow.session.scalars(select(AccessTokenRow)).one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in {row.token_hash, row.scope, row.actor_id}
        assert (row.client_id, row.scope, row.actor_id, row.actor_role) == (
            "kisalli",
            "consents records",
            "staff-42",
            "individual_coach",
        )
        assert utc(row.issued_at) == NOW and utc(row.expires_at) == NOW + timedelta(seconds=300)
        assert row.revoked_at is None


def test_each_used_jti_is_kept_until_the_assertion_expiry_plus_the_clock_skew_allowance(
    bed: OAuthTestBed, partner: Partner
) -> None:
    exp = int(NOW.timestamp()) + 45
    bed.token(partner, jti="once-only", exp=exp)
    with bed.broker.uow(write=False) as uow:
        row = uow.session.scalars(select(AssertionJtiRow)).one()
        assert (row.client_id, row.jti) == ("kisalli", "once-only")
        assert utc(row.expires_at) == NOW + timedelta(seconds=45 + 10)


def test_the_token_hook_runs_inside_the_token_transaction_with_the_caller(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, scope="consents")
    [call] = bed.hook_calls
    assert call.token_row_visible
    assert call.token_hash_prefix == hashlib.sha256(token.encode()).hexdigest()[:16]
    assert call.caller.partner_id == "kisalli" and call.caller.actor_id == "staff-42"
    assert call.caller.scopes == frozenset({"consents"})


def test_a_failing_token_hook_issues_no_token_and_does_not_consume_the_assertion(
    bed: OAuthTestBed, partner: Partner
) -> None:
    assertion = bed.assertion(partner)
    bed.fail_hook = True
    assert bed.token_request(assertion).status_code == 500
    assert stored_tokens(bed) == 0
    bed.fail_hook = False
    assert bed.token_request(assertion).status_code == 200


# --- audience (RFC 10070) ---


def test_the_token_endpoint_url_as_audience_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner, aud=TOKEN_URL))
    assert_error(response, 401, "invalid_client", "aud", ISSUER)


def test_an_audience_array_is_rejected_even_when_it_holds_the_issuer(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner, aud=[ISSUER]))
    assert_error(response, 401, "invalid_client", "single string")


def test_an_assertion_without_audience_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    assert_error(bed.token_request(bed.assertion(partner, aud=OMIT)), 401, "invalid_client", "aud")


# --- time, from the injected clock ---


def test_an_expired_assertion_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    assertion = bed.assertion(partner)  # exp = now + 30
    bed.clock.advance(seconds=41)  # past exp and the 10 s skew allowance
    assert_error(bed.token_request(assertion), 401, "invalid_client", "expired")


def test_an_assertion_living_longer_than_60_seconds_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    now = int(NOW.timestamp())
    assert_error(bed.token_request(bed.assertion(partner, exp=now + 61)), 401, "invalid_client", "60 seconds")
    assert bed.token_request(bed.assertion(partner, exp=now + 60)).status_code == 200


def test_an_assertion_issued_in_the_future_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    now = int(NOW.timestamp())
    response = bed.token_request(bed.assertion(partner, iat=now + 11, exp=now + 40))
    assert_error(response, 401, "invalid_client", "iat")
    # A partner clock a few seconds fast is tolerated.
    assert bed.token_request(bed.assertion(partner, iat=now + 10, exp=now + 40)).status_code == 200


def test_an_assertion_not_valid_yet_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    now = int(NOW.timestamp())
    assert_error(bed.token_request(bed.assertion(partner, nbf=now + 20)), 401, "invalid_client", "nbf")
    assert bed.token_request(bed.assertion(partner, nbf=now - 5)).status_code == 200


@pytest.mark.parametrize("claim", ["exp", "iat", "jti"])
def test_an_assertion_without_exp_iat_or_jti_is_rejected(bed: OAuthTestBed, partner: Partner, claim: str) -> None:
    response = bed.token_request(bed.assertion(partner, **{claim: OMIT}))
    assert_error(response, 401, "invalid_client", claim)


@pytest.mark.parametrize("value", ["soon", True, None, [1]])
def test_an_exp_that_is_not_a_number_is_rejected(bed: OAuthTestBed, partner: Partner, value: Any) -> None:
    assertion = bed.assertion(partner, exp=OMIT if value is None else value)
    assert_error(bed.token_request(assertion), 401, "invalid_client", "exp")


# --- single use ---


def test_a_replayed_assertion_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    assertion = bed.assertion(partner)
    assert bed.token_request(assertion).status_code == 200
    assert_error(bed.token_request(assertion), 401, "invalid_client", "already been used")
    assert stored_tokens(bed) == 1


def test_a_new_assertion_reusing_a_jti_is_a_replay(bed: OAuthTestBed, partner: Partner) -> None:
    assert bed.token_request(bed.assertion(partner, jti="same")).status_code == 200
    bed.clock.advance(seconds=20)
    response = bed.token_request(bed.assertion(partner, jti="same"))
    assert_error(response, 401, "invalid_client", "already been used")


def test_the_same_jti_from_two_partners_is_not_a_replay(bed: OAuthTestBed, partner: Partner) -> None:
    other = bed.add_partner("varha")
    assert bed.token_request(bed.assertion(partner, jti="shared")).status_code == 200
    assert bed.token_request(bed.assertion(other, jti="shared")).status_code == 200


# --- signature, algorithm and key ---


def test_alg_none_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    forged = unsigned({"alg": "none", "kid": "key-1"}, bed.claims(partner))
    assert_error(bed.token_request(forged), 401, "invalid_client", "none")


def test_hs256_signed_with_the_partners_public_key_as_secret_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    public = partner.key.as_dict(private=False)
    for secret in (OKPKey.import_key(public).public_key.public_bytes_raw(), public["x"].encode()):
        forged = sign({"alg": "HS256", "kid": "key-1"}, bed.claims(partner), OctKey.import_key(secret))
        assert_error(bed.token_request(forged), 401, "invalid_client", "HS256")
    assert stored_tokens(bed) == 0


def test_a_key_that_is_not_registered_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    stranger = OKPKey.generate_key("Ed25519")
    by_unknown_kid = bed.assertion(partner, key=stranger, header={"kid": "key-2"})
    assert_error(bed.token_request(by_unknown_kid), 401, "invalid_client", "key-2", "not registered")
    claiming_the_registered_kid = bed.assertion(partner, key=stranger)
    assert_error(bed.token_request(claiming_the_registered_kid), 401, "invalid_client", "signature")


def test_another_partners_key_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    other = bed.add_partner("varha")
    response = bed.token_request(bed.assertion(partner, key=other.key))
    assert_error(response, 401, "invalid_client", "signature")


def test_a_signature_with_a_flipped_bit_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    header, payload, signature = bed.assertion(partner).split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert_error(bed.token_request(f"{header}.{payload}.{flipped}"), 401, "invalid_client", "signature")


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_a_key_carried_or_pointed_at_by_the_header_is_rejected(bed: OAuthTestBed, partner: Partner, name: str) -> None:
    attacker = OKPKey.generate_key("Ed25519")
    values = {
        "jwk": attacker.as_dict(private=False),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIB"],
    }
    forged = bed.assertion(partner, key=attacker, header={name: values[name]})
    assert_error(bed.token_request(forged), 401, "invalid_client", name)


def test_a_partner_registered_with_eddsa_may_use_either_name(bed: OAuthTestBed, partner: Partner) -> None:
    assert partner.alg == "EdDSA"
    assert bed.token_request(bed.assertion(partner, alg="EdDSA")).status_code == 200
    assert bed.token_request(bed.assertion(partner, alg="Ed25519")).status_code == 200


def test_a_partner_registered_with_ed25519_must_use_the_fully_specified_name(bed: OAuthTestBed) -> None:
    partner = bed.add_partner("tyo", alg="Ed25519")
    assert bed.token_request(bed.assertion(partner, alg="Ed25519")).status_code == 200
    assert_error(bed.token_request(bed.assertion(partner, alg="EdDSA")), 401, "invalid_client", "Ed25519")


def test_an_es256_partner_authenticates_with_its_p256_key_and_no_other_algorithm(bed: OAuthTestBed) -> None:
    partner = bed.add_partner("kela", alg="ES256")
    assert bed.token_request(bed.assertion(partner)).status_code == 200
    eddsa_key = OKPKey.generate_key("Ed25519")
    response = bed.token_request(bed.assertion(partner, alg="Ed25519", key=eddsa_key))
    assert_error(response, 401, "invalid_client", "not the one registered")


def test_a_partner_with_several_keys_must_name_one_by_kid(bed: OAuthTestBed) -> None:
    second = ECKey.generate_key("P-256", parameters={"kid": "key-2"}).as_dict(private=False)
    partner = bed.add_partner("kela", alg="ES256", extra_keys=[second])
    assert bed.token_request(bed.assertion(partner)).status_code == 200
    partner.kid = None
    assert_error(bed.token_request(bed.assertion(partner)), 401, "invalid_client", "kid")


@pytest.mark.parametrize(
    "extra", [{"crit": ["exp"], "exp": 1}, {"crit": ["b64"], "b64": False}, {"typ": "at+jwt"}, {"cty": "JWT"}]
)
def test_unexpected_header_parameters_are_rejected(bed: OAuthTestBed, partner: Partner, extra: dict[str, Any]) -> None:
    assert isinstance(partner.key, OKPKey)
    forged = signed_by_hand({"alg": "Ed25519", "kid": "key-1", **extra}, bed.claims(partner), partner.key)
    assert_error(bed.token_request(forged), 401, "invalid_client")
    header = {"alg": "Ed25519", "kid": "key-1", "typ": "JWT"}
    correct = signed_by_hand(header, bed.claims(partner), partner.key)
    assert bed.token_request(correct).status_code == 200


def test_an_oversized_assertion_is_rejected_before_parsing(bed: OAuthTestBed, partner: Partner) -> None:
    padded = bed.assertion(partner, padding="x" * 9000)
    assert_error(bed.token_request(padded), 401, "invalid_client", "8192")
    assert_error(bed.token_request("." * 9000), 401, "invalid_client", "8192")


@pytest.mark.parametrize("assertion", ["not-a-jwt", "a.b", "a.b.c", "é.b.c"])
def test_garbage_is_not_an_assertion(bed: OAuthTestBed, assertion: str) -> None:
    assert_error(bed.token_request(assertion), 401, "invalid_client")


# --- confusions between the partner's JWTs (as in Authlib's and Keycloak's negative suites) ---


def test_an_assertion_signed_with_the_dpop_key_instead_of_the_registered_key_is_rejected(
    bed: OAuthTestBed, partner: Partner
) -> None:
    dpop_key = bed.dpop.key
    assert_error(bed.token_request(bed.assertion(partner, key=dpop_key)), 401, "invalid_client", "signature")
    carrying_it = bed.assertion(partner, key=dpop_key, header={"jwk": bed.dpop.public_jwk})
    assert_error(bed.token_request(carrying_it), 401, "invalid_client", "jwk")
    assert stored_tokens(bed) == 0


def test_a_dpop_proof_is_not_a_client_assertion(bed: OAuthTestBed, partner: Partner) -> None:
    proof = bed.dpop.proof("POST", TOKEN_URL, iss="kisalli", sub="kisalli", aud=ISSUER, exp=int(NOW.timestamp()) + 30)
    assert_error(bed.token_request(proof), 401, "invalid_client", "jwk")
    assert isinstance(partner.key, OKPKey)
    typed = signed_by_hand({"alg": "Ed25519", "kid": "key-1", "typ": "dpop+jwt"}, bed.claims(partner), partner.key)
    assert_error(bed.token_request(typed), 401, "invalid_client", "typ")


def test_an_audience_array_without_the_issuer_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner, aud=[TOKEN_URL, "https://other.example"]))
    assert_error(response, 401, "invalid_client", "single string")


@pytest.mark.parametrize("aud", [ISSUER + "/", ISSUER.upper(), "https://broker.example.evil", ""])
def test_an_audience_that_is_almost_the_issuer_is_rejected(bed: OAuthTestBed, partner: Partner, aud: str) -> None:
    assert_error(bed.token_request(bed.assertion(partner, aud=aud)), 401, "invalid_client", "aud")


def test_an_assertion_without_sub_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    assert_error(bed.token_request(bed.assertion(partner, sub=OMIT)), 401, "invalid_client", "sub")


def test_an_assertion_that_expired_before_it_was_issued_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    now = int(NOW.timestamp())
    assert_error(bed.token_request(bed.assertion(partner, iat=now, exp=now - 11)), 401, "invalid_client", "expired")


# --- who is the client ---


def test_iss_and_sub_must_both_be_the_client_id(bed: OAuthTestBed, partner: Partner) -> None:
    assert_error(bed.token_request(bed.assertion(partner, iss="someone")), 401, "invalid_client", "iss")
    assert_error(bed.token_request(bed.assertion(partner, sub="varha")), 401, "invalid_client", "Unknown")


def test_a_client_id_parameter_must_match_the_assertion(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner), client_id="varha")
    assert_error(response, 401, "invalid_client", "client_id")
    assert bed.token_request(bed.assertion(partner), client_id="kisalli").status_code == 200


def test_an_inactive_partner_gets_no_token(bed: OAuthTestBed) -> None:
    partner = bed.add_partner("closed", active=False)
    assert_error(bed.token_request(bed.assertion(partner)), 401, "invalid_client", "inactive")


# --- the acting professional ---


def test_an_assertion_without_act_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    assert_error(bed.token_request(bed.assertion(partner, act=OMIT)), 400, "invalid_request", "act")


@pytest.mark.parametrize(
    ("act", "words"),
    [
        ("staff-42", "JSON object"),
        ({"role": "individual_coach"}, "act.sub"),
        ({"sub": "", "role": "individual_coach"}, "act.sub"),
        ({"sub": "x" * 121, "role": "individual_coach"}, "120"),
        ({"sub": "staff-42"}, "act.role"),
        ({"sub": "staff-42", "role": "individual_coach", "iss": "x"}, "'iss'"),
    ],
)
def test_a_malformed_act_claim_is_rejected(bed: OAuthTestBed, partner: Partner, act: Any, words: str) -> None:
    assert_error(bed.token_request(bed.assertion(partner, act=act)), 400, "invalid_request", words)


def test_a_role_not_allowed_for_the_organisation_type_is_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    assertion = bed.assertion(partner, act={"sub": "staff-42", "role": "physician"})
    assert_error(bed.token_request(assertion), 400, "invalid_request", "physician", "employment_services")
    assert stored_tokens(bed) == 0


# --- scope ---


def test_a_scope_not_granted_is_invalid_scope_never_narrowed(bed: OAuthTestBed) -> None:
    partner = bed.add_partner("limited", scopes=["consents"])
    response = bed.token_request(bed.assertion(partner), scope="consents records")
    assert_error(response, 400, "invalid_scope", "records")
    assert stored_tokens(bed) == 0


def test_an_unknown_scope_is_invalid_scope(bed: OAuthTestBed, partner: Partner) -> None:
    assert_error(bed.token_request(bed.assertion(partner), scope="consents everything"), 400, "invalid_scope")
    assert_error(bed.token_request(bed.assertion(partner), scope="consents  records"), 400, "invalid_scope")


def test_a_requested_subset_of_the_granted_scopes_is_issued(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner), scope="records consents")
    assert response.status_code == 200
    assert response.get_json()["scope"] == "consents records"


def test_a_partner_without_scopes_gets_no_token(bed: OAuthTestBed) -> None:
    partner = bed.add_partner("empty", scopes=[])
    assert_error(bed.token_request(bed.assertion(partner)), 400, "invalid_scope")


# --- the request itself ---


def test_only_the_client_credentials_grant_is_supported(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.token_request(bed.assertion(partner), grant_type="password")
    assert_error(response, 400, "unsupported_grant_type")
    assert_error(bed.token_request(bed.assertion(partner), grant_type=""), 400, "unsupported_grant_type")
    client = bed.app.test_client()
    no_grant = client.post(
        "/oauth/token",
        data={"client_assertion_type": ASSERTION_TYPE, "client_assertion": bed.assertion(partner)},
    )
    assert_error(no_grant, 400, "invalid_request", "grant_type")


def test_other_client_authentication_methods_are_rejected(bed: OAuthTestBed, partner: Partner) -> None:
    client = bed.app.test_client()
    basic = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic a2lzYWxsaTpzZWNyZXQ="},
    )
    assert_error(basic, 401, "invalid_client", "private_key_jwt")
    secret = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "kisalli", "client_secret": "secret"},
    )
    assert_error(secret, 401, "invalid_client", "private_key_jwt")
    none = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "kisalli"},
        headers={"DPoP": bed.dpop.proof("POST", TOKEN_URL)},
    )
    assert_error(none, 401, "invalid_client", "client_assertion")
    wrong_type = bed.token_request(bed.assertion(partner), client_assertion_type="urn:example:saml")
    assert_error(wrong_type, 401, "invalid_client", "client_assertion_type")


def test_parameters_must_be_form_encoded_in_the_body_and_not_repeated(bed: OAuthTestBed, partner: Partner) -> None:
    client = bed.app.test_client()
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": bed.assertion(partner),
    }
    assert_error(client.post("/oauth/token", json=form), 400, "invalid_request", "x-www-form-urlencoded")
    assert_error(client.post("/oauth/token", query_string=form, data={}), 400, "invalid_request", "URL")
    repeated = client.post("/oauth/token", data={**form, "scope": ["consents", "records"]})
    assert_error(repeated, 400, "invalid_request", "scope")
    assert client.get("/oauth/token").status_code == 405


# --- interoperability and housekeeping ---


def test_an_authlib_client_assertion_works_when_built_the_way_the_docs_say(bed: OAuthTestBed, partner: Partner) -> None:
    # PITFALLS.md: pass the issuer (not the token endpoint) as audience, and a short exp instead of the
    # one-hour default; Authlib's clock is the real one, so the pinned time is passed explicitly here.
    now = int(bed.clock.now().timestamp())
    act = {"sub": "staff-42", "role": "work_coach"}
    good = private_key_jwt_sign(
        partner.key, "kisalli", ISSUER, alg="Ed25519", claims={"act": act}, issued_at=now, expires_at=now + 60
    )
    assert bed.token_request(good).status_code == 200
    default_lifetime = private_key_jwt_sign(
        partner.key, "kisalli", ISSUER, alg="Ed25519", claims={"act": act}, issued_at=now
    )
    assert_error(bed.token_request(default_lifetime), 401, "invalid_client", "60 seconds")
    token_endpoint_audience = private_key_jwt_sign(
        partner.key,
        "kisalli",
        TOKEN_URL,
        alg="Ed25519",
        claims={"act": act},
        issued_at=now,
        expires_at=now + 60,
    )
    assert_error(bed.token_request(token_endpoint_audience), 401, "invalid_client", "aud")


def test_purging_forgets_only_what_has_expired(bed: OAuthTestBed, partner: Partner) -> None:
    # Assertion jti kept until now + 30 + 10, DPoP proof jti until now + 60 (the iat window), token until now + 300.
    bed.token(partner, jti="early")
    bed.clock.advance(seconds=100)
    bed.token(partner, jti="late")
    assert purge_expired(bed.broker) == (2, 0)  # the first assertion's and the first proof's ids
    bed.clock.advance(seconds=250)
    assert purge_expired(bed.broker) == (2, 1)
    with bed.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(AccessTokenRow)) == 1
        assert uow.session.scalar(select(func.count()).select_from(DpopProofJtiRow)) == 0
