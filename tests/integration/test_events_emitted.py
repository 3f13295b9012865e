"""Every change that partners must hear about writes its event to the outbox in its own transaction (issue #8;
broker/services/events.py): to the right organisations, with the right data — ids and states, never content — and
only when the change commits. A retry with an Idempotency-Key is answered from the stored response and emits
nothing new; a disclosure, the hot path, emits nothing at all.

Partners act over the API; the person acts through the portal's use cases (broker/services/person_portal.py), on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import ConsentRow, OutboxEventRow, WithdrawalAttestationRow
from broker.domain.errors import ConsentNotActiveError
from broker.domain.model import Caller, PortalUser
from broker.services import consents, events, person_portal
from schemas.records.examples import EXAMPLES
from tests.support import ORG_TYPE, ROLE, Env

HEADER = "Idempotency-Key"


def outbox(env: Env, type: str | None = None) -> list[dict[str, Any]]:
    """The events written, in order, as (type, organisation, person, data, occurred_at) dicts."""
    with env.broker.uow(write=False) as uow:
        stmt = select(OutboxEventRow).order_by(OutboxEventRow.seq)
        if type is not None:
            stmt = stmt.where(OutboxEventRow.type == type)
        return [events.event_view(row) for row in uow.session.scalars(stmt)]


def by_organisation(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    addressed = {event["organisation"]: event for event in found}
    assert len(addressed) == len(found), "one event per organisation"
    return addressed


def count(env: Env, row_type: Any) -> int:
    with env.broker.uow(write=False) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(row_type)) or 0)


def iso(env: Env, **later: float) -> str:
    return events.iso(env.clock.now() + timedelta(**later))


def record_consent(env: Env, person_id: str, org: str = "kisalli", **terms: Any) -> dict[str, Any]:
    body = {
        "person_id": person_id,
        "recipients": ["varha-health"],
        "categories": ["work_assessment"],
        "purposes": ["work_capacity_assessment"],
        "method": "in_person",
        "witness": "Pekka Salo",
    } | terms
    response = env.post(org, "/consents", body)
    assert response.status_code == 201, response.get_json()
    consent: dict[str, Any] = response.get_json()
    return consent


def assessed_person(env: Env) -> str:
    """A person served by Kisälli and the health centre, with a work assessment Kisälli deposited (flow F7)."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-health")
    deposit = {"person_id": person_id, "category": "work_assessment", "content": EXAMPLES["work_assessment"]}
    assert env.post("kisalli", "/records", deposit).status_code == 201
    return person_id


def disclose(env: Env, org: str, person_id: str, category: str, purpose: str) -> dict[str, Any]:
    response = env.post(org, "/disclosures", {"person_id": person_id, "category": category, "purpose": purpose})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def ask_consent(env: Env, person_id: str, **terms: Any) -> str:
    body = {
        "person_id": person_id,
        "recipients": ["varha-health", "ohjaamo-turku"],
        "categories": ["work_assessment"],
        "purposes": ["work_capacity_assessment"],
        "valid_days": 90,
        "reason": "to plan your work activity with the health centre",
    } | terms
    response = env.post("kisalli", "/consent-requests", body)
    assert response.status_code == 201, response.get_json()
    request_id: str = response.get_json()["consent_request_id"]
    return request_id


def professional(org: str) -> Caller:
    """A professional of `org` as the API's token check makes them (tests.support's roles)."""
    return Caller(
        partner_id=org,
        organisation_id=org,
        org_type=ORG_TYPE[org],
        actor_id=f"{org}-staff-1",
        actor_role=ROLE[org],
        scopes=frozenset({"consents"}),
    )


def portal_user(env: Env, person_id: str) -> PortalUser:
    return person_portal.portal_user(env.broker, person_id, language="en")


def grant(env: Env, user: PortalUser, request_id: str) -> dict[str, Any]:
    request = person_portal.get_request(env.broker, user, request_id)
    recipients = [r["id"] for r in request["recipients"]]
    categories = [c["id"] for c in request["categories"]]
    text = person_portal.consent_text(
        env.broker, user, request_id, recipients=recipients, categories=categories, language="en"
    )
    return person_portal.grant_request(
        env.broker,
        user,
        request_id,
        recipients=recipients,
        categories=categories,
        language="en",
        text_sha256=text["sha256"],
        confirm_special=True,
    )


# --- consent.granted and consent_request.answered ------------------------------------------------------------------


def test_a_consent_recorded_by_a_professional_is_told_to_the_others_named_in_it(env: Env) -> None:
    person_id = env.person()
    valid_until = iso(env, days=30)
    consent = record_consent(
        env, person_id, recipients=["varha-health", "kisalli", "ohjaamo-turku"], valid_until=valid_until
    )

    granted = by_organisation(outbox(env, "consent.granted"))
    # Kisälli recorded it: it knows. The health centre and Ohjaamo hear of it.
    assert sorted(granted) == ["ohjaamo-turku", "varha-health"]
    for org, event in granted.items():
        assert event["person_id"] == person_id
        assert event["occurred_at"] == env.clock.now()
        assert event["data"] == {
            "consent_id": consent["consent_id"],
            "version": 1,
            "requester": "kisalli",
            "recipients": ["kisalli", "ohjaamo-turku", "varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "valid_until": valid_until,
            "person_id": person_id,
        }, org
    # Each is its own event, with its own id: receivers de-duplicate on it.
    assert len({event["event_id"] for event in granted.values()}) == 2


def test_a_consent_granted_in_the_portal_is_told_to_every_organisation_and_answers_the_request(env: Env) -> None:
    person_id = env.person()
    request_id = ask_consent(env, person_id)
    consent = grant(env, portal_user(env, person_id), request_id)

    granted = by_organisation(outbox(env, "consent.granted"))
    # The person acted, not an organisation: the requester hears of it too.
    assert sorted(granted) == ["kisalli", "ohjaamo-turku", "varha-health"]
    assert {event["data"]["consent_id"] for event in granted.values()} == {consent["id"]}
    assert granted["kisalli"]["data"]["valid_until"] == iso(env, days=90)
    [answered] = outbox(env, "consent_request.answered")
    assert answered["organisation"] == "kisalli"
    assert answered["data"] == {
        "consent_request_id": request_id,
        "answer": "granted",
        "consent_id": consent["id"],
        "person_id": person_id,
    }


def test_a_refused_request_is_answered_to_the_requester_and_grants_nothing(env: Env) -> None:
    person_id = env.person()
    request_id = ask_consent(env, person_id)
    person_portal.refuse_request(env.broker, portal_user(env, person_id), request_id)

    [answered] = outbox(env)
    assert (answered["type"], answered["organisation"]) == ("consent_request.answered", "kisalli")
    assert answered["data"] == {
        "consent_request_id": request_id,
        "answer": "refused",
        "consent_id": None,
        "person_id": person_id,
    }


# --- consent.withdrawn ---------------------------------------------------------------------------------------------


def test_a_withdrawal_recorded_by_a_professional_asks_those_that_received_data_to_attest(env: Env) -> None:
    person_id = assessed_person(env)
    consent = record_consent(env, person_id, recipients=["varha-health", "ohjaamo-turku"])
    disclose(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    before = len(outbox(env))

    response = env.post("kisalli", f"/consents/{consent['consent_id']}/withdraw", {"reason": "the person asked"})
    assert response.status_code == 200, response.get_json()

    withdrawn = by_organisation(outbox(env, "consent.withdrawn"))
    # Kisälli recorded the withdrawal and received nothing under the consent: not told. The health centre received
    # the work assessment under it and must attest; Ohjaamo, named but given nothing, is only told.
    assert sorted(withdrawn) == ["ohjaamo-turku", "varha-health"]
    with env.broker.uow(write=False) as uow:
        [attestation] = uow.session.scalars(select(WithdrawalAttestationRow)).all()
    due_at = iso(env, days=env.broker.settings.attestation_due_days)
    assert withdrawn["varha-health"]["data"] == {
        "consent_id": consent["consent_id"],
        "version": 2,
        "withdrawn_at": iso(env),
        "person_id": person_id,
        "attestation": {
            "required": True,
            "attestation_id": attestation.id,
            "due_at": due_at,
            "attestation_url": f"{env.issuer}/api/v1/consents/{consent['consent_id']}/attestation",
        },
    }
    assert withdrawn["ohjaamo-turku"]["data"]["attestation"] == {"required": False}
    assert (attestation.consent_id, attestation.organisation_id, attestation.person_id) == (
        consent["consent_id"],
        "varha-health",
        person_id,
    )
    assert attestation.event_id == withdrawn["varha-health"]["event_id"]
    assert attestation.outcome is None and attestation.answered_at is None
    # The existing notices to the told organisations stay, and each landed notice is an event of its own.
    delivered = outbox(env, "notice.delivered")
    assert sorted(e["organisation"] for e in delivered) == ["ohjaamo-turku", "varha-health"]
    assert {e["data"]["kind"] for e in delivered} == {"consent_withdrawn"}
    assert {e["data"]["sender"] for e in delivered} == {None}
    assert len(outbox(env)) == before + 4


def test_the_recording_organisation_is_asked_too_when_it_received_data_under_the_consent(env: Env) -> None:
    person_id = assessed_person(env)
    consent = record_consent(env, person_id, recipients=["varha-health"])
    disclose(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")

    # The health centre's professional records the withdrawal: the health centre knows, but still holds the data.
    response = env.post("varha-health", f"/consents/{consent['consent_id']}/withdraw", {"reason": "asked here"})
    assert response.status_code == 200, response.get_json()

    withdrawn = by_organisation(outbox(env, "consent.withdrawn"))
    assert sorted(withdrawn) == ["kisalli", "varha-health"]
    assert withdrawn["varha-health"]["data"]["attestation"]["required"] is True
    assert withdrawn["kisalli"]["data"]["attestation"] == {"required": False}


def test_a_disclosure_on_a_statute_is_not_data_received_under_the_consent(env: Env) -> None:
    """Social work receives the service-need assessment by statute (F9) while a consent names it: it received
    nothing under the consent, and is not asked to attest."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "turku-employment", "varha-social-work")
    deposit = {
        "person_id": person_id,
        "category": "service_need_assessment",
        "content": EXAMPLES["service_need_assessment"],
    }
    assert env.post("turku-employment", "/records", deposit).status_code == 201
    consent = record_consent(
        env,
        person_id,
        recipients=["kisalli", "varha-social-work"],
        categories=["service_need_assessment"],
        purposes=["multisector_planning"],
    )
    by_statute = disclose(env, "varha-social-work", person_id, "service_need_assessment", "multisector_planning")
    assert by_statute["basis"]["kind"] == "statute"
    on_consent = disclose(env, "kisalli", person_id, "service_need_assessment", "multisector_planning")
    assert on_consent["basis"]["consent_id"] == consent["consent_id"]

    response = env.post("turku-employment", f"/consents/{consent['consent_id']}/withdraw", {})
    assert response.status_code == 404  # the employment authority is not named in the consent
    response = env.post("varha-social-work", f"/consents/{consent['consent_id']}/withdraw", {})
    assert response.status_code == 200, response.get_json()

    withdrawn = by_organisation(outbox(env, "consent.withdrawn"))
    assert sorted(withdrawn) == ["kisalli"]
    assert withdrawn["kisalli"]["data"]["attestation"]["required"] is True
    with env.broker.uow(write=False) as uow:
        asked = uow.session.scalars(select(WithdrawalAttestationRow.organisation_id)).all()
    assert asked == ["kisalli"]


def test_records_received_under_the_consent_beside_others_received_by_statute_count(env: Env) -> None:
    """One request took the benefit status from Kela by statute (F1) and from Ohjaamo on the consent (F15b): the
    disclosure's primary basis is the statute, the consent is among the log entry's bases, and the employment
    authority is asked to attest."""
    person_id = env.person()
    for source in ("kela", "ohjaamo-turku"):
        deposit = {"person_id": person_id, "category": "benefit_status", "content": EXAMPLES["benefit_status"]}
        assert env.post(source, "/records", deposit).status_code == 201
    consent = record_consent(
        env,
        person_id,
        "ohjaamo-turku",
        recipients=["turku-employment"],
        categories=["benefit_status"],
        purposes=["activation_planning"],
    )
    both = disclose(env, "turku-employment", person_id, "benefit_status", "activation_planning")
    assert both["basis"]["kind"] == "statute"
    assert {r["basis"]["kind"] for r in both["records"]} == {"statute", "consent"}

    response = env.post("ohjaamo-turku", f"/consents/{consent['consent_id']}/withdraw", {})
    assert response.status_code == 200, response.get_json()

    withdrawn = by_organisation(outbox(env, "consent.withdrawn"))
    assert sorted(withdrawn) == ["turku-employment"]
    assert withdrawn["turku-employment"]["data"]["attestation"]["required"] is True


def test_a_withdrawal_in_the_portal_tells_every_organisation_named(env: Env) -> None:
    person_id = assessed_person(env)
    consent = record_consent(env, person_id, recipients=["varha-health", "ohjaamo-turku"])
    disclose(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")

    person_portal.withdraw_consent(env.broker, portal_user(env, person_id), consent["consent_id"])

    withdrawn = by_organisation(outbox(env, "consent.withdrawn"))
    assert sorted(withdrawn) == ["kisalli", "ohjaamo-turku", "varha-health"]
    assert [org for org, e in withdrawn.items() if e["data"]["attestation"]["required"]] == ["varha-health"]


def test_a_withdrawal_that_fails_emits_nothing_and_asks_no_one(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    person_id = assessed_person(env)
    consent = record_consent(env, person_id, recipients=["varha-health"])
    disclose(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    before = outbox(env)
    real_append = consents.append_entry

    def failing_append(uow: Any, **entry: Any) -> int:
        # The withdrawal's log entry is written after its events: a failure there must take them along.
        if entry["event"] == "consent:withdraw":
            raise RuntimeError("the log is unavailable")
        return real_append(uow, **entry)

    monkeypatch.setattr(consents, "append_entry", failing_append)
    with pytest.raises(RuntimeError, match="the log is unavailable"):
        consents.withdraw_consent(env.broker, professional("kisalli"), consent["consent_id"], reason="asked")

    assert outbox(env) == before
    assert count(env, WithdrawalAttestationRow) == 0
    with env.broker.uow(write=False) as uow:
        row = uow.session.get(ConsentRow, consent["consent_id"])
        assert row is not None and row.status == "active"


def test_withdrawing_a_consent_no_longer_active_emits_nothing(env: Env) -> None:
    person_id = env.person()
    consent = record_consent(env, person_id)
    user = portal_user(env, person_id)
    person_portal.withdraw_consent(env.broker, user, consent["consent_id"])
    before = outbox(env)
    again = env.post("kisalli", f"/consents/{consent['consent_id']}/withdraw", {})
    assert again.status_code == 409
    with pytest.raises(ConsentNotActiveError):
        person_portal.withdraw_consent(env.broker, user, consent["consent_id"])
    assert outbox(env) == before


# --- notice.delivered and relationship.ended -------------------------------------------------------------------------


def test_a_notice_in_an_inbox_is_an_event_for_its_recipient_naming_the_notice_not_its_content(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    body = {
        "person_id": person_id,
        "kind": "interruption_notice",
        "recipient": "varha-social-work",
        "content": EXAMPLES["interruption_notice"],
    }
    response = env.post("kisalli", "/notices", body)
    assert response.status_code == 201, response.get_json()

    [delivered] = outbox(env)
    assert (delivered["type"], delivered["organisation"]) == ("notice.delivered", "varha-social-work")
    assert delivered["data"] == {
        "notice_id": response.get_json()["notice_id"],
        "kind": "interruption_notice",
        "sender": "kisalli",
        "person_id": person_id,
    }


def test_a_refused_notice_lands_nowhere_and_emits_nothing(env: Env) -> None:
    person_id = env.person()  # nobody serves the person: F5 needs social work to serve them
    body = {
        "person_id": person_id,
        "kind": "interruption_notice",
        "recipient": "employer-that-does-not-exist",
        "content": EXAMPLES["interruption_notice"],
    }
    assert env.post("kisalli", "/notices", body).status_code == 400
    body["recipient"] = "demo-employer"
    assert env.post("kisalli", "/notices", body).status_code == 403
    assert outbox(env) == []


def test_ending_a_relationship_tells_those_named_in_the_consents_bound_to_it(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli")
    bound = record_consent(env, person_id, recipients=["varha-health", "ohjaamo-turku"], bound_to_relationship=True)
    also_bound = record_consent(env, person_id, recipients=["varha-health"], bound_to_relationship=True)
    record_consent(env, person_id, recipients=["turku-employment"])  # not bound: goes on
    record_consent(env, person_id, "varha-health", recipients=["kisalli"], bound_to_relationship=True)  # another's
    withdrawn = record_consent(env, person_id, recipients=["aurajoki-foundation"], bound_to_relationship=True)
    person_portal.withdraw_consent(env.broker, portal_user(env, person_id), withdrawn["consent_id"])
    before = len(outbox(env))

    response = env.post("kisalli", f"/persons/{person_id}/relationships/end")
    assert response.status_code == 200, response.get_json()

    written = outbox(env)[before:]
    ended = by_organisation([event for event in written if event["type"] == "relationship.ended"])
    assert sorted(ended) == ["ohjaamo-turku", "varha-health"]
    # The bound consents end with the relationship, in the same transaction: each is expired, and everyone it names
    # is told so with `consent.expired`, as when the expiry job ends a consent.
    expired = sorted(
        (event["data"]["consent_id"], event["organisation"]) for event in written if event["type"] == "consent.expired"
    )
    assert expired == sorted(
        [(bound["consent_id"], org) for org in ("kisalli", "ohjaamo-turku", "varha-health")]
        + [(also_bound["consent_id"], org) for org in ("kisalli", "varha-health")]
    )
    assert {event["type"] for event in written} == {"relationship.ended", "consent.expired"}
    relationship_id = response.get_json()["relationship_id"]
    for org, expected in (
        ("varha-health", sorted([bound["consent_id"], also_bound["consent_id"]])),
        ("ohjaamo-turku", [bound["consent_id"]]),
    ):
        assert ended[org]["type"] == "relationship.ended"
        # Each organisation hears of the consents that name it, not of the others'.
        assert ended[org]["data"] == {
            "relationship_id": relationship_id,
            "organisation": "kisalli",
            "ended_at": iso(env),
            "consents_ended": expected,
            "person_id": person_id,
        }


def test_ending_a_relationship_no_consent_is_bound_to_emits_nothing(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli")
    record_consent(env, person_id, recipients=["varha-health"])
    before = outbox(env)
    assert env.post("kisalli", f"/persons/{person_id}/relationships/end").status_code == 200
    assert outbox(env) == before


# --- what emits nothing ----------------------------------------------------------------------------------------------


def test_a_disclosure_and_a_decision_emit_nothing(env: Env) -> None:
    person_id = assessed_person(env)
    record_consent(env, person_id, recipients=["varha-health"])
    before = outbox(env)
    disclose(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
    refused = env.post(
        "demo-employer",
        "/disclosures",
        {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"},
    )
    assert refused.status_code == 403
    ask = {"person_id": person_id, "category": "work_assessment", "purpose": "work_capacity_assessment"}
    assert env.post("varha-health", "/decisions", ask).status_code == 200
    assert outbox(env) == before


@pytest.mark.parametrize("operation", ["consent", "withdrawal", "notice", "relationship end", "attestation"])
def test_a_retry_with_its_idempotency_key_emits_nothing_new(env: Env, operation: str) -> None:
    person_id = assessed_person(env)
    env.serve(person_id, "varha-social-work")
    if operation == "consent":
        org, path, body = (
            "kisalli",
            "/consents",
            {
                "person_id": person_id,
                "recipients": ["varha-health"],
                "categories": ["work_assessment"],
                "purposes": ["work_capacity_assessment"],
                "method": "paper",
            },
        )
    elif operation == "notice":
        org, path, body = (
            "kisalli",
            "/notices",
            {
                "person_id": person_id,
                "kind": "interruption_notice",
                "recipient": "varha-social-work",
                "content": EXAMPLES["interruption_notice"],
            },
        )
    elif operation == "relationship end":
        record_consent(env, person_id, recipients=["varha-health"], bound_to_relationship=True)
        org, path, body = "kisalli", f"/persons/{person_id}/relationships/end", {}
    else:
        consent = record_consent(env, person_id, recipients=["varha-health"])
        disclose(env, "varha-health", person_id, "work_assessment", "work_capacity_assessment")
        org, path, body = "kisalli", f"/consents/{consent['consent_id']}/withdraw", {"reason": "asked"}
        if operation == "attestation":
            assert env.post(org, path, body).status_code == 200
            org, path, body = "varha-health", f"/consents/{consent['consent_id']}/attestation", {"outcome": "deleted"}
    key = f'"{uuid.uuid4()}"'
    first = env.post(org, path, body, headers={HEADER: key})
    assert first.status_code in (200, 201), first.get_json()
    emitted = outbox(env)
    if operation != "attestation":
        assert emitted, "the change emitted its event"

    retry = env.post(org, path, body, headers={HEADER: key})

    assert retry.status_code == first.status_code and retry.get_data() == first.get_data()
    assert retry.headers["Idempotency-Replayed"] == "true"
    assert outbox(env) == emitted
