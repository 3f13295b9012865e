"""A consent as an ISO/IEC TS 27560:2023 consent record (broker/services/consent_record.py), without a database:
27560's sections and mandatory fields, the consent's terms stated in them, and its history as 27560 events with
DPV's consent states."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from broker.adapters.orm import ConsentEventRow, ConsentRow
from broker.services.consent_record import SCHEMA_VERSION, consent_record_document
from broker.services.fhir import special_categories
from policies import load_policy
from schemas.consent_record import ConsentRecordDocumentSchema
from tests.unit.test_fhir_mapping import (
    CONSENT_ID,
    GRANTED,
    ISSUER,
    NOW,
    PERSON,
    REPRESENTATIVE,
    TEXT,
    consent,
    event,
)

ORGANISATIONS = {
    "kisalli": ("Työllistämispalvelut Kisälli, Lieto", "employment_services"),
    "varha-health": ("Varha, Liedon terveysasema", "health_care"),
}


def record(row: ConsentRow, events: list[ConsentEventRow] | None = None, now: Any = NOW) -> dict[str, Any]:
    found = consent_record_document(
        row,
        TEXT,
        events if events is not None else [GRANTED],
        issuer=ISSUER,
        organisations=ORGANISATIONS,
        special=special_categories(load_policy(), row.categories),
        now=now,
    )
    # What the API documents is exactly what the record holds: nothing lost, nothing undocumented.
    assert ConsentRecordDocumentSchema().dump(found) == found
    return found


def test_the_record_has_27560s_sections_and_mandatory_fields() -> None:
    found = record(consent())
    assert found["schema_version"] == SCHEMA_VERSION
    assert found["record_id"] == CONSENT_ID and found["pii_principal_id"] == PERSON
    processing = found["pii_processing"]
    assert processing["privacy_notice"] == {
        "notice_id": f"sha256:{TEXT.sha256}",
        "sha256": TEXT.sha256,
        "version": "consent-text/2",
        "language": "fi",
    }
    assert processing["language"] == "fi"
    for purpose in processing["purposes"]:
        for name in (
            "purpose",
            "pii_information",
            "pii_controllers",
            "recipient_third_parties",
            "jurisdiction",
            "withdrawal_method",
        ):
            assert purpose[name], name
        assert all(info["pii_type"] for info in purpose["pii_information"])
    for party in found["party_identification"]:
        assert party["party_id"] and party["party_type"]
    for recorded in found["event"]:
        for name in ("event_time", "validity_duration", "entity_id", "event_type", "event_state"):
            assert recorded[name], name


def test_the_record_states_the_consents_terms() -> None:
    row = consent(
        recipients=["kisalli", "varha-health"],
        categories=["attendance_report", "work_assessment"],
        purposes=["service_delivery", "work_capacity_assessment"],
    )
    found = record(row)
    purposes = found["pii_processing"]["purposes"]
    assert [p["purpose"] for p in purposes] == row.purposes
    for purpose in purposes:
        assert [i["pii_type"] for i in purpose["pii_information"]] == row.categories
        assert purpose["pii_controllers"] == ["kisalli"]
        assert purpose["recipient_third_parties"] == row.recipients
        assert purpose["jurisdiction"] == "FI"
    assert found["valid_from"] == "2026-01-15T09:00:00Z" and found["valid_until"] == "2026-07-14T09:00:00Z"
    assert found["explicit"] is True and found["written"] is False
    assert found["consent_type"] == "dpv:ExplicitlyExpressedConsent"
    assert found["collection_method"] == {
        "method": "in_person",
        "given_by": "person",
        "mandate": None,
        "witness": "Pekka Salo",
        "recorded_by": "kisalli",
    }
    roles = {p["party_id"]: p["party_role"] for p in found["party_identification"]}
    assert roles == {
        PERSON: ["dpv:DataSubject"],
        "kisalli": ["dpv:DataController", "dpv:Recipient"],
        "varha-health": ["dpv:Recipient"],
        ISSUER: [],
    }


def test_special_categories_add_art_9_2_a_and_are_marked() -> None:
    found = record(consent(categories=["attendance_report", "work_assessment"]))
    [purpose] = found["pii_processing"]["purposes"]
    assert purpose["lawful_basis"] == ["eu-gdpr:A6-1-a", "eu-gdpr:A9-2-a"]
    assert {i["pii_type"]: i["special_pii_category"] for i in purpose["pii_information"]} == {
        "attendance_report": None,
        "work_assessment": "dpv:SpecialCategoryPersonalData",
    }
    plain = record(consent(categories=["attendance_report"], explicit=False))
    assert plain["pii_processing"]["purposes"][0]["lawful_basis"] == ["eu-gdpr:A6-1-a"]
    assert plain["consent_type"] == "dpv:ExpressedConsent"


def test_the_history_is_27560_events_with_dpv_consent_states() -> None:
    withdrawn_at = NOW + timedelta(days=3)
    row = consent(status="withdrawn", version=2, withdrawn_at=withdrawn_at)
    found = record(row, [GRANTED, event("withdraw", withdrawn_at, 2, by_kind="person", by_actor=PERSON)])
    given, withdrawn = found["event"]
    assert given == {
        "event_time": "2026-01-15T09:00:00Z",
        "validity_duration": "2026-01-15T09:00:00Z/2026-07-14T09:00:00Z",
        "entity_id": "kisalli",  # a professional recorded it: the organisation, never the professional's id
        "event_type": "dpv:ExplicitlyExpressedConsent",
        "event_state": "dpv:ConsentGiven",
        "version": 1,
        "by": "professional",
    }
    assert withdrawn["event_state"] == "dpv:ConsentWithdrawn" and withdrawn["validity_duration"] == "PT0S"
    assert withdrawn["entity_id"] == PERSON and withdrawn["event_time"] == "2026-01-18T09:00:00Z"
    assert found["status"] == "withdrawn" and found["withdrawn_at"] == "2026-01-18T09:00:00Z"


def test_an_expiry_by_the_broker_names_the_broker() -> None:
    end = NOW + timedelta(days=180)
    found = record(consent(status="expired", version=2), [GRANTED, event("expire", end, 2, by_kind="system")])
    assert found["event"][1]["event_state"] == "dpv:ConsentExpired"
    assert found["event"][1]["entity_id"] == ISSUER


def test_a_consent_past_its_end_is_expired_before_a_job_marks_it() -> None:
    assert record(consent(), now=NOW + timedelta(days=181))["status"] == "expired"
    assert record(consent(valid_until=None), now=NOW + timedelta(days=3650))["status"] == "active"


def test_a_consent_until_withdrawn_is_valid_from_its_start_without_end() -> None:
    found = record(consent(valid_until=None))
    assert found["event"][0]["validity_duration"] == "2026-01-15T09:00:00Z/.."
    assert found["valid_until"] is None


def test_a_representative_who_gave_the_consent_is_a_party_and_the_events_actor() -> None:
    row = consent(given_by="representative", representative_id=REPRESENTATIVE, mandate="custodian", method="portal")
    given = event("grant", NOW, 1, by_kind="representative", by_actor=REPRESENTATIVE)
    found = record(row, [given])
    parties = {p["party_id"]: p for p in found["party_identification"]}
    assert parties[REPRESENTATIVE]["party_role"] == ["dpv:Representative"]
    assert parties[REPRESENTATIVE]["party_name"] is None  # persons are named by their opaque ids only
    assert found["event"][0]["entity_id"] == REPRESENTATIVE
    assert found["collection_method"]["given_by"] == "representative"
    assert found["collection_method"]["mandate"] == "custodian"
