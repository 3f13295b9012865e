"""Persons and their service relationships."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from broker.adapters.database import Prepared
from broker.adapters.envelope import hetu_index, seal_hetu
from broker.adapters.orm import ConsentRow, OrganisationRow, PersonRow, RelationshipRow, RepresentationRow
from broker.adapters.uow import UnitOfWork
from broker.domain.clock import utc
from broker.domain.errors import ConflictError, InvalidRequestError, UnknownPersonError
from broker.domain.hetu import birth_date, normalise_hetu
from broker.domain.model import Caller
from broker.services import Broker, new_id
from broker.services.audit_log import append_entry
from broker.services.events import emit

# Who may act for a person (flows.md, "Consent, as the law shapes it"; docs/portal.md, "Representation"): a custodian
# for a minor; for an adult a guardian whose court order covers personal matters, or an attorney under a continuing
# power of attorney covering personal matters. Relatives without such a mandate never.
MANDATES = ("custodian", "guardian_personal", "continuing_poa_personal")
ADULT_MANDATES = frozenset({"guardian_personal", "continuing_poa_personal"})

_PERSONS = PersonRow.__table__
_RELATIONSHIPS = RelationshipRow.__table__
_REPRESENTATIONS = RepresentationRow.__table__
# Prebuilt Core statements for the disclosure path (built once, compiled once, no ORM objects per request).
_BIRTH_DATE = select(_PERSONS.c.birth_date, _PERSONS.c.facts_version).where(_PERSONS.c.id == bindparam("person_id"))
_FACTS_VERSION = Prepared(select(_PERSONS.c.facts_version).where(_PERSONS.c.id == bindparam("person_id")))
_READ_BIRTH_DATE = Prepared(_BIRTH_DATE)
_READ_BIRTH_DATE_FOR_SHARE = Prepared(_BIRTH_DATE.with_for_update(read=True))
_READ_BIRTH_DATE_FOR_UPDATE = Prepared(_BIRTH_DATE.with_for_update())
_ACTIVE_RELATIONSHIP_ORGS = Prepared(
    select(_RELATIONSHIPS.c.organisation_id).where(
        _RELATIONSHIPS.c.person_id == bindparam("person_id"), _RELATIONSHIPS.c.ended_at.is_(None)
    )
)
_ORGANISATION_TYPE = Prepared(
    select(OrganisationRow.__table__.c.org_type).where(OrganisationRow.__table__.c.id == bindparam("id"))
)
_MANDATES_OF_PERSON = Prepared(
    select(_REPRESENTATIONS.c.mandate, _REPRESENTATIONS.c.valid_from, _REPRESENTATIONS.c.valid_until).where(
        _REPRESENTATIONS.c.person_id == bindparam("person_id")
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
        person_id = _find_or_create(broker, uow, caller, code, index, display_name, broker.clock.now())
        uow.commit()
        return person_id


def _find_or_create(
    broker: Broker,
    uow: UnitOfWork,
    caller: Caller | None,
    code: str,
    index: str,
    display_name: str | None,
    now: datetime,
) -> str:
    """The person with this (normalised) identity code, created in `uow` on first sight; the look-up is logged."""
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
    append_entry(uow, event="person:resolve", now=now, caller=caller, person_id=person_id, detail={"created": created})
    return person_id


def find_person_by_hetu(broker: Broker, uow: UnitOfWork, hetu: str) -> str | None:
    """The id of the person with this identity code, found through its keyed hash; never creates one. Raises
    InvalidHetuError for a malformed code (whose message never repeats it)."""
    index = hetu_index(normalise_hetu(hetu), broker.keys)
    person_id: str | None = uow.session.scalars(select(PersonRow.id).where(PersonRow.hetu_index == index)).first()
    return person_id


def lock_person(uow: UnitOfWork, person_id: str, *, exclusive: bool) -> PersonRow:
    """Load the person and, on PostgreSQL, lock the row: disclosures take it `FOR SHARE`, every change to what a
    decision reads (consents, mandates, relationships, records) `FOR UPDATE`, so a withdrawal that has committed is
    seen by every disclosure that starts after it, and no disclosure that read the consent as active commits after
    the withdrawal (invariant 3). Such a change also bumps the person's facts version, an update of the row (the
    facts-version triggers): a transaction that took only `FOR SHARE` would then wait for any other holding it, and
    two of them would deadlock. On SQLite every write transaction is serialised already."""
    stmt = select(PersonRow).where(PersonRow.id == person_id)
    if uow.postgres:
        stmt = stmt.with_for_update(read=not exclusive)
    person = uow.session.scalars(stmt).one_or_none()
    if person is None:
        raise UnknownPersonError(f"no person with id '{person_id}'", field="person_id")
    return person


def lock_person_birth_date(uow: UnitOfWork, person_id: str, *, exclusive: bool) -> tuple[date, int]:
    """`lock_person` for the disclosure path: the same row lock on PostgreSQL (`FOR SHARE`, or `FOR UPDATE`
    when `exclusive`), the same UnknownPersonError, but only the birth date and the facts version (SQLite's count
    of changes to the person's facts, `PersonRow.facts_version`) are read and no ORM object built.
    Test mode can turn the lock off (`uow.decision_lock`) for the withdrawal race's negative control."""
    if uow.postgres and uow.decision_lock:
        query = _READ_BIRTH_DATE_FOR_UPDATE if exclusive else _READ_BIRTH_DATE_FOR_SHARE
    else:
        query = _READ_BIRTH_DATE
    row = query.first(uow.session, {"person_id": person_id})
    if row is None:
        raise UnknownPersonError(f"no person with id '{person_id}'", field="person_id")
    return row.birth_date, row.facts_version


def facts_version(uow: UnitOfWork, person_id: str) -> int | None:
    """The person's facts version now (`PersonRow.facts_version`), None when there is no such person."""
    row = _FACTS_VERSION.first(uow.session, {"person_id": person_id})
    return None if row is None else int(row.facts_version)


def age(person: PersonRow | date, now: datetime) -> int:
    """Whole years at `now` (F14b's age condition reads it, Youth Act 1285/2016 11 § 4 mom.)."""
    born: date = person if isinstance(person, date) else person.birth_date
    today = now.date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def is_minor(person: PersonRow | date, now: datetime) -> bool:
    return age(person, now) < 18


def mandate_covers(mandate: str, *, minor: bool) -> bool:
    """Whether a mandate lets its holder act for the person now: a custodian only while the person is a minor,
    a guardian or attorney for personal matters only for an adult."""
    if mandate == "custodian":
        return minor
    return mandate in ADULT_MANDATES and not minor


def representation_active(valid_from: datetime, valid_until: datetime | None, now: datetime) -> bool:
    return utc(valid_from) <= now and (valid_until is None or now < utc(valid_until))


def has_legal_representative(
    uow: UnitOfWork, person_id: str, now: datetime, *, minor: bool
) -> tuple[bool, datetime | None]:
    """Whether a registered, active mandate lets someone consent for the person now (read for the statutory
    exception that needs its absence, 703/2023 53 § 5–6 mom.), and the first moment after `now` when a mandate
    begins or ends — when the answer may change (None: never)."""
    return legal_representative(_MANDATES_OF_PERSON.rows(uow.session, {"person_id": person_id}), now, minor=minor)


def legal_representative(rows: Iterable[Any], now: datetime, *, minor: bool) -> tuple[bool, datetime | None]:
    """`has_legal_representative` from the person's representation rows (mandate, valid_from, valid_until) as
    read."""
    rows = tuple(rows)
    found = any(
        representation_active(row.valid_from, row.valid_until, now) and mandate_covers(row.mandate, minor=minor)
        for row in rows
    )
    moments = [utc(t) for row in rows for t in (row.valid_from, row.valid_until) if t is not None and utc(t) > now]
    return found, min(moments, default=None)


def register_representative(
    broker: Broker, caller: Caller, person_id: str, *, hetu: str, mandate: str, valid_until: datetime | None
) -> dict[str, Any]:
    """Register a mandate the calling organisation has verified: the person with identity code `hetu` (created on
    first sight) may act for `person_id` under `mandate`. A custodian only for a minor, the adult mandates only for
    an adult. An active registration of the same mandate for the same pair is superseded (ended now)."""
    if mandate not in MANDATES:
        raise InvalidRequestError(f"mandate must be one of {', '.join(MANDATES)}", field="mandate")
    code = normalise_hetu(hetu)
    index = hetu_index(code, broker.keys)
    for attempt in range(2):
        try:
            return _register_once(broker, caller, person_id, code, index, mandate, valid_until)
        except IntegrityError:
            # The representative was first seen by a concurrent transaction too (the unique index); read theirs.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _register_once(
    broker: Broker,
    caller: Caller,
    person_id: str,
    code: str,
    index: str,
    mandate: str,
    valid_until: datetime | None,
) -> dict[str, Any]:
    with broker.uow() as uow:
        person = lock_person(uow, person_id, exclusive=True)
        now = broker.clock.now()
        minor = is_minor(person, now)
        if mandate == "custodian" and not minor:
            raise InvalidRequestError("a custodian acts only for a minor; this person is an adult", field="mandate")
        if mandate in ADULT_MANDATES and minor:
            raise InvalidRequestError(f"a {mandate} mandate is for an adult; this person is a minor", field="mandate")
        if valid_until is not None and utc(valid_until) <= now:
            raise InvalidRequestError("valid_until must be in the future", field="valid_until")
        if person.hetu_index == index:
            raise InvalidRequestError("a person cannot be their own representative", field="hetu")
        if caller.organisation_id not in active_relationship_orgs(uow, person_id):
            # A mandate opens the person's whole portal: only an organisation that serves the person, and so
            # has had reason to verify who may act for them, can register one.
            raise ConflictError(
                f"organisation '{caller.organisation_id}' has no active service relationship with this person",
                extra={"code": "no_relationship"},
            )
        representative_id = _find_or_create(broker, uow, caller, code, index, None, now)
        superseded = _supersede(uow, person_id, representative_id, mandate, now)
        row = RepresentationRow(
            id=new_id("rep"),
            person_id=person_id,
            representative_id=representative_id,
            mandate=mandate,
            valid_from=now,
            valid_until=utc(valid_until) if valid_until is not None else None,
            registered_by=caller.organisation_id,
            created_at=now,
        )
        uow.session.add(row)
        append_entry(
            uow,
            event="representation:register",
            now=now,
            caller=caller,
            person_id=person_id,
            detail={
                "representation_id": row.id,
                "representative_id": representative_id,
                "mandate": mandate,
                **({"superseded": superseded} if superseded else {}),
            },
        )
        uow.commit()
        return representation_view(row)


def _supersede(uow: UnitOfWork, person_id: str, representative_id: str, mandate: str, now: datetime) -> list[str]:
    """End (at `now`) the active registrations of the same mandate for the same pair; return their ids."""
    rows = uow.session.scalars(
        select(RepresentationRow).where(
            RepresentationRow.person_id == person_id,
            RepresentationRow.representative_id == representative_id,
            RepresentationRow.mandate == mandate,
        )
    )
    ended = []
    for row in rows:
        if representation_active(row.valid_from, row.valid_until, now):
            row.valid_until = now
            ended.append(row.id)
    return ended


def representation_view(row: RepresentationRow) -> dict[str, Any]:
    return {
        "representation_id": row.id,
        "person_id": row.person_id,
        "representative_id": row.representative_id,
        "mandate": row.mandate,
        "valid_from": utc(row.valid_from),
        "valid_until": utc(row.valid_until) if row.valid_until else None,
        "registered_by": row.registered_by,
    }


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
        bound = _emit_relationship_ended(uow, row, caller.organisation_id, now)
        if bound:
            # The consents bound to this relationship end with it (flows.md, "Consent, as the law shapes it"), now
            # and for good: a consent "as long as X serves me" does not come back if X serves the person again.
            # Imported here: the jobs module builds on this one.
            from broker.services.jobs import expire_consents

            expire_consents(broker, uow, bound, [person_id], now)
        uow.commit()
        return _relationship_view(row, created=False)


def _emit_relationship_ended(uow: UnitOfWork, row: RelationshipRow, acting_org: str, now: datetime) -> list[str]:
    """The `relationship.ended` event, in the transaction that ends the relationship, to the other organisations
    named in the person's consents bound to it: such a consent ends with the relationship (the policy no longer
    permits on it, policies/engine.py `consent_relationship_ended`, and `end_relationship` marks it expired). Each
    organisation is told of the consents that name it; none bound, no event. Returns the ids of the consents that
    end with the relationship."""
    bound = uow.session.execute(
        select(ConsentRow.id, ConsentRow.requester_org, ConsentRow.recipients, ConsentRow.valid_until).where(
            ConsentRow.person_id == row.person_id,
            ConsentRow.bound_to_org == row.organisation_id,
            ConsentRow.status == "active",
        )
    ).all()
    ended: dict[str, list[str]] = {}
    ending: list[str] = []
    for consent_id, requester, recipients, valid_until in sorted(bound, key=lambda c: c.id):
        if valid_until is not None and utc(valid_until) <= now:
            continue  # already over by its end date: not this relationship's doing
        ending.append(consent_id)
        for org in {requester, *recipients} - {acting_org}:
            ended.setdefault(org, []).append(consent_id)
    emit(
        uow,
        type="relationship.ended",
        organisations=ended,
        person_id=row.person_id,
        data={"relationship_id": row.id, "organisation": row.organisation_id, "ended_at": now},
        now=now,
        per_organisation={org: {"consents_ended": ids} for org, ids in ended.items()},
    )
    return ending


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
        row = _ORGANISATION_TYPE.first(uow.session, {"id": organisation_id})
        if row is None:
            return None
        cached = broker.org_types[organisation_id] = row.org_type
    return cached
