"""Protected routes: bearer access tokens checked in the database on every request (RFC 6750), and
revocation (RFC 7009)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from broker.adapters.orm import PartnerRow
from broker.oauth import InsufficientScopeError, InvalidTokenError, MissingTokenError, authenticate_request
from tests.integration.conftest_oauth import BACKENDS, OAuthTestBed, Partner, open_test_bed


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
    assert_problem(response, 401, "invalid_token", 'Bearer error="invalid_token"')
    assert "expired" in response.get_json(force=True)["detail"]


def test_a_revoked_access_token_is_refused_with_401(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    revoked = bed.revoke(partner, token)
    assert revoked.status_code == 200 and revoked.headers["Cache-Control"] == "no-store"
    response = bed.get("/protected/consents", token)
    assert_problem(response, 401, "invalid_token", 'Bearer error="invalid_token"')
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
    assert_problem(response, 403, "insufficient_scope", 'Bearer error="insufficient_scope"')
    assert 'scope="consents"' in response.headers["WWW-Authenticate"]


def test_a_scope_taken_from_the_partner_stops_working_at_once(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    with bed.broker.uow() as uow:
        uow.session.execute(update(PartnerRow).where(PartnerRow.client_id == "kisalli").values(scopes=["records"]))
        uow.commit()
    assert_problem(bed.get("/protected/consents", token), 403, "insufficient_scope", "Bearer")


def test_a_deactivated_partners_token_stops_working_at_once(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    with bed.broker.uow() as uow:
        uow.session.execute(update(PartnerRow).where(PartnerRow.client_id == "kisalli").values(active=False))
        uow.commit()
    assert_problem(bed.get("/protected/consents", token), 401, "invalid_token", 'Bearer error="invalid_token"')


def test_a_request_without_credentials_gets_a_bare_bearer_challenge(bed: OAuthTestBed) -> None:
    # RFC 6750 §3.1: no error attribute when the request carried no credentials at all.
    response = bed.get("/protected/consents")
    assert_problem(response, 401, "invalid_token", "Bearer")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    basic = bed.get("/protected/consents", authorization="Basic a2lzYWxsaTpzZWNyZXQ=")
    assert basic.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer ", "Bearer cbat_short", "Bearer " + "cbat_" + "A" * 43, "Bearer abc.def.ghi"],
)
def test_a_malformed_or_unknown_token_is_refused_with_401(bed: OAuthTestBed, authorization: str) -> None:
    response = bed.get("/protected/consents", authorization=authorization)
    assert_problem(response, 401, "invalid_token", 'Bearer error="invalid_token"')


def test_the_bearer_scheme_name_is_case_insensitive(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner)
    assert bed.get("/protected/consents", authorization=f"bearer {token}").status_code == 200


def test_authenticate_request_works_without_flask_and_in_a_given_session(bed: OAuthTestBed, partner: Partner) -> None:
    token = bed.token(partner, scope="consents")
    caller = authenticate_request(bed.broker, f"Bearer {token}", "consents")
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
        assert authenticate_request(bed.broker, f"Bearer {token}", "consents", session=uow.session) == caller
    with pytest.raises(InsufficientScopeError):
        authenticate_request(bed.broker, f"Bearer {token}", "records")
    with pytest.raises(MissingTokenError):
        authenticate_request(bed.broker, None, "consents")
    bed.clock.advance(minutes=5)
    with pytest.raises(InvalidTokenError):
        authenticate_request(bed.broker, f"Bearer {token}", "consents")
