"""Consents: asking for them, recording them, withdrawing them, and proving them with a signed receipt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select

from broker.adapters.database import Prepared
from broker.adapters.orm import (
    ConsentEventRow,
    ConsentRequestRow,
    ConsentRow,
    ConsentTextRow,
    OrganisationRow,
    PersonRow,
)
from broker.adapters.signing import sign_jws
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import (
    ConsentNotActiveError,
    InvalidRequestError,
    NotFoundError,
    UnknownCategoryError,
    UnknownOrganisationError,
    UnknownPurposeError,
)
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.attestations import announce_withdrawal
from broker.services.audit_log import append_entry
from broker.services.consent_texts import render_consent_text, store_consent_text
from broker.services.events import emit
from broker.services.persons import lock_person
from policies import ConsentFact

METHODS = ("in_person", "paper", "portal")


@dataclass(frozen=True)
class ConsentTerms:
    recipients: list[str]
    categories: list[str]
    purposes: list[str]
    valid_until: datetime | None = None
    bound_to_relationship: bool = False
    explicit: bool = True
    written: bool = False
    language: str = "fi"


def _check_terms(broker: Broker, uow: UnitOfWork, terms: ConsentTerms) -> None:
    policy = broker.policy
    for category in terms.categories:
        if category not in policy.categories:
            raise UnknownCategoryError(f"unknown category '{category}'", field="categories")
    for purpose in terms.purposes:
        if purpose not in policy.purposes:
            raise UnknownPurposeError(f"unknown purpose '{purpose}'", field="purposes")
    found = set(uow.session.scalars(select(OrganisationRow.id).where(OrganisationRow.id.in_(terms.recipients))))
    for recipient in terms.recipients:
        if recipient not in found:
            raise UnknownOrganisationError(f"unknown organisation '{recipient}'", field="recipients")
    if terms.valid_until is not None and terms.valid_until <= broker.clock.now():
        raise InvalidRequestError("valid_until must be in the future", field="valid_until")


def record_consent(
    broker: Broker, caller: Caller, person_id: str, terms: ConsentTerms, *, method: str, witness: str | None
) -> dict[str, Any]:
    """Record a consent the person gave to a professional in person or on paper. The professional (from the
    token's `act` claim) is recorded as who recorded it; in person needs a witness."""
    if method not in ("in_person", "paper"):
        raise InvalidRequestError("method must be 'in_person' or 'paper'", field="method")
    if method == "in_person" and not witness:
        raise InvalidRequestError("a consent given in person needs a witness", field="witness")
    with broker.uow() as uow:
        lock_person(uow, person_id, exclusive=True)
        _check_terms(broker, uow, terms)
        now = broker.clock.now()
        consent = create_consent(
            uow,
            person_id=person_id,
            requester_org=caller.organisation_id,
            terms=terms,
            now=now,
            method=method,
            written=terms.written or method == "paper",
            witness=witness,
            recorded_by=caller,
        )
        append_entry(
            uow,
            event="consent:grant",
            now=now,
            caller=caller,
            person_id=person_id,
            basis={"kind": "consent", "consent_id": consent.id, "consent_version": consent.version},
            detail={"method": method},
        )
        # The organisation that recorded it knows; the others named in it hear of it (issue #8).
        emit_consent_granted(uow, consent, now, acting_org=caller.organisation_id)
        uow.commit()
        return consent_view(consent)


def emit_consent_granted(uow: UnitOfWork, consent: ConsentRow, now: datetime, *, acting_org: str | None) -> None:
    """The `consent.granted` event, in the grant's own transaction, to the requester and every recipient except the
    organisation whose API call recorded the consent (`acting_org`; None when the person granted it in the portal)."""
    emit(
        uow,
        type="consent.granted",
        organisations={consent.requester_org, *consent.recipients} - {acting_org},
        person_id=consent.person_id,
        data={
            "consent_id": consent.id,
            "version": consent.version,
            "requester": consent.requester_org,
            "recipients": list(consent.recipients),
            "categories": list(consent.categories),
            "purposes": list(consent.purposes),
            "valid_until": consent.valid_until,
        },
        now=now,
    )


def create_consent(
    uow: UnitOfWork,
    *,
    person_id: str,
    requester_org: str,
    terms: ConsentTerms,
    now: datetime,
    method: str,
    written: bool,
    witness: str | None = None,
    recorded_by: Caller | None = None,
    given_by: str = "person",
    representative_id: str | None = None,
    mandate: str | None = None,
    request_id: str | None = None,
) -> ConsentRow:
    """Add the consent and its first history event to `uow` (no audit entry: the caller appends it)."""
    text = render_consent_text(
        uow.session,
        terms.language,
        requester=requester_org,
        recipients=terms.recipients,
        categories=terms.categories,
        purposes=terms.purposes,
        valid_until=terms.valid_until,
        bound_to_org=requester_org if terms.bound_to_relationship else None,
    )
    consent = ConsentRow(
        id=new_id("con"),
        person_id=person_id,
        version=1,
        status="active",
        requester_org=requester_org,
        recipients=sorted(set(terms.recipients)),
        categories=sorted(set(terms.categories)),
        purposes=sorted(set(terms.purposes)),
        valid_from=now,
        valid_until=terms.valid_until,
        bound_to_org=requester_org if terms.bound_to_relationship else None,
        explicit=terms.explicit,
        written=written,
        method=method,
        given_by=given_by,
        representative_id=representative_id,
        mandate=mandate,
        recorded_by_org=recorded_by.organisation_id if recorded_by else None,
        recorded_by_actor=recorded_by.actor_id if recorded_by else None,
        recorded_by_role=recorded_by.actor_role if recorded_by else None,
        witness=witness,
        text_sha256=store_consent_text(uow.session, text, terms.language, now),
        language=terms.language,
        request_id=request_id,
        created_at=now,
        withdrawn_at=None,
    )
    uow.session.add(consent)
    uow.session.flush()
    by_kind = "professional" if recorded_by else given_by
    _add_event(
        uow,
        consent,
        "grant",
        now,
        by_kind=by_kind,
        by_org=recorded_by.organisation_id if recorded_by else None,
        # Given in the portal: the person who acted (the representative, or the person themself).
        by_actor=recorded_by.actor_id if recorded_by else (representative_id or person_id),
        detail={"method": method, "witness": witness} if witness else {"method": method},
    )
    return consent


def _add_event(
    uow: UnitOfWork,
    consent: ConsentRow,
    action: str,
    now: datetime,
    *,
    by_kind: str,
    by_org: str | None = None,
    by_actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    uow.session.add(
        ConsentEventRow(
            consent_id=consent.id,
            version=consent.version,
            action=action,
            at=now,
            by_kind=by_kind,
            by_org=by_org,
            by_actor=by_actor,
            detail=detail or {},
        )
    )


def request_consent(
    broker: Broker,
    caller: Caller,
    person_id: str,
    *,
    recipients: list[str],
    categories: list[str],
    purposes: list[str],
    valid_days: int | None,
    reason: str,
) -> dict[str, Any]:
    """Ask the person for a consent; the person answers in the portal."""
    with broker.uow() as uow:
        lock_person(uow, person_id, exclusive=False)
        _check_terms(broker, uow, ConsentTerms(recipients=recipients, categories=categories, purposes=purposes))
        now = broker.clock.now()
        row = ConsentRequestRow(
            id=new_id("req"),
            person_id=person_id,
            requester_org=caller.organisation_id,
            requested_by_role=caller.actor_role,
            recipients=sorted(set(recipients)),
            categories=sorted(set(categories)),
            purposes=sorted(set(purposes)),
            valid_days=valid_days,
            reason=reason,
            status="pending",
            created_at=now,
            expires_at=now + timedelta(days=broker.settings.consent_request_ttl_days),
            answered_at=None,
            consent_id=None,
        )
        uow.session.add(row)
        append_entry(
            uow,
            event="consent:request",
            now=now,
            caller=caller,
            person_id=person_id,
            detail={"consent_request_id": row.id},
        )
        uow.commit()
        return consent_request_view(row)


def withdraw_consent(broker: Broker, caller: Caller, consent_id: str, *, reason: str | None = None) -> dict[str, Any]:
    """Record a withdrawal the person made to a professional. Effective for every later request
    (invariant 3): the person row is locked exclusively, so disclosures that read the consent as active have
    committed before this commits, and those that start later see it withdrawn."""
    with broker.uow() as uow:
        consent = _visible_consent(uow, caller, consent_id)
        lock_person(uow, consent.person_id, exclusive=True)
        uow.session.refresh(consent)
        if consent.status != "active":
            raise ConsentNotActiveError(f"consent '{consent_id}' is {consent.status}, not active")
        now = broker.clock.now()
        record_withdrawal(
            uow,
            consent,
            now,
            by_kind="professional",
            by_org=caller.organisation_id,
            by_actor=caller.actor_id,
            reason=reason,
        )
        # The other organisations named in the consent are told (flows.md, "Consent, as the law shapes it");
        # the one recording the withdrawal already knows. Imported here: notices builds on this module.
        from broker.services.notices import notify_consent_withdrawn

        told = sorted({consent.requester_org, *consent.recipients} - {caller.organisation_id})
        notice_ids = notify_consent_withdrawn(broker, uow, consent, told, now)
        # Every organisation that received data under the consent must say what it did with it — the recording
        # organisation too, when it did: it still holds the data (docs/withdrawal.md).
        asked = announce_withdrawal(broker, uow, consent, now, acting_org=caller.organisation_id)
        append_entry(
            uow,
            event="consent:withdraw",
            now=now,
            caller=caller,
            person_id=consent.person_id,
            basis={"kind": "consent", "consent_id": consent.id, "consent_version": consent.version},
            detail={"told": told, "notice_ids": notice_ids, "attestations_asked": asked},
        )
        uow.commit()
        return consent_view(consent)


def record_withdrawal(
    uow: UnitOfWork,
    consent: ConsentRow,
    now: datetime,
    *,
    by_kind: str,
    by_org: str | None,
    by_actor: str | None,
    reason: str | None,
) -> None:
    """Mark the consent withdrawn and append the history event (the caller holds the person's row lock and
    appends the audit entry)."""
    consent.status = "withdrawn"
    consent.withdrawn_at = now
    consent.version += 1
    _add_event(
        uow,
        consent,
        "withdraw",
        now,
        by_kind=by_kind,
        by_org=by_org,
        by_actor=by_actor,
        detail={"reason": reason} if reason else {},
    )


def record_expiry(uow: UnitOfWork, consent: ConsentRow, now: datetime, *, detail: dict[str, Any]) -> None:
    """Mark the consent expired — its end date has passed, or the service relationship it was bound to has ended —
    and append the history event, made by the system at `now` (`detail` says why and from when). The caller
    (broker/services/jobs.py) holds the person's row lock, has checked that the consent is still active, and
    appends the audit entry."""
    consent.status = "expired"
    consent.version += 1
    _add_event(uow, consent, "expire", now, by_kind="system", detail=detail)


def _visible_consent(uow: UnitOfWork, caller: Caller, consent_id: str) -> ConsentRow:
    """A partner sees the consents in which its organisation is requester or recipient; others are 404, so
    that their existence is not revealed."""
    consent = uow.session.get(ConsentRow, consent_id)
    if consent is None or not _involves(consent, caller.organisation_id):
        raise NotFoundError(
            f"no consent '{consent_id}' visible to organisation '{caller.organisation_id}'",
            extra={"code": "unknown_consent"},
        )
    return consent


def _involves(consent: ConsentRow, organisation_id: str) -> bool:
    return consent.requester_org == organisation_id or organisation_id in consent.recipients


def list_consents(broker: Broker, caller: Caller, person_id: str) -> list[dict[str, Any]]:
    with broker.uow(write=False) as uow:
        if uow.session.get(PersonRow, person_id) is None:
            lock_person(uow, person_id, exclusive=False)  # raises UnknownPersonError
        rows = uow.session.scalars(
            select(ConsentRow).where(ConsentRow.person_id == person_id).order_by(ConsentRow.created_at)
        )
        return [consent_view(row) for row in rows if _involves(row, caller.organisation_id)]


def documented_consent(
    uow: UnitOfWork, caller: Caller, consent_id: str
) -> tuple[ConsentRow, ConsentTextRow | None, list[ConsentEventRow]]:
    """What a document about a consent shows (the signed receipt, the ISO/IEC TS 27560 record): the consent, if the
    caller's organisation is requester or recipient (404 otherwise), the text the person saw, and its history in
    order."""
    consent = _visible_consent(uow, caller, consent_id)
    text = uow.session.get(ConsentTextRow, consent.text_sha256)
    events = uow.session.scalars(
        select(ConsentEventRow).where(ConsentEventRow.consent_id == consent.id).order_by(ConsentEventRow.id)
    ).all()
    return consent, text, list(events)


def consent_receipt(broker: Broker, caller: Caller, consent_id: str) -> str:
    """A consent receipt: the consent's terms and history, signed as a compact JWS with the broker's Ed25519
    key (verifiable with /.well-known/jwks.json)."""
    with broker.uow(write=False) as uow:
        consent, text, events = documented_consent(uow, caller, consent_id)
        payload = {
            "iss": broker.settings.issuer,
            "iat": int(broker.clock.now().timestamp()),
            "consent": _json_ready(consent_view(consent)),
            "text": {
                "sha256": consent.text_sha256,
                "version": text.version if text else None,
                "language": consent.language,
                "text": text.text if text else None,
            },
            "history": [
                {"version": e.version, "action": e.action, "at": _iso(e.at), "by": e.by_kind, "organisation": e.by_org}
                for e in events
            ],
        }
    return sign_jws(payload, broker.keys, typ="consent-receipt+jws")


_CONSENTS = ConsentRow.__table__
# What a decision needs of a person's consents: a prebuilt Core statement, read fresh in the caller's
# transaction on every disclosure (invariant 3: never cached) without building ORM objects.
# The columns a ConsentFact is made of (`to_fact`), in this order wherever they are read as a tuple.
CONSENT_FACT_COLUMNS = (
    "id",
    "version",
    "status",
    "recipients",
    "categories",
    "purposes",
    "valid_from",
    "valid_until",
    "explicit",
    "written",
    "bound_to_org",
    "given_by",
    "mandate",
    "withdrawn_at",
    "requester_org",
)
_CONSENT_FACTS = Prepared(
    select(*(_CONSENTS.c[name] for name in CONSENT_FACT_COLUMNS)).where(_CONSENTS.c.person_id == bindparam("person_id"))
)


def consent_facts(uow: UnitOfWork, person_id: str) -> tuple[ConsentFact, ...]:
    """The person's consents as the policy sees them, read from the database in the caller's transaction (call
    it before changing consents in that transaction: pending ORM changes are not flushed for this read)."""
    return tuple(to_fact(row) for row in _CONSENT_FACTS.rows(uow.session, {"person_id": person_id}))


def to_fact(row: Any) -> ConsentFact:
    """A ConsentFact from a ConsentRow or a result row with the same column names."""
    return ConsentFact(
        consent_id=row.id,
        version=row.version,
        status=row.status,
        recipients=frozenset(row.recipients),
        categories=frozenset(row.categories),
        purposes=frozenset(row.purposes),
        valid_from=utc(row.valid_from),
        valid_until=utc(row.valid_until) if row.valid_until else None,
        explicit=row.explicit,
        written=row.written,
        bound_to_org=row.bound_to_org,
        given_by=row.given_by,
        mandate=row.mandate,
        withdrawn_at=utc(row.withdrawn_at) if row.withdrawn_at else None,
        requester_org=row.requester_org,
    )


def consent_view(row: ConsentRow) -> dict[str, Any]:
    return {
        "consent_id": row.id,
        "person_id": row.person_id,
        "version": row.version,
        "status": row.status,
        "requester": row.requester_org,
        "recipients": list(row.recipients),
        "categories": list(row.categories),
        "purposes": list(row.purposes),
        "valid_from": utc(row.valid_from),
        "valid_until": utc(row.valid_until) if row.valid_until else None,
        "bound_to_relationship": row.bound_to_org is not None,
        "explicit": row.explicit,
        "written": row.written,
        "method": row.method,
        "given_by": row.given_by,
        "mandate": row.mandate,
        "witness": row.witness,
        "language": row.language,
        "text_sha256": row.text_sha256,
        "created_at": utc(row.created_at),
        "withdrawn_at": utc(row.withdrawn_at) if row.withdrawn_at else None,
    }


def consent_request_view(row: ConsentRequestRow) -> dict[str, Any]:
    return {
        "consent_request_id": row.id,
        "person_id": row.person_id,
        "requester": row.requester_org,
        "recipients": list(row.recipients),
        "categories": list(row.categories),
        "purposes": list(row.purposes),
        "valid_days": row.valid_days,
        "reason": row.reason,
        "status": row.status,
        "created_at": utc(row.created_at),
        "expires_at": utc(row.expires_at),
        "consent_id": row.consent_id,
    }


def _iso(value: datetime) -> str:
    return utc(value).isoformat().replace("+00:00", "Z")


def _json_ready(view: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in view.items()}
