"""Statutory notices over the API: sending one to another organisation, reading the inbox, acknowledging, and
what bad input and a notice the policy does not allow get back.

The flows asserted here are those of policies/rules: F5 (activation.yaml, 703/2023 14 § and 17 §: the work
activity place tells social work, all four fields, with a service relationship), F6 (activation.yaml,
380/2023 115 §: the employment authority and Kela learn only the date and the reason category), F12a/F12b
(protection.yaml: a substance incident goes to social work only, without the action taken).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import AuditEntryRow, DisclosureRow, NoticeRow
from schemas.records.examples import EXAMPLES
from tests.support import Env

INTERRUPTION = EXAMPLES["interruption_notice"]
NOTICE_FIELDS = {"notice_id", "person_id", "kind", "sender", "basis", "content", "created_at", "acknowledged_at"}


def send(env: Env, person_id: str, kind: str, recipient: str, content: Any = None, sender: str = "kisalli"):
    body = {
        "person_id": person_id,
        "kind": kind,
        "recipient": recipient,
        "content": EXAMPLES[kind] if content is None else content,
    }
    return env.post(sender, "/notices", body)


def sent_to_social_work(env: Env) -> tuple[str, str]:
    """A person served by Kisälli and social work, and the interruption notice Kisälli sent about them."""
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    response = send(env, person_id, "interruption_notice", "varha-social-work")
    assert response.status_code == 201, response.get_json()
    notice_id: str = response.get_json()["notice_id"]
    return person_id, notice_id


def inbox(env: Env, org: str, query: str = "") -> list[dict[str, Any]]:
    response = env.get(org, f"/inbox{query}")
    assert response.status_code == 200, response.get_json()
    notices: list[dict[str, Any]] = response.get_json()
    return notices


def last_audit_entry(env: Env) -> dict[str, Any]:
    with env.broker.uow(write=False) as uow:
        entry = uow.session.scalars(select(AuditEntryRow.entry).order_by(AuditEntryRow.id.desc())).first()
    assert entry is not None
    decoded: dict[str, Any] = json.loads(entry)
    return decoded


def notice_count(env: Env) -> int:
    with env.broker.uow(write=False) as uow:
        return uow.session.scalar(select(func.count()).select_from(NoticeRow)) or 0


def test_an_interruption_notice_reaches_the_social_workers_inbox_on_a_statutory_basis(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    response = send(env, person_id, "interruption_notice", "varha-social-work")
    assert response.status_code == 201, response.get_json()
    sent = response.get_json()
    assert sent["kind"] == "interruption_notice" and sent["recipient"] == "varha-social-work"
    assert sent["basis"]["kind"] == "statute" and sent["basis"]["rule"] == "F5"
    allowed = env.broker.policy.rule("F5").fields["interruption_notice"]
    assert sent["fields"] == sorted(allowed)

    [notice] = inbox(env, "varha-social-work")
    assert set(notice) == NOTICE_FIELDS
    assert notice["notice_id"] == sent["notice_id"] and notice["person_id"] == person_id
    assert notice["sender"] == "kisalli" and notice["kind"] == "interruption_notice"
    assert notice["basis"] == sent["basis"] and notice["acknowledged_at"] is None
    assert set(notice["content"]) <= set(allowed)
    assert notice["content"] == {k: v for k, v in INTERRUPTION.items() if k in allowed}
    assert last_audit_entry(env)["event"] == "notice:send"


def test_a_notice_is_in_no_other_organisations_inbox(env: Env) -> None:
    sent_to_social_work(env)
    for org in ("kisalli", "kela", "turku-employment", "varha-health"):
        assert inbox(env, org) == []


def test_a_notice_needs_the_recipients_service_relationship_under_f5(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli")
    response = send(env, person_id, "interruption_notice", "varha-social-work")
    assert response.status_code == 403 and response.get_json()["code"] == "no_legal_basis"
    assert inbox(env, "varha-social-work") == []


def test_an_acknowledged_notice_leaves_the_default_inbox_but_can_still_be_listed(env: Env) -> None:
    _, notice_id = sent_to_social_work(env)
    response = env.post("varha-social-work", f"/inbox/{notice_id}/ack")
    assert response.status_code == 200, response.get_json()
    acked = response.get_json()
    assert acked["notice_id"] == notice_id and acked["acknowledged_at"] is not None
    assert last_audit_entry(env)["event"] == "notice:ack"

    assert inbox(env, "varha-social-work") == []
    [listed] = inbox(env, "varha-social-work", "?include_acknowledged=true")
    assert listed["notice_id"] == notice_id and listed["acknowledged_at"] == acked["acknowledged_at"]


def test_acknowledging_twice_keeps_the_first_acknowledgement(env: Env) -> None:
    _, notice_id = sent_to_social_work(env)
    first = env.post("varha-social-work", f"/inbox/{notice_id}/ack").get_json()
    env.clock.advance(seconds=60)
    second = env.post("varha-social-work", f"/inbox/{notice_id}/ack")
    assert second.status_code == 200
    assert second.get_json()["acknowledged_at"] == first["acknowledged_at"]


@pytest.mark.parametrize("org", ["kisalli", "kela"])
def test_only_the_recipient_can_acknowledge_a_notice(env: Env, org: str) -> None:
    _, notice_id = sent_to_social_work(env)
    response = env.post(org, f"/inbox/{notice_id}/ack")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json" and response.get_json()["code"] == "not_found"
    [notice] = inbox(env, "varha-social-work")
    assert notice["acknowledged_at"] is None


def test_acknowledging_an_unknown_notice_is_not_found(env: Env) -> None:
    response = env.post("varha-social-work", "/inbox/not_0123456789abcdef/ack")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def test_the_employment_authority_receives_only_the_date_and_the_reason_category(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli")
    response = send(env, person_id, "interruption_notice", "turku-employment")
    assert response.status_code == 201, response.get_json()
    sent = response.get_json()
    assert sent["basis"]["rule"] == "F6" and sent["fields"] == ["interruption_date", "reason_category"]
    [notice] = inbox(env, "turku-employment")
    # The inbox shows the stored (sealed) content as it is: projected before it was stored.
    assert notice["content"] == {
        "interruption_date": INTERRUPTION["interruption_date"],
        "reason_category": INTERRUPTION["reason_category"],
    }
    with env.broker.uow(write=False) as uow:
        [disclosure] = uow.session.scalars(select(DisclosureRow)).all()
    assert disclosure.kind == "notice" and disclosure.effect == "permit"
    assert disclosure.fields == ["interruption_date", "reason_category"]


def test_a_substance_incident_reaches_social_work_without_the_action_taken(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    response = send(env, person_id, "substance_incident", "varha-social-work")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["basis"]["rule"] == "F12a"
    [notice] = inbox(env, "varha-social-work")
    assert set(notice["content"]) == {"incident_date", "observed_facts"}


def test_a_notice_the_policy_forbids_is_refused_and_logged_as_a_denied_disclosure(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "kela")
    response = send(env, person_id, "substance_incident", "kela")
    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "no_legal_basis"
    assert problem["decision"]["effect"] == "deny"
    assert any(r["rule"] == "F12b" and r["applies"] for r in problem["decision"]["reasons"])
    assert EXAMPLES["substance_incident"]["observed_facts"] not in response.get_data(as_text=True)

    entry = last_audit_entry(env)
    assert entry["event"] == "disclosure:deny" and entry["effect"] == "deny"
    assert entry["category"] == "substance_incident" and entry["person_id"] == person_id
    assert entry["detail"]["notice_kind"] == "substance_incident" and entry["detail"]["recipient"] == "kela"
    with env.broker.uow(write=False) as uow:
        [disclosure] = uow.session.scalars(select(DisclosureRow)).all()
    assert disclosure.kind == "notice" and disclosure.effect == "deny" and disclosure.fields == []
    assert notice_count(env) == 0
    assert inbox(env, "kela") == []


def test_an_unknown_notice_kind_is_refused_naming_the_kind(env: Env) -> None:
    person_id = env.person()
    response = send(env, person_id, "birthday_greeting", "varha-social-work", content=INTERRUPTION)
    assert response.status_code == 400
    problem = response.get_json()
    assert problem["code"] == "invalid_request" and problem["field"] == "kind"
    assert notice_count(env) == 0


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (dict(INTERRUPTION, diagnosis="F10.2"), "diagnosis"),
        ({k: v for k, v in INTERRUPTION.items() if k != "interruption_date"}, "interruption_date"),
        (dict(INTERRUPTION, interruption_date="10.2.2026"), "interruption_date"),
    ],
    ids=["unknown field", "missing field", "malformed date"],
)
def test_notice_content_is_validated_by_its_category_schema(env: Env, content: dict[str, Any], named: str) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    response = send(env, person_id, "interruption_notice", "varha-social-work", content=content)
    assert response.status_code == 400
    problem = response.get_json()
    assert problem["code"] == "invalid_request" and problem["field"] == "content"
    assert named in problem["errors"]["content"]
    assert notice_count(env) == 0


def test_an_unknown_recipient_is_refused(env: Env) -> None:
    person_id = env.person()
    response = send(env, person_id, "interruption_notice", "nowhere-org")
    assert response.status_code == 400
    problem = response.get_json()
    assert problem["code"] == "unknown_organisation" and problem["field"] == "recipient"


def test_a_notice_about_an_unknown_person_is_not_found(env: Env) -> None:
    response = send(env, "per_0123456789abcdef", "interruption_notice", "varha-social-work")
    assert response.status_code == 404 and response.get_json()["code"] == "unknown_person"


def test_an_unknown_purpose_is_refused_naming_the_purpose(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    body = {
        "person_id": person_id,
        "kind": "interruption_notice",
        "recipient": "varha-social-work",
        "purpose": "horoscope",
        "content": INTERRUPTION,
    }
    response = env.post("kisalli", "/notices", body)
    assert response.status_code == 400
    assert response.get_json()["code"] == "unknown_purpose" and response.get_json()["field"] == "purpose"
    # A word the policy does not know is the client's mistake, not a decision: nothing is logged as denied.
    assert last_audit_entry(env)["event"] != "disclosure:deny"
    assert notice_count(env) == 0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"kind": "interruption_notice", "recipient": "kela", "content": INTERRUPTION}, "person_id"),
        ({"person_id": "per_x", "kind": "interruption_notice", "recipient": "kela"}, "content"),
        ({"person_id": "per_x", "kind": "interruption_notice", "recipient": "kela", "content": [1]}, "content"),
        (
            {"person_id": "per_x", "kind": "interruption_notice", "recipient": "kela", "content": {}, "urgent": 1},
            "urgent",
        ),
    ],
    ids=["missing person", "missing content", "content not an object", "unknown field"],
)
def test_a_malformed_notice_request_names_the_field(env: Env, body: dict[str, Any], named: str) -> None:
    response = env.post("kisalli", "/notices", body)
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.get_json()["field"] == named


def test_notices_need_an_access_token_with_the_notices_scope(env: Env) -> None:
    person_id = env.person()
    anonymous = env.client.post("/api/v1/notices", json={})
    assert anonymous.status_code == 401 and anonymous.get_json()["code"] == "invalid_token"

    def headers(method: str, path: str) -> dict[str, str]:
        return env.auth_headers("kisalli", method, path, scope="persons")

    body = {"person_id": person_id, "kind": "interruption_notice", "recipient": "kela", "content": INTERRUPTION}
    for response in (
        env.client.post("/api/v1/notices", json=body, headers=headers("POST", "/api/v1/notices")),
        env.client.get("/api/v1/inbox", headers=headers("GET", "/api/v1/inbox")),
        env.client.post("/api/v1/inbox/not_x/ack", headers=headers("POST", "/api/v1/inbox/not_x/ack")),
    ):
        assert response.status_code == 403 and response.get_json()["code"] == "insufficient_scope"
    assert notice_count(env) == 0


def test_the_inbox_refuses_an_unknown_query_parameter(env: Env) -> None:
    response = env.get("varha-social-work", "/inbox?since=2025-01-01")
    assert response.status_code == 400
    problem = response.get_json()
    assert problem["code"] == "invalid_request" and problem["field"] == "since"


@pytest.mark.parametrize("limit", ["0", "501", "-1", "many"])
def test_the_inbox_limit_must_be_between_1_and_500(env: Env, limit: str) -> None:
    response = env.get("varha-social-work", f"/inbox?limit={limit}")
    assert response.status_code == 400
    assert response.get_json()["field"] == "limit"


def test_the_inbox_limit_caps_the_answer_oldest_first(env: Env) -> None:
    person_id = env.person()
    env.serve(person_id, "kisalli", "varha-social-work")
    ids = []
    for _ in range(3):
        ids.append(send(env, person_id, "interruption_notice", "varha-social-work").get_json()["notice_id"])
        env.clock.advance(seconds=1)
    assert [n["notice_id"] for n in inbox(env, "varha-social-work", "?limit=2")] == ids[:2]
    assert [n["notice_id"] for n in inbox(env, "varha-social-work", "?limit=500")] == ids
