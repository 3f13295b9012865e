"""The client portal's use cases (broker/services/person_portal.py): ownership, representation, answering and
withdrawing consents, the person's log, the statutory flows and the data download — at the service level, on a
real database, with the partners acting over the API."""

from __future__ import annotations

import itertools
import json
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from broker.adapters.orm import AuditActorRow, AuditEntryRow, ConsentEventRow, ConsentTextRow
from broker.domain.errors import (
    ConflictError,
    ConsentNotActiveError,
    InvalidRequestError,
    NotFoundError,
)
from broker.domain.hetu import make_hetu
from broker.domain.model import PortalUser
from broker.services import person_portal as portal
from broker.services.disclosures import load_facts
from schemas.records.examples import EXAMPLES
from tests.support import Env

_born = itertools.count()


def hetu(born: date | None = None) -> str:
    """A test identity code that no other call in this module gives (a birth date of its own)."""
    return make_hetu(born or date(1980, 1, 1) + timedelta(days=next(_born)), 950)


def adult(env: Env) -> str:
    return env.person(hetu=hetu())


def ask(env: Env, person_id: str, org: str = "kisalli", **overrides: Any) -> str:
    body = {
        "person_id": person_id,
        "recipients": ["varha-health", "ohjaamo-turku"],
        "categories": ["work_assessment", "attendance_report"],
        "purposes": ["work_capacity_assessment"],
        "valid_days": 90,
        "reason": "to plan your work activity with the health centre",
    } | overrides
    response = env.post(org, "/consent-requests", body)
    assert response.status_code == 201, response.get_json()
    request_id: str = response.get_json()["consent_request_id"]
    return request_id


def grant(
    env: Env,
    user: PortalUser,
    request_id: str,
    *,
    recipients: list[str] | None = None,
    categories: list[str] | None = None,
    language: str = "en",
) -> dict[str, Any]:
    """Grant as the portal does: read the request, review the text for the chosen terms, confirm."""
    request = portal.get_request(env.broker, user, request_id)
    recipients = recipients or [r["id"] for r in request["recipients"]]
    categories = categories or [c["id"] for c in request["categories"]]
    text = portal.consent_text(
        env.broker, user, request_id, recipients=recipients, categories=categories, language=language
    )
    return portal.grant_request(
        env.broker,
        user,
        request_id,
        recipients=recipients,
        categories=categories,
        language=language,
        text_sha256=text["sha256"],
        confirm_special=True,
    )


def me(env: Env, person_id: str, **kwargs: Any) -> PortalUser:
    return portal.portal_user(env.broker, person_id, language=kwargs.pop("language", "en"), **kwargs)


def register(env: Env, person_id: str, code: str, mandate: str, org: str = "varha-social-work") -> str:
    env.serve(person_id, org)
    response = env.post(org, f"/persons/{person_id}/representatives", {"hetu": code, "mandate": mandate})
    assert response.status_code == 201, response.get_json()
    representative_id: str = response.get_json()["representative_id"]
    return representative_id


def audit_entries(env: Env, event: str) -> list[tuple[dict[str, Any], str | None]]:
    """The log's entries of one event type, each with the opened actor id beside it."""
    with env.broker.uow(write=False) as uow:
        rows = uow.session.execute(
            select(AuditEntryRow.entry, AuditActorRow.actor_id)
            .outerjoin(AuditActorRow, AuditActorRow.entry_id == AuditEntryRow.id)
            .where(AuditEntryRow.event == event)
            .order_by(AuditEntryRow.id)
        ).all()
    return [(json.loads(entry), actor) for entry, actor in rows]


def inbox(env: Env, org: str) -> list[dict[str, Any]]:
    response = env.get(org, "/inbox")
    assert response.status_code == 200
    notices: list[dict[str, Any]] = response.get_json()
    return notices


def later(env: Env, **interval: float) -> None:
    """Move the clock on; the partners' cached access tokens have expired by then."""
    env.clock.advance(**interval)
    env._tokens.clear()


def disclose(env: Env, org: str, person_id: str, category: str, purpose: str) -> int:
    response = env.post(org, "/disclosures", {"person_id": person_id, "category": category, "purpose": purpose})
    assert response.status_code in (200, 403), response.get_json()
    return response.status_code


# --- ownership ---------------------------------------------------------------------------------------------------


def test_another_persons_requests_and_consents_are_not_found(env: Env) -> None:
    owner, stranger = adult(env), adult(env)
    request_id = ask(env, owner)
    consent_id = grant(env, me(env, owner), ask(env, owner), categories=["attendance_report"])["id"]
    them = me(env, stranger)
    terms = {"recipients": ["varha-health"], "categories": ["attendance_report"], "language": "en"}
    calls = {
        "get_request": lambda: portal.get_request(env.broker, them, request_id),
        "consent_text": lambda: portal.consent_text(env.broker, them, request_id, **terms),
        "grant_request": lambda: portal.grant_request(
            env.broker, them, request_id, **terms, text_sha256="0" * 64, confirm_special=True
        ),
        "refuse_request": lambda: portal.refuse_request(env.broker, them, request_id),
        "get_consent": lambda: portal.get_consent(env.broker, them, consent_id),
        "withdrawal_consequences": lambda: portal.withdrawal_consequences(env.broker, them, consent_id),
        "withdraw_consent": lambda: portal.withdraw_consent(env.broker, them, consent_id),
    }
    revealed = []
    for name, call in calls.items():
        try:
            call()
        except NotFoundError:
            continue
        revealed.append(name)
    assert revealed == []
    assert portal.list_requests(env.broker, them, None) == []
    assert portal.list_consents(env.broker, them) == []
    # Nothing changed for the owner.
    assert portal.get_request(env.broker, me(env, owner), request_id)["status"] == "pending"
    assert portal.get_consent(env.broker, me(env, owner), consent_id)["status"] == "active"


def test_a_portal_user_that_claims_someone_elses_data_sees_nothing(env: Env) -> None:
    owner, stranger = adult(env), adult(env)
    env.serve(owner, "kisalli")
    forged = [
        PortalUser(login_person_id=stranger, subject_id=owner),  # no representative at all
        PortalUser(login_person_id=stranger, subject_id=owner, representative_id=stranger, mandate="custodian"),
        PortalUser(login_person_id=stranger, subject_id=owner, representative_id=owner),
        PortalUser(login_person_id=None, subject_id=None, roles=frozenset({"dpo"})),  # a DPO has no person data
    ]
    for user in forged:
        for call in (
            portal.overview,
            portal.list_requests,
            portal.list_consents,
            portal.disclosure_log,
            portal.log_organisations,
            portal.statutory_flows,
            portal.my_data,
        ):
            with pytest.raises(NotFoundError):
                call(env.broker, user)


def test_the_login_finds_the_person_by_identity_code_and_never_creates_one(env: Env) -> None:
    code = hetu()
    assert portal.person_for_login(env.broker, code) is None
    person_id = env.person(hetu=code)
    assert portal.person_for_login(env.broker, code.lower()) == person_id
    assert portal.person_for_login(env.broker, hetu()) is None
    user = me(env, person_id)
    assert (user.subject_id, user.representative_id) == (person_id, None)
    with pytest.raises(NotFoundError):
        portal.overview(env.broker, portal.portal_user(env.broker, "per_nobody"))
    with pytest.raises(InvalidRequestError) as error:
        portal.portal_user(env.broker, person_id, language="de")
    assert error.value.field == "language"


# --- representation ----------------------------------------------------------------------------------------------


def test_a_custodian_acts_for_a_minor_until_the_minor_turns_eighteen(env: Env) -> None:
    minor = env.person(hetu=hetu(date(2008, 3, 1)))  # 17 on the test clock's 15 January 2026
    custodian_code = hetu()
    custodian = register(env, minor, custodian_code, "custodian")
    assert portal.person_for_login(env.broker, custodian_code) == custodian
    assert [(r["person_id"], r["mandate"]) for r in portal.representations_of(env.broker, custodian)] == [
        (minor, "custodian")
    ]
    acting = me(env, custodian, acting_for=minor)
    assert (acting.subject_id, acting.representative_id, acting.mandate) == (minor, custodian, "custodian")

    consent = grant(env, acting, ask(env, minor), categories=["attendance_report"])
    assert (consent["given_by"], consent["mandate"], consent["representative"]["id"]) == (
        "representative",
        "custodian",
        custodian,
    )
    with env.broker.uow(write=False) as uow:
        event = uow.session.scalars(select(ConsentEventRow).where(ConsentEventRow.consent_id == consent["id"])).one()
    assert (event.by_kind, event.by_actor) == ("representative", custodian)
    [(entry, actor)] = audit_entries(env, "consent:grant")
    assert entry["actor_role"] == "representative" and actor == custodian
    assert entry["person_id"] == minor and entry["detail"]["acting_for"] == minor

    later(env, days=46)  # 1 March 2026: of age
    assert portal.representations_of(env.broker, custodian) == []
    with pytest.raises(NotFoundError):
        me(env, custodian, acting_for=minor)
    # A user chosen before the birthday stops working too: the mandate is checked on every call.
    with pytest.raises(NotFoundError):
        portal.overview(env.broker, acting)
    with pytest.raises(NotFoundError):
        portal.withdraw_consent(env.broker, acting, consent["id"])
    # The custodian's consent no longer counts (the policy says the same); the person withdraws it themself.
    [listed] = portal.list_consents(env.broker, me(env, minor))
    assert (listed["status"], listed["in_effect"]) == ("active", False)
    withdrawn = portal.withdraw_consent(env.broker, me(env, minor), consent["id"])
    assert [h["by_kind"] for h in withdrawn["history"]] == ["representative", "person"]


def test_a_relative_without_a_mandate_cannot_act_for_an_adult(env: Env) -> None:
    parent, relative = adult(env), adult(env)
    with pytest.raises(NotFoundError):
        me(env, relative, acting_for=parent)
    assert portal.representations_of(env.broker, relative) == []
    with pytest.raises(NotFoundError):
        portal.portal_user(env.broker, None, acting_for=parent)


def test_a_guardian_for_personal_matters_acts_for_an_adult_and_withdraws_with_the_acting_person_recorded(
    env: Env,
) -> None:
    person = adult(env)
    guardian = register(env, person, hetu(), "guardian_personal")
    acting = me(env, guardian, acting_for=person)
    consent = grant(env, acting, ask(env, person), recipients=["varha-health"], categories=["attendance_report"])
    withdrawn = portal.withdraw_consent(env.broker, acting, consent["id"])
    assert withdrawn["status"] == "withdrawn"
    with env.broker.uow(write=False) as uow:
        events = uow.session.scalars(
            select(ConsentEventRow).where(ConsentEventRow.consent_id == consent["id"]).order_by(ConsentEventRow.id)
        ).all()
    assert [(e.action, e.by_kind, e.by_actor) for e in events] == [
        ("grant", "representative", guardian),
        ("withdraw", "representative", guardian),
    ]
    [(entry, actor)] = audit_entries(env, "consent:withdraw")
    assert entry["actor_role"] == "representative" and actor == guardian
    assert entry["detail"]["acting_for"] == person and entry["detail"]["mandate"] == "guardian_personal"


def test_a_registered_representative_takes_away_the_no_representative_exception(env: Env) -> None:
    person = adult(env)
    with env.broker.uow(write=False) as uow:
        assert load_facts(uow, person, env.clock.now()).has_legal_representative is False
    register(env, person, hetu(), "continuing_poa_personal")
    with env.broker.uow(write=False) as uow:
        assert load_facts(uow, person, env.clock.now()).has_legal_representative is True


# --- answering a request -----------------------------------------------------------------------------------------


def test_a_request_is_shown_with_its_organisations_special_categories_and_explanations(env: Env) -> None:
    person = adult(env)
    request_id = ask(env, person)
    user = me(env, person, language="sv")
    [pending] = portal.list_requests(env.broker, user)
    assert pending["id"] == request_id and pending["status"] == "pending"
    request = portal.get_request(env.broker, user, request_id)
    assert request["requester"] == {
        "id": "kisalli",
        "name": "Työllistämispalvelut Kisälli, Lieto",
        "org_type": "employment_services",
    }
    assert {r["id"] for r in request["recipients"]} == {"varha-health", "ohjaamo-turku"}
    assert {c["id"]: c["special"] for c in request["categories"]} == {
        "work_assessment": True,
        "attendance_report": False,
    }
    assert request["needs_explicit"] is True and request["valid_days"] == 90
    f7 = env.broker.policy.rule("F7").explanation["sv"]
    assert f7 in request["explanations"]
    assert all(text in {r.explanation["sv"] for r in env.broker.policy.rules} for text in request["explanations"])


def test_a_narrowed_grant_holds_only_the_chosen_terms_and_the_partner_receives_exactly_that(env: Env) -> None:
    person = adult(env)
    env.serve(person, "kisalli", "varha-health", "ohjaamo-turku")
    request_id = ask(env, person)
    user = me(env, person)
    shown = portal.consent_text(
        env.broker, user, request_id, recipients=["varha-health"], categories=["work_assessment"], language="fi"
    )
    assert "Liedon terveysasema" in shown["text"] and "Ohjaamo Turku" not in shown["text"]
    consent = portal.grant_request(
        env.broker,
        user,
        request_id,
        recipients=["varha-health"],
        categories=["work_assessment"],
        language="fi",
        text_sha256=shown["sha256"],
        confirm_special=True,
    )
    assert [r["id"] for r in consent["recipients"]] == ["varha-health"]
    assert [c["id"] for c in consent["categories"]] == ["work_assessment"]
    assert consent["purposes"] == ["work_capacity_assessment"]
    assert (consent["method"], consent["explicit"], consent["written"], consent["given_by"]) == (
        "portal",
        True,
        True,
        "person",
    )
    assert consent["valid_until"] == env.clock.now() + timedelta(days=90)
    assert consent["request_id"] == request_id and consent["text_sha256"] == shown["sha256"]
    with env.broker.uow(write=False) as uow:
        stored = uow.session.get(ConsentTextRow, shown["sha256"])
    assert stored is not None and stored.text == shown["text"] and stored.language == "fi"
    assert portal.get_consent(env.broker, user, consent["id"])["text"]["text"] == shown["text"]
    assert portal.get_request(env.broker, user, request_id)["status"] == "granted"
    assert portal.list_requests(env.broker, user) == []
    [(entry, actor)] = audit_entries(env, "consent:grant")
    assert entry["actor_role"] == "person" and actor == person and "acting_for" not in entry["detail"]
    assert entry["basis"]["consent_id"] == consent["id"]

    env.post(
        "kisalli",
        "/records",
        {"person_id": person, "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
    )
    response = env.post(
        "varha-health",
        "/disclosures",
        {"person_id": person, "category": "work_assessment", "purpose": "work_capacity_assessment"},
    )
    assert response.status_code == 200
    assert response.get_json()["basis"]["consent_id"] == consent["id"]
    # The recipient the person left out gets nothing on this consent (F15a would open it on a consent naming it).
    assert disclose(env, "ohjaamo-turku", person, "work_assessment", "work_capacity_assessment") == 403


def test_special_categories_need_the_explicit_confirmation(env: Env) -> None:
    person = adult(env)
    request_id = ask(env, person)
    user = me(env, person)
    terms = {"recipients": ["varha-health"], "categories": ["work_assessment"], "language": "en"}
    text = portal.consent_text(env.broker, user, request_id, **terms)
    with pytest.raises(InvalidRequestError) as error:
        portal.grant_request(env.broker, user, request_id, **terms, text_sha256=text["sha256"], confirm_special=False)
    assert error.value.field == "confirm_special"
    # A category that is not special needs no tick.
    plain = {"recipients": ["varha-health"], "categories": ["attendance_report"], "language": "en"}
    text = portal.consent_text(env.broker, user, request_id, **plain)
    consent = portal.grant_request(
        env.broker, user, request_id, **plain, text_sha256=text["sha256"], confirm_special=False
    )
    assert consent["status"] == "active"


def test_the_stored_text_must_be_the_one_reviewed(env: Env) -> None:
    person = adult(env)
    request_id = ask(env, person)
    user = me(env, person)
    terms = {"recipients": ["varha-health"], "categories": ["work_assessment"], "language": "en"}
    reviewed = portal.consent_text(env.broker, user, request_id, **terms)
    wider = portal.consent_text(
        env.broker,
        user,
        request_id,
        recipients=["varha-health", "ohjaamo-turku"],
        categories=["work_assessment"],
        language="en",
    )
    swedish = portal.consent_text(env.broker, user, request_id, **(terms | {"language": "sv"}))
    tampered = reviewed["sha256"][:-1] + ("0" if reviewed["sha256"][-1] != "0" else "1")
    for digest, language in ((tampered, "en"), (wider["sha256"], "en"), (swedish["sha256"], "en"), ("", "en")):
        with pytest.raises(InvalidRequestError) as error:
            portal.grant_request(
                env.broker,
                user,
                request_id,
                **(terms | {"language": language}),
                text_sha256=digest,
                confirm_special=True,
            )
        assert error.value.field == "text_sha256"
    assert portal.get_request(env.broker, user, request_id)["status"] == "pending"
    assert audit_entries(env, "consent:grant") == []


def test_a_grant_may_narrow_a_request_but_never_widen_it(env: Env) -> None:
    person = adult(env)
    request_id = ask(env, person)
    user = me(env, person)
    cases = [
        ({"recipients": ["kela"], "categories": ["work_assessment"]}, "recipients"),
        ({"recipients": [], "categories": ["work_assessment"]}, "recipients"),
        ({"recipients": ["varha-health"], "categories": ["substance_incident"]}, "categories"),
        ({"recipients": ["varha-health"], "categories": []}, "categories"),
        ({"recipients": "varha-health", "categories": ["work_assessment"]}, "recipients"),
    ]
    for terms, field in cases:
        with pytest.raises(InvalidRequestError) as error:
            portal.consent_text(env.broker, user, request_id, **terms, language="en")
        assert error.value.field == field
        with pytest.raises(InvalidRequestError) as error:
            portal.grant_request(
                env.broker, user, request_id, **terms, language="en", text_sha256="0" * 64, confirm_special=True
            )
        assert error.value.field == field
    with pytest.raises(InvalidRequestError) as error:
        portal.consent_text(
            env.broker, user, request_id, recipients=["varha-health"], categories=["work_assessment"], language="de"
        )
    assert error.value.field == "language"


def test_an_expired_request_cannot_be_answered(env: Env) -> None:
    person = adult(env)
    request_id = ask(env, person)
    user = me(env, person)
    terms = {"recipients": ["varha-health"], "categories": ["attendance_report"], "language": "en"}
    text = portal.consent_text(env.broker, user, request_id, **terms)
    later(env, days=env.broker.settings.consent_request_ttl_days, seconds=1)
    with pytest.raises(ConflictError) as error:
        portal.grant_request(env.broker, user, request_id, **terms, text_sha256=text["sha256"], confirm_special=True)
    assert error.value.extra["code"] == "request_expired"
    with pytest.raises(ConflictError):
        portal.refuse_request(env.broker, user, request_id)
    assert portal.list_requests(env.broker, user) == []
    assert [r["id"] for r in portal.list_requests(env.broker, user, "expired")] == [request_id]
    with pytest.raises(InvalidRequestError) as invalid:
        portal.list_requests(env.broker, user, "open")
    assert invalid.value.field == "status"


def test_a_refused_request_is_recorded_audited_and_listed(env: Env) -> None:
    person = adult(env)
    request_id = ask(env, person)
    user = me(env, person)
    refused = portal.refuse_request(env.broker, user, request_id)
    assert refused["status"] == "refused" and refused["answered_at"] == env.clock.now()
    with pytest.raises(ConflictError) as error:
        grant(env, user, request_id, categories=["attendance_report"])
    assert error.value.extra["code"] == "request_not_pending"
    [entry] = portal.list_consents(env.broker, user)
    assert (entry["kind"], entry["status"], entry["id"]) == ("request", "refused", request_id)
    [(audited, actor)] = audit_entries(env, "consent:refuse")
    assert audited["actor_role"] == "person" and actor == person
    assert audited["detail"]["consent_request_id"] == request_id
    assert env.get("kisalli", f"/consents?person_id={person}").get_json() == []


# --- withdrawing -------------------------------------------------------------------------------------------------


def test_withdrawing_tells_the_organisations_and_blocks_the_next_disclosure(env: Env) -> None:
    person = adult(env)
    env.serve(person, "kisalli", "varha-health", "varha-social-work")
    user = me(env, person)
    consent = grant(env, user, ask(env, person), recipients=["varha-health"], categories=["work_assessment"])
    env.post(
        "kisalli",
        "/records",
        {"person_id": person, "category": "work_assessment", "content": EXAMPLES["work_assessment"]},
    )
    assert disclose(env, "varha-health", person, "work_assessment", "work_capacity_assessment") == 200

    consequences = portal.withdrawal_consequences(env.broker, user, consent["id"])
    assert [o["id"] for o in consequences["told"]] == ["kisalli", "varha-health"]
    continuing = {c["flow"]: c for c in consequences["continuing"]}
    # Kela's right to obtain the work assessment (566/2005 59 §) does not rest on the consent.
    assert continuing["F10"]["reference"] == "566/2005 59 §"
    assert continuing["F10"]["explanation"] == env.broker.policy.rule("F10").explanation["en"]
    assert "F7" not in continuing

    withdrawn = portal.withdraw_consent(env.broker, user, consent["id"])
    assert withdrawn["status"] == "withdrawn" and withdrawn["version"] == 2
    assert withdrawn["withdrawn_at"] == env.clock.now()
    assert [(h["action"], h["by_kind"], h["by_org"]) for h in withdrawn["history"]] == [
        ("grant", "person", None),
        ("withdraw", "person", None),
    ]
    assert disclose(env, "varha-health", person, "work_assessment", "work_capacity_assessment") == 403

    for org in ("kisalli", "varha-health"):
        [notice] = inbox(env, org)
        assert notice["kind"] == "consent_withdrawn" and notice["sender"] is None and notice["person_id"] == person
        assert notice["content"] == {
            "consent_id": consent["id"],
            "withdrawn_at": "2026-01-15T09:00:00Z",
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
        }
        assert env.post(org, f"/inbox/{notice['notice_id']}/ack").status_code == 200
    assert inbox(env, "kela") == [] and inbox(env, "varha-social-work") == []

    [(entry, actor)] = audit_entries(env, "consent:withdraw")
    assert entry["actor_role"] == "person" and actor == person and entry["person_id"] == person
    assert entry["detail"]["told"] == ["kisalli", "varha-health"]
    with pytest.raises(ConsentNotActiveError):
        portal.withdraw_consent(env.broker, user, consent["id"])


def test_a_partner_cannot_send_the_brokers_own_withdrawal_notice(env: Env) -> None:
    person = adult(env)
    response = env.post(
        "kisalli",
        "/notices",
        {"person_id": person, "kind": "consent_withdrawn", "recipient": "varha-health", "content": {}},
    )
    assert response.status_code == 400 and response.get_json()["field"] == "kind"


def test_consents_show_expired_once_their_end_date_has_passed(env: Env) -> None:
    person = adult(env)
    user = me(env, person)
    consent = grant(env, user, ask(env, person, valid_days=10), categories=["attendance_report"])
    later(env, days=11)
    [listed] = portal.list_consents(env.broker, user)
    assert listed["status"] == "expired" and listed["in_effect"] is False
    assert portal.overview(env.broker, user)["active_consents"] == []
    with pytest.raises(ConsentNotActiveError):
        portal.withdraw_consent(env.broker, user, consent["id"])


def test_the_history_shown_never_names_the_professional(env: Env) -> None:
    person = adult(env)
    response = env.post(
        "kisalli",
        "/consents",
        {
            "person_id": person,
            "recipients": ["varha-health"],
            "categories": ["work_assessment"],
            "purposes": ["work_capacity_assessment"],
            "method": "in_person",
            "witness": "Pekka Salo, work coach",
        },
    )
    consent_id = response.get_json()["consent_id"]
    env.post("kisalli", f"/consents/{consent_id}/withdraw", {"reason": "asked by phone"})
    user = me(env, person)
    shown = portal.get_consent(env.broker, user, consent_id)
    assert shown["witness"] == "Pekka Salo, work coach"
    assert [(h["action"], h["by_kind"], h["by_org"]) for h in shown["history"]] == [
        ("grant", "professional", {"id": "kisalli", "name": "Työllistämispalvelut Kisälli, Lieto"}),
        ("withdraw", "professional", {"id": "kisalli", "name": "Työllistämispalvelut Kisälli, Lieto"}),
    ]
    everything = json.dumps([portal.list_consents(env.broker, user), portal.my_data(env.broker, user)], default=str)
    assert "kisalli-staff-1" not in everything and "individual_coach" not in everything


# --- the log, the statutory flows, the overview, my data -----------------------------------------------------


def test_the_log_lists_disclosures_and_refusals_newest_first_with_filters_and_pages(env: Env) -> None:
    person, other = adult(env), adult(env)
    for who in (person, other):
        env.serve(who, "kisalli", "varha-social-work")
        env.post(
            "varha-social-work",
            "/records",
            {"person_id": who, "category": "activity_decision", "content": EXAMPLES["activity_decision"]},
        )
    for _ in range(3):
        assert disclose(env, "kisalli", person, "activity_decision", "service_delivery") == 200
        later(env, days=1)
    assert disclose(env, "kela", person, "activity_decision", "service_delivery") == 403
    assert disclose(env, "kisalli", other, "activity_decision", "service_delivery") == 200
    user = me(env, person)

    log = portal.disclosure_log(env.broker, user, per_page=2)
    assert (log["total"], log["pages"], log["page"]) == (4, 2, 1)
    newest = log["items"][0]
    assert (newest["organisation"]["id"], newest["effect"], newest["basis"]) == ("kela", "deny", None)
    permitted = log["items"][1]
    assert permitted["organisation"] == {
        "id": "kisalli",
        "name": "Työllistämispalvelut Kisälli, Lieto",
        "org_type": "employment_services",
    }
    assert (permitted["category"], permitted["purpose"], permitted["kind"]) == (
        "activity_decision",
        "service_delivery",
        "request",
    )
    assert permitted["basis"]["kind"] == "statute" and permitted["basis"]["flow"] == "F3"
    assert permitted["basis"]["reference"] == env.broker.policy.rule("F3").secrecy_ground
    assert permitted["basis"]["explanation"] == env.broker.policy.rule("F3").explanation["en"]
    assert set(permitted) == {"id", "at", "organisation", "category", "purpose", "effect", "basis", "kind"}
    second = portal.disclosure_log(env.broker, user, per_page=2, page=2)
    times = [i["at"] for i in log["items"] + second["items"]]
    assert times == sorted(times, reverse=True) and len(set(i["id"] for i in log["items"] + second["items"])) == 4
    assert portal.disclosure_log(env.broker, user, per_page=2, page=3)["items"] == []

    assert portal.disclosure_log(env.broker, user, effect="deny")["total"] == 1
    assert portal.disclosure_log(env.broker, user, organisation="kisalli")["total"] == 3
    assert portal.disclosure_log(env.broker, user, category="work_assessment")["total"] == 0
    # The organisations to filter by: those in this person's log (not the other's), once each, by name.
    assert [o["id"] for o in portal.log_organisations(env.broker, user)] == ["kela", "kisalli"]
    assert portal.log_organisations(env.broker, me(env, other)) == [permitted["organisation"]]
    today = env.clock.now().date()
    first_day = today - timedelta(days=3)
    assert portal.disclosure_log(env.broker, user, since=first_day, until=first_day)["total"] == 1
    assert portal.disclosure_log(env.broker, user, since=today)["total"] == 1
    assert portal.disclosure_log(env.broker, user, until=today - timedelta(days=2))["total"] == 2
    for bad, field in (({"effect": "maybe"}, "effect"), ({"page": 0}, "page"), ({"per_page": 1000}, "per_page")):
        with pytest.raises(InvalidRequestError) as error:
            portal.disclosure_log(env.broker, user, **bad)
        assert error.value.field == field
    assert "kisalli-staff-1" not in json.dumps(log, default=str)


def test_statutory_flows_are_those_of_the_organisations_involved_with_the_person(env: Env) -> None:
    person = adult(env)
    user = me(env, person)
    assert portal.statutory_flows(env.broker, user) == []
    env.serve(person, "kisalli", "varha-social-work")
    flows = {f["flow"]: f for f in portal.statutory_flows(env.broker, user)}
    assert {"F3", "F5"} <= set(flows)
    f3 = flows["F3"]
    rule = env.broker.policy.rule("F3")
    assert f3["rule_id"] == "F3" and f3["reference"] == rule.secrecy_ground
    assert f3["lawful_basis"] == rule.lawful_basis and f3["explanation"] == rule.explanation["en"]
    assert f3["recipients"] == ["employment_services", "third_sector_provider"] and f3["sources"] == ["social_work"]
    assert f3["categories"] == ["activity_decision"] and f3["purposes"] == ["service_delivery"]
    assert all(env.broker.policy.rule(f["rule_id"]).basis == "statute" for f in flows.values())
    assert len(flows) == len(portal.statutory_flows(env.broker, user))  # one entry per flow
    # The youth act's flow (under 29 only) is not this 40-something's.
    assert "F14b" not in flows
    young = env.person(hetu=hetu(date(2001, 4, 1)))
    env.serve(young, "kisalli")
    assert "F14b" in {f["flow"] for f in portal.statutory_flows(env.broker, me(env, young))}


def test_the_overview_summarises_requests_consents_disclosures_and_statutory_flows(env: Env) -> None:
    person = env.person(hetu=hetu())
    env.serve(person, "kisalli", "varha-social-work")
    user = me(env, person)
    pending = ask(env, person)
    consent = grant(env, user, ask(env, person), categories=["attendance_report"])
    env.post(
        "varha-social-work",
        "/records",
        {"person_id": person, "category": "activity_decision", "content": EXAMPLES["activity_decision"]},
    )
    for _ in range(6):
        disclose(env, "kisalli", person, "activity_decision", "service_delivery")
    view = portal.overview(env.broker, user)
    assert view["person"] == {"id": person, "name": None}
    assert [r["id"] for r in view["pending_requests"]] == [pending]
    assert [c["id"] for c in view["active_consents"]] == [consent["id"]]
    assert len(view["latest_disclosures"]) == 5
    flows = portal.statutory_flows(env.broker, user)
    assert view["statutory_summary"]["count"] == len(flows) > 0
    assert "employment_services" in view["statutory_summary"]["organisation_types"]


def test_my_data_holds_consents_disclosures_and_records_metadata_but_no_record_content(env: Env) -> None:
    code = hetu()
    person = env.person(hetu=code)
    env.serve(person, "kisalli", "varha-social-work")
    user = me(env, person)
    consent = grant(env, user, ask(env, person), categories=["attendance_report"])
    record = env.post(
        "varha-social-work",
        "/records",
        {"person_id": person, "category": "activity_decision", "content": EXAMPLES["activity_decision"]},
    ).get_json()
    disclose(env, "kisalli", person, "activity_decision", "service_delivery")
    ward = env.person(hetu=hetu(date(2012, 2, 2)))
    register(env, ward, code, "custodian")

    data = portal.my_data(env.broker, user)
    text = json.dumps(data, ensure_ascii=False)  # JSON-ready as it is
    assert data["person"]["id"] == person and data["person"]["hetu"] == code
    assert date.fromisoformat(data["person"]["birth_date"]) < date(2000, 1, 1)
    [given] = data["consents"]
    assert given["id"] == consent["id"] and given["text"]["text"] and given["history"][0]["action"] == "grant"
    assert [d["organisation"]["id"] for d in data["disclosures"]] == ["kisalli"]
    assert data["records"] == [
        {
            "id": record["record_id"],
            "category": "activity_decision",
            "source": {"id": "varha-social-work", "name": "Varha, aikuissosiaalityö", "org_type": "social_work"},
            "deposited_at": "2026-01-15T09:00:00Z",
            "erased": False,
        }
    ]
    assert {r["organisation"]["id"] for r in data["relationships"]} == {"kisalli", "varha-social-work"}
    assert [r["id"] for r in data["requests"]] == [consent["request_id"]]
    assert data["representations"]["representatives"] == []
    [ward_entry] = data["representations"]["represents"]
    assert ward_entry["person"]["id"] == ward and ward_entry["mandate"] == "custodian" and ward_entry["active"]
    for value in (EXAMPLES["activity_decision"]["support_and_guidance"], EXAMPLES["activity_decision"]["goals"][0]):
        assert value not in text
