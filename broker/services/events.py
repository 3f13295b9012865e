"""Events for partner systems: the transactional outbox and the Security Event Tokens that carry them.

An event is written by `emit` in the same unit of work as the change it reports, so that it exists exactly when
the change committed — never an event for a change that rolled back, never a committed change without its event.
The worker (`broker worker`, services/webhooks.py) pushes each event to the addressed organisation's endpoints.

Each pushed event is a Security Event Token (RFC 8417): a JWT signed with the broker's Ed25519 key (verifiable with
/.well-known/jwks.json), `typ` "secevent+jwt" (RFC 8417 §2.3), `jti` the event id that receivers de-duplicate on
(delivery is at-least-once), `aud` the one organisation it is addressed to, and one member in `events` whose name is
the event type's URI. Delivery follows RFC 8935 (push-based SET delivery over HTTP).

What an event holds is ids and states only: the opaque `person_id`, consent and notice ids, organisations, times.
Never record content, never an identity code (DESIGN.md invariants 6 and 8): a partner fetches what it needs
through the API, where policy is checked and the read logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from broker.adapters.orm import OutboxEventRow, WebhookDeliveryRow, WebhookEndpointRow
from broker.adapters.signing import sign_jws
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.services import Broker, new_id

#: Every event type a partner may subscribe to.
EVENT_TYPES = (
    "consent_request.answered",
    "consent_request.expired",
    "consent.granted",
    "consent.withdrawn",
    "consent.expired",
    "notice.delivered",
    "relationship.ended",
)
#: Sent only by an endpoint's test call (POST /api/v1/webhooks/{id}/test); never stored in the outbox.
TEST_EVENT = "webhook.test"
#: The JWS "typ" of a Security Event Token (RFC 8417 §2.3).
SET_TYP = "secevent+jwt"
#: The media type of a pushed SET (RFC 8935 §2).
SET_MEDIA_TYPE = "application/secevent+jwt"


def event_uri(issuer: str, event_type: str) -> str:
    """The URI naming an event type in a SET's `events` claim (RFC 8417 §2.2: event identifiers are URIs)."""
    return f"{issuer}/events/{event_type}"


def emit(
    uow: UnitOfWork,
    *,
    type: str,
    organisations: Iterable[str],
    person_id: str | None,
    data: dict[str, Any],
    now: datetime,
    per_organisation: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Add one event of `type` for each of `organisations` to the unit of work, with a pending delivery to each of
    the organisation's active endpoints subscribed to the type. `per_organisation` adds members to one
    organisation's data (e.g. whether it must attest). Returns the event id per organisation.

    The caller commits: the events are part of its transaction (the outbox's whole point)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    addressed = sorted(set(organisations))
    if not addressed:
        return {}
    session = uow.session
    endpoints: dict[str, list[str]] = {}
    for endpoint_id, organisation_id, events in session.execute(
        select(WebhookEndpointRow.id, WebhookEndpointRow.organisation_id, WebhookEndpointRow.events).where(
            WebhookEndpointRow.organisation_id.in_(addressed), WebhookEndpointRow.active.is_(True)
        )
    ):
        if type in events:
            endpoints.setdefault(organisation_id, []).append(endpoint_id)
    ids: dict[str, str] = {}
    for organisation_id in addressed:
        event_id = new_id("evt")
        ids[organisation_id] = event_id
        body = dict(data)
        if person_id is not None:
            body["person_id"] = person_id
        body.update((per_organisation or {}).get(organisation_id, {}))
        session.add(
            OutboxEventRow(
                id=event_id,
                type=type,
                organisation_id=organisation_id,
                person_id=person_id,
                data=_json_ready(body),
                occurred_at=now,
                created_at=now,
            )
        )
        for endpoint_id in sorted(endpoints.get(organisation_id, ())):
            session.add(
                WebhookDeliveryRow(
                    event_id=event_id,
                    endpoint_id=endpoint_id,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    return ids


def security_event_token(
    issuer: str,
    *,
    event_id: str,
    event_type: str,
    organisation_id: str,
    data: dict[str, Any],
    occurred_at: datetime,
    issued_at: datetime,
) -> dict[str, Any]:
    """The claims of the SET that carries one event (RFC 8417 §2.2)."""
    return {
        "iss": issuer,
        "aud": organisation_id,
        "iat": int(issued_at.timestamp()),
        "jti": event_id,
        "toe": int(utc(occurred_at).timestamp()),
        "events": {event_uri(issuer, event_type): data},
    }


def sign_event(broker: Broker, row: OutboxEventRow, *, now: datetime) -> str:
    """The compact JWS of a stored event, signed now with the broker's current signing key."""
    claims = security_event_token(
        broker.settings.issuer,
        event_id=row.id,
        event_type=row.type,
        organisation_id=row.organisation_id,
        data=row.data,
        occurred_at=row.occurred_at,
        issued_at=now,
    )
    return sign_jws(claims, broker.keys, typ=SET_TYP)


def event_view(row: OutboxEventRow) -> dict[str, Any]:
    return {
        "event_id": row.id,
        "type": row.type,
        "organisation": row.organisation_id,
        "person_id": row.person_id,
        "data": row.data,
        "occurred_at": utc(row.occurred_at),
    }


def iso(value: datetime) -> str:
    """An RFC 3339 UTC time, as event data carries times."""
    return utc(value).isoformat().replace("+00:00", "Z")


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value
