"""The FHIR R4 mapping (broker/services/fhir.py), without a database: consents as Consent resources (statuses,
provisions, the text), disclosures as AuditEvents shaped after IHE BALP's Privacy Disclosure at Source, and the
Bundles around them — each held to the R4 models and required bindings (tests/fhir_r4.py)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.adapters.orm import ConsentEventRow, ConsentRow, ConsentTextRow, DisclosureRow
from broker.services.fhir import (
    Authorizer,
    DisclosureContext,
    Names,
    audit_event_resource,
    broker_id,
    capability_statement,
    collection,
    consent_resource,
    consent_state,
    fhir_id,
    patient_resource,
    person_from_search,
    searchset,
    special_categories,
)
from policies import load_policy
from tests.fhir_r4 import (
    CONSENT_STATE,
    validate_audit_event,
    validate_bundle,
    validate_capability_statement,
    validate_consent,
)

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
ISSUER = "https://broker.example"
NAMES = Names(ISSUER)
PERSON = "per_" + "1" * 32
REPRESENTATIVE = "per_" + "2" * 32
CONSENT_ID = "con_" + "3" * 32
ORGANISATIONS = {
    "kisalli": "Työllistämispalvelut Kisälli, Lieto",
    "varha-health": "Varha, Liedon terveysasema",
    "varha-social-work": "Varha, aikuissosiaalityö",
}
TEXT_BODY = "Annan suostumukseni siihen, että työkykyarvio luovutetaan Liedon terveysasemalle.\n"
TEXT = ConsentTextRow(
    sha256=hashlib.sha256(TEXT_BODY.encode()).hexdigest(),
    version="consent-text/2",
    language="fi",
    text=TEXT_BODY,
    created_at=NOW,
)


def consent(**overrides: Any) -> ConsentRow:
    values: dict[str, Any] = {
        "id": CONSENT_ID,
        "person_id": PERSON,
        "version": 1,
        "status": "active",
        "requester_org": "kisalli",
        "recipients": ["varha-health"],
        "categories": ["work_assessment"],
        "purposes": ["work_capacity_assessment"],
        "valid_from": NOW,
        "valid_until": NOW + timedelta(days=180),
        "bound_to_org": None,
        "explicit": True,
        "written": False,
        "method": "in_person",
        "given_by": "person",
        "representative_id": None,
        "mandate": None,
        "recorded_by_org": "kisalli",
        "recorded_by_actor": "kisalli-staff-1",
        "recorded_by_role": "individual_coach",
        "witness": "Pekka Salo",
        "text_sha256": TEXT.sha256,
        "language": "fi",
        "request_id": None,
        "created_at": NOW,
        "withdrawn_at": None,
    }
    values.update(overrides)
    return ConsentRow(**values)


def event(action: str, at: datetime, version: int, by_kind: str = "professional", **values: Any) -> ConsentEventRow:
    return ConsentEventRow(
        consent_id=CONSENT_ID, version=version, action=action, at=at, by_kind=by_kind, detail={}, **values
    )


GRANTED = event("grant", NOW, 1, by_org="kisalli", by_actor="kisalli-staff-1")


def resource(row: ConsentRow, events: list[ConsentEventRow] | None = None, now: datetime = NOW) -> dict[str, Any]:
    found = consent_resource(
        row,
        TEXT,
        events if events is not None else [GRANTED],
        names=NAMES,
        organisations=ORGANISATIONS,
        special=special_categories(load_policy(), row.categories),
        now=now,
    )
    validate_consent(found)
    return found


def extension(found: dict[str, Any], name: str) -> dict[str, Any] | None:
    url = f"{ISSUER}/fhir/StructureDefinition/{name}"
    matches = [e for e in found.get("extension", []) if e["url"] == url]
    assert len(matches) <= 1
    return matches[0] if matches else None


# --- Consent -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "valid_until", "expected"),
    [
        ("active", NOW + timedelta(days=1), "active"),
        ("active", None, "active"),
        # Its end has passed, before the expiry job marked it: not in force, as the policy sees it.
        ("active", NOW, "inactive"),
        ("withdrawn", NOW + timedelta(days=1), "inactive"),
        ("expired", NOW - timedelta(days=1), "inactive"),
        ("superseded", None, "inactive"),
    ],
)
def test_a_consent_state_is_an_r4_consent_state_code(status: str, valid_until: datetime | None, expected: str) -> None:
    assert consent_state(status, valid_until, NOW) == expected
    assert expected in CONSENT_STATE


def test_an_active_consent_is_a_permit_for_its_recipients_categories_purposes_and_term() -> None:
    found = resource(consent(recipients=["kisalli", "varha-health"], purposes=["service_delivery", "follow_up"]))
    assert found["resourceType"] == "Consent" and found["status"] == "active"
    assert found["id"] == "con-" + "3" * 32
    assert found["identifier"] == [{"system": f"{ISSUER}/fhir/NamingSystem/consent-id", "value": CONSENT_ID}]
    assert found["scope"]["coding"][0]["code"] == "patient-privacy"
    assert [c["coding"][0]["code"] for c in found["category"]] == ["59284-0", "64292-6"]
    assert found["patient"]["reference"] == "Patient/per-" + "1" * 32
    assert found["patient"]["identifier"]["value"] == PERSON
    assert found["organization"][0]["reference"] == "Organization/kisalli"
    provision = found["provision"]
    assert provision["type"] == "permit"
    assert provision["period"] == {"start": "2026-01-15T09:00:00Z", "end": "2026-07-14T09:00:00Z"}
    assert [(a["role"]["coding"][0]["code"], a["reference"]["reference"]) for a in provision["actor"]] == [
        ("IRCP", "Organization/kisalli"),
        ("IRCP", "Organization/varha-health"),
    ]
    assert provision["action"][0]["coding"][0]["code"] == "disclose"
    assert provision["purpose"] == [
        {"system": f"{ISSUER}/fhir/CodeSystem/purpose", "code": "service_delivery"},
        {"system": f"{ISSUER}/fhir/CodeSystem/purpose", "code": "follow_up"},
    ]
    assert provision["class"] == [{"system": f"{ISSUER}/fhir/CodeSystem/category", "code": "work_assessment"}]
    assert extension(found, "withdrawn-at") is None


def test_the_requester_that_receives_nothing_is_no_actor_of_the_permit() -> None:
    found = resource(consent(requester_org="kisalli", recipients=["varha-health"]))
    actors = {a["reference"]["identifier"]["value"] for a in found["provision"]["actor"]}
    assert actors == {"varha-health"}
    assert found["organization"][0]["identifier"]["value"] == "kisalli"


def test_a_withdrawn_consent_is_inactive_says_when_and_keeps_the_term_it_was_given_for() -> None:
    withdrawn_at = NOW + timedelta(days=3)
    row = consent(status="withdrawn", version=2, withdrawn_at=withdrawn_at)
    found = resource(row, [GRANTED, event("withdraw", withdrawn_at, 2, by_kind="person", by_actor=PERSON)])
    assert found["status"] == "inactive"
    assert extension(found, "withdrawn-at") == {
        "url": f"{ISSUER}/fhir/StructureDefinition/withdrawn-at",
        "valueDateTime": "2026-01-18T09:00:00Z",
    }
    assert found["provision"]["period"]["end"] == "2026-07-14T09:00:00Z"
    assert found["meta"] == {"versionId": "2", "lastUpdated": "2026-01-18T09:00:00Z"}


def test_an_expired_consent_is_inactive_and_its_period_ends_with_its_term() -> None:
    found = resource(consent(), now=NOW + timedelta(days=181))
    assert found["status"] == "inactive"
    assert found["provision"]["period"]["end"] == "2026-07-14T09:00:00Z"
    assert extension(found, "withdrawn-at") is None


def test_a_consent_until_withdrawn_has_an_open_period() -> None:
    assert resource(consent(valid_until=None))["provision"]["period"] == {"start": "2026-01-15T09:00:00Z"}


def test_the_person_who_agreed_is_the_performer_or_their_representative() -> None:
    assert resource(consent())["performer"][0]["reference"] == "Patient/per-" + "1" * 32
    given = resource(consent(given_by="representative", representative_id=REPRESENTATIVE, mandate="custodian"))
    [performer] = given["performer"]
    assert performer["reference"] == "RelatedPerson/per-" + "2" * 32
    assert performer["identifier"]["value"] == REPRESENTATIVE
    assert performer["display"] == "legal representative (custodian)"


def test_art_9_2_a_joins_art_6_1_a_only_for_special_categories() -> None:
    special = resource(consent(categories=["work_assessment"]))["policyRule"]["coding"]
    plain = resource(consent(categories=["attendance_report"]))["policyRule"]["coding"]
    assert [c["code"] for c in special] == ["A6-1-a", "A9-2-a"]
    assert [c["code"] for c in plain] == ["A6-1-a"]
    assert {c["system"] for c in special + plain} == {"https://w3id.org/dpv/legal/eu/gdpr"}


def test_the_text_shown_is_attached_with_its_sha256_and_the_r4_sha1() -> None:
    attachment = resource(consent())["sourceAttachment"]
    data = base64.b64decode(attachment["data"])
    assert data.decode("utf-8") == TEXT_BODY and attachment["size"] == len(data)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
    [sha256] = attachment["extension"]
    assert sha256["valueString"] == TEXT.sha256 == hashlib.sha256(data).hexdigest()
    assert attachment["language"] == "fi" and attachment["contentType"].startswith("text/plain")


def test_how_a_consent_was_given_and_its_binding_to_a_relationship_are_extensions() -> None:
    found = resource(consent(bound_to_org="kisalli", method="paper", written=True))
    assert extension(found, "consent-method") == {
        "url": f"{ISSUER}/fhir/StructureDefinition/consent-method",
        "valueCode": "paper",
    }
    assert extension(found, "written")["valueBoolean"] is True  # type: ignore[index]
    assert extension(found, "explicit")["valueBoolean"] is True  # type: ignore[index]
    bound = extension(found, "bound-to-relationship")
    assert bound is not None and bound["valueReference"]["reference"] == "Organization/kisalli"


# --- AuditEvent ----------------------------------------------------------------------------------------------------

DISCLOSURE_ID = "dis_" + "4" * 32
RECORD_ID = "rec_" + "5" * 32
COMMITMENT = "6" * 64
CONSENT_BASIS = {
    "kind": "consent",
    "rule": "F7",
    "reference": "703/2023 53 §",
    "lawful_basis": "GDPR 6(1)(a), 9(2)(a)",
    "consent_id": CONSENT_ID,
    "consent_version": 1,
    "exception_ground": None,
}


def disclosure(**overrides: Any) -> DisclosureRow:
    values: dict[str, Any] = {
        "id": DISCLOSURE_ID,
        "person_id": PERSON,
        "kind": "request",
        "recipient_org": "varha-health",
        "partner": "varha-health",
        "category": "work_assessment",
        "purpose": "work_capacity_assessment",
        "effect": "permit",
        "basis": CONSENT_BASIS,
        "record_ids": [RECORD_ID],
        "fields": ["assessment", "recommendation"],
        "payload_sha256": "7" * 64,
        "policy_version": "8" * 64,
        "audit_entry_id": 42,
        "created_at": NOW,
    }
    values.update(overrides)
    return DisclosureRow(**values)


def context(**overrides: Any) -> DisclosureContext:
    values: dict[str, Any] = {
        "entry_id": 42,
        "index": 17,
        "acting_org": "varha-health",
        "actor_role": "physician",
        "actor_commitment": COMMITMENT,
        "custodians": ("kisalli",),
        "authorizer": Authorizer("person"),
    }
    values.update(overrides)
    return DisclosureContext(**values)


def audit_event(row: DisclosureRow, found_context: DisclosureContext) -> dict[str, Any]:
    found = audit_event_resource(row, found_context, names=NAMES, organisations=ORGANISATIONS)
    validate_audit_event(found)
    return found


def agents(found: dict[str, Any], system: str, code: str) -> list[dict[str, Any]]:
    return [
        a
        for a in found["agent"]
        if (a["type"]["coding"][0]["system"], a["type"]["coding"][0]["code"]) == (system, code)
    ]


def entities(found: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [e for e in found["entity"] if e.get("role", {}).get("code") == code]


DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def test_a_permitted_disclosure_is_a_balp_privacy_disclosure_at_source() -> None:
    found = audit_event(disclosure(), context())
    assert found["id"] == "dis-" + "4" * 32
    assert found["type"] == {"system": DCM, "code": "110106", "display": "Export"}
    assert found["subtype"][0]["system"] == "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
    assert found["subtype"][0]["code"] == "disclose"
    assert found["subtype"][1] == {"system": f"{ISSUER}/fhir/CodeSystem/disclosure-kind", "code": "request"}
    assert found["action"] == "R" and found["outcome"] == "0" and "outcomeDesc" not in found
    assert found["recorded"] == "2026-01-15T09:00:00Z"
    assert found["purposeOfEvent"][0]["coding"][0] == {
        "system": f"{ISSUER}/fhir/CodeSystem/purpose",
        "code": "work_capacity_assessment",
    }
    [recipient] = agents(found, DCM, "110152")
    assert recipient["who"]["reference"] == "Organization/varha-health"
    assert [a["who"]["reference"] for a in agents(found, SCT, "159541003")] == ["Organization/kisalli"]
    [authorizer] = agents(found, SCT, "429577009")
    assert authorizer["who"]["reference"] == "Patient/per-" + "1" * 32
    [application] = agents(found, DCM, "110150")
    assert application["who"]["identifier"] == {
        "system": f"{ISSUER}/fhir/NamingSystem/partner-id",
        "value": "varha-health",
    }
    [professional] = agents(found, V3, "IRCP")
    assert professional["requestor"] is True
    assert professional["who"]["identifier"]["value"] == COMMITMENT
    assert professional["role"][0]["coding"][0]["code"] == "physician"


def test_the_source_agent_is_the_broker_and_the_observer() -> None:
    # BALP's invariant val-audit-source: the source agent's `who` is the event's `source.observer`.
    found = audit_event(disclosure(), context())
    [source] = agents(found, DCM, "110153")
    assert source["who"] == found["source"]["observer"]
    assert source["who"]["identifier"] == {"system": "urn:ietf:rfc:3986", "value": ISSUER}
    assert source["network"] == {"address": ISSUER, "type": "5"}
    assert found["source"]["type"][0]["code"] == "4" and found["source"]["site"] == "broker.example"


def test_the_patient_the_records_the_basis_and_the_log_entry_are_entities() -> None:
    found = audit_event(disclosure(), context())
    [patient] = entities(found, "1")
    assert patient["type"]["code"] == "1" and patient["what"]["reference"] == "Patient/per-" + "1" * 32
    [record] = [e for e in entities(found, "3") if "what" in e]
    assert record["what"]["identifier"]["value"] == RECORD_ID
    assert record["detail"] == [{"type": "category", "valueString": "work_assessment"}]
    [query] = entities(found, "24")
    assert {d["type"]: d["valueString"] for d in query["detail"]} == {
        "category": "work_assessment",
        "fields": "assessment,recommendation",
        "payload_sha256": "7" * 64,
    }
    [basis] = entities(found, "13")
    assert basis["what"]["reference"] == "Consent/con-" + "3" * 32
    assert basis["what"]["identifier"]["value"] == CONSENT_ID
    assert {d["type"]: d["valueString"] for d in basis["detail"]}.items() >= {
        "basis": "consent",
        "rule": "F7",
        "consent_version": "1",
    }.items()
    [log_entry] = [e for e in found["entity"] if e.get("name") == "audit log entry"]
    assert log_entry["what"]["identifier"] == {"system": f"{ISSUER}/fhir/NamingSystem/audit-log-index", "value": "17"}


def test_before_sequencing_the_log_entry_is_named_by_its_append_id() -> None:
    found = audit_event(disclosure(), context(index=None))
    [log_entry] = [e for e in found["entity"] if e.get("name") == "audit log entry"]
    assert log_entry["what"]["identifier"] == {"system": f"{ISSUER}/fhir/NamingSystem/audit-entry-id", "value": "42"}


def test_a_refused_request_is_a_minor_failure_naming_the_policy_version_that_found_no_basis() -> None:
    row = disclosure(effect="deny", basis=None, record_ids=[], fields=[], payload_sha256=None)
    found = audit_event(row, context(custodians=(), authorizer=None))
    assert found["outcome"] == "4" and "no statute or consent" in found["outcomeDesc"]
    assert not agents(found, SCT, "159541003") and not agents(found, SCT, "429577009")
    assert not [e for e in entities(found, "3") if "what" in e]
    [basis] = entities(found, "13")
    assert basis["name"] == "no legal basis"
    assert basis["what"]["identifier"] == {"system": f"{ISSUER}/fhir/NamingSystem/policy-version", "value": "8" * 64}


def test_a_statutory_basis_names_its_rule_and_statute() -> None:
    statute = {"kind": "statute", "rule": "F5", "reference": "703/2023 14 §", "lawful_basis": "GDPR 6(1)(c)"}
    found = audit_event(disclosure(basis=statute), context(authorizer=None))
    [basis] = entities(found, "13")
    assert basis["what"]["identifier"] == {"system": f"{ISSUER}/fhir/NamingSystem/policy-rule", "value": "F5"}
    assert basis["description"] == "703/2023 14 §" and basis["name"] == "statute"


def test_a_notice_names_its_sender_as_custodian_and_the_professional_as_its_author() -> None:
    row = disclosure(
        kind="notice", recipient_org="varha-social-work", partner="kisalli", record_ids=[], basis=None, effect="permit"
    )
    found = audit_event(
        row, context(acting_org="kisalli", actor_role="individual_coach", custodians=(), authorizer=None)
    )
    assert found["subtype"][1]["code"] == "notice"
    assert [a["who"]["reference"] for a in agents(found, SCT, "159541003")] == ["Organization/kisalli"]
    [recipient] = agents(found, DCM, "110152")
    assert recipient["who"]["reference"] == "Organization/varha-social-work"
    [author] = agents(found, V3, "AUT")
    assert author["requestor"] is True and not agents(found, V3, "IRCP")
    assert entities(found, "3")[0]["name"] == "work_assessment"  # what was sent


def test_a_representative_who_gave_the_consent_is_the_authorizer() -> None:
    found = audit_event(disclosure(), context(authorizer=Authorizer("representative", REPRESENTATIVE, "custodian")))
    [authorizer] = agents(found, SCT, "429577009")
    assert authorizer["who"]["reference"] == "RelatedPerson/per-" + "2" * 32


# --- ids, searches and Bundles -------------------------------------------------------------------------------------


def test_broker_ids_become_fhir_ids() -> None:
    assert fhir_id(CONSENT_ID) == "con-" + "3" * 32
    assert fhir_id("varha-social-work") == "varha-social-work"
    with pytest.raises(ValueError, match="FHIR"):
        fhir_id("a b")


@pytest.mark.parametrize("value", [PERSON, "per-" + "1" * 32, "Patient/per-" + "1" * 32, "Patient/" + PERSON])
def test_a_patient_search_takes_the_reference_the_fhir_id_or_the_brokers_id(value: str) -> None:
    assert person_from_search(value) == PERSON


def test_a_patient_search_that_names_no_broker_id_is_looked_up_as_given() -> None:
    assert person_from_search("Patient/somebody") == "somebody"
    assert person_from_search("per-123") == "per-123"


def test_a_searchset_holds_every_match_with_its_total() -> None:
    resources = [resource(consent()), audit_event(disclosure(), context())]
    bundle = searchset(resources, names=NAMES, self_url=f"{ISSUER}/api/v1/fhir/Consent?patient={PERSON}", now=NOW)
    validate_bundle(bundle)
    assert bundle["total"] == 2 and bundle["timestamp"] == "2026-01-15T09:00:00Z"
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"{ISSUER}/api/v1/fhir/Consent/con-" + "3" * 32,
        f"{ISSUER}/api/v1/fhir/AuditEvent/dis-" + "4" * 32,
    ]
    assert {e["search"]["mode"] for e in bundle["entry"]} == {"match"}
    assert bundle["link"] == [{"relation": "self", "url": f"{ISSUER}/api/v1/fhir/Consent?patient={PERSON}"}]


def test_an_empty_search_is_a_valid_searchset() -> None:
    bundle = searchset([], names=NAMES, self_url=f"{ISSUER}/api/v1/fhir/AuditEvent?patient={PERSON}", now=NOW)
    validate_bundle(bundle)
    assert bundle["total"] == 0 and "entry" not in bundle  # R4 json.html: no empty arrays


def test_an_export_is_a_collection_with_the_patient() -> None:
    bundle = collection([patient_resource(PERSON, NAMES), resource(consent())], names=NAMES, now=NOW)
    validate_bundle(bundle)
    assert bundle["type"] == "collection" and "total" not in bundle
    assert bundle["entry"][0]["resource"] == {
        "resourceType": "Patient",
        "id": "per-" + "1" * 32,
        "identifier": [{"system": f"{ISSUER}/fhir/NamingSystem/person-id", "value": PERSON}],
    }


# --- reading by id -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broker_value", [CONSENT_ID, DISCLOSURE_ID, "not_" + "a" * 32])
def test_a_resources_fhir_id_leads_back_to_the_brokers_id(broker_value: str) -> None:
    assert broker_id(fhir_id(broker_value)) == broker_value


@pytest.mark.parametrize(
    "resource_id",
    [
        CONSENT_ID,  # the broker's own id: a FHIR id cannot hold "_"
        "con-" + "3" * 31,
        "con-" + "3" * 33,
        "con-" + "A" * 32,  # the broker's ids are lower-case hex
        "Consent/con-" + "3" * 32,
        "varha-health",
        "",
    ],
)
def test_an_id_the_broker_never_gives_names_no_resource(resource_id: str) -> None:
    assert broker_id(resource_id) is None


# --- the capability statement ------------------------------------------------------------------------------------

TOKEN_ENDPOINT = f"{ISSUER}/oauth/token"
SERVER_METADATA = f"{ISSUER}/.well-known/oauth-authorization-server"


def statement(version: str | None = "1.2.3") -> dict[str, Any]:
    found = capability_statement(
        NAMES, token_endpoint=TOKEN_ENDPOINT, server_metadata=SERVER_METADATA, software_version=version
    )
    validate_capability_statement(found)
    return found


def test_the_capability_statement_describes_this_r4_json_server() -> None:
    found = statement()
    assert found["resourceType"] == "CapabilityStatement" and found["status"] == "active"
    assert (found["kind"], found["fhirVersion"], found["format"]) == ("instance", "4.0.1", ["json"])
    assert found["implementation"]["url"] == f"{ISSUER}/api/v1/fhir" == NAMES.base
    assert found["url"] == f"{ISSUER}/api/v1/fhir/metadata"
    assert found["software"] == {"name": "Consent Broker", "version": "1.2.3"} and found["version"] == "1.2.3"
    [rest] = found["rest"]
    assert rest["mode"] == "server"


def test_each_resource_is_read_and_searched_by_patient() -> None:
    [rest] = statement()["rest"]
    by_type = {resource["type"]: resource for resource in rest["resource"]}
    assert list(by_type) == ["Consent", "AuditEvent"]
    for resource in by_type.values():
        assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]
        [parameter] = resource["searchParam"]
        assert (parameter["name"], parameter["type"]) == ("patient", "reference")
    assert by_type["Consent"]["searchParam"][0]["definition"] == "http://hl7.org/fhir/SearchParameter/clinical-patient"
    assert by_type["AuditEvent"]["searchParam"][0]["definition"] == (
        "http://hl7.org/fhir/SearchParameter/AuditEvent-patient"
    )
    # A Consent's meta.versionId is its version; an AuditEvent has none.
    assert (by_type["Consent"]["versioning"], by_type["AuditEvent"]["versioning"]) == ("versioned", "no-version")


def test_the_security_is_oauth_with_private_key_jwt_and_dpop() -> None:
    [rest] = statement()["rest"]
    security = rest["security"]
    assert security["cors"] is False  # the broker sends no CORS headers: browsers' pages cannot call it
    [service] = security["service"]
    assert service["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "OAuth",
            "display": "OAuth",
        }
    ]
    for named in ("private_key_jwt", "DPoP", "RFC 9449", "RFC 7523", TOKEN_ENDPOINT, SERVER_METADATA):
        assert named in security["description"], named


def test_without_a_known_version_the_statement_names_none() -> None:
    found = statement(version=None)
    assert "version" not in found and found["software"] == {"name": "Consent Broker"}
