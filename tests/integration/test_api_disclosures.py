"""Records in, records out: deposit, decide, disclose only the allowed fields, and log every decision."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import AuditEntryRow, DisclosureRow, RecordRow
from schemas.records.examples import EXAMPLES
from tests.support import Env


def deposit(env: Env, org: str, person_id: str, category: str) -> str:
    response = env.post(org, "/records", {"person_id": person_id, "category": category, "content": EXAMPLES[category]})
    assert response.status_code == 201, response.get_json()
    record_id: str = response.get_json()["record_id"]
    return record_id


def consent_to_health(env: Env, person_id: str) -> str:
    response = env.post(
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
    assert response.status_code == 201, response.get_json()
    consent_id: str = response.get_json()["consent_id"]
    return consent_id


def ask(env: Env, org: str, person_id: str, category: str, purpose: str, path: str = "/disclosures"):
    return env.post(org, path, {"person_id": person_id, "category": category, "purpose": purpose})


def audit_events(env: Env) -> list[str]:
    with env.broker.uow(write=False) as uow:
        return list(uow.session.scalars(select(AuditEntryRow.event).order_by(AuditEntryRow.id)))


def test_deposited_content_is_validated_by_its_category_schema(env: Env) -> None:
    person_id = env.person()
    bad = dict(EXAMPLES["work_assessment"], diagnosis="F32.1")
    response = env.post("kisalli", "/records", {"person_id": person_id, "category": "work_assessment", "content": bad})
    assert response.status_code == 400
    assert "diagnosis" in response.get_json()["errors"]["content"]
    unknown = env.post("kisalli", "/records", {"person_id": person_id, "category": "horoscope", "content": {}})
    assert unknown.status_code == 400 and unknown.get_json()["code"] == "unknown_category"
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(RecordRow)) == 0


def test_records_are_encrypted_at_rest(env: Env) -> None:
    person_id = env.person()
    record_id = deposit(env, "kisalli", person_id, "work_assessment")
    with env.broker.uow(write=False) as uow:
        row = uow.session.get(RecordRow, record_id)
    assert row is not None and row.ciphertext is not None
    assert EXAMPLES["work_assessment"]["client_view"].encode() not in row.ciphertext


def test_a_depositing_partner_must_name_a_known_person(env: Env) -> None:
    response = env.post(
        "kisalli",
        "/records",
        {"person_id": "per_unknown", "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
    )
    assert response.status_code == 404 and response.get_json()["code"] == "unknown_person"


def test_health_centre_gets_only_the_allowed_fields_under_consent(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_id = consent_to_health(env, person_id)
    record_id = deposit(env, "kisalli", person_id, "work_assessment")
    response = ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["basis"]["kind"] == "consent" and body["basis"]["consent_id"] == consent_id
    [record] = body["records"]
    assert record["record_id"] == record_id
    allowed = set(env.broker.policy.rule(body["basis"]["rule"]).fields["work_assessment"])
    assert set(record["content"]) <= allowed
    assert "coach_recommendation" not in record["content"] or "coach_recommendation" in allowed
    assert audit_events(env)[-1] == "disclosure:permit"


def test_without_a_consent_the_health_centre_is_refused_and_the_refusal_is_logged(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    deposit(env, "kisalli", person_id, "work_assessment")
    response = ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    assert response.status_code == 403
    problem = response.get_json()
    assert problem["code"] == "no_legal_basis"
    assert problem["decision"]["effect"] == "deny" and problem["decision"]["reasons"]
    assert "content" not in response.get_data(as_text=True)
    assert audit_events(env)[-1] == "disclosure:deny"
    with env.broker.uow(write=False) as uow:
        [row] = uow.session.scalars(select(DisclosureRow)).all()
    assert row.effect == "deny" and row.record_ids == []


def test_a_withdrawn_consent_no_longer_opens_the_flow(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_id = consent_to_health(env, person_id)
    deposit(env, "kisalli", person_id, "work_assessment")
    assert ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment").status_code == 200
    env.post("kisalli", f"/consents/{consent_id}/withdraw", {})
    refused = ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    assert refused.status_code == 403 and refused.get_json()["code"] == "no_legal_basis"


def test_a_statutory_flow_needs_no_consent(env: Env) -> None:
    # F5: the producer reports attendance to the organiser (703/2023 14 §, 17 §).
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    deposit(env, "kisalli", person_id, "attendance_report")
    response = ask(env, "varha-social-work", person_id, "attendance_report", "follow_up")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["basis"]["kind"] == "statute"


def test_a_substance_incident_never_reaches_the_employment_authority_even_with_consent(env: Env) -> None:
    # F12 forbids it; no consent opens what a rule forbids.
    person_id = env.person()
    env.serve(person_id, "kisalli", "turku-employment")
    deposit(env, "kisalli", person_id, "substance_incident")
    env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person_id,
            "recipients": ["turku-employment"],
            "categories": ["substance_incident"],
            "purposes": ["follow_up"],
            "method": "paper",
        },
    )
    response = ask(env, "turku-employment", person_id, "substance_incident", "follow_up")
    assert response.status_code == 403


def test_the_dry_run_discloses_nothing_and_is_audited(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_to_health(env, person_id)
    deposit(env, "kisalli", person_id, "work_assessment")
    response = ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment", "/decisions")
    assert response.status_code == 200
    decision = response.get_json()
    assert decision["effect"] == "permit" and decision["fields"]
    assert "records" not in decision
    assert audit_events(env)[-1] == "decision:query"
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(DisclosureRow)) == 0


def test_unknown_category_and_purpose_are_named(env: Env) -> None:
    person_id = env.person()
    bad_category = ask(env, "varha-health", person_id, "diagnoses", "follow_up")
    bad_purpose = ask(env, "varha-health", person_id, "work_assessment", "marketing")
    assert bad_category.get_json()["code"] == "unknown_category"
    assert bad_purpose.get_json()["code"] == "unknown_purpose"


def test_nothing_is_disclosed_when_the_audit_entry_cannot_be_written(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    consent_to_health(env, person_id)
    deposit(env, "kisalli", person_id, "work_assessment")
    before = audit_events(env)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("log unavailable")

    monkeypatch.setattr("broker.services.disclosures.append_pending", broken)
    monkeypatch.setattr("broker.services.disclosures.record_disclosure", broken)  # PostgreSQL's append
    monkeypatch.setattr("broker.services.disclosures.record_disclosure_if_unchanged", broken)  # and its checked one
    response = ask(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    assert response.status_code == 500
    assert "records" not in response.get_data(as_text=True)
    monkeypatch.undo()
    assert audit_events(env) == before
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(DisclosureRow)) == 0
