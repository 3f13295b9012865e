"""The webhook API (broker/http/api/webhooks.py; docs/webhooks.md), on SQLite and PostgreSQL: registering, listing and
disabling endpoints, the URL rules, the per-organisation limit, organisation isolation, the test call against a real
receiver on loopback, the delivery status, the event feed, the DPO systems' delivery status (scope `audit:read`) and
the DPO workspace's page of deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import AuditEntryRow, OutboxEventRow, WebhookDeliveryRow
from broker.adapters.signing import verify_jws
from broker.demo import DPO_PARTNER, caller
from broker.domain.clock import FixedClock
from broker.services import webhooks
from broker.services.events import EVENT_TYPES, SET_TYP, TEST_EVENT, emit, event_uri
from broker.services.webhooks import FEED_SETTLE, MAX_ENDPOINTS, InvalidWebhookUrlError
from tests.integration.receiver import Receiver
from tests.integration.test_portal import log_in
from tests.support import Env


@pytest.fixture
def clock() -> FixedClock:
    # The DPO's login (the development provider's tokens) is checked against the real time.
    return FixedClock(at=datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def receiver(env: Env) -> Iterator[Receiver]:
    with Receiver(env.broker.keys.public_jwks(), env.issuer) as running:
        yield running


def register(env: Env, org: str, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = env.post(org, "/webhooks", {"url": url, "events": events or ["consent.withdrawn"]})
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def emit_for(env: Env, org: str, count: int = 1, event_type: str = "consent.withdrawn") -> list[str]:
    ids = []
    with env.broker.uow() as uow:
        for n in range(count):
            found = emit(
                uow,
                type=event_type,
                organisations=[org],
                person_id=f"per_{n}",
                data={"consent_id": f"con_{n}"},
                now=env.clock.now(),
            )
            ids.append(found[org])
        uow.commit()
    return ids


def audit_entries(env: Env, event: str) -> list[dict[str, Any]]:
    with env.broker.uow(write=False) as uow:
        rows = uow.session.scalars(
            select(AuditEntryRow.entry).where(AuditEntryRow.event == event).order_by(AuditEntryRow.id)
        )
        return [json.loads(row) for row in rows]


def test_an_endpoint_is_registered_listed_and_disabled_and_each_change_is_logged(env: Env, receiver: Receiver) -> None:
    url = receiver.url + "?token=receivers-own-secret"
    created = env.post(
        "kela", "/webhooks", {"url": url, "events": ["consent.withdrawn", "consent.granted", "consent.withdrawn"]}
    )
    assert created.status_code == 201, created.get_json()
    endpoint = created.get_json()
    webhook_id = endpoint["webhook_id"]
    assert webhook_id.startswith("whk_")
    assert endpoint | {"webhook_id": "", "created_at": ""} == {
        "webhook_id": "",
        "organisation": "kela",
        "url": url,
        "events": ["consent.granted", "consent.withdrawn"],  # deduplicated, sorted
        "active": True,
        "registered_by": "kela",
        "created_at": "",
        "disabled_at": None,
        "deliveries": {"pending": 0, "delivered": 0, "failed": 0},
    }
    [logged] = audit_entries(env, "webhook:register")
    assert logged["organisation"] == "kela"
    # The URL is logged without its query, which may hold the receiver's own secret.
    assert logged["detail"] == {
        "webhook_id": webhook_id,
        "url": receiver.url + "?…",
        "events": ["consent.granted", "consent.withdrawn"],
    }

    emit_for(env, "kela", 2)
    listed = env.get("kela", "/webhooks")
    assert listed.status_code == 200
    assert [(e["webhook_id"], e["deliveries"]["pending"]) for e in listed.get_json()] == [(webhook_id, 2)]
    assert env.get("kela", f"/webhooks/{webhook_id}").get_json()["deliveries"]["pending"] == 2

    disabled = env.call("kela", "DELETE", f"/api/v1/webhooks/{webhook_id}")
    assert disabled.status_code == 204 and disabled.get_data() == b""
    again = env.call("kela", "DELETE", f"/api/v1/webhooks/{webhook_id}")
    assert again.status_code == 204  # disabling is idempotent, and logged once
    [shown] = env.get("kela", "/webhooks").get_json()
    assert shown["active"] is False and shown["disabled_at"] is not None
    assert shown["deliveries"] == {"pending": 0, "delivered": 0, "failed": 2}
    [logged] = audit_entries(env, "webhook:disable")
    assert logged["detail"] == {"webhook_id": webhook_id, "url": receiver.url + "?…", "abandoned_deliveries": 2}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://partner.example/events#top", "must not have a fragment"),
        ("https://user:secret@partner.example/events", "must not carry a user name or password"),
        ("http://partner.example/events", "must be an https URL"),
        ("ftp://partner.example/events", "must be an https URL"),
        ("/events", "must be an absolute URL"),
        ("partner.example/events", "must be an absolute URL"),
        ("https://10.1.2.3/events", "must name a public address"),
        ("https://[fe80::1]/events", "must name a public address"),
        ("https://partner.example:99999/events", "has an invalid port"),
        ("https://partner.example/events/010190-900A", "personal identity code"),
        ("https://partner.example/ev ents", "must not contain spaces"),
    ],
)
def test_a_url_the_broker_will_not_send_to_is_refused_and_named(env: Env, url: str, reason: str) -> None:
    response = env.post("kela", "/webhooks", {"url": url, "events": ["consent.withdrawn"]})
    assert response.status_code == 400
    problem = response.get_json()
    assert (problem["code"], problem["field"]) == ("invalid_webhook_url", "url")
    assert reason in problem["detail"]


def test_event_types_are_checked(env: Env) -> None:
    unknown = env.post("kela", "/webhooks", {"url": "https://kela.example/e", "events": ["consent.updated"]})
    assert unknown.status_code == 400
    assert (unknown.get_json()["code"], unknown.get_json()["field"]) == ("unknown_event_type", "events")
    assert "consent.updated" in unknown.get_json()["detail"]
    empty = env.post("kela", "/webhooks", {"url": "https://kela.example/e", "events": []})
    assert empty.status_code == 400 and empty.get_json()["field"] == "events"
    test_only = env.post("kela", "/webhooks", {"url": "https://kela.example/e", "events": [TEST_EVENT]})
    assert test_only.get_json()["code"] == "unknown_event_type"  # sent by the test call only; not subscribable


def test_plain_http_to_loopback_is_allowed_only_in_demo_and_test_mode(env: Env) -> None:
    kela = caller(env.broker, "kela")
    assert webhooks.register_endpoint(env.broker, kela, "http://127.0.0.1:9/events", ["consent.granted"])["active"]
    assert webhooks.register_endpoint(env.broker, kela, "http://localhost:9/events", ["consent.granted"])["active"]
    production = replace(env.broker, settings=replace(env.broker.settings, mode="production"))
    for url in ("http://127.0.0.1:9/e", "http://[::1]:9/e", "http://localhost:9/e", "https://127.0.0.1/e"):
        with pytest.raises(InvalidWebhookUrlError):
            webhooks.register_endpoint(production, kela, url, ["consent.granted"])


def test_an_organisation_has_a_limited_number_of_active_endpoints_and_no_two_with_one_url(env: Env) -> None:
    ids = [register(env, "kela", f"https://kela.example/events/{n}")["webhook_id"] for n in range(MAX_ENDPOINTS)]
    one_more = env.post("kela", "/webhooks", {"url": "https://kela.example/more", "events": ["consent.granted"]})
    assert one_more.status_code == 409 and one_more.get_json()["code"] == "too_many_webhooks"
    assert env.call("kela", "DELETE", f"/api/v1/webhooks/{ids[0]}").status_code == 204
    register(env, "kela", "https://kela.example/more")
    register(env, "kisalli", "https://kela.example/more")  # the limit and the URL are per organisation
    taken = env.post("kela", "/webhooks", {"url": "https://kela.example/events/3", "events": ["consent.granted"]})
    assert taken.status_code == 409
    assert (taken.get_json()["code"], taken.get_json()["webhook_id"]) == ("webhook_url_taken", ids[3])


def test_another_organisations_endpoint_is_not_found(env: Env, receiver: Receiver) -> None:
    theirs = register(env, "kisalli", receiver.url)["webhook_id"]
    emit_for(env, "kisalli")
    assert env.get("kela", "/webhooks").get_json() == []
    for method, path in (
        ("GET", f"/api/v1/webhooks/{theirs}"),
        ("DELETE", f"/api/v1/webhooks/{theirs}"),
        ("POST", f"/api/v1/webhooks/{theirs}/test"),
        ("GET", f"/api/v1/webhooks/{theirs}/deliveries"),
        ("GET", "/api/v1/webhooks/whk_nothing/deliveries"),
    ):
        response = env.call("kela", method, path)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["code"] == "not_found"
    assert env.get("kela", "/events").get_json()["events"] == []
    assert receiver.requests == []  # kela's test call reached nothing
    assert env.get("kisalli", f"/webhooks/{theirs}").get_json()["active"] is True


def test_the_webhooks_scope_is_required(env: Env) -> None:
    headers = env.auth_headers("kela", "GET", "/api/v1/webhooks", scope="persons")
    response = env.client.get("/api/v1/webhooks", headers=headers)
    assert response.status_code == 403
    dpo = env.get(DPO_PARTNER, "/events")
    assert dpo.status_code == 403


def test_the_test_call_sends_a_signed_test_event_to_the_endpoint(env: Env, receiver: Receiver) -> None:
    webhook_id = register(env, "kela", receiver.url)["webhook_id"]
    response = env.post("kela", f"/webhooks/{webhook_id}/test")
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert (result["delivered"], result["status"], result["error"]) == (True, 202, None)
    assert result["elapsed_ms"] >= 0
    [(jti, claims)] = receiver.accepted.items()
    assert jti == result["event_id"]
    assert claims["aud"] == "kela" and claims["iss"] == env.issuer
    assert claims["events"] == {event_uri(env.issuer, TEST_EVENT): {"webhook_id": webhook_id}}
    with env.broker.uow(write=False) as uow:  # stored nowhere
        assert uow.session.scalar(select(func.count()).select_from(OutboxEventRow)) == 0

    receiver.fail_next(1, 503, body=b"maintenance")
    failing = env.post("kela", f"/webhooks/{webhook_id}/test").get_json()
    assert (failing["delivered"], failing["status"], failing["error"]) == (False, 503, "HTTP 503: maintenance")
    assert failing["event_id"] != result["event_id"]  # each test call its own jti

    env.call("kela", "DELETE", f"/api/v1/webhooks/{webhook_id}")
    disabled = env.post("kela", f"/webhooks/{webhook_id}/test")
    assert disabled.status_code == 409 and disabled.get_json()["code"] == "webhook_disabled"


def test_the_test_call_to_an_endpoint_that_does_not_answer_says_why(env: Env) -> None:
    with Receiver(env.broker.keys.public_jwks(), env.issuer) as gone:
        url = gone.url
    webhook_id = register(env, "kela", url)["webhook_id"]  # the port is closed now
    result = env.post("kela", f"/webhooks/{webhook_id}/test").get_json()
    assert result == result | {
        "delivered": False,
        "status": None,
        "error": "the connection was refused or the host is unreachable",
    }


def test_the_delivery_status_pages_newest_first(env: Env, receiver: Receiver) -> None:
    webhook_id = register(env, "kela", receiver.url)["webhook_id"]
    ids = emit_for(env, "kela", 3)
    receiver.fail_next(1, 500)
    webhooks.deliver_due(env.broker, concurrency=1)  # in event order: the first fails

    everything = env.get("kela", f"/webhooks/{webhook_id}/deliveries").get_json()
    assert [d["event_id"] for d in everything["deliveries"]] == ids[::-1]
    assert everything["next_cursor"] is None
    first = everything["deliveries"][-1]
    assert first | {"delivery_id": "", "created_at": "", "last_attempt_at": "", "next_attempt_at": ""} == {
        "delivery_id": "",
        "webhook_id": webhook_id,
        "event_id": ids[0],
        "type": "consent.withdrawn",
        "organisation": "kela",
        "status": "pending",
        "attempts": 1,
        "next_attempt_at": "",
        "last_attempt_at": "",
        "last_status": 500,
        "last_error": "HTTP 500",
        "delivered_at": None,
        "created_at": "",
    }
    assert first["next_attempt_at"] is not None

    page = env.get("kela", f"/webhooks/{webhook_id}/deliveries?status=delivered&limit=1").get_json()
    assert [d["event_id"] for d in page["deliveries"]] == [ids[2]]
    rest = env.get("kela", f"/webhooks/{webhook_id}/deliveries?status=delivered&cursor={page['next_cursor']}")
    assert [d["event_id"] for d in rest.get_json()["deliveries"]] == [ids[1]]
    assert rest.get_json()["next_cursor"] is None

    for query in ("status=lost", "cursor=abc", "cursor=99999999999999999999", "limit=0", "other=1"):
        bad = env.get("kela", f"/webhooks/{webhook_id}/deliveries?{query}")
        assert bad.status_code == 400, query


def test_the_event_feed_lists_the_organisations_events_in_order(env: Env) -> None:
    kela = emit_for(env, "kela", 3) + emit_for(env, "kela", 1, "notice.delivered")
    emit_for(env, "kisalli", 2)
    if env.broker.db.engine.dialect.name == "postgresql":
        # On PostgreSQL an event is listed once no earlier one can still commit (webhooks.FEED_SETTLE).
        assert env.get("kela", "/events").get_json() == {"events": [], "next_cursor": None, "has_more": False}
        env.clock.advance(seconds=FEED_SETTLE.total_seconds())

    page = env.get("kela", "/events?limit=3").get_json()
    assert [e["event_id"] for e in page["events"]] == kela[:3] and page["has_more"] is True
    assert page["events"][0] | {"occurred_at": ""} == {
        "event_id": kela[0],
        "type": "consent.withdrawn",
        "organisation": "kela",
        "person_id": "per_0",
        "data": {"consent_id": "con_0", "person_id": "per_0"},
        "occurred_at": "",
    }
    rest = env.get("kela", f"/events?after={page['next_cursor']}&tokens=true").get_json()
    assert [e["event_id"] for e in rest["events"]] == kela[3:] and rest["has_more"] is False
    [event] = rest["events"]
    claims = verify_jws(event["token"], env.broker.keys.public_jwks(), typ=SET_TYP)
    assert claims["jti"] == event["event_id"] and claims["aud"] == "kela"
    assert claims["events"] == {event_uri(env.issuer, "notice.delivered"): event["data"]}
    # Nothing new: the cursor stays where it is.
    idle = env.get("kela", f"/events?after={rest['next_cursor']}").get_json()
    assert idle == {"events": [], "next_cursor": rest["next_cursor"], "has_more": False}
    for query in ("after=x", "after=99999999999999999999", "limit=501", "tokens=maybe"):
        assert env.get("kela", f"/events?{query}").status_code == 400, query


def test_an_event_of_a_real_change_reaches_the_recipients_endpoint(env: Env) -> None:
    """Kisälli records a consent that names the health centre: the health centre's endpoint gets consent.granted."""
    with Receiver(env.broker.keys.public_jwks(), env.issuer, audiences={"varha-health"}) as health:
        register(env, "varha-health", health.url, ["consent.granted"])
        person = env.person()
        recorded = env.post(
            "kisalli",
            "/consents",
            {
                "person_id": person,
                "recipients": ["varha-health"],
                "categories": ["work_assessment"],
                "purposes": ["work_capacity_assessment"],
                "method": "in_person",
                "witness": "Pekka Salo",
            },
        )
        assert recorded.status_code == 201, recorded.get_json()
        assert webhooks.deliver_due(env.broker).count("delivered") == 1
        [claims] = health.accepted.values()
        [data] = claims["events"].values()
        assert (data["consent_id"], data["person_id"]) == (recorded.get_json()["consent_id"], person)


def test_the_dpo_sees_every_organisations_endpoints_and_the_deliveries_given_up(env: Env, receiver: Receiver) -> None:
    kela = register(env, "kela", receiver.url + "?secret=1", list(EVENT_TYPES))["webhook_id"]
    register(env, "kisalli", "https://kisalli.example/events")
    [failed, delivered] = emit_for(env, "kela", 2)
    webhooks.disable_endpoint(env.broker, caller(env.broker, "kela"), kela)  # both given up
    with env.broker.uow() as uow:  # one had in fact arrived: make it delivered, as the worker would have
        row = uow.session.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.event_id == delivered)).one()
        row.status, row.last_error = "delivered", None
        uow.commit()

    endpoints = env.get(DPO_PARTNER, "/audit/webhooks")
    assert endpoints.status_code == 200
    shown = {e["webhook_id"]: e for e in endpoints.get_json()}
    assert shown[kela]["url"] == receiver.url + "?…" and shown[kela]["organisation"] == "kela"
    assert shown[kela]["deliveries"] == {"pending": 0, "delivered": 1, "failed": 1}
    given_up = env.get(DPO_PARTNER, "/audit/webhook-deliveries").get_json()
    assert [(d["event_id"], d["last_error"]) for d in given_up["deliveries"]] == [(failed, "endpoint disabled")]
    assert env.get(DPO_PARTNER, "/audit/webhook-deliveries?organisation=kisalli").get_json()["deliveries"] == []
    assert env.get("kela", "/audit/webhook-deliveries").status_code == 403

    browser = log_in(env, "dpo", landing="/portal/")
    page = browser.client.get("/dpo/deliveries", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Event deliveries" in text and "Kela" in text
    assert receiver.url + "?…" in text and "secret=1" not in text
    assert failed in text and "The endpoint was disabled" in text
    assert "per_0" not in text  # no person on the page
    assert browser.client.get("/dpo/deliveries?x=1").status_code == 400


def test_a_registration_retried_with_its_idempotency_key_registers_once(env: Env) -> None:
    body = {"url": "https://kela.example/events", "events": ["consent.granted"]}
    key = {"Idempotency-Key": '"6f1c1b1e-0d7e-4a55-9a3e-2f0c3c9d1a77"'}
    first = env.post("kela", "/webhooks", body, headers=key)
    again = env.post("kela", "/webhooks", body, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotency-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert len(env.get("kela", "/webhooks").get_json()) == 1
    assert len(audit_entries(env, "webhook:register")) == 1
