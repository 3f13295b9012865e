"""Persons and their service relationships."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from broker.adapters.database import Prepared
from broker.adapters.envelope import hetu_index, seal_hetu
from broker.adapters.orm import OrganisationRow, PersonRow, RelationshipRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, UnknownPersonError
from broker.domain.hetu import birth_date, normalise_hetu
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry

_PERSONS = PersonRow.__table__
_RELATIONSHIPS = RelationshipRow.__table__
# Prebuilt Core statements for the disclosure path (built once, compiled once, no ORM objects per request).
_BIRTH_DATE = select(_PERSONS.c.birth_date).where(_PERSONS.c.id == bindparam("person_id"))
_READ_BIRTH_DATE = Prepared(_BIRTH_DATE)
_READ_BIRTH_DATE_FOR_SHARE = Prepared(_BIRTH_DATE.with_for_update(read=True))
_READ_BIRTH_DATE_FOR_UPDATE = Prepared(_BIRTH_DATE.with_for_update())
_ACTIVE_RELATIONSHIP_ORGS = Prepared(
    select(_RELATIONSHIPS.c.organisation_id).where(
        _RELATIONSHIPS.c.person_id == bindparam("person_id"), _RELATIONSHIPS.c.ended_at.is_(None)
    )
)


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


def lock_person_birth_date(uow: UnitOfWork, person_id: str, *, exclusive: bool) -> date:
    """`lock_person` for the disclosure path: the same row lock on PostgreSQL (`FOR SHARE`, or `FOR UPDATE`
    when `exclusive`), the same UnknownPersonError, but only the birth date is read and no ORM object built."""
    if uow.postgres:
        query = _READ_BIRTH_DATE_FOR_UPDATE if exclusive else _READ_BIRTH_DATE_FOR_SHARE
    else:
        query = _READ_BIRTH_DATE
    row = query.first(uow.session, {"person_id": person_id})
    if row is None:
        raise UnknownPersonError(f"no person with id '{person_id}'", field="person_id")
    born: date = row.birth_date
    return born


def age(person: PersonRow | date, now: datetime) -> int:
    """Whole years at `now` (F14b's age condition reads it, Youth Act 1285/2016 11 § 4 mom.)."""
    born: date = person if isinstance(person, date) else person.birth_date
    today = now.date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def is_minor(person: PersonRow | date, now: datetime) -> bool:
    return age(person, now) < 18


def active_relationship_orgs(uow: UnitOfWork, person_id: str) -> frozenset[str]:
    return frozenset(
        row.organisation_id for row in _ACTIVE_RELATIONSHIP_ORGS.rows(uow.session, {"person_id": person_id})
    )


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
