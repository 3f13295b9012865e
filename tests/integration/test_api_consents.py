"""Consents over the API: recording, listing, withdrawing and the signed receipt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from broker.adapters.orm import ConsentEventRow, ConsentTextRow
from broker.adapters.signing import verify_jws
from tests.support import Env


def consent_body(person_id: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "person_id": person_id,
        "recipients": ["varha-health"],
        "categories": ["work_assessment"],
        "purposes": ["work_capacity_assessment"],
        "method": "in_person",
        "witness": "Pekka Salo, work coach",
    }
    body.update(overrides)
    return body


def test_an_in_person_consent_is_recorded_with_its_text_and_history(env: Env) -> None:
    person_id = env.person()
    response = env.post("kisalli", "/consents", consent_body(person_id, language="sv"))
    assert response.status_code == 201, response.get_json()
    consent = response.get_json()
    assert consent["status"] == "active" and consent["version"] == 1
    assert consent["method"] == "in_person" and consent["witness"] == "Pekka Salo, work coach"
    assert consent["explicit"] is True and consent["language"] == "sv"
    with env.broker.uow(write=False) as uow:
        text = uow.session.get(ConsentTextRow, consent["text_sha256"])
        events = uow.session.scalars(
            select(ConsentEventRow).where(ConsentEventRow.consent_id == consent["consent_id"])
        ).all()
    assert text is not None and text.language == "sv" and "Liedon terveysasema" in text.text
    assert "arbetsbedömning" in text.text.lower() and "work_assessment" not in text.text
    assert [(e.action, e.by_kind, e.by_org, e.by_actor) for e in events] == [
        ("grant", "professional", "kisalli", "kisalli-staff-1")
    ]


def test_a_consent_given_in_person_needs_a_witness(env: Env) -> None:
    response = env.post("kisalli", "/consents", consent_body(env.person(), witness=None))
    assert response.status_code == 400
    assert response.get_json()["field"] == "witness"


def test_a_paper_consent_is_written(env: Env) -> None:
    response = env.post("kisalli", "/consents", consent_body(env.person(), method="paper", witness=None))
    assert response.status_code == 201
    assert response.get_json()["written"] is True


def test_consent_terms_name_only_known_organisations_categories_and_purposes(env: Env) -> None:
    person_id = env.person()
    cases = {
        "recipients": ("recipients", ["nowhere"], "unknown_organisation"),
        "categories": ("categories", ["diagnoses"], "unknown_category"),
        "purposes": ("purposes", ["marketing"], "unknown_purpose"),
    }
    for name, (field, value, code) in cases.items():
        response = env.post("kisalli", "/consents", consent_body(person_id, **{field: value}))
        assert response.status_code == 400, name
        assert response.get_json()["code"] == code and response.get_json()["field"] == field


def test_a_consent_that_has_already_ended_is_refused(env: Env) -> None:
    past = (env.clock.now() - timedelta(days=1)).isoformat()
    response = env.post("kisalli", "/consents", consent_body(env.person(), valid_until=past))
    assert response.status_code == 400 and response.get_json()["field"] == "valid_until"


def test_consents_are_listed_only_to_organisations_named_in_them(env: Env) -> None:
    person_id = env.person()
    consent_id = env.post("kisalli", "/consents", consent_body(person_id)).get_json()["consent_id"]
    as_requester = env.get("kisalli", f"/consents?person_id={person_id}").get_json()
    as_recipient = env.get("varha-health", f"/consents?person_id={person_id}").get_json()
    as_stranger = env.get("kela", f"/consents?person_id={person_id}").get_json()
    assert [c["consent_id"] for c in as_requester] == [consent_id]
    assert [c["consent_id"] for c in as_recipient] == [consent_id]
    assert as_stranger == []


def test_listing_needs_a_person_and_rejects_unknown_query_parameters(env: Env) -> None:
    assert env.get("kisalli", "/consents").status_code == 400
    response = env.get("kisalli", f"/consents?person_id={env.person()}&all=1")
    assert response.status_code == 400 and response.get_json()["field"] == "all"


def test_withdrawal_is_recorded_once(env: Env) -> None:
    person_id = env.person()
    consent_id = env.post("kisalli", "/consents", consent_body(person_id)).get_json()["consent_id"]
    withdrawn = env.post("kisalli", f"/consents/{consent_id}/withdraw", {"reason": "asked by phone"})
    assert withdrawn.status_code == 200
    assert withdrawn.get_json()["status"] == "withdrawn" and withdrawn.get_json()["version"] == 2
    again = env.post("kisalli", f"/consents/{consent_id}/withdraw", {})
    assert again.status_code == 409 and again.get_json()["code"] == "consent_not_active"


def test_an_organisation_not_named_in_a_consent_cannot_see_or_withdraw_it(env: Env) -> None:
    consent_id = env.post("kisalli", "/consents", consent_body(env.person())).get_json()["consent_id"]
    response = env.post("kela", f"/consents/{consent_id}/withdraw", {})
    assert response.status_code == 404
    assert env.get("kela", f"/consents/{consent_id}/receipt").status_code == 404


def test_the_receipt_is_a_jws_that_verifies_with_the_published_keys(env: Env) -> None:
    person_id = env.person()
    consent_id = env.post("kisalli", "/consents", consent_body(person_id)).get_json()["consent_id"]
    env.post("kisalli", f"/consents/{consent_id}/withdraw", {})
    receipt = env.get("varha-health", f"/consents/{consent_id}/receipt").get_json()["receipt"]
    jwks = env.client.get("/.well-known/jwks.json").get_json()
    payload = verify_jws(receipt, jwks, typ="consent-receipt+jws")
    assert payload["consent"]["consent_id"] == consent_id
    assert payload["consent"]["status"] == "withdrawn"
    assert [h["action"] for h in payload["history"]] == ["grant", "withdraw"]
    assert payload["text"]["sha256"] == payload["consent"]["text_sha256"]
    tampered = receipt[:-4] + ("AAAA" if not receipt.endswith("AAAA") else "BBBB")
    try:
        verify_jws(tampered, jwks, typ="consent-receipt+jws")
    except Exception as error:
        assert type(error).__name__ == "SignatureError"
    else:
        raise AssertionError("a tampered receipt verified")


def test_a_consent_request_is_created_pending(env: Env) -> None:
    person_id = env.person()
    response = env.post(
        "kisalli",
        "/consent-requests",
        {
            "person_id": person_id,
            "recipients": ["kisalli"],
            "categories": ["service_need_assessment"],
            "purposes": ["multisector_planning"],
            "valid_days": 180,
            "reason": "to plan your work activity",
        },
    )
    assert response.status_code == 201
    request = response.get_json()
    assert request["status"] == "pending" and request["requester"] == "kisalli"
    missing_reason = env.post(
        "kisalli",
        "/consent-requests",
        {
            "person_id": person_id,
            "recipients": ["kisalli"],
            "categories": ["service_need_assessment"],
            "purposes": ["multisector_planning"],
        },
    )
    assert missing_reason.status_code == 400 and missing_reason.get_json()["field"] == "reason"
