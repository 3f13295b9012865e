"""The transactional outbox (broker/services/events.py): events exist exactly when the change that emitted them
committed, one per addressed organisation, with a delivery to each subscribed active endpoint; the Security Event
Token that carries an event (RFC 8417) verifies with the broker's JWKS."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from broker.adapters.orm import OutboxEventRow, WebhookDeliveryRow
from broker.adapters.signing import verify_jws
from broker.services.events import SET_TYP, emit, event_uri, sign_event
from tests.support import Env, add_endpoint


def test_one_event_per_organisation_and_a_delivery_per_subscribed_active_endpoint(env: Env) -> None:
    add_endpoint(env, "whk_a", "kela", ["consent.withdrawn"])
    add_endpoint(env, "whk_b", "kela", ["consent.withdrawn", "consent.granted"])
    add_endpoint(env, "whk_c", "kela", ["consent.granted"])  # not subscribed to the type
    add_endpoint(env, "whk_d", "kela", ["consent.withdrawn"], active=False)
    add_endpoint(env, "whk_e", "varha-health", ["consent.withdrawn"])
    person = env.person()
    now = env.clock.now()
    with env.broker.uow() as uow:
        ids = emit(
            uow,
            type="consent.withdrawn",
            organisations=["varha-health", "kela", "kela", "kisalli"],
            person_id=person,
            data={"consent_id": "con_x", "withdrawn_at": now},
            now=now,
            per_organisation={"kela": {"attestation": {"required": True}}},
        )
        uow.commit()
    assert sorted(ids) == ["kela", "kisalli", "varha-health"]
    with env.broker.uow(write=False) as uow:
        events = {e.organisation_id: e for e in uow.session.scalars(select(OutboxEventRow))}
        deliveries = uow.session.execute(select(WebhookDeliveryRow.event_id, WebhookDeliveryRow.endpoint_id)).all()
    assert {org: e.id for org, e in events.items()} == ids
    assert events["kela"].data == {
        "consent_id": "con_x",
        "withdrawn_at": now.isoformat().replace("+00:00", "Z"),
        "person_id": person,
        "attestation": {"required": True},
    }
    assert "attestation" not in events["kisalli"].data
    assert sorted((endpoint, event) for event, endpoint in deliveries) == sorted(
        [("whk_a", ids["kela"]), ("whk_b", ids["kela"]), ("whk_e", ids["varha-health"])]
    )


def test_events_of_a_rolled_back_change_never_exist(env: Env) -> None:
    add_endpoint(env, "whk_a", "kela", ["consent.granted"])
    with env.broker.uow() as uow:
        emit(uow, type="consent.granted", organisations=["kela"], person_id=None, data={}, now=env.clock.now())
        # no commit: the change and its event roll back together
    with env.broker.uow(write=False) as uow:
        assert uow.session.scalar(select(func.count()).select_from(OutboxEventRow)) == 0
        assert uow.session.scalar(select(func.count()).select_from(WebhookDeliveryRow)) == 0


def test_an_unknown_event_type_is_refused(env: Env) -> None:
    with env.broker.uow() as uow, pytest.raises(ValueError, match="unknown event type"):
        emit(uow, type="consent.updated", organisations=["kela"], person_id=None, data={}, now=env.clock.now())


def test_the_security_event_token_verifies_and_names_its_one_audience(env: Env) -> None:
    occurred = env.clock.now()
    with env.broker.uow() as uow:
        ids = emit(
            uow,
            type="notice.delivered",
            organisations=["kela"],
            person_id="per_1",
            data={"notice_id": "ntc_1"},
            now=occurred,
        )
        uow.commit()
    with env.broker.uow(write=False) as uow:
        row = uow.session.scalars(select(OutboxEventRow)).one()
    token = sign_event(env.broker, row, now=occurred + timedelta(minutes=5))
    claims = verify_jws(token, env.broker.keys.public_jwks(), typ=SET_TYP)
    assert claims == {
        "iss": env.issuer,
        "aud": "kela",
        "iat": int((occurred + timedelta(minutes=5)).timestamp()),
        "jti": ids["kela"],
        "toe": int(occurred.timestamp()),
        "events": {event_uri(env.issuer, "notice.delivered"): {"notice_id": "ntc_1", "person_id": "per_1"}},
    }
