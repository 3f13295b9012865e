"""Persons and their service relationships."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from broker.adapters.envelope import hetu_index, seal_hetu
from broker.adapters.orm import OrganisationRow, PersonRow, RelationshipRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, UnknownPersonError
from broker.domain.hetu import birth_date, normalise_hetu
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry


def resolve_person(broker: Broker, caller: Caller | None, hetu: str, display_name: str | None = None) -> str:
    """Return the person's opaque id, creating the person on first sight. The identity code is validated,
    stored sealed, and found again through its keyed hash — never in the clear (DESIGN.md invariant 6)."""
    code = normalise_hetu(hetu)
    index = hetu_index(code, broker.keys)
    for attempt in range(2):
        try:
            return _resolve_once(broker, caller, code, index, display_name)
        except IntegrityError:
            # Another transaction created the same person first (PostgreSQL's unique index); read theirs.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _resolve_once(broker: Broker, caller: Caller | None, code: str, index: str, display_name: str | None) -> str:
    with broker.uow() as uow:
        now = broker.clock.now()
        person_id = uow.session.scalars(select(PersonRow.id).where(PersonRow.hetu_index == index)).first()
        created = person_id is None
        if person_id is None:
            person_id = new_id("per")
            sealed = seal_hetu(code, person_id, broker.keys)
            uow.session.add(
                PersonRow(
                    id=person_id,
                    hetu_index=index,
                    hetu_kek_id=sealed.kek_id,
                    hetu_wrapped_key=sealed.wrapped_key,
                    hetu_nonce=sealed.nonce,
                    hetu_ciphertext=sealed.ciphertext,
                    birth_date=birth_date(code),
                    display_name=display_name,
                    created_at=now,
                )
            )
            uow.session.flush()
        # Looking a person up is logged too: who asked for whom is what an enumeration review needs.
        append_entry(
            uow, event="person:resolve", now=now, caller=caller, person_id=person_id, detail={"created": created}
        )
        uow.commit()
        return person_id


def lock_person(uow: UnitOfWork, person_id: str, *, exclusive: bool) -> PersonRow:
    """Load the person and, on PostgreSQL, lock the row: disclosures take it `FOR SHARE`, changes to consents
    and relationships `FOR UPDATE`, so a withdrawal that has committed is seen by every disclosure that starts
    after it, and no disclosure that read the consent as active commits after the withdrawal (invariant 3).
    On SQLite every write transaction is serialised already."""
    stmt = select(PersonRow).where(PersonRow.id == person_id)
    if uow.postgres:
        stmt = stmt.with_for_update(read=not exclusive)
    person = uow.session.scalars(stmt).one_or_none()
    if person is None:
        raise UnknownPersonError(f"no person with id '{person_id}'", field="person_id")
    return person


def is_minor(person: PersonRow, now: datetime) -> bool:
    born: date = person.birth_date
    today = now.date()
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return age < 18


def active_relationship_orgs(uow: UnitOfWork, person_id: str) -> frozenset[str]:
    rows = uow.session.scalars(
        select(RelationshipRow.organisation_id).where(
            RelationshipRow.person_id == person_id, RelationshipRow.ended_at.is_(None)
        )
    )
    return frozenset(rows)


def start_relationship(broker: Broker, caller: Caller, person_id: str) -> dict[str, object]:
    with broker.uow() as uow:
        lock_person(uow, person_id, exclusive=True)
        existing = _active_relationship(uow, person_id, caller.organisation_id)
        if existing is not None:
            return _relationship_view(existing, created=False)
        now = broker.clock.now()
        row = RelationshipRow(
            id=new_id("rel"), person_id=person_id, organisation_id=caller.organisation_id, started_at=now, ended_at=None
        )
        uow.session.add(row)
        append_entry(
            uow,
            event="relationship:start",
            now=now,
            caller=caller,
            person_id=person_id,
            detail={"relationship_id": row.id},
        )
        uow.commit()
        return _relationship_view(row, created=True)


def end_relationship(broker: Broker, caller: Caller, person_id: str) -> dict[str, object]:
    with broker.uow() as uow:
        lock_person(uow, person_id, exclusive=True)
        row = _active_relationship(uow, person_id, caller.organisation_id)
        if row is None:
            raise ConflictError(
                f"organisation '{caller.organisation_id}' has no active service relationship with this person",
                extra={"code": "no_relationship"},
            )
        now = broker.clock.now()
        row.ended_at = now
        append_entry(
            uow,
            event="relationship:end",
            now=now,
            caller=caller,
            person_id=person_id,
            detail={"relationship_id": row.id},
        )
        uow.commit()
        return _relationship_view(row, created=False)


def _active_relationship(uow: UnitOfWork, person_id: str, organisation_id: str) -> RelationshipRow | None:
    return uow.session.scalars(
        select(RelationshipRow).where(
            RelationshipRow.person_id == person_id,
            RelationshipRow.organisation_id == organisation_id,
            RelationshipRow.ended_at.is_(None),
        )
    ).first()


def _relationship_view(row: RelationshipRow, *, created: bool) -> dict[str, object]:
    return {
        "relationship_id": row.id,
        "person_id": row.person_id,
        "organisation": row.organisation_id,
        "started_at": utc(row.started_at),
        "ended_at": utc(row.ended_at) if row.ended_at else None,
        "active": row.ended_at is None,
        "created": created,
    }


def organisation_type(broker: Broker, uow: UnitOfWork, organisation_id: str) -> str | None:
    """An organisation's type. Types never change once registered, so they are cached per process."""
    cached = broker.org_types.get(organisation_id)
    if cached is None:
        row = uow.session.get(OrganisationRow, organisation_id)
        if row is None:
            return None
        cached = broker.org_types[organisation_id] = row.org_type
    return cached
