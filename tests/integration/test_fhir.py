"""FHIR R4 over the API and the export, on the demo's data (broker/demo.py `seed`): every demo person's Consent and
AuditEvent Bundles validate as FHIR R4; a partner sees its own consents and disclosures, the data-protection
officer's system every disclosure, and the read is logged; bad searches are 400 and 404 problems; every `fullUrl` of
a search reads back the same resource, with the search's visibility; the capability statement is public and says
what the server does; `broker export fhir` writes a validating Bundle per person. And the consent as an ISO/IEC TS
27560 record, which states the same terms as the consent and verifies signed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import AuditEntryRow, AuditLeafRow, ConsentRow, DisclosureRow, PersonRow
from broker.adapters.signing import SignatureError, verify_jws
from broker.app import build_broker, create_app
from broker.config import Settings
from broker.demo import DPO_PARTNER, ORGANISATIONS, seed
from broker.domain.clock import FixedClock, utc
from broker.services import fhir
from broker.services.sequencer import Sequencer
from tests.fhir_r4 import validate_audit_event, validate_bundle, validate_capability_statement, validate_consent
from tests.support import ROOT, Env

PARTNERS = [org for org, *_ in ORGANISATIONS]
MISSING_PERSON = "per_" + "0" * 32


@dataclass
class Demo:
    env: Env
    persons: dict[str, str]  # demo person key (mikko, sari, elias, leena) → person_id

    @property
    def broker(self) -> Any:
        return self.env.broker

    def fhir(self, org: str, resource: str, patient: str, **kwargs: Any) -> Any:
        response = self.env.get(org, f"/fhir/{resource}?patient={patient}", **kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/fhir+json"
        bundle = response.get_json()
        validate_bundle(bundle)
        return bundle


@pytest.fixture
def demo(settings: Settings, clock: FixedClock) -> Iterator[Demo]:
    """The demo's persons and service path, made through the use cases as `broker demo` makes them."""
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    broker = build_broker(settings, clock=clock)
    persons = seed(broker)
    app = create_app(settings, broker=broker)
    app.testing = True
    yield Demo(Env(broker=broker, app=app, client=app.test_client(), clock=clock), persons)
    broker.db.dispose()


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == kind]


def identifiers(resources_: list[dict[str, Any]]) -> list[str]:
    """The broker's ids of Consents (their identifier) or AuditEvents (the disclosure id, from the FHIR id)."""
    found = []
    for resource in resources_:
        if resource["resourceType"] == "Consent":
            found.append(resource["identifier"][0]["value"])
        else:
            found.append(resource["id"].replace("-", "_", 1))
    return found


def extension(resource: dict[str, Any], name: str) -> Any:
    return next((e for e in resource.get("extension", []) if e["url"].endswith(f"/StructureDefinition/{name}")), None)


def consents_of(demo: Demo, person_id: str) -> list[ConsentRow]:
    with demo.broker.uow(write=False) as uow:
        return list(uow.session.scalars(select(ConsentRow).where(ConsentRow.person_id == person_id)))


def disclosures_of(demo: Demo, person_id: str) -> list[DisclosureRow]:
    with demo.broker.uow(write=False) as uow:
        return list(
            uow.session.scalars(
                select(DisclosureRow)
                .where(DisclosureRow.person_id == person_id)
                .order_by(DisclosureRow.created_at, DisclosureRow.id)
            )
        )


# --- every demo person validates ---------------------------------------------------------------------------------


def test_every_demo_persons_consents_and_audit_events_are_valid_fhir_r4(demo: Demo) -> None:
    assert set(demo.persons) == {"mikko", "sari", "elias", "leena"}
    for person_id in demo.persons.values():
        events = demo.fhir(DPO_PARTNER, "AuditEvent", person_id)
        assert events["total"] == len(events.get("entry", [])) == len(disclosures_of(demo, person_id))
        shown: set[str] = set()
        for org in PARTNERS:
            consents = demo.fhir(org, "Consent", person_id)
            assert consents["total"] == len(consents.get("entry", []))
            shown |= set(identifiers(resources(consents, "Consent")))
            demo.fhir(org, "AuditEvent", person_id)
        # Every consent is visible to someone: its requester.
        assert shown == {row.id for row in consents_of(demo, person_id)}
    # The demo has something to show: Mikko's consent and disclosures, Sari's withdrawn consent.
    assert demo.fhir(DPO_PARTNER, "AuditEvent", demo.persons["mikko"])["total"] >= 3
    assert demo.fhir("kisalli", "Consent", demo.persons["sari"])["total"] == 1


# --- Consent -------------------------------------------------------------------------------------------------------


def test_a_partner_sees_only_the_consents_naming_its_organisation(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    [consent] = [row for row in consents_of(demo, mikko)]
    for org in PARTNERS:
        shown = identifiers(resources(demo.fhir(org, "Consent", mikko), "Consent"))
        named = org == consent.requester_org or org in consent.recipients
        assert shown == ([consent.id] if named else []), org
    [resource] = resources(demo.fhir("varha-health", "Consent", mikko), "Consent")
    assert resource["status"] == "active"
    assert resource["organization"][0]["identifier"]["value"] == "kisalli"
    assert [a["reference"]["identifier"]["value"] for a in resource["provision"]["actor"]] == ["varha-health"]
    assert [c["code"] for c in resource["provision"]["class"]] == ["work_assessment"]
    assert [p["code"] for p in resource["provision"]["purpose"]] == ["work_capacity_assessment"]
    assert extension(resource, "consent-method")["valueCode"] == "in_person"


def test_a_withdrawn_consent_is_inactive_with_the_moment_of_withdrawal(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["sari"])
    [resource] = resources(demo.fhir("kisalli", "Consent", demo.persons["sari"]), "Consent")
    assert row.status == "withdrawn" and resource["status"] == "inactive"
    assert extension(resource, "withdrawn-at")["valueDateTime"] == utc(row.withdrawn_at).isoformat().replace(
        "+00:00", "Z"
    )
    assert resource["meta"]["versionId"] == "2"


def test_a_consent_past_its_end_is_inactive(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    assert resources(demo.fhir("kisalli", "Consent", mikko), "Consent")[0]["status"] == "active"
    demo.env.clock.advance(days=181)
    demo.env._tokens.clear()  # the cached tokens expired with the clock
    assert resources(demo.fhir("kisalli", "Consent", mikko), "Consent")[0]["status"] == "inactive"


def test_the_text_attached_to_a_consent_is_the_stored_text(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    [resource] = resources(demo.fhir("kisalli", "Consent", mikko), "Consent")
    receipt = demo.env.get("kisalli", f"/consents/{resource['identifier'][0]['value']}/receipt").get_json()["receipt"]
    jwks = demo.env.client.get("/.well-known/jwks.json").get_json()
    text = verify_jws(receipt, jwks, typ="consent-receipt+jws")["text"]
    attachment = resource["sourceAttachment"]
    assert base64.b64decode(attachment["data"]).decode("utf-8") == text["text"]
    assert hashlib.sha256(base64.b64decode(attachment["data"])).hexdigest() == text["sha256"]
    assert extension(attachment, "sha256")["valueString"] == text["sha256"]


# --- AuditEvent ----------------------------------------------------------------------------------------------------


def test_the_dpo_sees_every_disclosure_and_a_partner_only_those_made_to_it_or_by_it(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    rows = disclosures_of(demo, mikko)
    assert identifiers(resources(demo.fhir(DPO_PARTNER, "AuditEvent", mikko), "AuditEvent")) == [r.id for r in rows]
    for org in PARTNERS:
        shown = identifiers(resources(demo.fhir(org, "AuditEvent", mikko), "AuditEvent"))
        assert shown == [r.id for r in rows if org in (r.recipient_org, r.partner)], org
    # Kisälli's own request and the notice it sent, not the health centre's or social work's requests.
    assert len(identifiers(resources(demo.fhir("kisalli", "AuditEvent", mikko), "AuditEvent"))) == 2


def test_an_audit_event_states_the_disclosure_as_the_log_holds_it(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    [row] = [r for r in disclosures_of(demo, mikko) if r.recipient_org == "varha-health"]
    [event] = [
        e
        for e in resources(demo.fhir("varha-health", "AuditEvent", mikko), "AuditEvent")
        if e["id"] == row.id.replace("_", "-")
    ]
    assert event["outcome"] == "0" and event["purposeOfEvent"][0]["coding"][0]["code"] == row.purpose
    records = [e["what"]["identifier"]["value"] for e in event["entity"] if e.get("role", {}).get("code") == "3"]
    assert records == row.record_ids and records
    [basis] = [e for e in event["entity"] if e.get("role", {}).get("code") == "13"]
    assert basis["what"]["identifier"]["value"] == row.basis["consent_id"]
    custodians = [
        a["who"]["identifier"]["value"] for a in event["agent"] if a["type"]["coding"][0]["code"] == "159541003"
    ]
    assert custodians == ["kisalli"]  # Kisälli deposited the work assessment
    [log_entry] = [e for e in event["entity"] if e.get("name") == "audit log entry"]
    assert log_entry["what"]["identifier"]["value"] == str(row.audit_entry_id)  # not sequenced yet: its append id


def test_once_sequenced_the_audit_event_names_the_entrys_tree_index(demo: Demo) -> None:
    Sequencer(demo.broker).run_once()
    mikko = demo.persons["mikko"]
    with demo.broker.uow(write=False) as uow:
        index = {
            entry_id: idx for entry_id, idx in uow.session.execute(select(AuditLeafRow.entry_id, AuditLeafRow.idx))
        }
    rows = {r.id: r for r in disclosures_of(demo, mikko)}
    for event in resources(demo.fhir(DPO_PARTNER, "AuditEvent", mikko), "AuditEvent"):
        row = rows[event["id"].replace("-", "_", 1)]
        [log_entry] = [e for e in event["entity"] if e.get("name") == "audit log entry"]
        assert log_entry["what"]["identifier"]["system"].endswith("/audit-log-index")
        assert log_entry["what"]["identifier"]["value"] == str(index[row.audit_entry_id])
        # …the position an inclusion proof starts from.
        found = demo.env.get(DPO_PARTNER, f"/audit/entries/{index[row.audit_entry_id]}").get_json()
        assert found["entry_id"] == row.audit_entry_id and found["entry"]["person_id"] == mikko


def test_reading_audit_events_is_logged_with_who_read_whose(demo: Demo) -> None:
    mikko = demo.persons["mikko"]

    def queries() -> list[dict[str, Any]]:
        with demo.broker.uow(write=False) as uow:
            entries = uow.session.scalars(
                select(AuditEntryRow.entry).where(
                    AuditEntryRow.event == "audit:query", AuditEntryRow.person_id == mikko
                )
            )
            return [json.loads(bytes(e)) for e in entries]

    assert queries() == []
    demo.fhir("kisalli", "Consent", mikko)  # a consent list is not a read of the log
    assert queries() == []
    total = demo.fhir(DPO_PARTNER, "AuditEvent", mikko)["total"]
    own = demo.fhir("kisalli", "AuditEvent", mikko)["total"]
    dpo, partner = queries()
    assert (dpo["organisation"], dpo["detail"]["returned"], dpo["detail"]["filters"]["scope"]) == (
        "varha-social-work",
        total,
        "all",
    )
    assert (partner["partner"], partner["detail"]["returned"], partner["detail"]["filters"]["scope"]) == (
        "kisalli",
        own,
        "own",
    )
    assert {dpo["detail"]["surface"], partner["detail"]["surface"]} == {"fhir"}


# --- searches that go wrong, and scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["Consent", "AuditEvent"])
def test_a_missing_or_blank_patient_is_a_400_naming_the_parameter(demo: Demo, resource: str) -> None:
    for query in ("", "?patient=", f"?patient={demo.persons['mikko']}&status=active"):
        response = demo.env.get("kisalli", f"/fhir/{resource}{query}")
        assert response.status_code == 400, query
        problem = response.get_json()
        assert response.mimetype == "application/problem+json" and problem["code"] == "invalid_request"
        assert problem["field"] == ("status" if "status" in query else "patient"), problem


@pytest.mark.parametrize("resource", ["Consent", "AuditEvent"])
def test_an_unknown_patient_is_a_404_problem(demo: Demo, resource: str) -> None:
    for patient in (MISSING_PERSON, "Patient/per-" + "0" * 32, "somebody"):
        response = demo.env.get("kisalli", f"/fhir/{resource}?patient={patient}")
        assert response.status_code == 404, patient
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "unknown_person" and response.get_json()["field"] == "patient"


def test_the_patient_may_be_named_as_a_reference_the_fhir_id_or_the_brokers_id(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    fhir_id = mikko.replace("_", "-")
    answers = [demo.fhir("kisalli", "Consent", patient)["entry"] for patient in (mikko, fhir_id, f"Patient/{fhir_id}")]
    assert answers[0] and answers[0] == answers[1] == answers[2]


def test_consents_need_scope_consents_and_audit_events_audit_read_or_disclosures(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    refused = demo.env.get(DPO_PARTNER, f"/fhir/Consent?patient={mikko}")
    assert refused.status_code == 403 and refused.get_json()["code"] == "insufficient_scope"
    token = demo.env.token("kisalli", scope="persons consents")
    path = f"/api/v1/fhir/AuditEvent?patient={mikko}"
    refused = demo.env.client.get(path, headers=demo.env.token_headers(token, "GET", path))
    assert refused.status_code == 403 and refused.get_json()["code"] == "insufficient_scope"
    assert 'scope="audit:read disclosures"' in refused.headers["WWW-Authenticate"]
    token = demo.env.token("kisalli", scope="disclosures")
    allowed = demo.env.client.get(path, headers=demo.env.token_headers(token, "GET", path))
    assert allowed.status_code == 200 and allowed.mimetype == "application/fhir+json"


# --- reading by id (R4 http.html#read) ------------------------------------------------------------------------------


def read(demo: Demo, org: str, url: str, **kwargs: Any) -> Any:
    """GET an absolute URL the broker gave (a `fullUrl`) as `org`."""
    issuer = demo.broker.settings.issuer
    assert url.startswith(issuer + "/api/v1/fhir/"), url
    return demo.env.call(org, "GET", url.removeprefix(issuer), **kwargs)


def audit_queries(demo: Demo) -> list[dict[str, Any]]:
    with demo.broker.uow(write=False) as uow:
        entries = uow.session.scalars(
            select(AuditEntryRow.entry).where(AuditEntryRow.event == "audit:query").order_by(AuditEntryRow.id)
        )
        return [json.loads(bytes(e)) for e in entries]


def test_every_full_url_of_a_search_reads_back_the_same_resource(demo: Demo) -> None:
    validators = {"Consent": validate_consent, "AuditEvent": validate_audit_event}
    searches = [(org, "Consent") for org in PARTNERS] + [(org, "AuditEvent") for org in (*PARTNERS, DPO_PARTNER)]
    read_back = 0
    for person_id in demo.persons.values():
        for org, resource_type in searches:
            for entry in demo.fhir(org, resource_type, person_id).get("entry", []):
                response = read(demo, org, entry["fullUrl"])
                assert response.status_code == 200, response.get_data(as_text=True)
                assert response.mimetype == "application/fhir+json"
                assert response.get_json() == entry["resource"], entry["fullUrl"]
                validators[resource_type](response.get_json())
                read_back += 1
    assert read_back >= 10  # the demo's consents and disclosures, seen by each of those they concern


def test_a_consent_is_read_by_the_organisations_named_in_it_and_is_404_to_the_others(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["mikko"])
    path = f"/fhir/Consent/{fhir.fhir_id(row.id)}"
    for org in PARTNERS:
        response = demo.env.get(org, path)
        if org in (row.requester_org, *row.recipients):
            assert response.status_code == 200, org
            assert fhir.broker_id(response.get_json()["id"]) == row.id
        else:
            # Not named in it: the same answer as for a consent that does not exist, so nothing is revealed.
            missing = demo.env.get(org, "/fhir/Consent/con-" + "0" * 32)
            assert response.status_code == missing.status_code == 404, org
            assert response.mimetype == "application/problem+json"
            assert response.get_json()["code"] == missing.get_json()["code"] == "unknown_consent"


def test_a_consent_read_carries_its_version_as_etag_and_its_last_change(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["sari"])  # withdrawn: version 2
    response = demo.env.get("kisalli", f"/fhir/Consent/{fhir.fhir_id(row.id)}")
    resource = response.get_json()
    assert response.headers["ETag"] == 'W/"2"' == f'W/"{resource["meta"]["versionId"]}"'
    assert response.last_modified == utc(row.withdrawn_at).replace(microsecond=0)
    assert response.headers["Cache-Control"] == "no-store"  # personal data: never cached


def test_an_audit_event_is_read_as_the_search_shows_it(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    rows = disclosures_of(demo, mikko)
    assert rows
    for row in rows:
        path = f"/fhir/AuditEvent/{fhir.fhir_id(row.id)}"
        assert demo.env.get(DPO_PARTNER, path).status_code == 200  # the DPO's system reads every one
        for org in PARTNERS:
            response = demo.env.get(org, path)
            visible = org in (row.recipient_org, row.partner)
            assert response.status_code == (200 if visible else 404), (org, row.id)
            if not visible:
                assert response.get_json()["code"] == "not_found"


def test_reading_an_audit_event_is_logged_and_a_miss_or_a_consent_read_is_not(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    [row] = [r for r in disclosures_of(demo, mikko) if r.recipient_org == "varha-health"]
    resource_id = fhir.fhir_id(row.id)
    before = len(audit_queries(demo))
    [consent] = consents_of(demo, mikko)
    assert demo.env.get("kisalli", f"/fhir/Consent/{fhir.fhir_id(consent.id)}").status_code == 200
    assert demo.env.get("kisalli", f"/fhir/AuditEvent/{resource_id}").status_code == 404  # not Kisälli's
    assert demo.env.get(DPO_PARTNER, "/fhir/AuditEvent/dis-" + "0" * 32).status_code == 404
    assert len(audit_queries(demo)) == before  # nothing of the log was read
    assert demo.env.get("varha-health", f"/fhir/AuditEvent/{resource_id}").status_code == 200
    assert demo.env.get(DPO_PARTNER, f"/fhir/AuditEvent/{resource_id}").status_code == 200
    partner, dpo = audit_queries(demo)[before:]
    for entry, scope in ((partner, "own"), (dpo, "all")):
        assert entry["person_id"] == mikko
        assert entry["detail"] == {
            "surface": "fhir",
            "filters": {"resource": "AuditEvent", "id": resource_id, "scope": scope},
            "returned": 1,
        }
    assert partner["partner"] == "varha-health" and dpo["partner"] == DPO_PARTNER


def test_a_read_by_the_brokers_own_id_is_404_naming_the_fhir_id(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["mikko"])
    response = demo.env.get("kisalli", f"/fhir/Consent/{row.id}")
    assert response.status_code == 404 and response.get_json()["code"] == "unknown_consent"
    assert fhir.fhir_id(row.id) in response.get_json()["detail"]
    for resource_id in ("somebody", "con-" + "3" * 31, fhir.fhir_id(row.id).upper()):
        assert demo.env.get("kisalli", f"/fhir/Consent/{resource_id}").status_code == 404, resource_id


def test_reads_need_the_searches_scopes(demo: Demo) -> None:
    [consent] = consents_of(demo, demo.persons["mikko"])
    disclosure = next(r for r in disclosures_of(demo, demo.persons["mikko"]) if r.partner == "kisalli")
    refused = demo.env.get(DPO_PARTNER, f"/fhir/Consent/{fhir.fhir_id(consent.id)}")
    assert refused.status_code == 403 and refused.get_json()["code"] == "insufficient_scope"
    path = f"/api/v1/fhir/AuditEvent/{fhir.fhir_id(disclosure.id)}"
    token = demo.env.token("kisalli", scope="persons consents")
    refused = demo.env.client.get(path, headers=demo.env.token_headers(token, "GET", path))
    assert refused.status_code == 403 and 'scope="audit:read disclosures"' in refused.headers["WWW-Authenticate"]
    token = demo.env.token("kisalli", scope="disclosures")
    assert demo.env.client.get(path, headers=demo.env.token_headers(token, "GET", path)).status_code == 200
    assert demo.env.call(None, "GET", path).status_code == 401


def test_errors_are_problem_documents_even_to_a_client_asking_for_fhir(demo: Demo) -> None:
    # docs/api.md, "FHIR": one error format for the whole API, which the broker's own client relies on.
    fhir_json = {"Accept": "application/fhir+json"}
    for org, path, status in (
        ("kisalli", "/fhir/Consent/con-" + "0" * 32, 404),
        (None, "/fhir/AuditEvent/dis-" + "0" * 32, 401),
        ("kisalli", "/fhir/Consent?patient=", 400),
    ):
        response = demo.env.get(org, path, headers=fhir_json)
        assert response.status_code == status and response.mimetype == "application/problem+json", path
        assert response.get_json()["code"]


# --- the capability statement (R4 http.html#capabilities) ----------------------------------------------------------


def test_the_capability_statement_is_public_valid_and_cacheable(demo: Demo) -> None:
    response = demo.env.client.get("/api/v1/fhir/metadata")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    statement = response.get_json()
    validate_capability_statement(statement)
    assert (statement["kind"], statement["fhirVersion"], statement["format"]) == ("instance", "4.0.1", ["json"])
    # A token, even a bad one, is not looked at: the statement is what a client reads to learn how to get one.
    for authorization in (f"DPoP {demo.env.token('kisalli')}", "Bearer not-a-token"):
        again = demo.env.client.get("/api/v1/fhir/metadata", headers={"Authorization": authorization})
        assert again.status_code == 200 and again.get_json() == statement


def test_the_capability_statement_names_the_real_token_endpoint_and_base(demo: Demo) -> None:
    statement = demo.env.client.get("/api/v1/fhir/metadata").get_json()
    oauth = demo.env.client.get("/.well-known/oauth-authorization-server").get_json()
    [rest] = statement["rest"]
    assert oauth["token_endpoint"] in rest["security"]["description"]
    assert "private_key_jwt" in oauth["token_endpoint_auth_methods_supported"]
    base = statement["implementation"]["url"]
    assert base == demo.broker.settings.issuer + "/api/v1/fhir"
    mikko = demo.persons["mikko"]
    [entry] = demo.fhir("kisalli", "Consent", mikko)["entry"]
    assert entry["fullUrl"] == f"{base}/Consent/{entry['resource']['id']}"


def test_the_capability_statement_and_the_api_document_agree_on_the_fhir_interactions(demo: Demo) -> None:
    """What the statement claims is what the OpenAPI document has, and nothing more is served under the FHIR base."""
    statement = demo.env.client.get("/api/v1/fhir/metadata").get_json()
    claimed = {"/api/v1/fhir/metadata"}
    for resource in statement["rest"][0]["resource"]:
        for interaction in resource["interaction"]:
            suffix = {"read": "/{resource_id}", "search-type": ""}[interaction["code"]]
            claimed.add(f"/api/v1/fhir/{resource['type']}{suffix}")
    document = demo.env.client.get("/api/v1/openapi.json").get_json()
    served = {path for path in document["paths"] if path.startswith("/api/v1/fhir/")}
    assert served == claimed
    methods = {"get", "put", "post", "patch", "delete"}
    assert all(set(document["paths"][path]) & methods == {"get"} for path in served)  # read-only
    assert document["paths"]["/api/v1/fhir/metadata"]["get"]["security"] == []


# --- the export ----------------------------------------------------------------------------------------------------


def export(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`broker export fhir …` as an operator runs it, against the test's database."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    environment.update(
        BROKER_MODE="test",
        BROKER_INSTANCE_PATH=str(settings.instance_path),
        BROKER_DATABASE_URL=settings.database_url,
        BROKER_ISSUER=settings.issuer,
    )
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "export", "fhir", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=120,
        check=False,
    )


def test_the_export_writes_a_valid_bundle_of_everything_for_every_demo_person(
    demo: Demo, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "fhir"
    result = export(settings, str(folder))
    assert result.returncode == 0, result.stderr
    with demo.broker.uow(write=False) as uow:
        persons = set(uow.session.scalars(select(PersonRow.id)))
        logged = {
            person: count
            for person, count in uow.session.execute(
                select(AuditEntryRow.person_id, func.count())
                .where(AuditEntryRow.event == "audit:query")
                .group_by(AuditEntryRow.person_id)
            )
        }
    assert persons >= set(demo.persons.values())
    assert {p.name for p in folder.iterdir()} == {f"{person}.json" for person in persons}
    consents = events = 0
    for person in persons:
        bundle = json.loads((folder / f"{person}.json").read_text(encoding="utf-8"))
        validate_bundle(bundle)
        assert bundle["type"] == "collection"
        [patient] = resources(bundle, "Patient")
        assert patient["identifier"][0]["value"] == person
        assert sorted(identifiers(resources(bundle, "Consent"))) == sorted(r.id for r in consents_of(demo, person))
        assert identifiers(resources(bundle, "AuditEvent")) == [r.id for r in disclosures_of(demo, person)]
        consents += len(resources(bundle, "Consent"))
        events += len(resources(bundle, "AuditEvent"))
        assert logged[person] == 1  # each person's export is in their log
        assert (folder / f"{person}.json").stat().st_mode & 0o077 == 0  # personal data: the owner's only
    assert result.stdout.strip() == (
        f"exported {len(persons)} persons: {consents} Consent and {events} AuditEvent resources, "
        f"one FHIR R4 Bundle per person, to {folder}"
    )


def test_the_export_of_one_person_and_into_a_used_folder(demo: Demo, settings: Settings, tmp_path: Path) -> None:
    sari = demo.persons["sari"]
    folder = tmp_path / "one"
    result = export(settings, str(folder), "--person", sari)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in folder.iterdir()] == [f"{sari}.json"]
    assert result.stdout.startswith("exported 1 person: 1 Consent and 0 AuditEvent resources")
    again = export(settings, str(folder))
    assert again.returncode == 1 and "not a new or empty folder" in again.stderr
    unknown = export(settings, str(tmp_path / "none"), "--person", MISSING_PERSON)
    assert unknown.returncode == 1 and f"no person with id '{MISSING_PERSON}'" in unknown.stderr


def test_the_export_goes_through_every_person_a_chunk_at_a_time(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fhir, "_CHUNK", 3)  # the demo's four persons in two chunks
    summary = fhir.export_fhir(demo.broker, tmp_path / "chunks")
    assert summary.persons == 4
    assert {p.name for p in (tmp_path / "chunks").iterdir()} == {f"{p}.json" for p in demo.persons.values()}


# --- the ISO/IEC TS 27560 consent record ---------------------------------------------------------------------------


def test_the_27560_record_states_the_same_terms_as_the_consent(demo: Demo) -> None:
    mikko = demo.persons["mikko"]
    [consent] = demo.env.get("varha-health", f"/consents?person_id={mikko}").get_json()
    response = demo.env.get("varha-health", f"/consents/{consent['consent_id']}/record")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    record = body["record"]
    assert body["consent_id"] == record["record_id"] == consent["consent_id"]
    assert record["pii_principal_id"] == consent["person_id"]
    assert record["pii_processing"]["privacy_notice"]["sha256"] == consent["text_sha256"]
    assert record["pii_processing"]["language"] == consent["language"]
    purposes = record["pii_processing"]["purposes"]
    assert [p["purpose"] for p in purposes] == consent["purposes"]
    for purpose in purposes:
        assert [i["pii_type"] for i in purpose["pii_information"]] == consent["categories"]
        assert purpose["pii_controllers"] == [consent["requester"]]
        assert purpose["recipient_third_parties"] == consent["recipients"]
        # The work assessment is a special category: explicit consent, GDPR 9(2)(a).
        assert purpose["lawful_basis"] == ["eu-gdpr:A6-1-a", "eu-gdpr:A9-2-a"]
    for name in ("explicit", "written", "status", "version"):
        assert record[name] == consent[name], name
    assert record["collection_method"]["method"] == consent["method"]
    assert record["collection_method"]["witness"] == consent["witness"]
    for name in ("valid_from", "valid_until", "created_at"):
        assert record[name] == consent[name].replace("+00:00", "Z"), name
    assert [e["event_state"] for e in record["event"]] == ["dpv:ConsentGiven"]


def test_the_27560_record_of_a_withdrawn_consent_has_its_history(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["sari"])
    record = demo.env.get("varha-health", f"/consents/{row.id}/record").get_json()["record"]
    assert record["status"] == "withdrawn" and record["written"] is True  # given on paper
    assert [(e["event_state"], e["entity_id"]) for e in record["event"]] == [
        ("dpv:ConsentGiven", "kisalli"),
        ("dpv:ConsentWithdrawn", "kisalli"),
    ]


def test_the_signed_27560_record_is_the_record_and_verifies_with_the_published_keys(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["mikko"])
    body = demo.env.get("kisalli", f"/consents/{row.id}/record").get_json()
    jwks = demo.env.client.get("/.well-known/jwks.json").get_json()
    payload = verify_jws(body["signed_record"], jwks, typ="consent-record+jws")
    assert payload["record"] == body["record"] and payload["iss"] == demo.broker.settings.issuer
    with pytest.raises(SignatureError):
        verify_jws(body["signed_record"], jwks, typ="consent-receipt+jws")  # not to be taken for a receipt
    tampered = body["signed_record"][:-4] + ("AAAA" if not body["signed_record"].endswith("AAAA") else "BBBB")
    with pytest.raises(SignatureError):
        verify_jws(tampered, jwks, typ="consent-record+jws")


def test_the_27560_record_is_only_for_the_organisations_named_in_the_consent(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["mikko"])
    for org in PARTNERS:
        status = demo.env.get(org, f"/consents/{row.id}/record").status_code
        assert status == (200 if org in (row.requester_org, *row.recipients) else 404), org
    assert demo.env.get("kisalli", "/consents/con_" + "0" * 32 + "/record").status_code == 404
    assert demo.env.get(DPO_PARTNER, f"/consents/{row.id}/record").status_code == 403


def test_the_receipt_is_unchanged_beside_the_record(demo: Demo) -> None:
    [row] = consents_of(demo, demo.persons["mikko"])
    receipt = demo.env.get("kisalli", f"/consents/{row.id}/receipt").get_json()
    assert set(receipt) == {"consent_id", "receipt"}
    jwks = demo.env.client.get("/.well-known/jwks.json").get_json()
    assert set(verify_jws(receipt["receipt"], jwks, typ="consent-receipt+jws")) == {
        "iss",
        "iat",
        "consent",
        "text",
        "history",
    }
