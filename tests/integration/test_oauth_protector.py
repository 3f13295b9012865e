"""Protected routes: DPoP-bound access tokens (RFC 9449 §7) checked in the database on every request, RFC 6750
semantics for their errors, and revocation (RFC 7009). The DPoP proof checks themselves are in test_dpop.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from broker.adapters.orm import PartnerRow
from broker.oauth import (
    DpopRequest,
    InsufficientScopeError,
    InvalidTokenError,
    MissingTokenError,
    ResourceDpopProofError,
    authenticate_request,
)
from tests.integration.conftest_oauth import BACKENDS, ISSUER, OAuthTestBed, Partner, open_test_bed

ALGS = 'algs="EdDSA Ed25519 ES256"'


@pytest.fixture(params=BACKENDS)
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OAuthTestBed]:
    with open_test_bed(request.param, tmp_path) as test_bed:
        yield test_bed


@pytest.fixture
def partner(bed: OAuthTestBed) -> Partner:
    return bed.add_partner("kisalli")


def assert_problem(response: Any, status: int, code: str, challenge: str) -> None:
    """An RFC 9457 problem document with the RFC 6750 §3 challenge."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert set(body) == {"type", "title", "status", "detail", "code"}  # no request_id: the test app sets none
    assert body["type"] == "about:blank" and body["status"] == status and body["code"] == code
    assert response.headers["WWW-Authenticate"].startswith(challenge)


def test_an_expired_access_token_is_refused_with_401(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    bed.clock.advance(seconds=299)
    assert bed.get("/protected/consents", token).status_code == 200
    bed.clock.advance(seconds=1)
    response = bed.get("/protected/consents", token)
    assert_problem(response, 401, "invalid_token", 'DPoP error="invalid_token"')
    assert "expired" in response.get_json(force=True)["detail"]


def test_a_revoked_access_token_is_refused_with_401(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    revoked = bed.revoke(partner, token)
    assert revoked.status_code == 200 and revoked.headers["Cache-Control"] == "no-store"
    response = bed.get("/protected/consents", token)
    assert_problem(response, 401, "invalid_token", 'DPoP error="invalid_token"')
    assert "revoked" in response.get_json(force=True)["detail"]


def test_revoking_another_clients_token_does_nothing_but_answers_200(bed: OAuthTestBed, partner: Partner) -> None:
    other = bed.add_partner("varha")
    token = bed.token(partner)
    assert bed.revoke(other, token).status_code == 200
    assert bed.get("/protected/consents", token).status_code == 200


def test_revoking_an_unknown_token_answers_200(bed: OAuthTestBed, partner: Partner) -> None:
    assert bed.revoke(partner, "cbat_" + "A" * 43).status_code == 200
    assert bed.revoke(partner, "not even a token").status_code == 200


def test_revocation_needs_the_same_client_authentication(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    client = bed.app.test_client()
    response = client.post("/oauth/revoke", data={"token": token})
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    replayed_assertion = bed.assertion(partner)
    assert bed.token_request(replayed_assertion).status_code == 200
    response = client.post(
        "/oauth/revoke",
        data={
            "token": token,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": replayed_assertion,
        },
    )
    assert response.status_code == 401 and "already been used" in response.get_json()["error_description"]
    assert bed.get("/protected/consents", token).status_code == 200


def test_revocation_without_a_token_is_invalid_request(bed: OAuthTestBed, partner: Partner) -> None:
    response = bed.revoke(partner, "")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_a_token_missing_the_scope_is_refused_with_403(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, scope="records")
    response = bed.get("/protected/consents", token)
    assert_problem(response, 403, "insufficient_scope", 'DPoP error="insufficient_scope"')
    assert response.headers["WWW-Authenticate"].endswith(f', {ALGS}, scope="consents"')


def test_a_scope_taken_from_the_partner_stops_working_at_once(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    with bed.broker.uow() as uow:
        uow.session.execute(update(PartnerRow).where(PartnerRow.client_id == "kisalli").values(scopes=["records"]))
        uow.commit()
    assert_problem(bed.get("/protected/consents", token), 403, "insufficient_scope", "DPoP")


def test_a_deactivated_partners_token_stops_working_at_once(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    with bed.broker.uow() as uow:
        uow.session.execute(update(PartnerRow).where(PartnerRow.client_id == "kisalli").values(active=False))
        uow.commit()
    assert_problem(bed.get("/protected/consents", token), 401, "invalid_token", 'DPoP error="invalid_token"')


def test_a_request_without_credentials_gets_a_bare_dpop_challenge(bed: OAuthTestBed) -> None:
    # RFC 6750 §3.1: no error attribute when the request carried no credentials at all; RFC 9449 §7.1: the DPoP
    # challenge names the proof algorithms. Bearer is not offered: the broker requires DPoP.
    response = bed.get("/protected/consents")
    assert_problem(response, 401, "invalid_token", "DPoP")
    assert response.headers["WWW-Authenticate"] == f"DPoP {ALGS}"
    basic = bed.get("/protected/consents", authorization="Basic a2lzYWxsaTpzZWNyZXQ=")
    assert basic.headers["WWW-Authenticate"] == f"DPoP {ALGS}"


def test_without_required_dpop_the_bare_challenge_offers_both_schemes(tmp_path: Path) -> None:
    # RFC 9449 §7.2: a resource accepting both schemes may send both challenges.
    with open_test_bed("sqlite", tmp_path, require_dpop=False) as bed:
        response = bed.get("/protected/consents")
        assert_problem(response, 401, "invalid_token", "Bearer")
        assert response.headers["WWW-Authenticate"] == f"Bearer, DPoP {ALGS}"


@pytest.mark.parametrize(
    "authorization",
    ["DPoP", "DPoP ", "DPoP cbat_short", "DPoP abc.def.ghi", "Bearer", "Bearer cbat_short"],
)
def test_a_malformed_token_is_refused_with_401(bed: OAuthTestBed, authorization: str) -> None:
    response = bed.get("/protected/consents", authorization=authorization)
    assert_problem(response, 401, "invalid_token", 'DPoP error="invalid_token"')
    assert "malformed" in response.get_json(force=True)["detail"]


def test_an_unknown_token_with_a_valid_proof_is_refused_with_401(bed: OAuthTestBed) -> None:
    unknown = "cbat_" + "A" * 43
    proof = bed.dpop.proof("GET", ISSUER + "/protected/consents", unknown)
    response = bed.get("/protected/consents", authorization=f"DPoP {unknown}", dpop=proof)
    assert_problem(response, 401, "invalid_token", 'DPoP error="invalid_token"')
    assert "unknown" in response.get_json(force=True)["detail"]


def test_the_scheme_name_is_case_insensitive(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    assert bed.get("/protected/consents", token, authorization=f"dpop {token}").status_code == 200
    assert bed.get("/protected/consents", token, authorization=f"DPOP {token}").status_code == 200


def test_authenticate_request_works_without_flask_and_in_a_given_session(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, scope="consents")
    url = ISSUER + "/protected/consents"

    def dpop() -> DpopRequest:
        return DpopRequest(proofs=(bed.dpop.proof("GET", url, token),), method="GET", url=url)

    caller = authenticate_request(bed.broker, f"DPoP {token}", "consents", dpop=dpop())
    assert (caller.partner_id, caller.organisation_id, caller.org_type) == (
        "kisalli",
        "org-kisalli",
        "employment_services",
    )
    assert (caller.actor_id, caller.actor_role, caller.scopes) == (
        "staff-42",
        "individual_coach",
        frozenset({"consents"}),
    )
    with bed.broker.uow(write=False) as uow:
        in_session = authenticate_request(bed.broker, f"DPoP {token}", "consents", dpop=dpop(), session=uow.session)
        assert in_session == caller
    with pytest.raises(InsufficientScopeError):
        authenticate_request(bed.broker, f"DPoP {token}", "records", dpop=dpop())
    with pytest.raises(MissingTokenError):
        authenticate_request(bed.broker, None, "consents")
    with pytest.raises(ResourceDpopProofError):  # a DPoP-bound token needs its proof
        authenticate_request(bed.broker, f"DPoP {token}", "consents")
    with pytest.raises(InvalidTokenError):  # and never works as a bearer token
        authenticate_request(bed.broker, f"Bearer {token}", "consents", dpop=dpop())
    bed.clock.advance(minutes=5)
    with pytest.raises(InvalidTokenError):
        authenticate_request(bed.broker, f"DPoP {token}", "consents", dpop=dpop())
